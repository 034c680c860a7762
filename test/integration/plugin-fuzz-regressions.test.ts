import type { Kysely } from 'kysely'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import { backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'

/** Every plaintext these tests use: none may ever reach the driver. */
const SECRETS = ['ada@x.io', 'bob@x.io']

/**
 * Bugs the differential fuzzer (test/fuzz, docs/fuzzing.md) found, each pinned on every backend
 * with a leak scanner between the wrapper and the driver.
 */
describe.each(backends())('plugin fuzz regressions [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let scanner: ScanningDialect
    // biome-ignore lint/suspicious/noExplicitAny: table names are generated per file.
    let db: Kysely<any>
    let u: string
    let o: string

    beforeAll(async () => {
      t = await encryptedTestDb(backend, {
        wrapInner: (d) => {
          scanner = scanningDialect(d, () => SECRETS)
          return scanner
        },
      })
      db = t.db
      ;({ users: u, orders: o } = t.names)
      await db
        .insertInto(u)
        .values([
          { id: 1, name: 'Ada', email: 'ada@x.io' },
          { id: 2, name: 'Bob', email: 'bob@x.io' },
        ])
        .execute()
      await db.insertInto(o).values({ id: 1, user_id: 1, item: 'pen', email: 'ada@x.io' }).execute()
    })
    beforeEach(() => {
      scanner.reset()
    })
    afterAll(async () => {
      expect(scanner.hits()).toEqual([])
      await t?.destroy()
    })

    async function refused(query: { execute(): Promise<unknown> }, code: string): Promise<void> {
      const before = scanner.count()
      const error = await query.execute().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(QueryRefusedError)
      expect((error as QueryRefusedError).code).toBe(code)
      expect(scanner.count()).toBe(before)
    }

    // Fuzz seed 12 (npm run fuzz -- --seed 12): `select ["email" as "name", "id" as "name"]` sent
    // the query, took the key "name" for the ciphertext of email, and failed decrypting the id
    // the driver returned under that key (NOT_CIPHERTEXT) where plain Kysely returned { name: 1 }.
    it('two select-list outputs of one name, one of them encrypted, are refused before sending', async () => {
      await refused(db.selectFrom(o).select(['email as name', 'id as name']), 'QUERY_REFUSED')
      await refused(db.selectFrom(o).select(['id as email', 'email']), 'QUERY_REFUSED')
      await refused(
        db.selectFrom(u).select(['email', (eb) => eb.fn('upper', ['name']).as('email')]),
        'QUERY_REFUSED',
      )
      await refused(
        db
          .selectFrom(o)
          .select(['item as e', (eb) => eb.selectFrom(u).select('email').where('id', '=', 1).as('e')]),
        'QUERY_REFUSED',
      )
    })

    it('outputs of one name that are all plaintext, or all the same encrypted column, still run', async () => {
      const rows = await db.selectFrom(o).select(['item as name', 'id as name']).execute()
      expect(rows).toEqual([{ name: 1 }])
      const distinct = await db.selectFrom(o).select(['item as i', 'email as e']).execute()
      expect(distinct).toEqual([{ i: 'pen', e: 'ada@x.io' }])
      // The same encrypted column twice under one name (the driver keeps the last: either decrypts).
      const twice = await db
        .selectFrom(`${u} as a`)
        .innerJoin(`${u} as b`, 'b.id', 'a.id')
        .select(['a.email', 'b.email'])
        .where('a.id', '=', 2)
        .execute()
      expect(twice).toEqual([{ email: 'bob@x.io' }])
    })
  })
})
