import type { UpdateQueryNode } from 'kysely'
import { Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema } from '../../../src/index.js'
import { insertRowContext, plainSets, updateRowContext } from '../../../src/plugin/context-writes.js'
import { compileOnlyDialect } from '../../support/compile-only.js'

// Only to build query trees (nothing runs).
// biome-ignore lint/suspicious/noExplicitAny: table names of the fixture.
const db = new Kysely<any>({ dialect: compileOnlyDialect() })

const table = encryptedSchema(
  { accounts: { ssn: encrypted.text() } },
  { tables: { accounts: { context: ['tenant_id', 'id'] } } },
).table('accounts')!

function contextOf(node: UpdateQueryNode, relation = 'accounts'): string[] {
  return updateRowContext(table, relation, node.where, plainSets(node.updates ?? [], table))
}

describe('updateRowContext: the context an UPDATE fixes', () => {
  it('top-level equalities, through parentheses, qualified or not, `in` with one value', () => {
    const q = db
      .updateTable('accounts')
      .set({ ssn: 'x' })
      .where((eb) => eb.and([eb('accounts.tenant_id', '=', 'acme'), eb.and([eb('id', 'in', [7])])]))
    expect(contextOf(q.toOperationNode() as UpdateQueryNode)).toEqual(['acme', '7'])
  })

  it('an alias qualifies as the relation; another qualifier does not fix anything', () => {
    const ok = db
      .updateTable('accounts as a')
      .set({ ssn: 'x' })
      .where('a.tenant_id', '=', 't')
      .where('a.id', '=', 1)
    expect(contextOf(ok.toOperationNode() as UpdateQueryNode, 'a')).toEqual(['t', '1'])
    const other = db
      .updateTable('accounts as a')
      .set({ ssn: 'x' })
      .where(sql.ref('b.tenant_id'), '=', 't')
      .where('a.id', '=', 1)
    expect(() => contextOf(other.toOperationNode() as UpdateQueryNode, 'a')).toThrowError(
      expect.objectContaining({ code: 'CONTEXT_MISSING' }),
    )
  })

  it('a context column set by the statement wins over the WHERE', () => {
    const q = db
      .updateTable('accounts')
      .set({ tenant_id: 'new', ssn: 'x' })
      .where('tenant_id', '=', 'old')
      .where('id', '=', 2)
    expect(contextOf(q.toOperationNode() as UpdateQueryNode)).toEqual(['new', '2'])
  })

  it.each([
    [
      'under or',
      db
        .updateTable('accounts')
        .set({ ssn: 'x' })
        .where((eb) => eb.or([eb('tenant_id', '=', 't'), eb('id', '=', 1)])),
    ],
    [
      'in with two values',
      db.updateTable('accounts').set({ ssn: 'x' }).where('tenant_id', '=', 't').where('id', 'in', [1, 2]),
    ],
    [
      'a comparison other than =',
      db.updateTable('accounts').set({ ssn: 'x' }).where('tenant_id', '=', 't').where('id', '>', 1),
    ],
    [
      'a column, not a value',
      db
        .updateTable('accounts')
        .set({ ssn: 'x' })
        .where('tenant_id', '=', 't')
        .whereRef('id', '=', 'tenant_id'),
    ],
    [
      'a NULL value',
      db
        .updateTable('accounts')
        .set({ ssn: 'x' })
        .where('tenant_id', '=', 't')
        .where('id', '=', null as never),
    ],
  ])('refused (CONTEXT_MISSING): %s', (_, q) => {
    expect(() => contextOf(q.toOperationNode() as UpdateQueryNode)).toThrowError(
      expect.objectContaining({ code: 'CONTEXT_MISSING' }),
    )
  })
})

describe('insertRowContext', () => {
  it('reads the values by column, camelCase spellings too', () => {
    expect(insertRowContext(table, ['ssn', 'tenantId', 'id'], ['x', 'acme', 5n], true)).toEqual(['acme', '5'])
  })

  it('a missing column or an unusable value is CONTEXT_MISSING naming it', () => {
    expect(() => insertRowContext(table, ['ssn', 'id'], ['x', 1], true)).toThrowError(
      expect.objectContaining({ code: 'CONTEXT_MISSING', message: expect.stringContaining('tenant_id') }),
    )
    expect(() => insertRowContext(table, ['tenant_id', 'id'], ['t', 1.5], true)).toThrowError(
      expect.objectContaining({
        code: 'CONTEXT_MISSING',
        message: expect.stringContaining('context column id'),
      }),
    )
  })
})
