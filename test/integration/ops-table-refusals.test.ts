import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, localKeyProvider } from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { newPGlite } from '../support/pglite.js'

/**
 * The operations refuse a table they cannot act on by name, before any statement: `shred` of a
 * table without per-tenant keys (`OPS_INVALID`, docs/errors.md), and a bare table name that the
 * schema annotates in two database schemas (`CONFIG_INVALID`, naming the ambiguity).
 */
describe('ops: tables refused by name', () => {
  const pglite = newPGlite()
  // biome-ignore lint/suspicious/noExplicitAny: no table is created
  const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
  const ops = fieldEncryptionOps({
    db,
    schema: encryptedSchema({
      'app.users': { email: encrypted.text() },
      'archive.users': { email: encrypted.text() },
      notes: { body: encrypted.text() },
    }),
    keyProvider: localKeyProvider({ id: 'local:refusals', key: randomBytes(32) }),
    keyTable: 'refusal_keys',
    jobsTable: 'refusal_jobs',
  })
  afterAll(async () => {
    await ops.close()
    await db.destroy()
  })

  it('shred of a table without keyScope is OPS_INVALID, and nothing is created', async () => {
    const error = await ops.shred('notes', { tenant: 'acme' }).catch((e: unknown) => e)
    expect(error).toMatchObject({ code: 'OPS_INVALID', table: 'notes' })
    expect(String((error as Error).message)).toContain('has no keyScope')
    const { rows } = await pglite.query<{ n: number }>(
      `select count(*)::int as n from pg_tables where tablename like 'refusal_%'`,
    )
    expect(rows[0]?.n).toBe(0)
  })

  it('a bare name annotated in two schemas is CONFIG_INVALID naming the ambiguity; the qualified name is accepted', async () => {
    for (const run of [
      () => ops.verify('users'),
      () => ops.reencrypt('users'),
      () => ops.status({ table: 'users' }),
    ]) {
      const error = await run().catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'CONFIG_INVALID', table: 'users' })
      expect(String((error as Error).message)).toContain('annotated in several schemas')
      expect(String((error as Error).message)).toContain('app.users')
    }
    // The qualified name gets past the name check: it fails on the table not being there.
    await expect(ops.verify('app.users')).rejects.toMatchObject({
      code: 'SCHEMA_MISMATCH',
      problems: [{ kind: 'table-missing', table: 'app.users' }],
    })
  })
})
