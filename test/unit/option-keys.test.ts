import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { KeyCache } from '../../src/keys/key-cache.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { newPGlite } from '../support/pglite.js'

/**
 * A misspelt option key is refused, naming it and the option it is likely meant to be, at every
 * level: it used to be dropped and its default taken (`contxt` left every value unbound to its
 * row; `dryrun` ran an operation for real). So are values of a shape a default would replace.
 */
describe('unknown and misshapen option keys', () => {
  const schema = encryptedSchema({ users: { email: encrypted.text() } })
  const keyProvider = localKeyProvider({ id: 'local:keys', key: randomBytes(32) })
  const invalid = (message: RegExp) =>
    expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(message) })

  it('fieldEncryption, its cache and its verifySchema', () => {
    expect(() => fieldEncryption({ schema, keyProvider, metadataTTLMs: 1000 } as never)).toThrow(
      invalid(/fieldEncryption: unknown option metadataTTLMs \(did you mean metadataTtlMs\?\)/),
    )
    expect(() => fieldEncryption({ schema, keyProvider, keytable: 'k' } as never)).toThrow(
      invalid(/did you mean keyTable/),
    )
    expect(() => fieldEncryption({ schema, keyProvider, cache: { ttl: 5 } } as never)).toThrow(
      invalid(/cache: unknown option ttl/),
    )
    expect(() =>
      fieldEncryption({ schema, keyProvider, verifySchema: { unannotated: false } } as never),
    ).toThrow(invalid(/verifySchema: unknown option unannotated/))
  })

  it('encryptedSchema: its options, a table of its options, and a table it does not hold', () => {
    const d = { accounts: { ssn: encrypted.text() } }
    expect(() => encryptedSchema(d, { tabels: {} } as never)).toThrow(invalid(/did you mean tables/))
    expect(() => encryptedSchema(d, { omitBlindIndex: true } as never)).toThrow(
      invalid(/did you mean omitBlindIndexes/),
    )
    expect(() => encryptedSchema(d, { tables: { accounts: { contxt: ['id'] } } } as never)).toThrow(
      invalid(/tables\.accounts: unknown option contxt \(did you mean context\?\)/),
    )
    expect(() => encryptedSchema(d, { tables: { account: { context: ['id'] } } } as never)).toThrow(
      invalid(/tables\.account names no table of the schema/),
    )
    expect(() => encryptedSchema(d, { omitBlindIndexes: 'yes' } as never)).toThrow(invalid(/true or false/))
  })

  it('names that are empty or not strings, a primary key that names nothing, an index given as null', () => {
    const d = { accounts: { ssn: encrypted.text() } }
    for (const primaryKey of [[], '', 5, ['id', '']])
      expect(() => encryptedSchema(d, { tables: { accounts: { primaryKey } } } as never)).toThrow(
        invalid(/tables\.accounts\.primaryKey must be a column name/),
      )
    for (const logicalName of ['', 5])
      expect(() => encryptedSchema(d, { tables: { accounts: { logicalName } } } as never)).toThrow(
        invalid(/logicalName must be a non-empty string/),
      )
    for (const options of [{ storedAs: '' }, { logicalName: 5 }])
      expect(() => encrypted.text(options as never)).toThrow(invalid(/must be a non-empty string/))
    expect(() => encrypted.text({ index: null } as never)).toThrow(invalid(/option index must be/))
  })

  it('a column: a misspelt option, options that are not an object, a flag given as a string', () => {
    expect(() => encrypted.text({ maxbytes: 10 } as never)).toThrow(invalid(/did you mean maxBytes/))
    expect(() => encrypted.text(null as never)).toThrow(invalid(/options must be an object/))
    expect(() => encrypted.text({ migratingFromPlaintext: 'false' } as never)).toThrow(
      invalid(/true or false/),
    )
  })

  it('addEncryptedColumns: the SQL family, its options, and notNull as a list', () => {
    expect(() => addEncryptedColumns(schema, 'users', 'pg' as never)).toThrow(invalid(/'postgres'.*'mysql'/))
    expect(() => addEncryptedColumns(schema, 'users', 'postgres', { notnull: ['email'] } as never)).toThrow(
      invalid(/did you mean notNull/),
    )
    expect(() => addEncryptedColumns(schema, 'users', 'postgres', { notNull: 'email' } as never)).toThrow(
      invalid(/a list of columns/),
    )
  })

  it('a key cache whose ttlMs + graceMs Node timers cannot count', () => {
    expect(() => new KeyCache({ ttlMs: 2_592_000_000 })).toThrow(invalid(/at most 2147483647 ms/))
  })

  describe('the operations', () => {
    const pglite = newPGlite()
    // biome-ignore lint/suspicious/noExplicitAny: no table is read
    const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
    const ops = fieldEncryptionOps({ db, schema, keyProvider, keyTable: 'ok_keys', jobsTable: 'ok_jobs' })
    afterAll(async () => {
      await ops.close()
      await db.destroy()
    })

    it('a misspelt dryRun is OPS_INVALID, and nothing is created', async () => {
      await expect(ops.init({ dryrun: true } as never)).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/ops\.init: unknown option dryrun \(did you mean dryRun\?\)/),
      })
      await expect(ops.rewrap({ from: 'a', to: 'b', dryrun: true } as never)).rejects.toMatchObject({
        code: 'OPS_INVALID',
      })
      const { rows } = await pglite.query<{ n: number }>(
        `select count(*)::int as n from pg_tables where tablename in ('ok_keys', 'ok_jobs')`,
      )
      expect(rows[0]?.n).toBe(0)
    })

    it('a page size that is not a positive integer is OPS_INVALID (0 made verify read no row and pass)', async () => {
      for (const pageSize of [0, -1, 1.5, Number.NaN])
        await expect(ops.verify('users', { pageSize })).rejects.toMatchObject({ code: 'OPS_INVALID' })
      await expect(ops.verify('users', { maxListed: -1 })).rejects.toMatchObject({ code: 'OPS_INVALID' })
      // A purpose or version of the wrong spelling or type is not a missing key ("run kfe init").
      await expect(ops.retire('users', { purpose: 'data', version: '1' } as never)).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/version must be a key version/),
      })
      await expect(ops.retire('users', { purpose: 'data', version: 1n } as never)).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/got 1n/),
      })
      // An option of a wider type left undefined changes nothing, and is not refused.
      await expect(
        ops.rotateTenants('users', { purpose: 'data', tenant: undefined } as never),
      ).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/no per-tenant keys/),
      })
      await expect(ops.rotate('users', { purpose: 'dat' } as never)).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/purpose must be 'data' or 'index'/),
      })
      await expect(ops.status({ tables: ['users'] } as never)).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/did you mean table\?/),
      })
    })

    it('a tenant for a table without per-tenant keys is OPS_INVALID in status, before the database is read (status ignored it)', async () => {
      await expect(ops.status({ table: 'users', tenant: 'acme' })).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/users has no per-tenant keys \(keyScope\): omit the tenant/),
      })
      await expect(ops.status({ tenant: 'acme' })).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringMatching(/without its table/),
      })
    })
  })
})
