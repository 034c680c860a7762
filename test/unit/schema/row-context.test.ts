import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { contextValue } from '../../../src/fields/context-values.js'
import {
  ConfigError,
  DecryptionError,
  encrypted,
  encryptedSchema,
  QueryRefusedError,
} from '../../../src/index.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyRing } from '../../../src/keys/key-ring.js'
import { decryptRows } from '../../../src/plugin/decrypt-rows.js'
import { EMPTY_PLAN, type QueryPlan } from '../../../src/plugin/plan.js'
import { encryptColumn } from '../../../src/plugin/resolve-values.js'

const SECRET = 'ssn-plaintext-123-45-6789'

function fixture() {
  const schema = encryptedSchema(
    { accounts: { ssn: encrypted.text(), iban: encrypted.text() } },
    { tables: { accounts: { context: ['tenant_id', 'id'] } } },
  )
  const table = schema.table('accounts')!
  const key = new KeyMaterial({ logicalTable: 'accounts', purpose: 'data', version: 1 }, randomBytes(32))
  // A key ring holding one cached key: decryptRows only peeks at the cache when it is warm.
  const ring = { peekKey: () => key } as unknown as KeyRing
  const ssn = table.column('ssn')!
  return { schema, table, key, ring, ssn }
}

const stats = () => ({ decrypted: 0, falsePositives: 0, plaintextReads: 0 })
const slow = <T>(fn: () => Promise<T>) => fn()

describe('contextValue: one canonical string per stored value, whatever the driver returns', () => {
  it('integers as number, decimal string and bigint are one value', () => {
    expect(contextValue(42)).toBe('42')
    expect(contextValue('42')).toBe('42')
    expect(contextValue(42n)).toBe('42')
    expect(contextValue(-0)).toBe('0')
    expect(contextValue(-7)).toBe('-7')
  })

  it('a UUID is lower-cased (PostgreSQL returns uuid in lower case); other strings are kept', () => {
    expect(contextValue('0C0A5F1E-9B1D-4E7A-8F00-ABCDEF012345')).toBe('0c0a5f1e-9b1d-4e7a-8f00-abcdef012345')
    expect(contextValue('Acme')).toBe('Acme')
  })

  it('refuses what has no driver-independent text form', () => {
    for (const v of [null, undefined, 1.5, Number.NaN, new Date(0), true, Buffer.from('x'), {}]) {
      expect(contextValue(v)).toBeUndefined()
    }
  })
})

describe('schema option context', () => {
  it('is resolved in declared order; absent means none', () => {
    const { table } = fixture()
    expect(table.context).toEqual(['tenant_id', 'id'])
    expect(encryptedSchema({ t: { a: encrypted.text() } }).table('t')!.context).toEqual([])
  })

  it.each([
    [[], 'non-empty'],
    [['tenant_id', 'tenant_id'], 'twice'],
    [['ssn'], 'encrypted or blind-index'],
    [['ssn_bidx'], 'encrypted or blind-index'],
  ])('refuses %j', (context, why) => {
    expect(() =>
      encryptedSchema(
        { t: { ssn: encrypted.text({ index: { name: 'ssn_bidx' } }) } },
        { tables: { t: { context } } },
      ),
    ).toThrowError(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringContaining(why) }))
    expect(() => encryptedSchema({ t: {} }, { tables: { t: { context: [''] } } })).toThrow(ConfigError)
  })
})

describe('row context in the AAD', () => {
  it('a value reads back in its own row, under any driver type of the same context', async () => {
    const { ring, ssn, key } = fixture()
    const ct = encryptColumn(key, ssn, SECRET, ['acme', '7'])
    const plan: QueryPlan = { ...EMPTY_PLAN, outputs: [{ name: 'ssn', column: ssn, context: ['t', 'i'] }] }
    for (const id of [7, '7', 7n]) {
      const rows = await decryptRows(ring, plan, [{ t: 'acme', i: id, ssn: ct }], stats(), slow)
      expect(rows[0]!.ssn).toBe(SECRET)
    }
  })

  it('copied to another row or swapped with another tenant: DECRYPT_AUTH_FAILED naming table, column and row context', async () => {
    const { ring, ssn, key } = fixture()
    const ct = encryptColumn(key, ssn, SECRET, ['acme', '7'])
    const plan: QueryPlan = { ...EMPTY_PLAN, outputs: [{ name: 'ssn', column: ssn, context: ['t', 'i'] }] }
    for (const [tenant, id] of [
      ['acme', 8],
      ['other', 7],
    ] as const) {
      let caught: unknown
      try {
        await decryptRows(ring, plan, [{ t: tenant, i: id, ssn: ct }], stats(), slow)
      } catch (error) {
        caught = error
      }
      expect(caught).toBeInstanceOf(DecryptionError)
      const e = caught as DecryptionError
      expect(e.code).toBe('DECRYPT_AUTH_FAILED')
      expect([e.table, e.column]).toEqual(['accounts', 'ssn'])
      expect(e.message).toContain('accounts.ssn')
      expect(e.message).toContain(`(row context tenant_id = "${tenant}", id = "${id}")`)
      expect(e.rowContext).toEqual({ tenant_id: tenant, id: String(id) })
      expect(e.message).not.toContain(SECRET)
    }
  })

  it('a NULL context value: CONTEXT_MISSING, not a guess', async () => {
    const { ring, ssn, key } = fixture()
    const ct = encryptColumn(key, ssn, SECRET, ['acme', '7'])
    const plan: QueryPlan = { ...EMPTY_PLAN, outputs: [{ name: 'ssn', column: ssn, context: ['t', 'i'] }] }
    await expect(
      (async () => decryptRows(ring, plan, [{ t: null, i: 7, ssn: ct }], stats(), slow))(),
    ).rejects.toMatchObject({ code: 'CONTEXT_MISSING', table: 'accounts', column: 'ssn' })
  })

  it('hidden context columns are removed from the rows returned', async () => {
    const { ring, ssn, key } = fixture()
    const ct = encryptColumn(key, ssn, SECRET, ['acme', '7'])
    const plan: QueryPlan = {
      ...EMPTY_PLAN,
      outputs: [{ name: 'ssn', column: ssn, context: ['__kfe_ctx_0', '__kfe_ctx_1'] }],
      hiddenContext: ['__kfe_ctx_0', '__kfe_ctx_1'],
    }
    const rows = await decryptRows(
      ring,
      plan,
      [{ __kfe_ctx_0: 'acme', __kfe_ctx_1: 7, ssn: ct }],
      stats(),
      slow,
    )
    expect(rows).toEqual([{ ssn: SECRET }])
  })

  it('a write without its row context is refused (CONTEXT_MISSING), never encrypted unbound', () => {
    const { ssn, key } = fixture()
    expect(() => encryptColumn(key, ssn, SECRET)).toThrow(QueryRefusedError)
    expect(() => encryptColumn(key, ssn, SECRET, ['acme'])).toThrowError(
      expect.objectContaining({ code: 'CONTEXT_MISSING' }),
    )
  })
})
