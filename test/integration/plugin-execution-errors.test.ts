import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  DecryptionError,
  type FieldEncryptionError,
  fieldEncryption,
  KeyError,
  localKeyProvider,
  QueryRefusedError,
  UniqueViolationError,
} from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, onlyTables } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, type TestDB } from '../support/encrypted-db.js'

/**
 * What the application sees when a query fails while it runs (issue 12, items 7, 8 and 10, and
 * "errors that say what to do"): a typed error that says what to do, whose stack reaches the line
 * that ran the query, and that never holds a plaintext.
 */

/** A plaintext no error may ever show: in message, stack, cause chain or inspect output. */
const MARKER = 'kfe-marker-7c41e9'
const THIS_FILE = 'plugin-execution-errors.test.ts'

/** Awaits the query (so the async stack runs through this file) and returns its rejection. */
async function caught(query: Promise<unknown>): Promise<FieldEncryptionError> {
  try {
    await query
  } catch (error) {
    return error as FieldEncryptionError
  }
  throw new Error('expected the query to fail')
}

/** Message, stack, every cause and util.inspect output: none holds `MARKER`. */
function expectNoMarker(error: unknown): void {
  const seen = new Set<unknown>()
  for (let e: unknown = error; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e)
    expect(e.message).not.toContain(MARKER)
    expect(String(e.stack)).not.toContain(MARKER)
  }
  expect(inspect(error, { depth: Number.POSITIVE_INFINITY, showHidden: true })).not.toContain(MARKER)
  expect(String(error)).not.toContain(MARKER)
}

describe.each(backends())('errors while executing [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let u: string
    /** The plugin without the wrapper: a Kysely made the way issue 12 item 7 describes. */
    let unwrapped: Kysely<TestDB>

    beforeAll(async () => {
      t = await encryptedTestDb(backend)
      u = t.names.users
      // Not destroyed: it shares the fixture's pool / PGlite instance, which t.destroy() closes.
      unwrapped = new Kysely<TestDB>({ dialect: t.appDialect, plugins: [t.encryption.plugin] })
      await t.db
        .insertInto(u)
        .values([
          { id: 1, name: 'marked', email: `${MARKER}@x.io`, ssn: '700-00-0001', notes: { n: MARKER } },
          { id: 2, name: 'other', email: 'other@x.io' },
        ])
        .execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    const rawInsert = async (id: number, values: Record<string, unknown>) => {
      await t.raw
        .insertInto(u)
        .values({ id, name: `raw-${id}`, ...values })
        .execute()
    }

    describe('the plugin without encryption.wrap() (item 7)', () => {
      it('a read of encrypted columns throws DIALECT_NOT_WRAPPED, never a Buffer', async () => {
        const e = await caught(unwrapped.selectFrom(u).select(['id', 'email']).where('id', '=', 1).execute())
        expect(e).toBeInstanceOf(QueryRefusedError)
        expect(e.code).toBe('DIALECT_NOT_WRAPPED')
        expect(e.table).toBe(u)
        expect(e.column).toBe('email')
        expect((e as QueryRefusedError).hint).toContain('encryption.wrap(')
        expect(e.stack).toContain(THIS_FILE)
        expectNoMarker(e)
      })

      it('selectAll, executeTakeFirst and a second run of one compiled query are refused too', async () => {
        const all = await caught(unwrapped.selectFrom(u).selectAll().execute())
        expect(all.code).toBe('DIALECT_NOT_WRAPPED')
        const first = await caught(
          unwrapped.selectFrom(u).select('notes').where('id', '=', 1).executeTakeFirst(),
        )
        expect(first.code).toBe('DIALECT_NOT_WRAPPED')
        expect(first.column).toBe('notes')
        const compiled = unwrapped.selectFrom(u).select(['id', 'ssn']).where('id', '=', 1).compile()
        for (let run = 0; run < 2; run++) {
          const e = await caught(unwrapped.executeQuery(compiled))
          expect(e.code).toBe('DIALECT_NOT_WRAPPED')
        }
      })

      it('a stream is refused at its first chunk', async () => {
        const read = async () => {
          const rows: unknown[] = []
          for await (const row of unwrapped.selectFrom(u).select(['id', 'email']).stream(1)) rows.push(row)
          return rows
        }
        const e = await caught(read())
        expect(e.code).toBe('DIALECT_NOT_WRAPPED')
      })

      it('reads that return no encrypted column, or only NULLs, still work; the wrapped Kysely is unaffected', async () => {
        expect(await unwrapped.selectFrom(u).select(['id', 'name']).orderBy('id').execute()).toEqual([
          { id: 1, name: 'marked' },
          { id: 2, name: 'other' },
        ])
        expect(await unwrapped.selectFrom(u).select(['id', 'dob']).where('id', '=', 2).execute()).toEqual([
          { id: 2, dob: null },
        ])
        expect(await t.db.selectFrom(u).select(['id', 'email']).where('id', '=', 2).execute()).toEqual([
          { id: 2, email: 'other@x.io' },
        ])
      })
    })

    /** Inserts row `id` through the plugin, then changes its stored email's bytes with `alter`. */
    const storedAltered = async (id: number, name: string, alter: (bytes: Buffer) => void) => {
      await t.db
        .insertInto(u)
        .values({ id, name, email: `${MARKER}-${id}@x.io` })
        .execute()
      const stored = await t.raw.selectFrom(u).select('email').where('id', '=', id).executeTakeFirstOrThrow()
      const bytes = Buffer.from(stored.email as Uint8Array)
      alter(bytes)
      await t.raw.updateTable(u).set({ email: bytes }).where('id', '=', id).execute()
    }
    /** Row `id` read by stream(); it must fail before a row is handed over. */
    const streamed = async (id: number) => {
      for await (const row of t.db.selectFrom(u).select(['id', 'email']).where('id', '=', id).stream(1)) {
        expect(row).toBeUndefined()
      }
    }

    describe("the caller's stack (item 8)", () => {
      it('a refusal at execute()', async () => {
        const e = await caught(t.db.selectFrom(u).selectAll().where('email', 'like', `%${MARKER}%`).execute())
        expect(e).toBeInstanceOf(QueryRefusedError)
        expect(e.code).toBe('QUERY_REFUSED')
        expect(e.stack).toContain(THIS_FILE)
        expectNoMarker(e)
      })

      it('a fail-closed error from the wrapper (withoutPlugins() write of plaintext)', async () => {
        const e = await caught(
          t.db
            .withoutPlugins()
            .insertInto(u)
            .values({ id: 90, name: 'bypass', email: `${MARKER}@x.io` })
            .execute(),
        )
        expect(e.code).toBe('PLAINTEXT_WRITE')
        expect(e.stack).toContain(THIS_FILE)
        expectNoMarker(e)
        expect(await t.raw.selectFrom(u).select('id').where('id', '=', 90).execute()).toEqual([])
      })

      it('a decryption failure (tampered ciphertext): DECRYPT_AUTH_FAILED, no row context spoken of', async () => {
        await storedAltered(3, 'tampered', (bytes) => {
          bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01
        })
        const e = await caught(t.db.selectFrom(u).select(['id', 'email']).where('id', '=', 3).execute())
        expect(e).toBeInstanceOf(DecryptionError)
        expect(e.code).toBe('DECRYPT_AUTH_FAILED')
        expect(e.table).toBe(u)
        expect(e.column).toBe('email')
        expect(e.message).not.toMatch(/row context/)
        expect(e.message).toMatch(/modified/)
        expect(e.stack).toContain(THIS_FILE)
        expectNoMarker(e)
        // The same row read by stream().
        const s = await caught(streamed(3))
        expect(s.code).toBe('DECRYPT_AUTH_FAILED')
        expect(s.stack).toContain(THIS_FILE)
        expectNoMarker(s)
        await t.raw.deleteFrom(u).where('id', '=', 3).execute()
      })

      it('a row of a stream naming a key version not loaded: KEY_NOT_FOUND, not a wait behind its own cursor', async () => {
        // The header's key version byte: a version no process loaded (another activated it since).
        await storedAltered(4, 'future', (bytes) => {
          bytes[1] = 7
        })
        // Past the key ring's floor between two metadata reads: the load would be tried.
        await new Promise((resolve) => setTimeout(resolve, 1100))
        const s = await caught(streamed(4))
        expect(s.code).toBe('KEY_NOT_FOUND')
        expectNoMarker(s)
        // The connection went back to the pool: the next query runs.
        expect(await t.db.selectFrom(u).select('id').where('id', '=', 4).execute()).toEqual([{ id: 4 }])
        await t.raw.deleteFrom(u).where('id', '=', 4).execute()
      }, 30_000)

      it('driver errors reach the caller too (extended by the wrapper where the driver does not: PGlite)', async () => {
        // The queries of Kysely's own test "error stack should contain the userland stack", with
        // the plugin installed.
        const plain = t.names.plain
        for (const query of [
          t.db.selectFrom(plain).select(sql`doesnt_exists`.as('d')),
          t.db.updateTable(plain).set({ label: sql`doesnt_exists` }),
          t.db.deleteFrom(plain).where(sql`doesnt_exists`, '=', 1),
          t.db.insertInto(plain).values({ label: sql`doesnt_exists` }),
        ]) {
          const e = await caught(query.execute())
          expect(e).not.toBeInstanceOf(QueryRefusedError)
          expect(e.stack).toContain(THIS_FILE)
          // Extended once. The driver's own error may already reach the caller through V8's async
          // stack trace, and Kysely's pg and mysql2 drivers append the caller's frames again: two
          // copies of the caller's line, which the wrapper leaves as they are (a third would be
          // its). PGlite's driver does neither: one, the wrapper's. Counted by the caller's line,
          // not the stack's last: V8 keeps 10 frames per stack, so on a loaded machine the last
          // line is sometimes the caller's (both copies), sometimes the test runner's.
          const lines = String(e.stack).split('\n')
          const caller = lines.findLast((l) => l.includes(THIS_FILE))
          const copies = lines.filter((l) => l === caller).length
          expect(copies, String(e.stack)).toBeGreaterThanOrEqual(1)
          expect(copies, String(e.stack)).toBeLessThanOrEqual(backend.name === 'pglite' ? 1 : 2)
        }
      })
    })

    describe('errors that say what to do', () => {
      it('NOT_CIPHERTEXT names the selected primary key and the plaintext-migration path, never the value', async () => {
        await rawInsert(4, { email: Buffer.from(`${MARKER}@legacy.io`, 'utf8') })
        const e = await caught(t.db.selectFrom(u).select(['id', 'email']).where('id', '=', 4).execute())
        expect(e).toBeInstanceOf(DecryptionError)
        expect(e.code).toBe('NOT_CIPHERTEXT')
        expect(e.message).toContain('id = 4')
        expect(e.message).toContain('migratingFromPlaintext')
        expect(e.stack).toContain(THIS_FILE)
        expectNoMarker(e)
        // Without the key selected, no row is named.
        const unnamed = await caught(t.db.selectFrom(u).select('email').where('id', '=', 4).execute())
        expect(unnamed.code).toBe('NOT_CIPHERTEXT')
        expect(unnamed.message).not.toContain('id =')
        await t.raw.deleteFrom(u).where('id', '=', 4).execute()
      })

      it('UNWRAP_FAILED (another KEK under the same id) names its likely causes', async () => {
        // A second instance on the same key table, with another KEK behind the same default id.
        const other = fieldEncryption({
          schema: t.schema,
          keyProvider: localKeyProvider({ key: randomBytes(32) }),
          keyTable: t.names.keys,
          verifySchema: onlyTables(),
        })
        const db = new Kysely<TestDB>({ dialect: other.wrap(t.appDialect), plugins: [other.plugin] })
        try {
          const e = await caught(db.selectFrom(u).select(['id', 'email']).where('id', '=', 1).execute())
          expect(e).toBeInstanceOf(KeyError)
          expect(e.code).toBe('UNWRAP_FAILED')
          expect(e.message).toContain('another KEK is configured under the id')
          expect(e.message).toContain('restored from another environment')
          expect(e.stack).toContain(THIS_FILE)
          expectNoMarker(e)
          // And init says it at deploy time, before any query: the keys there do not unwrap.
          const atInit = await caught(other.init(db))
          expect(atInit.code).toBe('UNWRAP_FAILED')
          // So does `kfe init` (the operations' init), through the same key ring code.
          const ops = fieldEncryptionOps({
            db: t.raw,
            schema: t.schema,
            keyProvider: localKeyProvider({ key: randomBytes(32) }),
            keyTable: t.names.keys,
          })
          try {
            expect((await caught(ops.init())).code).toBe('UNWRAP_FAILED')
          } finally {
            await ops.close()
          }
        } finally {
          await other.close()
        }
      })
    })

    describe('driver errors hold no ciphertext or blind index', () => {
      it('NOT NULL (PostgreSQL: "Failing row contains"; mysql2: the statement in `sql`) and a duplicate primary key', async () => {
        const insert = (id: number, name: string | null) =>
          t.db
            .insertInto(u)
            .values({ id, name: name as string, email: `${MARKER}-${id}@x.io`, ssn: '700-00-0009' })
            .execute()
        for (const error of [await caught(insert(9, null)), await caught(insert(1, 'dup-id'))]) {
          expect(error).not.toBeInstanceOf(UniqueViolationError)
          const e = error as unknown as Record<string, unknown>
          const shown = [e.message, e.stack, e.detail, e.sql, e.sqlMessage, inspect(error, { depth: 5 })]
          for (const text of shown.filter((x): x is string => typeof x === 'string')) {
            // No run of bytes as PostgreSQL (\x…) or mysql2 (X'…') print them.
            expect(text).not.toMatch(/\\x[0-9a-f]{8}/i)
            expect(text).not.toMatch(/X'[0-9a-f]{8}/i)
            // Nor a bound parameter as inspect shows one (PGlite's errors carry `params`).
            expect(text).not.toMatch(/<Buffer [0-9a-f]{2} [0-9a-f]{2}/)
            expect(text).not.toContain(MARKER)
          }
          // What names the failure stays.
          expect(String(e.message)).toMatch(/null|duplicate/i)
        }
      })

      it("a syntax error after an encrypted value (MariaDB quotes the statement from there: near '…')", async () => {
        const error = await caught(
          t.db
            .insertInto(u)
            .values({ id: 10, name: sql<string>`1 1`, email: `${MARKER}-10@x.io`, ssn: '700-00-0010' })
            .execute(),
        )
        const e = error as unknown as Record<string, unknown>
        const shown = [e.message, e.stack, e.detail, e.sql, e.sqlMessage, inspect(error, { depth: 5 })]
        for (const text of shown.filter((x): x is string => typeof x === 'string')) {
          expect(text).not.toMatch(/\\x[0-9a-f]{8}/i)
          expect(text).not.toMatch(/X'[0-9a-f]{8}/i)
          expect(text).not.toMatch(/<Buffer [0-9a-f]{2} [0-9a-f]{2}/)
          expect(text).not.toContain(MARKER)
        }
        expect(String(e.message)).toMatch(/syntax/i)
        // mysql2's copy of the statement is the one the plugin sent, with its placeholders.
        if (backend.family === 'mysql') expect(String(e.sql)).toMatch(/values \(\?, 1 1, \?, \?, \?, \?\)/)
      })
    })

    describe("a duplicate refused by a blind index's UNIQUE index", () => {
      it('UNIQUE_VIOLATION names table, column and index column, never the value; the driver error is its cause', async () => {
        const stored = await t.raw
          .selectFrom(u)
          .select('email_bidx')
          .where('id', '=', 1)
          .executeTakeFirstOrThrow()
        const indexValue = Buffer.from(stored.email_bidx as Uint8Array)
        const duplicates = [
          t.db.insertInto(u).values({ id: 6, name: 'dup', email: ` ${MARKER.toUpperCase()}@X.IO ` }),
          t.db
            .updateTable(u)
            .set({ email: `${MARKER}@x.io` })
            .where('id', '=', 2),
        ]
        for (const query of duplicates) {
          const e = await caught(query.execute())
          expect(e).toBeInstanceOf(UniqueViolationError)
          expect(e.code).toBe('UNIQUE_VIOLATION')
          expect([e.table, e.column, (e as UniqueViolationError).index]).toEqual([u, 'email', 'email_bidx'])
          expect((e as UniqueViolationError).constraint).toContain('email_bidx')
          const cause = e.cause as { code?: unknown; errno?: unknown }
          expect(backend.family === 'mysql' ? cause.errno : cause.code).toBe(
            backend.family === 'mysql' ? 1062 : '23505',
          )
          expect(e.stack).toContain(THIS_FILE)
          for (const shown of [e.message, String(e.stack)]) {
            expect(shown.toLowerCase()).not.toContain(MARKER)
            expect(shown.toLowerCase()).not.toContain(indexValue.toString('hex'))
            expect(shown).not.toContain(indexValue.toString('base64'))
          }
        }
        // Inside a transaction too; the transaction is rolled back as for any error.
        const inTrx = await caught(
          t.db.transaction().execute(async (trx) => {
            await trx.insertInto(u).values({ id: 7, name: 'in-trx', email: 'in-trx@x.io' }).execute()
            await trx
              .insertInto(u)
              .values({ id: 8, name: 'dup', email: `${MARKER}@x.io` })
              .execute()
          }),
        )
        expect(inTrx.code).toBe('UNIQUE_VIOLATION')
        expect(await t.raw.selectFrom(u).select('id').where('id', 'in', [6, 7, 8]).execute()).toEqual([])
      })

      it('a unique violation of another column (the primary key) stays the driver error', async () => {
        const e = await caught(
          t.db.insertInto(u).values({ id: 1, name: 'dup-id', email: 'fresh@x.io' }).execute(),
        )
        expect(e).not.toBeInstanceOf(UniqueViolationError)
        const cause = e as unknown as { code?: unknown; errno?: unknown }
        expect(backend.family === 'mysql' ? cause.errno : cause.code).toBe(
          backend.family === 'mysql' ? 1062 : '23505',
        )
      })
    })

    describe('an update that changes nothing (item 10)', () => {
      it('rewrites the ciphertext (fresh nonce); MariaDB counts the row changed, a plain column does not', async () => {
        await t.db.insertInto(u).values({ id: 5, name: 'same', email: 'same@x.io' }).execute()
        const atRest = async () =>
          Buffer.from(
            (await t.raw.selectFrom(u).select('email').where('id', '=', 5).executeTakeFirstOrThrow())
              .email as Uint8Array,
          )
        const before = await atRest()
        const encryptedSame = await t.db
          .updateTable(u)
          .set({ email: 'same@x.io' })
          .where('id', '=', 5)
          .executeTakeFirstOrThrow()
        expect(encryptedSame.numUpdatedRows).toBe(1n)
        expect((await atRest()).equals(before)).toBe(false)
        const plainSame = await t.db
          .updateTable(u)
          .set({ name: 'same' })
          .where('id', '=', 5)
          .executeTakeFirstOrThrow()
        expect(plainSame.numUpdatedRows).toBe(1n)
        if (backend.family === 'mysql') {
          // MariaDB counts rows whose stored bytes changed: a new nonce makes every write a change.
          expect(encryptedSame.numChangedRows).toBe(1n)
          expect(plainSame.numChangedRows).toBe(0n)
        } else {
          expect(encryptedSame.numChangedRows).toBeUndefined()
        }
        expect(await t.db.selectFrom(u).select('email').where('id', '=', 5).execute()).toEqual([
          { email: 'same@x.io' },
        ])
      })
    })
  })
})
