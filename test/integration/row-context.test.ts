import { randomBytes, randomUUID } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  DecryptionError,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { dialectSql, expectRefused, failure } from './plugin-at-rest.js'

const SSN_A = '111-11-1111'
const SSN_B = '222-22-2222'
const IBAN_A = 'DE89370400440532013000'
const IBAN_B = 'FR1420041010050500013M02606'
const IBAN_C = 'GB29NWBK60161331926819'

describe.each(backends())('row context [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let accounts: string
    let serialTable: string
    let keyTable: string
    let jobsTable: string
    let schema: EncryptedSchema
    let encryption: FieldEncryption
    let db: Kysely<TestDB>
    let raw: Kysely<TestDB>
    let ops: FieldEncryptionOps

    beforeAll(async () => {
      accounts = uniqueName('ctx_accounts')
      serialTable = uniqueName('ctx_serial')
      keyTable = uniqueName('kfe_keys')
      jobsTable = uniqueName('kfe_jobs')
      schema = encryptedSchema(
        {
          [accounts]: {
            ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
            iban: encrypted.text({ index: { name: 'iban_bidx' } }),
          },
          [serialTable]: { secret: encrypted.text() },
        },
        {
          tables: {
            [accounts]: { context: ['tenant_id', 'id'] },
            [serialTable]: { context: ['id'] },
          },
        },
      )
      const provider = localKeyProvider({ id: 'local:ctx', key: randomBytes(32) })
      encryption = fieldEncryption({
        schema,
        keyProvider: provider,
        keyTable,
        metadataTtlMs: 50,
        verifySchema: onlyTables(accounts, serialTable),
      })
      const [appDialect, rawDialect] = backend.createDialectPair()
      db = new Kysely<TestDB>({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] })
      raw = new Kysely<TestDB>({ dialect: rawDialect })
      const family = backend.family
      await raw.schema
        .createTable(accounts)
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('name', 'varchar(100)')
        .$call(addEncryptedColumns(schema, accounts, family))
        .execute()
      await createBlindIndexes(raw, schema, accounts)
      await raw.schema
        .createTable(serialTable)
        .addColumn('id', family === 'postgres' ? 'serial' : 'integer', (c) =>
          family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .$call(addEncryptedColumns(schema, serialTable, family))
        .execute()
      await encryption.init(db)
      ops = fieldEncryptionOps({
        db: raw,
        schema,
        keyProvider: provider,
        keyTable,
        jobsTable,
        metadataTtlMs: 50,
      })
    })

    afterAll(async () => {
      for (const t of [accounts, serialTable, keyTable, jobsTable, `${jobsTable}_batches`]) {
        await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      }
      await ops?.close()
      await encryption?.close()
      await db?.destroy()
      if (backend.name !== 'pglite') await raw?.destroy()
    })

    const count = async (table: string) =>
      Number(
        (
          await raw
            .selectFrom(table)
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirst()
        )?.n,
      )

    /** Inserts one account through the plugin; returns its id. */
    async function account(tenant: string, ssn: string, iban: string, name = 'acct'): Promise<string> {
      const id = randomUUID()
      await db.insertInto(accounts).values({ id, tenant_id: tenant, name, ssn, iban }).execute()
      return id
    }

    it('an insert binds each row to its context; selects decrypt with it, selected or not', async () => {
      const a = await account('acme', SSN_A, IBAN_A)
      const b = await account('globex', SSN_B, IBAN_B)
      expect(
        await db
          .selectFrom(accounts)
          .select(['id', 'ssn', 'iban'])
          .where('id', 'in', [a, b])
          .orderBy('id')
          .execute(),
      ).toEqual(
        [
          { id: a, ssn: SSN_A, iban: IBAN_A },
          { id: b, ssn: SSN_B, iban: IBAN_B },
        ].sort((x, y) => (x.id < y.id ? -1 : 1)),
      )
      // The query selects neither context column: the plugin reads them under hidden names.
      const query = db.selectFrom(accounts).select('ssn').where('id', '=', a)
      expect(query.compile().sql).toBe(
        dialectSql(
          backend,
          `select "ssn", "${accounts}"."tenant_id" as "__kfe_ctx_0", "${accounts}"."id" as "__kfe_ctx_1" from "${accounts}" where "id" = $1`,
        ),
      )
      expect(await query.execute()).toEqual([{ ssn: SSN_A }])
      // selectAll, an alias, a search through the blind index.
      const row = await db
        .selectFrom(`${accounts} as x`)
        .selectAll('x')
        .where('x.ssn', '=', SSN_B)
        .executeTakeFirstOrThrow()
      expect(row).toMatchObject({ id: b, tenant_id: 'globex', ssn: SSN_B, iban: IBAN_B })
      expect(Object.keys(row).some((k) => k.startsWith('__kfe'))).toBe(false)
    })

    it('an insert without a context value, or with one the database generates: CONTEXT_MISSING, nothing sent', async () => {
      const before = await count(accounts)
      const e = await expectRefused(
        () => db.insertInto(accounts).values({ id: randomUUID(), ssn: SSN_A }).execute(),
        'CONTEXT_MISSING',
      )
      expect(e.message).toContain('tenant_id')
      expect(e.hint).toContain('generate ids in the application')
      await expectRefused(
        () => db.insertInto(accounts).values({ id: randomUUID(), tenant_id: null, ssn: SSN_A }).execute(),
        'CONTEXT_MISSING',
      )
      expect(await count(accounts)).toBe(before)
      // A serial / auto-increment id is generated after the ciphertexts would be made.
      await expectRefused(
        () => db.insertInto(serialTable).values({ secret: 's' }).execute(),
        'CONTEXT_MISSING',
      )
      await expectRefused(
        () => db.insertInto(serialTable).values({ id: sql`default`, secret: 's' }).execute(),
        'CONTEXT_MISSING',
      )
      // With the id given by the application, the same table works.
      await db.insertInto(serialTable).values({ id: 41, secret: 's41' }).execute()
      expect(await db.selectFrom(serialTable).select('secret').where('id', '=', 41).execute()).toEqual([
        { secret: 's41' },
      ])
    })

    it('a ciphertext swapped within a column, or copied to another row: DECRYPT_AUTH_FAILED naming table, column and row context', async () => {
      await raw.deleteFrom(accounts).execute()
      const a = await account('acme', SSN_A, IBAN_A, 'swap-a')
      const b = await account('acme', SSN_B, IBAN_B, 'swap-b')
      const c = await account('initech', SSN_B, IBAN_C, 'copy-c')
      const stored = async (id: string) =>
        raw
          .selectFrom(accounts)
          .select(['ssn', 'ssn_bidx', 'iban', 'iban_bidx'])
          .where('id', '=', id)
          .executeTakeFirstOrThrow()
      const [sa, sb] = [await stored(a), await stored(b)]
      // Swap the two rows' SSN ciphertexts (and their blind indexes) in the same tenant.
      await raw
        .updateTable(accounts)
        .set({ ssn: sb.ssn, ssn_bidx: sb.ssn_bidx })
        .where('id', '=', a)
        .execute()
      await raw
        .updateTable(accounts)
        .set({ ssn: sa.ssn, ssn_bidx: sa.ssn_bidx })
        .where('id', '=', b)
        .execute()
      const swapped = await failure(() =>
        db.selectFrom(accounts).select(['id', 'ssn']).where('id', '=', a).execute(),
      )
      expect(swapped).toBeInstanceOf(DecryptionError)
      const e = swapped as DecryptionError
      expect([e.code, e.table, e.column]).toEqual(['DECRYPT_AUTH_FAILED', accounts, 'ssn'])
      expect(e.message).toContain(`${accounts}.ssn`)
      expect(e.message).toContain(`tenant_id = "acme", id = "${a}"`)
      expect(e.rowContext).toEqual({ tenant_id: 'acme', id: a })
      for (const secret of [SSN_A, SSN_B, '111111111', '222222222']) expect(e.message).not.toContain(secret)
      // A search for the swapped row's SSN finds row b by its (moved) index, and refuses to return it.
      expect(
        (
          (await failure(() =>
            db
              .selectFrom(accounts)
              .select('id')
              .where('ssn', '=', SSN_A)
              .where('tenant_id', '=', 'acme')
              .execute(),
          )) as DecryptionError
        )?.code,
      ).toBe('DECRYPT_AUTH_FAILED')
      // Copy account a's IBAN ciphertext into another tenant's account c (its unique index stays c's).
      await raw.updateTable(accounts).set({ iban: sa.iban }).where('id', '=', c).execute()
      const copied = (await failure(() =>
        db.selectFrom(accounts).select('iban').where('id', '=', c).execute(),
      )) as DecryptionError
      expect(copied).toBeInstanceOf(DecryptionError)
      expect(copied.code).toBe('DECRYPT_AUTH_FAILED')
      expect(copied.message).toContain(`tenant_id = "initech", id = "${c}"`)
      expect(copied.message).not.toContain(IBAN_A)
      await raw.deleteFrom(accounts).where('id', 'in', [a, b, c]).execute()
    })

    it('an update of encrypted columns must fix every context column by equality in its WHERE', async () => {
      await raw.deleteFrom(accounts).execute()
      const a = await account('acme', SSN_A, IBAN_A, 'upd')
      const before = await raw
        .selectFrom(accounts)
        .select('ssn')
        .where('id', '=', a)
        .executeTakeFirstOrThrow()
      for (const run of [
        () => db.updateTable(accounts).set({ ssn: SSN_B }).where('id', '=', a).execute(),
        () => db.updateTable(accounts).set({ ssn: SSN_B }).where('tenant_id', '=', 'acme').execute(),
        () =>
          db
            .updateTable(accounts)
            .set({ ssn: SSN_B })
            .where((eb) => eb.or([eb('id', '=', a), eb('tenant_id', '=', 'acme')]))
            .execute(),
        () =>
          db
            .updateTable(accounts)
            .set({ ssn: SSN_B })
            .where('id', 'in', [a, randomUUID()])
            .where('tenant_id', '=', 'acme')
            .execute(),
      ]) {
        const e = await expectRefused(run, 'CONTEXT_MISSING')
        expect(e.hint).toBeDefined()
      }
      expect(
        (await raw.selectFrom(accounts).select('ssn').where('id', '=', a).executeTakeFirstOrThrow()).ssn,
      ).toEqual(before.ssn)
      await db
        .updateTable(accounts)
        .set({ ssn: SSN_B })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', a)
        .execute()
      expect(await db.selectFrom(accounts).select('ssn').where('id', '=', a).execute()).toEqual([
        { ssn: SSN_B },
      ])
      // Plain columns and NULL need no context.
      await db.updateTable(accounts).set({ name: 'renamed', iban: null }).where('id', '=', a).execute()
      expect(await db.selectFrom(accounts).select(['name', 'iban']).where('id', '=', a).execute()).toEqual([
        { name: 'renamed', iban: null },
      ])
    })

    it('an update of a context column is refused unless every encrypted column is rewritten with it', async () => {
      await raw.deleteFrom(accounts).execute()
      const a = await account('acme', SSN_A, IBAN_A, 'move')
      const e = await expectRefused(
        () => db.updateTable(accounts).set({ tenant_id: 'globex' }).where('id', '=', a).execute(),
        'QUERY_REFUSED',
      )
      expect(e.message).toContain('tenant_id')
      await expectRefused(
        () => db.updateTable(accounts).set({ tenant_id: 'globex', ssn: SSN_B }).where('id', '=', a).execute(),
        'QUERY_REFUSED',
      )
      // Qualified (which MySQL runs, PostgreSQL rejects), and unqualified in a multi-table update
      // (MySQL): the same refusal, before anything is sent.
      await expectRefused(
        () =>
          db
            .updateTable(`${accounts} as x`)
            .set('x.tenant_id' as never, 'globex' as never)
            .where('x.id', '=', a)
            .execute(),
        'QUERY_REFUSED',
      )
      await expectRefused(
        () =>
          db
            .updateTable([`${accounts} as x`, `${accounts} as y`] as never)
            .set('tenant_id' as never, 'globex' as never)
            .where('x.id' as never, '=', a as never)
            .execute(),
        'QUERY_REFUSED',
      )
      await db
        .updateTable(accounts)
        .set({ tenant_id: 'globex', ssn: SSN_B, iban: IBAN_B })
        .where('id', '=', a)
        .where('tenant_id', '=', 'acme')
        .execute()
      expect(
        await db.selectFrom(accounts).select(['tenant_id', 'ssn', 'iban']).where('id', '=', a).execute(),
      ).toEqual([{ tenant_id: 'globex', ssn: SSN_B, iban: IBAN_B }])
    })

    it('shapes whose row context is not at hand are refused: derived tables, upserts, copies from another row', async () => {
      await raw.deleteFrom(accounts).execute()
      const a = await account('acme', SSN_A, IBAN_A, 'shapes')
      const derived = await expectRefused(
        () =>
          db
            .selectFrom(db.selectFrom(accounts).select(['id', 'ssn']).as('s'))
            .select('s.ssn')
            .execute(),
        'QUERY_REFUSED',
      )
      expect(derived.message).toContain('tenant_id, id')
      const upsert =
        backend.family === 'postgres'
          ? () =>
              db
                .insertInto(accounts)
                .values({ id: a, tenant_id: 'acme', ssn: SSN_B })
                .onConflict((oc) => oc.column('id').doUpdateSet({ ssn: SSN_B }))
                .execute()
          : () =>
              db
                .insertInto(accounts)
                .values({ id: a, tenant_id: 'acme', ssn: SSN_B })
                .onDuplicateKeyUpdate({ ssn: SSN_B })
                .execute()
      await expectRefused(upsert, 'QUERY_REFUSED')
      await expectRefused(
        () =>
          db
            .updateTable(accounts)
            .set((eb) => ({ iban: eb.ref('iban') }))
            .where('tenant_id', '=', 'acme')
            .where('id', '=', a)
            .execute(),
        'QUERY_REFUSED',
      )
      expect(await db.selectFrom(accounts).select(['ssn', 'iban']).where('id', '=', a).execute()).toEqual([
        { ssn: SSN_A, iban: IBAN_A },
      ])
    })

    it.runIf(backend.family === 'postgres')(
      "returning decrypts with the returned row's context",
      async () => {
        const id = randomUUID()
        const inserted = await db
          .insertInto(accounts)
          .values({ id, tenant_id: 'acme', ssn: SSN_A })
          .returning(['id', 'ssn'])
          .execute()
        expect(inserted).toEqual([{ id, ssn: SSN_A }])
        const updated = await db
          .updateTable(accounts)
          .set({ ssn: SSN_B })
          .where('tenant_id', '=', 'acme')
          .where('id', '=', id)
          .returningAll()
          .executeTakeFirstOrThrow()
        expect(updated).toMatchObject({ id, tenant_id: 'acme', ssn: SSN_B })
        expect(Object.keys(updated).some((k) => k.startsWith('__kfe'))).toBe(false)
      },
    )

    it('a compiled query run a second time (the wrapper re-derives its plan from the tree) keeps its row context', async () => {
      await raw.deleteFrom(accounts).execute()
      const a = await account('acme', SSN_A, IBAN_A, 'again')
      const select = db.selectFrom(accounts).select('ssn').where('id', '=', a).compile()
      expect(await db.executeQuery(select)).toMatchObject({ rows: [{ ssn: SSN_A }] })
      expect(await db.executeQuery(select)).toMatchObject({ rows: [{ ssn: SSN_A }] })
      const update = db
        .updateTable(accounts)
        .set({ ssn: SSN_B })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', a)
        .compile()
      await db.executeQuery(update)
      await db.executeQuery(update)
      expect(await db.selectFrom(accounts).select('ssn').where('id', '=', a).execute()).toEqual([
        { ssn: SSN_B },
      ])
    })

    it('explicit encrypt/decrypt for raw SQL take the row context', async () => {
      const id = randomUUID()
      const ct = await encryption.encrypt(accounts, 'ssn', SSN_A, { tenant_id: 'acme', id })
      expect(await encryption.decrypt(accounts, 'ssn', ct, { tenant_id: 'acme', id })).toBe(SSN_A)
      expect(
        (
          (await failure(() =>
            encryption.decrypt(accounts, 'ssn', ct, { tenant_id: 'acme', id: randomUUID() }),
          )) as DecryptionError
        ).code,
      ).toBe('DECRYPT_AUTH_FAILED')
      expect(
        ((await failure(() => encryption.encrypt(accounts, 'ssn', SSN_A))) as DecryptionError).code,
      ).toBe('CONTEXT_MISSING')
    })

    it('rotation: the re-encryption job reads each row with its context and rewrites it bound to the same context', async () => {
      await raw.deleteFrom(accounts).execute()
      const rows = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          account(i % 2 === 0 ? 'acme' : 'globex', `333-33-${1000 + i}`, `IBAN${i}`),
        ),
      )
      const before = await raw.selectFrom(accounts).select(['id', 'ssn']).execute()
      const result = await ops.rotate(accounts, { purpose: 'data' })
      expect(result).toMatchObject({ state: 'active', previous: 1, version: 2 })
      const after = await raw.selectFrom(accounts).select(['id', 'ssn']).execute()
      const changed = after.filter(
        (r) => !Buffer.from(r.ssn).equals(Buffer.from(before.find((b) => b.id === r.id)!.ssn)),
      )
      expect(changed).toHaveLength(rows.length)
      const read = await db.selectFrom(accounts).select(['id', 'ssn']).execute()
      expect(read).toHaveLength(rows.length)
      for (const r of read) expect(r.ssn).toMatch(/^333-33-1\d{3}$/)
      const verified = await ops.verify(accounts)
      expect(verified).toMatchObject({ ok: true, failed: 0, rows: rows.length })
    })
  })
})
