import { Kysely, PostgresQueryCompiler, type RootOperationNode, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema } from '../../../src/index.js'
import { analyzeQuery } from '../../../src/plugin/analyzer.js'
import { isDeferred } from '../../../src/plugin/deferred-value.js'
import { ShapeCache, verifyShapeCache } from '../../../src/plugin/shape-cache.js'
import { queryShape } from '../../../src/plugin/shape-key.js'
import { pluginView } from '../../../src/schema/plugin-view.js'
import { compileOnlyDialect } from '../../support/compile-only.js'

// biome-ignore lint/suspicious/noExplicitAny: table names of the fixture.
const db = new Kysely<any>({ dialect: compileOnlyDialect() })

/** A select of `id` from `table` where `a = x and b = y`: a shape with two values. */
const twoConditions = (table: string, a: string, b: string) => (x: string, y: string) =>
  db.selectFrom(table).select('id').where(a, '=', x).where(b, '=', y).toOperationNode() as RootOperationNode

const schema = pluginView(
  encryptedSchema(
    {
      users: {
        email: encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 40 }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 8 } }),
        born: encrypted.date({ index: { name: 'born_bidx' } }),
      },
      accounts: { iban: encrypted.text({ index: { name: 'iban_bidx' } }) },
    },
    { tables: { accounts: { context: ['tenant_id'], keyScope: 'tenant_id' } } },
  ),
)

/** A cache whose full analyses are counted. */
function counted() {
  const cache = new ShapeCache()
  let analyses = 0
  const analyze = (root: RootOperationNode) => {
    analyses++
    return analyzeQuery(schema, 'rewrite', root, undefined)
  }
  return {
    run: (root: RootOperationNode) => cache.analyze(root, analyze),
    get analyses() {
      return analyses
    },
  }
}

/** The deferred values of a tree's parameters, revealed, and the SQL. */
function compiled(node: RootOperationNode) {
  const q = new PostgresQueryCompiler().compileQuery(node, { queryId: 'q' } as never)
  return {
    sql: q.sql,
    parameters: q.parameters.map((p) => (isDeferred(p) ? { deferred: p.kind, plaintext: p.reveal() } : p)),
  }
}

const lookup = (email: string, limit = 1) =>
  db
    .selectFrom('users')
    .select(['id', 'email', 'ssn'])
    .where('email', '=', email)
    .where('name', '=', `name of ${email}`)
    .limit(limit)
    .toOperationNode() as RootOperationNode

// The suite's setup turns the checking mode on; these tests count the analyses the cache saves.
beforeAll(() => verifyShapeCache(false))
afterAll(() => verifyShapeCache(true))

describe('ShapeCache: a repeated query shape reuses its analysis', () => {
  it('a shape is learnt on its second query; the third runs no analysis and carries its own values', () => {
    const c = counted()
    const first = c.run(lookup('a@example.org'))
    expect(c.analyses).toBe(1)
    // The query, then the same shape with other values (the check before a shape is kept).
    c.run(lookup('c@example.org', 2))
    expect(c.analyses).toBe(3)
    const third = c.run(lookup('b@example.org', 5))
    expect(c.analyses).toBe(3)
    const full = analyzeQuery(schema, 'rewrite', lookup('b@example.org', 5), undefined)
    expect(compiled(third.node)).toEqual(compiled(full.node))
    expect(compiled(third.node).parameters).toEqual([
      { deferred: 'probe', plaintext: 'b@example.org' },
      'name of b@example.org',
      5,
    ])
    // Its plan: the post-filter checks this query's value, and only its deferred values are allowed.
    expect(third.plan.postFilters.map((f) => f.probes.map((p) => p.reveal()))).toEqual([['b@example.org']])
    expect([...third.plan.deferredValues].map((d) => d.reveal())).toEqual(['b@example.org'])
    expect(third.plan.outputs).toEqual(first.plan.outputs)
  })

  it('a reused shape still checks a searched value with its codec, as the analysis does', () => {
    const c = counted()
    const text = (v: string) =>
      db.selectFrom('users').select('id').where('email', '=', v).toOperationNode() as RootOperationNode
    c.run(text('a@example.org'))
    c.run(text('b@example.org'))
    const learnt = c.analyses
    expect(learnt).toBe(3)
    // Not well-formed text (a lone surrogate): refused by the text codec, on a reused shape too.
    expect(() => analyzeQuery(schema, 'rewrite', text('\ud800x'), undefined)).toThrowError(
      expect.objectContaining({ code: 'CODEC_INVALID_VALUE' }),
    )
    expect(() => c.run(text('\ud800x'))).toThrowError(
      expect.objectContaining({ code: 'CODEC_INVALID_VALUE' }),
    )
    expect(c.analyses).toBe(learnt)
    const date = (d: Date) =>
      db.selectFrom('users').select('id').where('born', '=', d).toOperationNode() as RootOperationNode
    c.run(date(new Date(0)))
    c.run(date(new Date(1)))
    expect(c.analyses).toBe(learnt + 3)
    expect(compiled(c.run(date(new Date(5))).node).parameters).toEqual([
      { deferred: 'probe', plaintext: new Date(5) },
    ])
    expect(c.analyses).toBe(learnt + 3)
  })

  it('a value of another kind is another shape: `= null` is not a search', () => {
    const c = counted()
    const nullSearch = () =>
      db.selectFrom('users').select('id').where('ssn', '=', null).toOperationNode() as RootOperationNode
    const search = (v: string) =>
      db.selectFrom('users').select('id').where('ssn', '=', v).toOperationNode() as RootOperationNode
    c.run(search('1'))
    c.run(search('3'))
    const n = c.run(nullSearch())
    expect(compiled(n.node).sql).toContain('"ssn" = $1')
    expect(compiled(n.node).parameters).toEqual([null])
    const learnt = c.analyses
    expect(compiled(c.run(search('2')).node).parameters).toEqual([{ deferred: 'probe', plaintext: '2' }])
    expect(c.analyses).toBe(learnt)
  })

  it('in-lists: each element is its own value; a list of another length, or a long one, is another shape', () => {
    const c = counted()
    const q = (xs: readonly (string | number)[], column = 'email') =>
      db.selectFrom('users').select('id').where(column, 'in', xs).toOperationNode() as RootOperationNode
    c.run(q(['a', 'b']))
    c.run(q(['x', 'y']))
    const learnt = c.analyses
    const r = c.run(q(['c', 'd']))
    expect(c.analyses).toBe(learnt)
    expect(compiled(r.node).parameters).toEqual([
      { deferred: 'probe', plaintext: 'c' },
      { deferred: 'probe', plaintext: 'd' },
    ])
    c.run(q(['e', 'f', 'g']))
    expect(c.analyses).toBe(learnt + 1)
    // Consecutive numbers: the other values made to check a shape are found past the list's own.
    const ids = (from: number) => Array.from({ length: 20 }, (_, i) => from + i)
    c.run(q(ids(1000), 'id'))
    c.run(q(ids(2000), 'id'))
    const numbers = c.analyses
    expect(compiled(c.run(q(ids(3000), 'id')).node).parameters).toEqual(ids(3000))
    expect(c.analyses).toBe(numbers)
    // Past 32 values a list is not a cached shape: a template would grow with it.
    expect(queryShape(q(ids(0).concat(ids(100))))).toBeUndefined()
  })

  it('equal values in one query cannot be told apart: the query is analyzed in full', () => {
    const c = counted()
    const q = twoConditions('users', 'email', 'name')
    c.run(q('same', 'same'))
    c.run(q('also', 'also'))
    expect(c.analyses).toBe(2)
    c.run(q('x', 'y'))
    expect(c.analyses).toBe(4)
    const r = c.run(q('z', 'z'))
    expect(c.analyses).toBe(4)
    expect(compiled(r.node).parameters).toEqual([{ deferred: 'probe', plaintext: 'z' }, 'z'])
  })

  it('never cached: per-tenant keys, raw SQL, joins, subqueries, writes', () => {
    const shapes = [
      db.selectFrom('accounts').select('id').where('tenant_id', '=', 't').where('iban', '=', 'x'),
      db.selectFrom('users').select('id').where(sql<boolean>`email = ${'x'}`),
      db.selectFrom('users').innerJoin('accounts', 'accounts.id', 'users.id').select('users.id'),
      db.selectFrom('users').select('id').where('id', 'in', db.selectFrom('accounts').select('id')),
      db.updateTable('users').set({ email: 'x' }).where('id', '=', 1),
    ]
    expect(queryShape(shapes[0]!.toOperationNode())).toBeDefined()
    for (const s of shapes.slice(1)) expect(queryShape(s.toOperationNode())).toBeUndefined()
    // Per-tenant keys: the search's key comes from another value of the query, so the shape is
    // never reused.
    const c = counted()
    const tenant = twoConditions('accounts', 'tenant_id', 'iban')
    c.run(tenant('t1', 'x1'))
    c.run(tenant('t2', 'x2'))
    c.run(tenant('t3', 'x3'))
    expect(c.analyses).toBe(3)
    const r = c.run(tenant('t4', 'x4'))
    expect(c.analyses).toBe(4)
    expect([...r.plan.deferredValues].map((d) => d.keyName)).toEqual(['accounts#tenant_id=t4'])
  })

  it('more shapes than the cache holds: each query is analyzed once, none learnt twice over', () => {
    const c = counted()
    // 600 shapes (a column alias each) in turn, twice: each is evicted before it comes again.
    const q = (i: number) =>
      db
        .selectFrom('users')
        .select(`id as a${i}`)
        .where('email', '=', `v${i}`)
        .toOperationNode() as RootOperationNode
    for (let round = 0; round < 2; round++) for (let i = 0; i < 600; i++) c.run(q(i))
    expect(c.analyses).toBe(1200)
  })
})
