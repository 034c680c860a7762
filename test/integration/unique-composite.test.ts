import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UniqueViolationError } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'

/**
 * A UNIQUE index over a plain column and a blind index (a tenant and an email, say), as the
 * application's own migration makes it: a duplicate it refuses is the typed UniqueViolationError,
 * as one refused by the blind index's own UNIQUE index is.
 */
describe.each(backends())('a composite UNIQUE index holding a blind index [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let u: string
    beforeAll(async () => {
      t = await encryptedTestDb(backend)
      u = t.names.users
      // The blind index's own UNIQUE index (the schema check asks for it) made again after the
      // composite one, so the composite one comes first in the engine's order of checks.
      const own = `${u}_email_bidx_idx`
      if (backend.family === 'mysql') await sql`drop index ${sql.id(own)} on ${sql.table(u)}`.execute(t.raw)
      else await sql`drop index ${sql.id(own)}`.execute(t.raw)
      await sql`create unique index ${sql.id(`${u}_name_email`)} on ${sql.table(u)} (name, email_bidx)`.execute(
        t.raw,
      )
      await sql`create unique index ${sql.id(own)} on ${sql.table(u)} (email_bidx)`.execute(t.raw)
      await t.db.insertInto(u).values({ id: 1, name: 'acme', email: 'ada@x.io' }).execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('a duplicate the composite index refuses first is UNIQUE_VIOLATION naming the column and the other key column', async () => {
      const error = await t.db
        .insertInto(u)
        .values({ id: 3, name: 'acme', email: ' ADA@x.io' })
        .execute()
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(UniqueViolationError)
      expect(error).toMatchObject({
        code: 'UNIQUE_VIOLATION',
        table: u,
        column: 'email',
        index: 'email_bidx',
      })
      expect((error as UniqueViolationError).constraint).toContain(`${u}_name_email`)
      expect((error as Error).message).toContain('with the same name')
      expect((error as Error).message).not.toMatch(/ada@x\.io/i)
    })

    it('an update onto a taken pair that writes the email is UNIQUE_VIOLATION too', async () => {
      await t.db.insertInto(u).values({ id: 2, name: 'globex', email: 'bob@x.io' }).execute()
      const both = await t.db
        .updateTable(u)
        .set({ name: 'acme', email: 'Ada@x.io' })
        .where('id', '=', 2)
        .execute()
        .catch((e: unknown) => e)
      expect(both).toMatchObject({ code: 'UNIQUE_VIOLATION', column: 'email' })
      expect((both as UniqueViolationError).constraint).toContain(`${u}_name_email`)
    })
  })
})
