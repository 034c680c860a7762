import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { encrypted } from '../../src/index.js'
import { type Backend, backends, onlyTables } from '../support/backends.js'
import { useOwnTable } from '../support/own-table.js'

/**
 * A row-context value outside its integer column's range. PostgreSQL and a strict sql_mode refuse
 * the write; MySQL and MariaDB under `INSERT IGNORE`, or in a session without a strict sql_mode,
 * store the nearest end of the range instead (`id` 99999999999 as 2147483647, -1 in an unsigned
 * column as 0), and the row's ciphertexts, bound to the value written, never decrypt
 * (helper-82's finding 4a). Where the schema check read the column's type, the plugin refuses
 * such a value before anything is sent.
 */
describe.each(backends())('row-context integers outside their column [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const mysql = backend.family === 'mysql'
    // MySQL: an unsigned column, whose range starts at 0.
    const [low, high] = mysql ? [0, 4_294_967_295] : [-2_147_483_648, 2_147_483_647]
    const t = useOwnTable(backend, {
      prefix: 'ctx_range',
      columns: { ssn: encrypted.text() },
      tableOptions: { context: ['tenant_id', 'id'] },
      create: (table) =>
        table
          .addColumn('id', sql.raw(mysql ? 'int unsigned' : 'integer'), (c) => c.primaryKey())
          .addColumn('tenant_id', 'varchar(16)', (c) => c.notNull()),
      // Other files' tables in the same database are not this test's to check.
      options: (table) => ({ verifySchema: onlyTables(table) }),
    })

    const stored = async () =>
      (await t.raw.selectFrom(t.table).select('id').orderBy('id').execute()).map((r) => String(r.id))

    it('an insert of an id past either end of the range is refused before anything is sent (CONTEXT_MISSING)', async () => {
      for (const id of [99_999_999_999, high + 1, low - 1]) {
        const insert = t.db.insertInto(t.table).values({ id, tenant_id: 'acme', ssn: 'S-1' })
        // INSERT IGNORE is where MySQL would store the clamped value; PostgreSQL has no IGNORE.
        const sent = mysql ? insert.ignore() : insert
        await expect(sent.execute()).rejects.toMatchObject({
          code: 'CONTEXT_MISSING',
          message: expect.stringContaining(`context column id is ${id}, outside the range of its`),
        })
      }
      expect(await stored()).toEqual([])
    })

    it('an id given as a bigint or a string is checked alike', async () => {
      await expect(
        t.db
          .insertInto(t.table)
          .values({ id: BigInt(high) + 1n, tenant_id: 'acme', ssn: 'S-1' })
          .execute(),
      ).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
      await expect(
        t.db
          .insertInto(t.table)
          .values({ id: String(low - 1), tenant_id: 'acme', ssn: 'S-1' })
          .execute(),
      ).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
      expect(await stored()).toEqual([])
    })

    it('the ends of the range themselves are written and read back', async () => {
      await t.db
        .insertInto(t.table)
        .values([
          { id: low, tenant_id: 'acme', ssn: 'S-LOW' },
          { id: high, tenant_id: 'acme', ssn: 'S-HIGH' },
        ])
        .execute()
      const rows = await t.db.selectFrom(t.table).select(['id', 'ssn']).orderBy('id').execute()
      expect(rows.map((r) => [Number(r.id), r.ssn])).toEqual([
        [low, 'S-LOW'],
        [high, 'S-HIGH'],
      ])
    })

    it('an update whose WHERE fixes an id outside the range is refused too', async () => {
      const update = t.db
        .updateTable(t.table)
        .set({ ssn: 'S-2' })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', high + 1)
        .execute()
      await expect(update).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
    })
  })
})

/**
 * MySQL's text types hold bytes, not characters: 100 four-byte characters are 100 characters of a
 * tinytext column (255) but 400 bytes, and `INSERT IGNORE` stored 63 of them; a character a
 * column's character set lacks was stored as `?` (helper-87).
 */
const mysqlBackends = backends().filter((b) => b.family === 'mysql')
describe.each(mysqlBackends)(
  'a row-context string its MySQL column cannot hold [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOwnTable(backend, {
        prefix: 'ctx_bytes',
        columns: { ssn: encrypted.text() },
        tableOptions: { context: ['tenant_id', 'region', 'code'] },
        create: (table) =>
          table
            .addColumn('id', 'integer', (c) => c.primaryKey())
            .addColumn('tenant_id', sql.raw('tinytext character set utf8mb4'), (c) => c.notNull())
            .addColumn('region', sql.raw('varchar(16) character set utf8mb3'), (c) => c.notNull())
            .addColumn('code', sql.raw('char(4)'), (c) => c.notNull()),
        options: (table) => ({ verifySchema: onlyTables(table) }),
      })

      const insert = (id: number, tenant_id: string, region: string, code = 'c1') =>
        t.db
          .insertInto(t.table)
          .values({ id, tenant_id, region, code, ssn: `S-${id}` })
          .ignore()
          .execute()

      it('past its bytes: refused before anything is sent, under INSERT IGNORE too; one that fits is written and read back', async () => {
        await expect(insert(1, '\u{1F600}'.repeat(100), 'eu')).rejects.toMatchObject({
          code: 'CONTEXT_MISSING',
          message: expect.stringContaining('context column tenant_id is 400 bytes long in UTF-8'),
        })
        expect(await t.raw.selectFrom(t.table).select('id').execute()).toEqual([])
        const fits = '\u{1F600}'.repeat(63)
        await insert(2, fits, 'eu')
        const rows = await t.db.selectFrom(t.table).select(['id', 'tenant_id', 'ssn']).execute()
        expect(rows).toEqual([{ id: 2, tenant_id: fits, ssn: 'S-2' }])
      })

      // (A latin1 context column is refused by the schema check itself: the plugin's guards compare
      // UTF-8 bytes. utf8mb3 holds no character beyond U+FFFF.)
      it('a character its utf8mb3 column lacks: refused before anything is sent; others are written and read back', async () => {
        for (const region of ['\u{1F600}mega', 'caf\u00E9\u{1F600}']) {
          await expect(insert(3, 'acme', region)).rejects.toMatchObject({
            code: 'CONTEXT_MISSING',
            message: expect.stringContaining(
              "context column region holds a character its column's character set (utf8mb3) cannot store",
            ),
          })
        }
        expect(await t.raw.selectFrom(t.table).select('id').where('id', '=', 3).execute()).toEqual([])
        await insert(4, 'acme', 'M\u00FCnchen')
        const rows = await t.db.selectFrom(t.table).select(['region', 'ssn']).where('id', '=', 4).execute()
        expect(rows).toEqual([{ region: 'M\u00FCnchen', ssn: 'S-4' }])
      })

      it('a value ending in a space for a char(n) column (which drops it): refused before anything is sent', async () => {
        await expect(insert(5, 'acme', 'eu', 'c5 ')).rejects.toMatchObject({
          code: 'CONTEXT_MISSING',
          message: expect.stringContaining(
            'context column code ends in a space, which its char column drops',
          ),
        })
        expect(await t.raw.selectFrom(t.table).select('id').where('id', '=', 5).execute()).toEqual([])
        await insert(6, 'acme', 'eu', ' c6')
        const rows = await t.db.selectFrom(t.table).select(['code', 'ssn']).where('id', '=', 6).execute()
        expect(rows).toEqual([{ code: ' c6', ssn: 'S-6' }])
      })
    })
  },
)
