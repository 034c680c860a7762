import { describe, expect, it } from 'vitest'
import { DecryptionError, encrypted, encryptedSchema } from '../../../src/index.js'
import type { KeyRing } from '../../../src/keys/key-ring.js'
import { decryptRows } from '../../../src/plugin/decrypt-rows.js'
import { EMPTY_PLAN, type QueryPlan } from '../../../src/plugin/plan.js'

// A value that is not a ciphertext fails before any key is looked up: no key ring is needed.
const NO_RING = {} as KeyRing
const slow = <T>(fn: () => Promise<T>) => fn()
const MARKER = 'kfe-marker-not-ciphertext'

function planFor(table: string, primaryKey?: string | string[]) {
  const schema = encryptedSchema(
    { [table]: { email: encrypted.text(), code: encrypted.text() } },
    primaryKey === undefined ? {} : { tables: { [table]: { primaryKey } } },
  )
  const column = schema.table(table)!.column('email')!
  const plan: QueryPlan = { ...EMPTY_PLAN, outputs: [{ name: 'email', column }] }
  return plan
}

async function notCiphertext(plan: QueryPlan, row: Record<string, unknown>): Promise<DecryptionError> {
  const stats = { decrypted: 0, falsePositives: 0, plaintextReads: 0 }
  try {
    await decryptRows(NO_RING, plan, [row], stats, slow)
  } catch (error) {
    expect(error).toBeInstanceOf(DecryptionError)
    expect((error as DecryptionError).code).toBe('NOT_CIPHERTEXT')
    expect((error as DecryptionError).message).not.toContain(MARKER)
    return error as DecryptionError
  }
  throw new Error('expected NOT_CIPHERTEXT')
}

describe('decryptRows: NOT_CIPHERTEXT', () => {
  const legacy = Buffer.from(`${MARKER}@x.io`)

  it('names the selected primary key (default id) and the plaintext-migration path', async () => {
    const e = await notCiphertext(planFor('users'), { id: 42, email: legacy })
    expect(e.message).toContain('(result row with id = 42)')
    expect(e.message).toContain('migratingFromPlaintext: true')
    expect(e.table).toBe('users')
    expect(e.column).toBe('email')
  })

  it('a composite primaryKey option, strings quoted', async () => {
    const e = await notCiphertext(planFor('accounts', ['tenant', 'n']), {
      tenant: 'acme',
      n: 7n,
      email: legacy,
    })
    expect(e.message).toContain('(result row with tenant = "acme", n = 7)')
  })

  it("no row named by a key that is an encrypted output's alias (select('code as id')): it holds a plaintext by then", async () => {
    const schema = encryptedSchema({ users: { email: encrypted.text(), code: encrypted.text() } })
    const table = schema.table('users')!
    // `code as id`: the row's `id` is an encrypted column's value (decrypted in place, in a real
    // query, before a later output fails; here it is not a ciphertext either, and fails first).
    const plan: QueryPlan = {
      ...EMPTY_PLAN,
      outputs: [
        { name: 'id', column: table.column('code')! },
        { name: 'email', column: table.column('email')! },
      ],
    }
    const e = await notCiphertext(plan, { id: 'decrypted-code', email: legacy })
    expect(e.message).not.toContain('result row')
    expect(e.message).not.toContain('decrypted-code')
  })

  // A primary key that is an encrypted column is refused by encryptedSchema (column-names.test.ts).
  it('no row named when the key is not selected or is not a short scalar', async () => {
    const rows: [QueryPlan, Record<string, unknown>][] = [
      [planFor('users'), { email: legacy }],
      [planFor('users'), { id: 'x'.repeat(65), email: legacy }],
      [planFor('users'), { id: new Date(0), email: legacy }],
    ]
    for (const [plan, row] of rows) {
      expect((await notCiphertext(plan, row)).message).not.toContain('result row')
    }
  })
})
