import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { expectIndexScan, explainAccess } from '../support/explain.js'

const ROWS = 2000

describe.each(backends())('plugin searches use the database index [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend, {
      seed: async (t) => {
        // Enough rows that the planner prefers an index on its own (no planner settings).
        const rows = Array.from({ length: ROWS }, (_, i) => ({
          name: `n${i}`,
          email: `user${i}@x.io`,
          ssn: String(100_000_000 + i * 7919),
        }))
        for (let i = 0; i < rows.length; i += 500)
          await t.db
            .insertInto(u)
            .values(rows.slice(i, i + 500))
            .execute()
        await t.db
          .insertInto(o)
          .values([
            { user_id: 1, item: 'a', email: 'o1@x.io' },
            { user_id: 2, item: 'b', email: 'o2@x.io' },
          ])
          .execute()
        if (backend.family === 'mysql') await sql`analyze table ${sql.table(u)}`.execute(t.raw)
        else await sql`analyze ${sql.table(u)}`.execute(t.raw)
      },
    })
    const { users: u, orders: o } = t.names

    it('= on a unique blind index (email) reads the unique index', async () => {
      const query = t.db.selectFrom(u).selectAll().where('email', '=', 'user42@x.io')
      await expectIndexScan(t, query, { table: u, index: `${u}_email_bidx_idx` })
      expect(await query.execute()).toMatchObject([{ name: 'n42', email: 'user42@x.io' }])
    })

    it('in on a unique blind index reads the index', async () => {
      const query = t.db
        .selectFrom(u)
        .select('id')
        .where('email', 'in', ['user1@x.io', 'user2@x.io', 'user3@x.io'])
      await expectIndexScan(t, query, { table: u, index: `${u}_email_bidx_idx` })
    })

    it('= on a search blind index (ssn, 16 bits) reads its index, with the false-positive column', async () => {
      const ssn = String(100_000_000 + 77 * 7919)
      const query = t.db.selectFrom(u).select(['id', 'ssn']).where('ssn', '=', ssn)
      await expectIndexScan(t, query, { table: u, index: `${u}_ssn_bidx_idx` })
      expect(await query.execute()).toMatchObject([{ ssn }])
    })

    it('a small table: an index can serve the search (PostgreSQL planners told to avoid Seq Scan)', async () => {
      const query = t.db.selectFrom(o).select('item').where('email', '=', 'o2@x.io')
      if (backend.family === 'postgres') {
        await expectIndexScan(t, query, {
          table: o,
          index: `${o}_email_bidx_idx`,
          discourageSeqScan: true,
        })
      } else {
        // MariaDB: a unique lookup on a 2-row table is a const/eq_ref read of the index anyway.
        const access = await explainAccess(t, query)
        expect(access.some((a) => a.table === o && a.access !== 'ALL')).toBe(true)
      }
      expect(await query.execute()).toEqual([{ item: 'b' }])
    })

    it('the helper fails on a full scan (a search on an unindexed column)', async () => {
      const query = t.db.selectFrom(u).select('id').where('name', '=', 'n7')
      await expect(expectIndexScan(t, query, { table: u, index: `${u}_email_bidx_idx` })).rejects.toThrow(
        /full scan|not read through/,
      )
    })
  })
})
