import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'
import { dialectSql, ids } from './plugin-at-rest.js'

const ROWS = 600
/** A distinct SSN per row id. */
const ssnOf = (id: number) =>
  `${String(100 + (id % 800)).padStart(3, '0')}-${String(id % 97).padStart(2, '0')}-${String(id).padStart(4, '0')}`

describe.each(backends())('plugin search index false positives [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let u: string
    /** index byte → ids sharing it (read at rest). */
    const buckets = new Map<number, number[]>()

    beforeAll(async () => {
      // 8-bit index: 600 distinct values over 256 buckets, so most buckets hold several rows.
      t = await encryptedTestDb(backend, { ssnBits: 8 })
      u = t.names.users
      const rows = Array.from({ length: ROWS }, (_, i) => ({
        id: i + 1,
        name: `fp-${i + 1}`,
        ssn: ssnOf(i + 1),
      }))
      for (let i = 0; i < rows.length; i += 200)
        await t.db
          .insertInto(u)
          .values(rows.slice(i, i + 200))
          .execute()
      const stored = await t.raw.selectFrom(u).select(['id', 'ssn_bidx']).execute()
      for (const r of stored) {
        const byte = Buffer.from(r.ssn_bidx as Uint8Array)
        expect(byte.length).toBe(1)
        const list = buckets.get(byte[0] as number) ?? []
        list.push(Number(r.id))
        buckets.set(byte[0] as number, list)
      }
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('the fixture really has colliding index values', () => {
      expect(new Set(Array.from({ length: ROWS }, (_, i) => ssnOf(i + 1))).size).toBe(ROWS)
      const crowded = [...buckets.values()].filter((b) => b.length >= 2)
      expect(crowded.length).toBeGreaterThan(50)
    })

    it('= returns exactly the row searched, never a row that only shares its index value', async () => {
      const crowded = [...buckets.values()].filter((b) => b.length >= 3).slice(0, 8)
      expect(crowded.length).toBeGreaterThan(0)
      const before = t.encryption.stats().falsePositives
      for (const bucket of crowded) {
        for (const id of bucket) {
          const rows = await t.db.selectFrom(u).select(['id', 'ssn']).where('ssn', '=', ssnOf(id)).execute()
          expect(rows).toEqual([{ id, ssn: ssnOf(id) }])
        }
      }
      // The database returned the other rows of each bucket; the plugin removed them.
      expect(t.encryption.stats().falsePositives - before).toBeGreaterThan(0)
      expect(t.encryption.stats().falsePositives).toBeGreaterThan(0)
    })

    it('the SQL carries one hidden ciphertext column, which never reaches the application', async () => {
      const query = t.db.selectFrom(u).select('name').where('ssn', '=', ssnOf(7))
      expect(query.compile().sql).toBe(
        dialectSql(
          backend,
          `select "name", "${u}"."ssn" as "__kfe_fp_0" from "${u}" where "ssn_bidx" in ($1)`,
        ),
      )
      const rows = await query.execute()
      expect(rows).toEqual([{ name: 'fp-7' }])
      const all = await t.db.selectFrom(u).selectAll().where('ssn', '=', ssnOf(8)).execute()
      expect(all).toHaveLength(1)
      expect(Object.keys(all[0] ?? {}).some((k) => k.startsWith('__kfe'))).toBe(false)
    })

    it('in over several values returns exactly those rows', async () => {
      const wanted = [3, 150, 333, 599]
      const rows = await t.db
        .selectFrom(u)
        .select(['id', 'ssn'])
        .where(
          'ssn',
          'in',
          wanted.map((id) => ssnOf(id)),
        )
        .execute()
      expect(ids(rows)).toEqual(wanted)
      for (const r of rows) expect(r.ssn).toBe(ssnOf(Number(r.id)))
    })

    it('a value nobody has returns nothing even though its bucket is full', async () => {
      const rows = await t.db.selectFrom(u).select('id').where('ssn', '=', '999-99-9999').execute()
      expect(rows).toEqual([])
    })

    it('search combined with a plain condition (AND)', async () => {
      const rows = await t.db
        .selectFrom(u)
        .select('id')
        .where('ssn', '=', ssnOf(42))
        .where('name', '=', 'fp-42')
        .execute()
      expect(ids(rows)).toEqual([42])
      const none = await t.db
        .selectFrom(u)
        .select('id')
        .where('ssn', '=', ssnOf(42))
        .where('name', '=', 'fp-43')
        .execute()
      expect(none).toEqual([])
    })
  })
})
