import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import type { EncryptedTestDb, TableNames } from '../support/encrypted-db.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/** Every plaintext these tests use: none may ever reach the driver. */
const SECRETS = ['ada@x.io', 'bob@x.io']

async function seed(t: EncryptedTestDb): Promise<void> {
  await insertAdaAndBob(t)
  // Ada's order carries Bob's address: a row shows which relation's email came back.
  await t.db
    .insertInto(t.names.orders)
    .values({ id: 7, user_id: 1, item: 'pen', email: 'bob@x.io' })
    .execute()
}

/**
 * The fuzzer's minimal form: `d.name` passes orders.email on, and users, after it, has a
 * plaintext `name`; plain Kysely returns users.name.
 */
// biome-ignore lint/suspicious/noExplicitAny: table names are generated per file.
function derivedThenUsers(db: Kysely<any>, names: TableNames) {
  return db
    .selectFrom((eb) =>
      eb.selectFrom(`${names.orders} as x`).select(['x.user_id as id', 'x.email as name']).as('d'),
    )
    .innerJoin(`${names.users} as uu`, 'uu.id', 'd.id')
    .selectAll()
}

/** The columns of a row these tests compare (the blind indexes and null columns left out). */
function pick(rows: Record<string, unknown>[], ...keys: string[]) {
  return rows.map((r) => Object.fromEntries(keys.map((k) => [k, r[k]])))
}

/**
 * `selectAll()` over several relations: the driver keeps the last column of a name, so an
 * encrypted output of one relation may be shadowed by a later relation's plaintext column of the
 * same name (fuzz seed 21, `npm run fuzz -- --runs 3000 --seed 21 --backend postgres`, cases 384
 * and 1795: the plan decrypted the plaintext value and failed after sending, NOT_CIPHERTEXT).
 * With schema verification on, the catalog it read says which column wins; with it off, a shape
 * in which a later relation's unknown columns could shadow an encrypted output is refused
 * before anything is sent (docs/fuzzing.md, docs/guide.md).
 */
describe.each(backends())('plugin selectAll() over several relations [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    describe('with schema verification (the catalog lists every column)', () => {
      const { t, refused, scanner } = useScannedTestDb(backend, SECRETS, seed)
      // biome-ignore lint/suspicious/noExplicitAny: table names are generated per file.
      let db: Kysely<any>
      beforeAll(() => {
        db = t.db
      })
      const { users: u, orders: o } = t.names
      const late = `${u}_late`
      afterAll(async () => {
        await sql`drop table if exists ${sql.table(late)}`.execute(t.raw)
      })

      it('a derived table whose encrypted output is shadowed by a later table returns the later column', async () => {
        const rows = await derivedThenUsers(db, t.names).execute()
        expect(pick(rows, 'id', 'name', 'email')).toEqual([{ id: 1, name: 'Ada', email: 'ada@x.io' }])
      })

      it('users ⋈ orders: the later encrypted column of a name is the one decrypted', async () => {
        const rows = await db.selectFrom(u).innerJoin(o, `${o}.user_id`, `${u}.id`).selectAll().execute()
        expect(pick(rows, 'id', 'name', 'item', 'email')).toEqual([
          { id: 7, name: 'Ada', item: 'pen', email: 'bob@x.io' },
        ])
        const reversed = await db.selectFrom(o).innerJoin(u, `${u}.id`, `${o}.user_id`).selectAll().execute()
        expect(pick(reversed, 'id', 'name', 'item', 'email')).toEqual([
          { id: 1, name: 'Ada', item: 'pen', email: 'ada@x.io' },
        ])
      })

      it('the first query of a wrapped dialect, analyzed before the catalog is read, is analyzed again with it', async () => {
        // A second wrap of the same dialect: its schema check has not run yet.
        // biome-ignore lint/suspicious/noExplicitAny: table names are generated per file.
        const fresh: Kysely<any> = new Kysely({
          dialect: t.encryption.wrap(scanner),
          plugins: [t.encryption.plugin],
        })
        const rows = await derivedThenUsers(fresh, t.names).execute()
        expect(pick(rows, 'id', 'name', 'email')).toEqual([{ id: 1, name: 'Ada', email: 'ada@x.io' }])
        // Not destroyed: it shares the pool (or PGlite instance) of `db`, which the suite closes.
      })

      it('a table the catalog does not list (made after the check) may not follow an encrypted output', async () => {
        await sql`create table ${sql.table(late)} (id integer, email varchar(20))`.execute(t.raw)
        await sql`insert into ${sql.table(late)} values (1, 'plain')`.execute(t.raw)
        const error = await refused(
          db.selectFrom(u).innerJoin(late, `${late}.id`, `${u}.id`).selectAll(),
          'QUERY_REFUSED',
        )
        expect(error.operator).toBe('select all')
        // Before every encrypted output, it shadows none.
        const rows = await db.selectFrom(late).innerJoin(u, `${u}.id`, `${late}.id`).selectAll().execute()
        expect(pick(rows, 'id', 'name', 'email')).toEqual([{ id: 1, name: 'Ada', email: 'ada@x.io' }])
      })

      it('an explicit plaintext output after a * replaces the encrypted output of its name', async () => {
        const rows = await db.selectFrom(o).selectAll().select('item as email').execute()
        expect(pick(rows, 'id', 'email')).toEqual([{ id: 7, email: 'pen' }])
      })
    })

    describe('without schema verification (only the encrypted columns are known)', () => {
      const { t, refused } = useScannedTestDb(backend, SECRETS, seed, { verifySchema: false })
      // biome-ignore lint/suspicious/noExplicitAny: table names are generated per file.
      let db: Kysely<any>
      beforeAll(() => {
        db = t.db
      })
      const { users: u, orders: o, plain: p } = t.names

      it('a later relation whose columns are not known may not follow an encrypted output: refused before sending', async () => {
        const derived = await refused(derivedThenUsers(db, t.names), 'QUERY_REFUSED')
        expect(derived.operator).toBe('select all')
        expect(derived.hint).toMatch(/List the columns/)
        await refused(db.selectFrom(u).innerJoin(o, `${o}.user_id`, `${u}.id`).selectAll(), 'QUERY_REFUSED')
        await refused(db.selectFrom(u).innerJoin(p, `${p}.id`, `${u}.id`).selectAll(), 'QUERY_REFUSED')
      })

      it('shapes whose outputs are all known still run', async () => {
        // Every encrypted output of orders is replaced by users' own (its only one, email).
        const rows = await db.selectFrom(o).innerJoin(u, `${u}.id`, `${o}.user_id`).selectAll().execute()
        expect(pick(rows, 'id', 'name', 'item', 'email')).toEqual([
          { id: 1, name: 'Ada', item: 'pen', email: 'ada@x.io' },
        ])
        // A derived table's outputs are known from its select list.
        const derived = await db
          .selectFrom(o)
          .innerJoin(
            (eb) => eb.selectFrom(`${o} as x`).select(['x.id as oid', 'x.user_id as email']).as('d'),
            'd.oid',
            `${o}.id`,
          )
          .selectAll()
          .execute()
        expect(pick(derived, 'id', 'item', 'email')).toEqual([{ id: 7, item: 'pen', email: 1 }])
        // One relation's columns, the others listed.
        const one = await db
          .selectFrom(u)
          .innerJoin(o, `${o}.user_id`, `${u}.id`)
          .selectAll(u)
          .select(`${o}.item`)
          .execute()
        expect(pick(one, 'id', 'email', 'item')).toEqual([{ id: 1, email: 'ada@x.io', item: 'pen' }])
      })

      it('a query over plaintext tables, or reading only their columns, is never refused', async () => {
        await db.insertInto(p).values({ id: 1, label: 'one' }).execute()
        const plain = await db
          .selectFrom(`${p} as a`)
          .innerJoin(`${p} as b`, 'b.id', 'a.id')
          .selectAll()
          .execute()
        expect(plain).toEqual([{ id: 1, label: 'one' }])
        const mixed = await db
          .selectFrom(p)
          .innerJoin(u, `${u}.id`, `${p}.id`)
          .selectAll(p)
          .select(`${u}.name`)
          .execute()
        expect(mixed).toEqual([{ id: 1, label: 'one', name: 'Ada' }])
      })
    })
  })
})
