import type { Compilable, Kysely } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type TestDB, useEncryptedTestDb } from '../support/encrypted-db.js'

describe.each(backends())('plugin passthrough of plain tables [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend)
    const p = t.names.plain

    /** Compiles the same builder on the plugin's Kysely and on the raw one: both must match exactly. */
    const expectUntouched = (build: (db: Kysely<TestDB>) => Compilable<unknown>) => {
      const mine = build(t.db).compile()
      const bare = build(t.raw).compile()
      expect(mine.sql).toBe(bare.sql)
      expect(mine.parameters).toEqual(bare.parameters)
      expect(mine.query).toEqual(bare.query)
    }

    it('compiled queries on a table with no annotated column are identical to plain Kysely', () => {
      expectUntouched((db) => db.insertInto(p).values([{ label: 'a@x.io' }, { label: 'b' }]))
      expectUntouched((db) => db.selectFrom(p).selectAll().where('label', '=', 'a@x.io').orderBy('label'))
      expectUntouched((db) =>
        db
          .selectFrom(p)
          .select(['id', 'label'])
          .where((eb) => eb.or([eb('label', 'like', '%x%'), eb('id', '<', 3)]))
          .groupBy(['id', 'label'])
          .orderBy('label', 'desc'),
      )
      expectUntouched((db) => db.updateTable(p).set({ label: 'c' }).where('label', 'in', ['a', 'b']))
      expectUntouched((db) => db.deleteFrom(p).where('label', 'is', null))
      expectUntouched((db) =>
        db
          .with('c', (q) => q.selectFrom(p).selectAll())
          .selectFrom('c')
          .select('label'),
      )
    })

    it('rows round-trip unchanged, and the plugin refuses nothing on them', async () => {
      await t.db
        .insertInto(p)
        .values([{ label: 'first@x.io' }, { label: 'second' }, { label: 'third' }])
        .execute()
      const mine = await t.db
        .selectFrom(p)
        .selectAll()
        .where('label', 'like', '%i%')
        .orderBy('label')
        .execute()
      const bare = await t.raw
        .selectFrom(p)
        .selectAll()
        .where('label', 'like', '%i%')
        .orderBy('label')
        .execute()
      expect(mine).toEqual(bare)
      expect(mine.map((r) => r.label)).toEqual(['first@x.io', 'third'])
      // Stored exactly as written: nothing encrypted.
      expect(await t.raw.selectFrom(p).select('label').where('label', '=', 'first@x.io').execute()).toEqual([
        { label: 'first@x.io' },
      ])
      const before = t.encryption.stats().decrypted
      await t.db.selectFrom(p).selectAll().execute()
      expect(t.encryption.stats().decrypted).toBe(before)
    })
  })
})
