import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, localKeyProvider } from '../../src/index.js'
import { casWrite } from '../../src/ops/cas-write.js'
import { createOpsContext, type OpsContext } from '../../src/ops/context.js'
import { keyColumn } from '../../src/ops/primary-key.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

const bytes = (...b: number[]) => Buffer.from(b)

/** The batched compare-and-set write of the jobs, on its own: one statement per shape of rows. */
describe.each(backends())('ops: batched compare-and-set write [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let db: Kysely<TestDB>
    let ctx: OpsContext
    const table = uniqueName('ops_cas')
    beforeAll(async () => {
      db = new Kysely<TestDB>({ dialect: backend.createDialect() })
      const binary = backend.family === 'postgres' ? 'bytea' : 'varbinary(64)'
      await db.schema
        .createTable(table)
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant', 'varchar(64)', (c) => c.notNull())
        .addColumn('a', binary)
        .addColumn('b', binary)
        .addColumn('a,b', binary)
        .execute()
      ctx = createOpsContext({
        db,
        schema: encryptedSchema({ [table]: { a: encrypted.text() } }),
        keyProvider: localKeyProvider({ id: 'local:cas', key: randomBytes(32) }),
      })
    })
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(table)}`.execute(db)
      await db?.destroy()
    })

    it('writes each row only if it still holds what was read (NULL matches NULL); tells which rows were written', async () => {
      await db.deleteFrom(table).execute()
      await db
        .insertInto(table)
        .values([
          { id: 'r1', tenant: 'acme', a: bytes(1), b: bytes(0xb1) },
          { id: 'r2', tenant: 'acme', a: bytes(2), b: bytes(0xb2) },
          { id: 'r3', tenant: 'acme', a: bytes(3), b: bytes(0xb3) },
          { id: 'r4', tenant: 'globex', a: bytes(4), b: bytes(0xb4) },
          { id: 'r5', tenant: 'acme', a: null, b: bytes(0xb5) },
        ])
        .execute()
      const key = await keyColumn(ctx, ctx.table(table))
      const written = await db.transaction().execute((trx) =>
        casWrite(ctx, trx, table, key, [
          // Still as read: written.
          { key: 'r1', set: { a: bytes(0x11), b: bytes(0x21) }, match: { a: bytes(1), tenant: 'acme' } },
          // Its ciphertext changed since the read: skipped.
          { key: 'r2', set: { a: bytes(0x12), b: bytes(0x22) }, match: { a: bytes(9), tenant: 'acme' } },
          // Another shape (one column set): its own statement, written.
          { key: 'r3', set: { b: null }, match: { a: bytes(3), tenant: 'acme' } },
          // Moved to another context since the read: skipped.
          { key: 'r4', set: { a: bytes(0x14), b: bytes(0x24) }, match: { a: bytes(4), tenant: 'acme' } },
          // A NULL read matches the NULL held: written.
          { key: 'r5', set: { b: null }, match: { a: null, tenant: 'acme' } },
          // Deleted since the read: skipped.
          { key: 'r6', set: { a: bytes(0x16), b: bytes(0x26) }, match: { a: bytes(6), tenant: 'acme' } },
        ]),
      )
      expect(written).toEqual([true, false, true, false, true, false])
      const rows = await db.selectFrom(table).select(['id', 'a', 'b']).orderBy('id').execute()
      const hex = (v: unknown) => (v === null ? null : Buffer.from(v as Uint8Array).toString('hex'))
      expect(rows.map((r) => [r.id, hex(r.a), hex(r.b)])).toEqual([
        ['r1', '11', '21'],
        ['r2', '02', 'b2'],
        ['r3', '03', null],
        ['r4', '04', 'b4'],
        ['r5', null, null],
      ])
    })

    it('groups rows by the columns they set and match, whatever their order or names', async () => {
      await db.deleteFrom(table).execute()
      await db
        .insertInto(table)
        .values(
          ['r1', 'r2', 'r3', 'r4', 'r5'].map((id, i) => ({
            id,
            tenant: 't',
            a: bytes(i),
            b: bytes(0xb0 + i),
            'a,b': bytes(0xc0 + i),
          })),
        )
        .execute()
      const key = await keyColumn(ctx, ctx.table(table))
      const written = await db.transaction().execute((trx) =>
        casWrite(ctx, trx, table, key, [
          // The column named `a,b` alone: not the shape of the columns `a` and `b`.
          { key: 'r1', set: { 'a,b': bytes(0xd1) }, match: { tenant: 't' } },
          { key: 'r2', set: { a: bytes(0xa2), b: bytes(0xe2) }, match: { tenant: 't' } },
          // The same columns as r2 in another order: the same shape.
          { key: 'r3', set: { b: bytes(0xe3), a: bytes(0xa3) }, match: { tenant: 't' } },
          // Back to r1's shape after another one.
          { key: 'r4', set: { 'a,b': bytes(0xd4) }, match: { tenant: 't' } },
          { key: 'r5', set: { a: bytes(0xa5), b: bytes(0xe5) }, match: { tenant: 't' } },
        ]),
      )
      expect(written).toEqual([true, true, true, true, true])
      const rows = await db.selectFrom(table).select(['id', 'a', 'b', 'a,b']).orderBy('id').execute()
      const hex = (v: unknown) => (v === null ? null : Buffer.from(v as Uint8Array).toString('hex'))
      expect(rows.map((r) => [r.id, hex(r.a), hex(r.b), hex(r['a,b'])])).toEqual([
        ['r1', '00', 'b0', 'd1'],
        ['r2', 'a2', 'e2', 'c1'],
        ['r3', 'a3', 'e3', 'c2'],
        ['r4', '03', 'b3', 'd4'],
        ['r5', 'a5', 'e5', 'c4'],
      ])
    })

    it('a batch larger than 65,535 bound values fits one statement per shape', async () => {
      await db.deleteFrom(table).execute()
      const n = backend.name === 'pglite' ? 2_000 : 12_000
      for (let i = 0; i < n; i += 1000) {
        await db
          .insertInto(table)
          .values(
            Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({
              id: `k${i + j}`,
              tenant: 't',
              a: bytes(1),
              b: null,
            })),
          )
          .execute()
      }
      const key = await keyColumn(ctx, ctx.table(table))
      const writes = Array.from({ length: n }, (_, i) => ({
        key: `k${i}`,
        set: { a: bytes(2), b: bytes(3) },
        match: { a: bytes(1), b: null, tenant: 't' },
      }))
      const written = await db.transaction().execute((trx) => casWrite(ctx, trx, table, key, writes))
      expect(written.every(Boolean)).toBe(true)
      const left = await db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('n'))
        .where('b', 'is', null)
        .executeTakeFirstOrThrow()
      expect(Number(left.n)).toBe(0)
    })
  })
})
