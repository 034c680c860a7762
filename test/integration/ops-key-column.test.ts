import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addEncryptedColumns, encrypted, encryptedSchema, localKeyProvider } from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

/**
 * The jobs, `verify` and the dry runs page through a table by one column (keyset pagination) and
 * write by it: a column named in `primaryKeys` that is not unique, or may be NULL, would have
 * pages skip rows (the rest of a run of equal keys past a page's end; NULL keys always) and a
 * write reach another row. Such a column is refused before anything is read: by the catalog when
 * a unique index covers it, else by a scan of its values.
 */
describe.each(backends())('ops: the column the jobs page by [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('ops_keycol')
    const keyTable = `${table}_keys`
    const jobsTable = `${table}_jobs`
    const schema = encryptedSchema(
      { [table]: { email: encrypted.text() } },
      { tables: { [table]: { primaryKey: ['org', 'n'] } } },
    )
    const kek = randomBytes(32)
    let raw: Kysely<TestDB>
    beforeAll(async () => {
      raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
      await raw.schema
        .createTable(table)
        .addColumn('org', 'varchar(5)', (c) => c.notNull())
        .addColumn('n', 'integer', (c) => c.notNull())
        .addColumn('code', 'varchar(10)', (c) => c.notNull().unique())
        .addColumn('maybe', 'varchar(10)', (c) => c.unique())
        .addColumn('ordinal', 'integer', (c) => c.notNull())
        .addColumn('loose', 'integer', (c) => c.notNull())
        .addColumn('doc', backend.family === 'mysql' ? 'json' : 'jsonb')
        .$call(addEncryptedColumns(schema, table, backend.family))
        .addPrimaryKeyConstraint(`${table}_pk`, ['org', 'n'])
        .execute()
      await sql`insert into ${sql.table(table)} (org, n, code, maybe, ordinal, loose, doc) values ('a', 1, 'a1', null, 10, 1, '{"a":1}'), ('b', 1, 'b1', null, 20, 2, '{"a":2}')`.execute(
        raw,
      )
      // Not unique: a partitioned table's key column has only such an index of its own.
      await raw.schema.createIndex(`${table}_ordinal`).on(table).column('ordinal').execute()
    }, 120_000)
    afterAll(async () => {
      if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
      await raw?.destroy()
    })

    /** `verify` of the table by ops paging through `column` (the default when undefined): its result, or its error. */
    const verifyBy = async (column: string | undefined): Promise<unknown> => {
      const ops = fieldEncryptionOps({
        db: raw,
        schema,
        // Its own provider object on the same KEK: closing the instance closes it.
        keyProvider: localKeyProvider({ id: 'local:keycol', key: Buffer.from(kek) }),
        keyTable,
        jobsTable,
        ...(column === undefined ? {} : { primaryKeys: { [table]: column } }),
      })
      try {
        await ops.init()
        return await ops.verify(table).catch((error: unknown) => error)
      } finally {
        await ops.close()
      }
    }

    it('a composite primary key without primaryKeys, a column with repeated values, NULLs, no index, a json type, or none at all is refused (CONFIG_INVALID)', async () => {
      // n repeats, maybe is NULL, loose has no index (each page would sort the table), doc is json.
      for (const column of [undefined, 'n', 'maybe', 'loose', 'doc', 'no_such_column']) {
        const refused = await verifyBy(column)
        expect(refused).toMatchObject({ name: 'ConfigError', code: 'CONFIG_INVALID' })
        expect(String((refused as Error).message)).toContain(`primaryKeys.${table}`)
      }
    })

    it('rotate with an unusable paging column is refused before anything is staged (it activated the new version, then the re-encryption refused)', async () => {
      const ops = fieldEncryptionOps({
        db: raw,
        schema,
        keyProvider: localKeyProvider({ id: 'local:keycol', key: Buffer.from(kek) }),
        keyTable,
        jobsTable,
        primaryKeys: { [table]: 'loose' },
      })
      try {
        await ops.init()
        const before = await raw.selectFrom(keyTable).select(['purpose', 'version', 'state']).execute()
        const refused = await ops.rotate(table, { purpose: 'data' }).catch((e: unknown) => e)
        expect(refused).toMatchObject({ name: 'ConfigError', code: 'CONFIG_INVALID' })
        expect(await raw.selectFrom(keyTable).select(['purpose', 'version', 'state']).execute()).toEqual(
          before,
        )
      } finally {
        await ops.close()
      }
    })

    it('a table of the schema that does not exist (misspelt, or not migrated yet) is SCHEMA_MISMATCH table-missing, not a paging problem', async () => {
      const absent = `${table}_absent`
      const ops = fieldEncryptionOps({
        db: raw,
        schema: encryptedSchema({
          [absent]: { note: encrypted.text() },
          [table]: { email: encrypted.text() },
        }),
        keyProvider: localKeyProvider({ id: 'local:keycol', key: Buffer.from(kek) }),
        keyTable,
        jobsTable,
      })
      try {
        // kfe init makes its keys (it may run before the migrations), and names the table that
        // is not there, dry run or not; the one that is there is not named.
        expect(await ops.init({ dryRun: true })).toMatchObject({ missingTables: [absent] })
        const init = await ops.init()
        expect(init.missingTables).toEqual([absent])
        expect(init.keys.filter((k) => k.table === absent && k.created)).toHaveLength(2)
        for (const run of [() => ops.verify(absent), () => ops.reencrypt(absent)]) {
          const error = await run().catch((e: unknown) => e)
          expect(error).toMatchObject({
            code: 'SCHEMA_MISMATCH',
            problems: [{ kind: 'table-missing', table: absent }],
          })
        }
      } finally {
        await ops.close()
      }
    })

    it('a NOT NULL column with a unique index of its own is accepted, and every row is seen', async () => {
      expect(await verifyBy('code')).toMatchObject({ ok: true, rows: 2 })
    })

    it('an indexed column no unique index covers (a partitioned table has none on one column) is accepted while its values are unique and not NULL', async () => {
      expect(await verifyBy('ordinal')).toMatchObject({ ok: true, rows: 2 })
    })
  })
})
