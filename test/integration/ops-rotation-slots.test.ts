import { inspect } from 'node:util'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  fieldEncryption,
  KeyError,
  OperationError,
  QueryRefusedError,
  UniqueViolationError,
} from '../../src/index.js'
import type { VerifyResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import { type OpsTestDb, opsTestDb, retireWhenDue } from '../support/ops-db.js'

/**
 * Issue 14: a unique blind index keeps rejecting duplicates through an index-key rotation, with
 * a rotation slot (`email_bidx_next`): a duplicate is refused by the database's UNIQUE index in
 * every phase (staged, backfilling, cut over, retired), searches find the right rows in each, and
 * verify tells which index version each column holds.
 */

/**
 * A duplicate refused by the database's UNIQUE index on a blind-index column (the index's own
 * column or its rotation slot) surfaces as `UNIQUE_VIOLATION`, naming the logical table and column
 * and the index column; the driver's error (PostgreSQL/PGlite 23505, MariaDB/MySQL 1062) is its
 * cause; its message holds neither the plaintext nor any stored index value.
 */
async function expectDuplicate(
  run: Promise<unknown>,
  where: { table: string; plaintext: string; indexValues: readonly Buffer[] },
): Promise<UniqueViolationError> {
  const error = await run.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error, 'a duplicate was accepted').toBeDefined()
  expect(error).toBeInstanceOf(UniqueViolationError)
  const e = error as UniqueViolationError
  expect([e.code, e.table, e.column]).toEqual(['UNIQUE_VIOLATION', where.table, 'email'])
  expect(['email_bidx', 'email_bidx_next']).toContain(e.index)
  expect(e.message).toContain(`${where.table}.${e.index}`)
  const cause = e.cause as { code?: unknown; errno?: unknown }
  expect([cause.code, cause.errno]).toSatisfy(
    (c: unknown[]) => c.includes('23505') || c.includes('ER_DUP_ENTRY') || c.includes(1062),
  )
  const shown = `${e.message}\n${e.stack}\n${inspect(e, { depth: 0 })}`.toLowerCase()
  expect(shown).not.toContain(where.plaintext.trim().toLowerCase())
  for (const v of where.indexValues) {
    expect(shown).not.toContain(v.toString('hex'))
    expect(shown).not.toContain(v.toString('base64').toLowerCase())
  }
  return e
}

describe.each(backends())('index-key rotation with a rotation slot [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: OpsTestDb
    const wait = () => new Promise((r) => setTimeout(r, t.ttlMs + 20))
    const insert = (id: number, email: string) =>
      t.app
        .insertInto(t.table)
        .values({ id, name: `n${id}`, email, ssn: '123-45-6789' })
        .execute()
    /** Ids found by a search on email, through the plugin. */
    const find = async (email: string) =>
      (await t.app.selectFrom(t.table).select('id').where('email', '=', email).execute()).map((r) =>
        Number(r.id),
      )
    /** Rows whose column holds a value (raw). */
    const filled = async (column: string) => {
      const { rows } = await sql<{
        n: number | string
      }>`select count(*) as n from ${sql.table(t.table)} where ${sql.ref(column)} is not null`.execute(t.raw)
      return Number(rows[0]!.n)
    }
    /**
     * `status` (exact), per column of the slotted index: [column, version, state, searched, rows
     * per version]; and its attention lines.
     */
    const slotStatus = async () => {
      const st = (await t.ops.status({ table: t.table, exact: true })).tables[0]!
      expect(st.slots.map((s) => [s.index, s.column])).toEqual([['email_bidx', 'email']])
      return {
        columns: st.slots[0]!.columns.map((c) => [c.column, c.version, c.state, c.searched, c.rows]),
        attention: st.attention,
      }
    }
    /** Every value the blind-index columns hold (raw). */
    const storedIndexValues = async () => {
      // biome-ignore lint/suspicious/noExplicitAny: the slot column is not in the shared test DB type.
      const rows = await (t.raw as Kysely<any>)
        .selectFrom(t.table)
        .select(['email_bidx', 'email_bidx_next'])
        .execute()
      return rows
        .flatMap((r) => [r.email_bidx, r.email_bidx_next])
        .filter((v): v is Uint8Array => v != null)
        .map((v) => Buffer.from(v))
    }
    /**
     * Every phase: the stored e-mails are all found, each once, and a duplicate is refused.
     * @returns the index columns whose UNIQUE index refused a duplicate
     */
    const checkPhase = async (emails: ReadonlyMap<string, number>, nextId: number, rotating: boolean) => {
      for (const [email, id] of emails) expect(await find(` ${email.toUpperCase()}`)).toEqual([id])
      expect(await find('nobody@x.io')).toEqual([])
      // A self-join on the column pairs each row with itself, whichever column is complete
      // (refused, as for any index, while two index versions are live).
      // biome-ignore lint/suspicious/noExplicitAny: the test table's name is made at run time.
      const app = t.app as Kysely<any>
      const join = app
        .selectFrom(`${t.table} as a`)
        .innerJoin(`${t.table} as b`, 'a.email', 'b.email')
        .select(['a.id as x', 'b.id as y'])
        .execute()
      if (rotating) {
        const error = await join.catch((e: unknown) => e)
        expect(error).toBeInstanceOf(QueryRefusedError)
        expect((error as QueryRefusedError).code).toBe('QUERY_REFUSED')
      } else {
        const pairs = await join
        expect(pairs.length).toBe(emails.size)
        for (const p of pairs) expect(Number(p.x)).toBe(Number(p.y))
      }
      const indexValues = await storedIndexValues()
      const refusedBy = new Set<string>()
      for (const email of emails.keys()) {
        const plaintext = ` ${email.toUpperCase()} `
        const e = await expectDuplicate(insert(nextId, plaintext), { table: t.table, plaintext, indexValues })
        refusedBy.add(e.index)
      }
      // An UPDATE onto another row's value too (the SET path writes both columns).
      const [first, second] = [...emails]
      const e = await expectDuplicate(
        t.app.updateTable(t.table).set({ email: first![0] }).where('id', '=', second![1]).execute(),
        { table: t.table, plaintext: first![0], indexValues },
      )
      refusedBy.add(e.index)
      return refusedBy
    }

    beforeAll(async () => {
      t = await opsTestDb(backend, { rotationSlot: true })
      await t.ops.init()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    const emails = new Map<string, number>()

    it('steady state (v1 only): the slot column stays empty; a duplicate is refused', async () => {
      for (let id = 1; id <= 6; id++) {
        await insert(id, `user${id}@x.io`)
        emails.set(`user${id}@x.io`, id)
      }
      expect(await filled('email_bidx')).toBe(6)
      expect(await filled('email_bidx_next')).toBe(0)
      expect([...(await checkPhase(emails, 100, false))]).toEqual(['email_bidx'])
      expect(await slotStatus()).toEqual({
        columns: [
          ['email_bidx', 1, 'active', true, { 1: 6 }],
          ['email_bidx_next', null, null, false, {}],
        ],
        attention: [],
      })
    })

    it('staged (v2): writes fill both columns; old rows only v1; a duplicate of either is refused', async () => {
      const r = await t.ops.rotate(t.table, { purpose: 'index', activateLater: true })
      expect([r.version, r.state]).toEqual([2, 'staged'])
      await wait()
      await insert(7, 'user7@x.io')
      emails.set('user7@x.io', 7)
      if (backend.family === 'mysql') {
        // MySQL's upsert conflicts on the slot's complete UNIQUE column too: it runs, and updates
        // row 7 (an index without a slot refuses it during a rotation).
        await t.app
          .insertInto(t.table)
          .values({ id: 999, name: 'upsert', email: 'user7@x.io', ssn: '123-45-6789' })
          .onDuplicateKeyUpdate({ name: 'n7' })
          .execute()
        expect(await t.app.selectFrom(t.table).select('id').where('id', '=', 999).execute()).toEqual([])
      }
      expect(await filled('email_bidx')).toBe(7)
      expect(await filled('email_bidx_next')).toBe(1)
      await checkPhase(emails, 100, true)
      const v = (await t.ops.verify(t.table)) as VerifyResult
      expect(v.ok).toBe(true)
      expect(v.indexVersions).toEqual({ 1: 14 }) // email_bidx and ssn_bidx
      expect(v.slotVersions).toEqual({ email_bidx_next: { 2: 1, missing: 6 } })
      const st = await slotStatus()
      expect(st.columns).toEqual([
        ['email_bidx', 1, 'active', true, { 1: 7 }],
        ['email_bidx_next', 2, 'staged', false, { 2: 1, missing: 6 }],
      ])
      expect(st.attention).toContain(
        `6 rows lack index version 2 in rotation slot email_bidx_next: run \`kfe reencrypt ${t.table}\``,
      )
    })

    it('cut-over is refused while the slot is incomplete (ROTATION_REFUSED with the count)', async () => {
      const error = await t.ops
        .rotate(t.table, { purpose: 'index', reencrypt: false })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OperationError)
      expect((error as OperationError).code).toBe('ROTATION_REFUSED')
      expect((error as OperationError).rows).toBe(6)
      expect((await t.ops.status()).tables[0]).toBeDefined()
    })

    it('backfilling (job stopped half way): a duplicate is refused; searches find every row', async () => {
      const stop = new AbortController()
      await t.ops.reencrypt(t.table, {
        batchSize: 2,
        signal: stop.signal,
        onProgress: (p) => {
          if (p.done > 0) stop.abort()
        },
      })
      const partial = await filled('email_bidx_next')
      expect(partial).toBeGreaterThan(1)
      expect(partial).toBeLessThan(7)
      await checkPhase(emails, 100, true)
      expect((await slotStatus()).columns[1]).toEqual([
        'email_bidx_next',
        2,
        'staged',
        false,
        { 2: partial, missing: 7 - partial },
      ])
      await t.ops.reencrypt(t.table)
      expect(await filled('email_bidx_next')).toBe(7)
      const v = (await t.ops.verify(t.table)) as VerifyResult
      expect(v.slotVersions).toEqual({ email_bidx_next: { 2: 7 } })
    })

    it('cut over (v2 active, v1 decrypt-only): searches probe email_bidx_next; a duplicate is refused', async () => {
      // Backfill (complete already), activate, then re-index ssn_bidx (no slot) under v2.
      const r = await t.ops.rotate(t.table, { purpose: 'index' })
      expect([r.version, r.state]).toEqual([2, 'active'])
      await wait()
      await insert(8, 'user8@x.io')
      emails.set('user8@x.io', 8)
      expect(await filled('email_bidx')).toBe(8) // v1 is still live: still written
      expect(await filled('email_bidx_next')).toBe(8)
      await checkPhase(emails, 100, true)
      const v = (await t.ops.verify(t.table)) as VerifyResult
      expect(v.ok).toBe(true)
      expect(v.indexVersions).toEqual({ 2: 16 })
      expect(v.slotVersions).toEqual({ email_bidx: { 1: 8 } })
      expect((await slotStatus()).columns).toEqual([
        ['email_bidx', 1, 'decrypt-only', false, { 1: 8 }],
        ['email_bidx_next', 2, 'active', true, { 2: 8 }],
      ])
      // A search that must find the row through v2's column alone: v1's column emptied by hand.
      await sql`update ${sql.table(t.table)} set email_bidx = null where id = 1`.execute(t.raw)
      expect(await find('user1@x.io')).toEqual([1])
      await t.ops.reencrypt(t.table) // puts v1's value back (it is live)
    })

    it('blindIndexesOf: one value per live version, each with its column; a raw search on the active one finds the row', async () => {
      const values = await t.encryption.blindIndexesOf(t.table, 'email', ' USER8@x.io')
      expect(values.map((v) => [v.column, v.version, v.active])).toEqual([
        ['email_bidx_next', 2, true],
        ['email_bidx', 1, false],
      ])
      expect(await t.encryption.indexOf(t.table, 'email', ' USER8@x.io')).toEqual(values.map((v) => v.value))
      // The row holds each version's value in that version's column.
      const stored = await t.raw
        .selectFrom(t.table)
        .select(['email_bidx', 'email_bidx_next'])
        .where('id', '=', 8)
        .executeTakeFirstOrThrow()
      for (const v of values)
        expect(Buffer.from(stored[v.column as 'email_bidx'] as Uint8Array).equals(v.value)).toBe(true)
      const active = values.find((v) => v.active)!
      const found = await sql<{
        id: number
      }>`select id from ${sql.table(t.table)} where ${sql.ref(active.column)} = ${active.value}`.execute(
        t.raw,
      )
      expect(found.rows.map((r) => Number(r.id))).toEqual([8])
    })

    // A second instance needs a second connection to the same database: not PGlite's in-memory one.
    it.runIf(backend.name !== 'pglite')(
      'blindIndexesOf with a key cache too small for the live versions: KEY_NOT_FOUND saying to raise cache.max',
      async () => {
        const opened: Kysely<unknown>[] = []
        const withCache = (max: number) => {
          const e = fieldEncryption({
            schema: t.schema,
            keyProvider: t.provider,
            keyTable: t.keyTable,
            metadataTtlMs: t.ttlMs,
            cache: { max },
            verifySchema: false,
          })
          opened.push(new Kysely({ dialect: e.wrap(t.backend.createDialectPair()[0]) }))
          return e
        }
        try {
          // Two live versions, one key held at a time: each load wipes the other.
          const error = await withCache(1)
            .blindIndexesOf(t.table, 'email', 'user8@x.io')
            .catch((e: unknown) => e)
          expect(error).toBeInstanceOf(KeyError)
          expect((error as KeyError).code).toBe('KEY_NOT_FOUND')
          expect((error as Error).message).toContain('raise cache.max')
          const values = await withCache(2).blindIndexesOf(t.table, 'email', 'user8@x.io')
          expect(values.map((v) => v.version)).toEqual([2, 1])
        } finally {
          await Promise.all(opened.map((db) => db.destroy()))
        }
      },
    )

    it('a third version is refused while v1 is live (it would share v1 column)', async () => {
      const error = await t.ops.rotate(t.table, { purpose: 'index' }).catch((e: unknown) => e)
      expect((error as OperationError).code).toBe('ROTATION_REFUSED')
      expect((error as Error).message).toContain('retire version 1 first')
    })

    it('retired v1: its column is cleared; a duplicate is refused; searches still work', async () => {
      const r = await retireWhenDue(t.ops, t.table, { purpose: 'index', version: 1 })
      expect(r.retired).toBe(true)
      expect(await filled('email_bidx')).toBe(0)
      await wait()
      await insert(9, 'user9@x.io')
      emails.set('user9@x.io', 9)
      expect(await filled('email_bidx')).toBe(0)
      expect(await filled('email_bidx_next')).toBe(9)
      expect([...(await checkPhase(emails, 100, false))]).toEqual(['email_bidx_next'])
      const v = (await t.ops.verify(t.table)) as VerifyResult
      expect(v.ok).toBe(true)
      expect(v.indexVersions).toEqual({ 2: 18 })
      expect(v.slotVersions).toEqual({})
      expect((await slotStatus()).columns).toEqual([
        ['email_bidx', null, null, false, {}],
        ['email_bidx_next', 2, 'active', true, { 2: 9 }],
      ])
    })

    it('the next rotation (v3) lives in the freed column, and a duplicate is still refused', async () => {
      const r = await t.ops.rotate(t.table, { purpose: 'index' })
      expect([r.version, r.state]).toEqual([3, 'active'])
      await wait()
      expect(await filled('email_bidx')).toBe(9)
      await checkPhase(emails, 100, true)
      const v = (await t.ops.verify(t.table)) as VerifyResult
      expect(v.ok).toBe(true)
      expect(v.indexVersions).toEqual({ 3: 18 })
      expect(v.slotVersions).toEqual({ email_bidx_next: { 2: 9 } })
      expect((await slotStatus()).columns).toEqual([
        ['email_bidx', 3, 'active', true, { 3: 9 }],
        ['email_bidx_next', 2, 'decrypt-only', false, { 2: 9 }],
      ])
    })

    it('a staged version retired unused (v4, the slot column) does not block the next rotation: it skips to v6, in that free column', async () => {
      expect((await retireWhenDue(t.ops, t.table, { purpose: 'index', version: 2 })).retired).toBe(true)
      const staged = await t.ops.rotate(t.table, { purpose: 'index', activateLater: true })
      expect([staged.version, staged.state]).toEqual([4, 'staged'])
      expect(await t.ops.retire(t.table, { purpose: 'index', version: 4 })).toMatchObject({ retired: true })
      await wait()
      // v5 would share v3's column (the active one); without the skip, this was ROTATION_REFUSED
      // ("retire version 3 first") for good, v3 being the active version.
      const r = await t.ops.rotate(t.table, { purpose: 'index' })
      expect([r.version, r.state]).toEqual([6, 'active'])
      await wait()
      expect(await filled('email_bidx_next')).toBe(9)
      await checkPhase(emails, 100, true)
      const v = (await t.ops.verify(t.table)) as VerifyResult
      expect(v.ok).toBe(true)
      expect(v.indexVersions).toEqual({ 6: 18 })
      expect((await slotStatus()).columns).toEqual([
        ['email_bidx', 3, 'decrypt-only', false, { 3: 9 }],
        ['email_bidx_next', 6, 'active', true, { 6: 9 }],
      ])
    })
  })
})
