import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import type { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, type TestDB } from '../support/encrypted-db.js'
import { type LeakHit, type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'

/**
 * Property: whatever plaintext the application writes or searches, through every supported query
 * shape, none of it reaches the database driver — not in the SQL, not in a string parameter, not
 * as bytes inside a binary parameter — and the application still reads its plaintext back.
 *
 * The scanner sits INSIDE the encryption wrapper (`encryption.wrap(scanningDialect(dialect))`), so
 * it sees exactly what the driver receives.
 */

const RUNS = 25

/** Raw material of one user; markers are added in the property so every value is unique. */
interface Piece {
  readonly email: string
  readonly ssnDigits: string
  readonly note: string
  readonly frac: number
  readonly dob: Date
}

/** One user as the application writes it. */
interface UserValues {
  readonly name: string
  readonly email: string
  readonly ssn: string
  readonly notes: { note: string; n: number; tags: string[] }
  readonly score: number
  readonly dob: Date
}

const piece: fc.Arbitrary<Piece> = fc.record({
  // Arbitrary Unicode (quotes, %, NUL, emoji, combining marks): the SQL must not care.
  email: fc.string({ minLength: 6, maxLength: 8, unit: 'grapheme' }),
  ssnDigits: fc.string({ minLength: 4, maxLength: 8, unit: fc.constantFrom(...'0123456789') }),
  note: fc.string({ minLength: 6, maxLength: 24, unit: 'grapheme' }),
  frac: fc.double({ min: 0, max: 0.999, noNaN: true }),
  dob: fc.date({ min: new Date(-2_208_988_800_000), max: new Date(4_102_444_800_000), noInvalidDate: true }),
})

/** A per-process tag: markers differ between files running in parallel on one database. */
const TAG = randomBytes(3).toString('hex')
const TAG_DIGITS = String(randomBytes(2).readUInt16BE(0) % 1000).padStart(3, '0')
let counter = 0

/** Gives a piece a unique, fixed-width marker prefix, so no secret is a substring of another. */
function user(p: Piece): UserValues {
  counter += 1
  const n = String(counter).padStart(6, '0')
  const marker = `Kq${TAG}${n}z`
  return {
    name: `n${TAG}${n}`,
    email: `${marker}${p.email}`,
    ssn: `9${TAG_DIGITS}-${n}-${p.ssnDigits}`,
    notes: { note: `${marker}${p.note}`, n: p.frac, tags: [marker, 'x'] },
    // Unique per value (score has a UNIQUE blind index).
    score: counter + p.frac,
    dob: p.dob,
  }
}

/** Every string form of a user's plaintext that must never reach the driver. */
function secretsOf(u: UserValues): string[] {
  const out = [u.email, u.email.trim().toLowerCase(), u.ssn, u.ssn.replace(/\D/g, ''), u.notes.note]
  const score = String(u.score)
  if (score.length >= 8) out.push(score)
  return out
}

function expectUser(row: Record<string, unknown> | undefined, u: UserValues): void {
  expect(row).toBeDefined()
  expect(row!.name).toBe(u.name)
  expect(row!.email).toBe(u.email)
  expect(row!.ssn).toBe(u.ssn)
  expect(row!.notes).toEqual(u.notes)
  expect(row!.score).toBe(u.score)
  expect(row!.dob).toBeInstanceOf(Date)
  expect((row!.dob as Date).getTime()).toBe(u.dob.getTime())
}

/** A readable failure: which secret, where, in which SQL (test data only). */
function describeHits(hits: readonly LeakHit[]): string[] {
  return hits.map((h) => `${JSON.stringify(h.secret)} in ${h.where} of: ${h.sql}`)
}

describe.each(backends())('no plaintext reaches the driver on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let scanner: ScanningDialect
    const secrets: string[] = []

    beforeAll(async () => {
      t = await encryptedTestDb(backend, {
        wrapInner: (d) => {
          scanner = scanningDialect(d, () => secrets)
          return scanner
        },
      })
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('the scanner finds a plaintext that does reach the driver (the check can fail)', async () => {
      const secret = `Kq${TAG}canary`
      secrets.push(secret)
      scanner.reset()
      await t.db.selectFrom(t.names.plain).selectAll().where('label', '=', secret).execute()
      expect(scanner.hits().map((h) => h.where)).toEqual(['parameter 0'])
      // And as bytes inside a binary parameter.
      await t.db
        .withoutPlugins()
        .selectFrom(t.names.plain)
        .selectAll()
        .where('label', '=', Buffer.from(`x${secret}x`) as never)
        .execute()
        .catch(() => undefined)
      expect(scanner.hits()).toHaveLength(2)
      secrets.pop()
      scanner.reset()
    })

    it('through inserts, searches, updates, joins, upserts, transactions and deletes', async () => {
      const U = t.names.users
      const O = t.names.orders
      const db: Kysely<TestDB> = t.db
      const row = (u: UserValues) => ({
        name: u.name,
        email: u.email,
        ssn: u.ssn,
        notes: u.notes,
        score: u.score,
        dob: u.dob,
      })
      const byEmail = (email: string) =>
        db
          .selectFrom(U)
          .select(['id', 'name', 'email', 'ssn', 'notes', 'score', 'dob'])
          .where('email', '=', email)
          .execute()

      await fc.assert(
        fc.asyncProperty(fc.array(piece, { minLength: 8, maxLength: 8 }), async (pieces) => {
          const [u0, u1, u2, u0b, u2b, u3, u3b, u4] = pieces.map(user) as [
            UserValues,
            UserValues,
            UserValues,
            UserValues,
            UserValues,
            UserValues,
            UserValues,
            UserValues,
          ]
          for (const u of [u0, u1, u2, u0b, u2b, u3, u3b, u4]) secrets.push(...secretsOf(u))
          scanner.reset()
          const names = [u0.name, u1.name, u2.name]

          // insert one, insert many
          if (backend.family === 'postgres') {
            const returned = await db
              .insertInto(U)
              .values(row(u0))
              .returning(['email', 'ssn', 'notes'])
              .execute()
            expect(returned).toEqual([{ email: u0.email, ssn: u0.ssn, notes: u0.notes }])
          } else {
            await db.insertInto(U).values(row(u0)).execute()
          }
          await db
            .insertInto(U)
            .values([row(u1), row(u2)])
            .execute()

          // where =, in, not in, <> on the unique index
          expectUser((await byEmail(u0.email))[0], u0)
          const both = await db
            .selectFrom(U)
            .select(['name', 'email'])
            .where('email', 'in', [u1.email, u2.email])
            .execute()
          expect(both.map((r) => r.email).sort()).toEqual([u1.email, u2.email].sort())
          const notIn = await db
            .selectFrom(U)
            .select('name')
            .where('name', 'in', names)
            .where('email', 'not in', [u0.email])
            .execute()
          expect(notIn.map((r) => r.name).sort()).toEqual([u1.name, u2.name].sort())
          const ne = await db
            .selectFrom(U)
            .select('name')
            .where('name', 'in', names)
            .where('email', '<>', u1.email)
            .execute()
          expect(ne.map((r) => r.name).sort()).toEqual([u0.name, u2.name].sort())

          // where = on the 16-bit search index: false positives removed
          const bySsn = await db.selectFrom(U).select(['name', 'ssn']).where('ssn', '=', u0.ssn).execute()
          expect(bySsn).toEqual([{ name: u0.name, ssn: u0.ssn }])

          // update set, found by its new value only
          await db
            .updateTable(U)
            .set({ email: u0b.email, ssn: u0b.ssn, notes: u0b.notes, score: u0b.score, dob: u0b.dob })
            .where('email', '=', u0.email)
            .execute()
          expect(await byEmail(u0.email)).toEqual([])
          const updated = (await byEmail(u0b.email))[0]
          expectUser(updated, { ...u0b, name: u0.name })

          // a join: both tables' encrypted columns decrypted, search on the joined table
          await db.insertInto(O).values({ user_id: updated!.id, item: u1.name, email: u1.email }).execute()
          const joined = await db
            .selectFrom(U)
            .innerJoin(O, `${O}.user_id`, `${U}.id`)
            .select([`${U}.email as ue`, `${O}.email as oe`, `${O}.item as item`])
            .where(`${O}.email`, '=', u1.email)
            .execute()
          expect(joined).toEqual([{ ue: u0b.email, oe: u1.email, item: u1.name }])

          // upsert: on conflict (postgres) / on duplicate key (mysql)
          const again = db.insertInto(U).values(row(u2))
          if (backend.family === 'postgres') {
            await again
              .onConflict((oc) =>
                oc.column('email_bidx').doUpdateSet((eb) => ({
                  notes: u2b.notes,
                  score: u2b.score,
                  ssn: eb.ref('excluded.ssn'),
                })),
              )
              .execute()
          } else {
            await again.onDuplicateKeyUpdate({ notes: u2b.notes, score: u2b.score }).execute()
          }
          expectUser((await byEmail(u2.email))[0], { ...u2, notes: u2b.notes, score: u2b.score })

          // a transaction: insert, search, update inside it
          await db.transaction().execute(async (trx) => {
            await trx.insertInto(U).values(row(u3)).execute()
            const inside = await trx
              .selectFrom(U)
              .select(['email', 'ssn'])
              .where('email', '=', u3.email)
              .execute()
            expect(inside).toEqual([{ email: u3.email, ssn: u3.ssn }])
            await trx.updateTable(U).set({ ssn: u3b.ssn }).where('email', '=', u3.email).execute()
          })
          const afterTrx = await db
            .selectFrom(U)
            .select(['email', 'ssn'])
            .where('ssn', '=', u3b.ssn)
            .execute()
          expect(afterTrx).toEqual([{ email: u3.email, ssn: u3b.ssn }])

          // a rolled-back transaction leaves nothing
          await db
            .transaction()
            .execute(async (trx) => {
              await trx.insertInto(U).values(row(u4)).execute()
              throw new Error('rollback')
            })
            .catch((error: unknown) => {
              if ((error as Error).message !== 'rollback') throw error
            })
          expect(await byEmail(u4.email)).toEqual([])

          // delete where email
          const deleted = await db.deleteFrom(U).where('email', '=', u1.email).executeTakeFirst()
          expect(Number(deleted.numDeletedRows)).toBe(1)
          expect(await byEmail(u1.email)).toEqual([])

          expect(scanner.count()).toBeGreaterThan(10)
          expect(describeHits(scanner.hits())).toEqual([])
        }),
        { numRuns: RUNS },
      )
    })
  })
})
