import { type Expression, Kysely, type OperationNode, type SqlBool, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { holdsRaw } from '../../../src/plugin/raw-text.js'
import { compileOnlyDialect } from '../../support/compile-only.js'

// biome-ignore lint/suspicious/noExplicitAny: tables of the fixture.
const db = new Kysely<any>({ dialect: compileOnlyDialect() })
const base = () => db.selectFrom('t').select('id')
type Query = ReturnType<typeof base>

/** The WHERE node of `select id from t` with `add`'s where(). */
function whereOf(add: (q: Query) => Query): OperationNode {
  return (add(base()).toOperationNode().where as { where: OperationNode }).where
}

describe('holdsRaw', () => {
  it('finds raw SQL that may go on past its node: a raw condition, a raw value, exists, between, arithmetic', () => {
    const past = sql<number>`${1} or id <> ${1}`
    const sum = (q: Query) => q.where((e) => e('id', '=', e(e.val(0), '+', past) as Expression<number>))
    expect(holdsRaw(whereOf((q) => q.where(sql<SqlBool>`a or b`)))).toBe(true)
    expect(holdsRaw(whereOf((q) => q.where((e) => e('id', '=', past))))).toBe(true)
    expect(holdsRaw(whereOf((q) => q.where((e) => e.exists(sql`(select 1) or true`))))).toBe(true)
    expect(holdsRaw(whereOf((q) => q.where((e) => e.between('id', 1, past))))).toBe(true)
    expect(holdsRaw(whereOf(sum))).toBe(true)
  })

  it('leaves alone what holds none, or holds it inside parentheses of its own', () => {
    const inParens = (q: Query) => q.where((e) => e.parens(e('id', '=', sql<number>`${1} or true`)))
    const inSubquery = (q: Query) =>
      q.where((e) => e('id', 'in', e.selectFrom('u').select('id').where(sql<SqlBool>`a or b`)))
    expect(holdsRaw(whereOf((q) => q.where((e) => e('id', '=', 1))))).toBe(false)
    expect(holdsRaw(whereOf(inParens))).toBe(false)
    expect(holdsRaw(whereOf(inSubquery))).toBe(false)
  })

  it("does not walk the application's values, even one shaped like a node and cyclic", () => {
    const value: Record<string, unknown> = { kind: 'RawNode' }
    value.self = value
    expect(holdsRaw(whereOf((q) => q.where((e) => e('data', '=', value as never))))).toBe(false)
  })
})
