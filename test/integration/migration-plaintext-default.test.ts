import { randomBytes } from 'node:crypto'
import type { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  applyMigrationStep,
  checkMigrationState,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
  type MigrationPhase,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { columnType } from '../../src/schema/migration-ddl.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { newPGlite } from '../support/pglite.js'

/**
 * A plaintext column with a default (`email varchar(100) not null default 'none'`) under
 * migration: an insert that omits the column got the default in the plaintext column and NULL in
 * the encrypted one, so `backfilled` processes read 'none' and `cut-over` ones NULL, and a process
 * restarted afterwards was refused (MIGRATION_PHASE_CONFLICT: rows not backfilled). The `add` and
 * `cutover` steps refuse such a column (MIGRATION_REFUSED), and the startup check refuses every
 * phase after `added` while it has one.
 */
describe.each(backends())('a plaintext column with a default under migration [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('mig_dflt')
    const keyTable = `${table}_keys`
    const jobsTable = `${table}_jobs`
    const kek = randomBytes(32)
    const provider = () => localKeyProvider({ id: 'local:mig-dflt', key: Buffer.from(kek) })
    const schema = (phase: MigrationPhase) =>
      encryptedSchema({
        [table]: {
          email: encrypted.text({
            storedAs: 'email_encrypted',
            migration: phase,
            index: { name: 'email_bidx' },
            maxBytes: 100,
          }),
        },
      })
    // PGlite: every Kysely on the one in-memory database, which the first destroy() closes.
    let pglite: PGlite | undefined
    const dialect = (): Dialect =>
      backend.name === 'pglite' ? new PGliteDialect(pglite as PGlite) : backend.createDialect()
    let raw: Kysely<TestDB>
    const opened: Array<{ close(): Promise<void> }> = []
    const apps: Kysely<TestDB>[] = []
    const app = (phase: MigrationPhase) => {
      const enc = fieldEncryption({
        schema: schema(phase),
        keyProvider: provider(),
        keyTable,
        verifySchema: false,
      })
      const db = new Kysely<TestDB>({ dialect: enc.wrap(dialect()), plugins: [enc.plugin] })
      opened.push(enc)
      apps.push(db)
      return db
    }
    const opsIn = (phase: MigrationPhase): FieldEncryptionOps => {
      const ops = fieldEncryptionOps({
        db: raw,
        schema: schema(phase),
        keyProvider: provider(),
        keyTable,
        jobsTable,
      })
      opened.push(ops)
      return ops
    }
    const setDefault = (value: 'none' | null) =>
      sql`alter table ${sql.table(table)} alter column email ${value === null ? sql`drop default` : sql`set default 'none'`}`.execute(
        raw,
      )
    const failure = (run: () => Promise<unknown>) =>
      run().then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      )
    const rowsWithId = async (id: number) =>
      Number(
        (
          await sql<{
            n: number | string
          }>`select count(*) as n from ${sql.table(table)} where id = ${id}`.execute(raw)
        ).rows[0]?.n,
      )

    beforeAll(async () => {
      if (backend.name === 'pglite') pglite = newPGlite()
      raw = new Kysely<TestDB>({ dialect: dialect() })
      await sql`create table ${sql.table(table)} (id integer primary key, name varchar(50),
        email varchar(100) not null default 'none')`.execute(raw)
      await sql`insert into ${sql.table(table)} (id, name, email) values (1, 'a', 'a@x.io'), (2, 'b', 'b@x.io')`.execute(
        raw,
      )
    }, 120_000)
    afterAll(async () => {
      for (const o of opened) await o.close()
      if (backend.name !== 'pglite') for (const db of apps) await db.destroy()
      if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
      await raw?.destroy()
    })

    it('add refuses the column while it has a default (kfe migration and applyMigrationStep), adding nothing', async () => {
      const ops = opsIn('added')
      for (const run of [
        () => ops.migration(table, 'email', 'add'),
        () => applyMigrationStep(raw, schema('added'), table, 'email', 'add'),
      ]) {
        const error = await failure(run)
        expect(error).toMatchObject({ code: 'MIGRATION_REFUSED', table, column: 'email' })
        expect(error?.message).toMatch(/has `default '?none/)
        expect(error?.message).toContain('drop default')
      }
      expect(await columnType(raw, backend.family, table, 'email_encrypted')).toBeUndefined()
      // Without the default, add runs.
      await setDefault(null)
      await applyMigrationStep(raw, schema('added'), table, 'email', 'add')
      expect(await columnType(raw, backend.family, table, 'email_encrypted')).toBeDefined()
      await ops.init()
      const backfill = opsIn('dual-writing')
      expect(await backfill.encryptColumn(table, 'email')).toMatchObject({ rewritten: 2, failed: 0 })
    })

    it('a default set after add: every phase after added is refused at its first write, nothing sent; added runs; status says so', async () => {
      await setDefault('none')
      for (const phase of ['dual-writing', 'backfilled', 'cut-over'] as const) {
        const error = await failure(() =>
          app(phase).insertInto(table).values({ id: 10, name: 'j' }).execute(),
        )
        expect(error).toMatchObject({ code: 'MIGRATION_PHASE_CONFLICT', table, column: 'email' })
        expect(error?.message).toMatch(/has `default '?none/)
        expect(await rowsWithId(10)).toBe(0)
      }
      const added = await checkMigrationState(raw, schema('added'))
      expect(added[0]?.plaintextDefault).toMatch(/^default '?none/)
      const status = await opsIn('added').status({ table })
      expect(status.tables[0]?.attention.join('\n')).toMatch(/has `default '?none/)
    })

    it('cutover refuses the column while it has a default (kfe migration and applyMigrationStep)', async () => {
      const ops = opsIn('backfilled')
      for (const run of [
        () => ops.migration(table, 'email', 'cutover'),
        () => applyMigrationStep(raw, schema('backfilled'), table, 'email', 'cutover'),
      ]) {
        const error = await failure(run)
        expect(error).toMatchObject({ code: 'MIGRATION_REFUSED', table, column: 'email' })
        expect(error?.message).toMatch(/has `default '?none/)
      }
      const { rows } = await sql<{ nullable: string | boolean }>`select is_nullable as nullable
        from information_schema.columns where table_name = ${table} and column_name = 'email'`.execute(raw)
      expect(rows[0]?.nullable).toBe('NO')
    })

    it('without the default no insert stores two values: backfilled refuses the omitted NOT NULL column; after cutover both phases read NULL, and restarted processes start', async () => {
      await setDefault(null)
      const backfilled = app('backfilled')
      await expect(backfilled.insertInto(table).values({ id: 3, name: 'c' }).execute()).rejects.toBeDefined()
      expect(await rowsWithId(3)).toBe(0)
      await applyMigrationStep(raw, schema('backfilled'), table, 'email', 'cutover')
      const cutOver = app('cut-over')
      await cutOver.insertInto(table).values({ id: 4, name: 'd' }).execute()
      const stored = await sql<{ p: unknown; e: unknown }>`select email as p, email_encrypted as e
        from ${sql.table(table)} where id = 4`.execute(raw)
      expect(stored.rows).toEqual([{ p: null, e: null }])
      for (const db of [cutOver, backfilled, app('cut-over'), app('backfilled')])
        expect(await db.selectFrom(table).select(['id', 'email']).orderBy('id').execute()).toEqual([
          { id: 1, email: 'a@x.io' },
          { id: 2, email: 'b@x.io' },
          { id: 4, email: null },
        ])
    })

    // What else the database writes by itself: a MySQL/MariaDB `on update` clause, a PostgreSQL
    // domain's default.
    it('add refuses an on update clause (MySQL/MariaDB) or a domain default (PostgreSQL)', async () => {
      const other = uniqueName('mig_dflt2')
      const domain = `${other}_d`
      const otherSchema = encryptedSchema({
        [other]: { seen: encrypted.text({ storedAs: 'seen_encrypted', migration: 'added' }) },
      })
      try {
        if (backend.family === 'mysql')
          await sql`create table ${sql.table(other)} (id integer primary key,
            seen timestamp null on update current_timestamp)`.execute(raw)
        else {
          await sql`create domain ${sql.id(domain)} as varchar(100) default 'dd'`.execute(raw)
          await sql`create table ${sql.table(other)} (id integer primary key, seen ${sql.id(domain)})`.execute(
            raw,
          )
        }
        const error = await failure(() => applyMigrationStep(raw, otherSchema, other, 'seen', 'add'))
        expect(error).toMatchObject({ code: 'MIGRATION_REFUSED', table: other, column: 'seen' })
        expect(error?.message).toMatch(
          backend.family === 'mysql' ? /has `on update current_timestamp/i : /has `default 'dd'/,
        )
      } finally {
        await dropTables(raw, [other])
        if (backend.family === 'postgres') await sql`drop domain if exists ${sql.id(domain)}`.execute(raw)
      }
    })
  })
})
