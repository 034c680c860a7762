/**
 * A misspelt column name of a table with encrypted columns (helper-119's review): `emial` for
 * `email`, `'email '` with the space Kysely keeps. The plugin resolved no encrypted column, so
 * the value compared with or written to it went out as a plain parameter (mysql2 inlines it in
 * the statement text the server logs), and the database rejected the name only after receiving
 * it. A name spelt near an encrypted column's that the catalog read by schema verification does
 * not list is now refused (`AMBIGUOUS_COLUMN`) before anything is sent, in a subquery and a CTE's
 * query too; a real column of such a name runs as before, and so does everything with verification
 * off (no catalog to tell).
 */
import { randomBytes } from 'node:crypto'
import type { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
  QueryRefusedError,
} from '../../src/index.js'
import { type Backend, backends, dropTables, onlyTables, uniqueName } from '../support/backends.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'
import { newPGlite } from '../support/pglite.js'

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per run.
type AnyDB = Record<string, any>

const SECRET = 'misspelt-secret-8821@x.io'

/** One query of a case; `u` the encrypted table, `p` the plain one. */
type Build = (db: Kysely<AnyDB>, u: string, p: string) => { execute(): Promise<unknown> }

interface Case {
  readonly name: string
  /** The encrypted column the refusal names. */
  readonly column: 'email' | 'ssn'
  readonly build: Build
  readonly family?: 'postgres' | 'mysql'
}

const REFUSED: readonly Case[] = [
  {
    name: "where('emial', '=', v)",
    column: 'email',
    build: (db, u) => db.selectFrom(u).select('id').where('emial', '=', SECRET),
  },
  {
    name: "where('u.emial', '=', v)",
    column: 'email',
    build: (db, u) => db.selectFrom(`${u} as u`).select('u.id').where('u.emial', '=', SECRET),
  },
  {
    name: "where('email ', '=', v): a trailing space, which Kysely keeps",
    column: 'email',
    build: (db, u) => db.selectFrom(u).select('id').where('email ', '=', SECRET),
  },
  {
    name: "where('Emial', 'in', [v]): another case as well",
    column: 'email',
    build: (db, u) => db.selectFrom(u).select('id').where('Emial', 'in', [SECRET]),
  },
  {
    name: "where('ssm', '=', v): one letter off a short name",
    column: 'ssn',
    build: (db, u) => db.selectFrom(u).select('id').where('ssm', '=', SECRET),
  },
  {
    name: 'a misspelt qualified name in a JOIN ON condition',
    column: 'email',
    build: (db, u, p) =>
      db
        .selectFrom(`${u} as u`)
        .innerJoin(`${p} as p`, (j) => j.onRef('p.id', '=', 'u.id').on('u.emial', '=', SECRET))
        .select('u.id'),
  },
  {
    name: 'a misspelt unqualified name in a JOIN ON condition that no relation in scope has',
    column: 'ssn',
    build: (db, u, p) =>
      db
        .selectFrom(`${u} as u`)
        .innerJoin(`${p} as p`, (j) => j.onRef('p.id', '=', 'u.id').on('ssm', '=', SECRET))
        .select('u.id'),
  },
  {
    name: 'a misspelt name in the WHERE of a derived table',
    column: 'email',
    build: (db, u) =>
      db.selectFrom(db.selectFrom(u).select('id').where('emial', '=', SECRET).as('d')).select('d.id'),
  },
  {
    name: "a misspelt name in a CTE's query",
    column: 'email',
    build: (db, u) =>
      db
        .with('c', (q) => q.selectFrom(u).select('id').where('emial', '=', SECRET))
        .selectFrom('c')
        .select('c.id'),
  },
  {
    name: 'a misspelt name in a subquery of WHERE',
    column: 'ssn',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select('id')
        .where('id', 'in', db.selectFrom(`${u} as u2`).select('u2.id').where('ssm', '=', SECRET)),
  },
  {
    name: "having('emial', '=', v) where no output of the select list is so named",
    column: 'email',
    build: (db, u) => db.selectFrom(u).select('name').groupBy('name').having('emial', '=', SECRET),
  },
  {
    name: 'a name no output of a derived table has, spelt near one that passes an encrypted column on',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(db.selectFrom(u).select(['id', 'email as mail']).as('d'))
        .select('d.id')
        .where('d.mial', '=', SECRET),
  },
  {
    name: 'an unqualified misspelt name inside a function of a WHERE condition (helper-129)',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select('id')
        .where((eb) => eb(eb.fn('lower', ['emial']), '=', SECRET)),
  },
  {
    name: 'an unqualified misspelt name inside a cast in HAVING, where no output is so named',
    column: 'ssn',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select('name')
        .groupBy('name')
        .having((eb) => eb(eb.cast('ssm', 'char(20)' as never), '=', SECRET)),
  },
  {
    name: "a qualified name a derived table's selectAll() does not bring, spelt near its encrypted output (F5)",
    column: 'email',
    build: (db, u) =>
      db.selectFrom(db.selectFrom(u).selectAll().as('d')).select('d.id').where('d.emial', '=', SECRET),
  },
  {
    name: "an unqualified name beside a derived table's selectAll() over a plain table, near an encrypted column (F5)",
    column: 'email',
    build: (db, u, p) =>
      db
        .selectFrom([`${u} as u`, db.selectFrom(p).selectAll().as('d')])
        .select('u.id')
        .where('emal', '=', SECRET),
  },
  {
    name: 'a misspelt name in a query that raw SQL without a FROM of its own wraps whole (explain)',
    column: 'email',
    build: (db, u) => ({
      execute: () => sql`explain ${db.selectFrom(u).select('id').where('emial', '=', SECRET)}`.execute(db),
    }),
  },
  {
    name: 'a misspelt name in a write embedded in raw SQL',
    column: 'email',
    build: (db, u) => ({
      execute: () => sql`${db.updateTable(u).set({ name: 'x' }).where('emial', '=', SECRET)}`.execute(db),
    }),
  },
  {
    name: 'values({ emial: v })',
    column: 'email',
    build: (db, u) => db.insertInto(u).values({ id: 9, name: 'x', emial: SECRET }),
  },
  {
    name: "set({ 'email ': v })",
    column: 'email',
    build: (db, u) => db.updateTable(u).set({ 'email ': SECRET }).where('id', '=', 1),
  },
  {
    name: "delete … where('emial', '=', v)",
    column: 'email',
    build: (db, u) => db.deleteFrom(u).where('emial', '=', SECRET),
  },
  {
    name: "on conflict do update set({ 'email ': v })",
    column: 'email',
    family: 'postgres',
    build: (db, u) =>
      db
        .insertInto(u)
        .values({ id: 1, name: 'ada' })
        .onConflict((oc) => oc.column('id').doUpdateSet({ 'email ': SECRET })),
  },
  {
    name: "on duplicate key update({ 'email ': v })",
    column: 'email',
    family: 'mysql',
    build: (db, u) =>
      db.insertInto(u).values({ id: 1, name: 'ada' }).onDuplicateKeyUpdate({ 'email ': SECRET }),
  },
]

describe.each(backends())('misspelt columns of an encrypted table [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const users = uniqueName('msp_users')
    const plain = uniqueName('msp_plain')
    const keyTable = `${users}_keys`
    let pglite: PGlite | undefined
    let raw: Kysely<AnyDB>
    const encryptions: FieldEncryption[] = []
    const dbs: Kysely<AnyDB>[] = []
    let db: Kysely<AnyDB>
    let wire: ScanningDialect
    let offDb: Kysely<AnyDB>
    let offWire: ScanningDialect
    const newDialect = (): Dialect => {
      if (backend.name !== 'pglite') return backend.createDialect()
      pglite ??= newPGlite()
      return new PGliteDialect(pglite)
    }
    const schema = encryptedSchema({
      [users]: {
        email: encrypted.text({
          index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
          maxBytes: 320,
        }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
      },
    })
    const key = randomBytes(32)
    /** An application over the tables: its own wrapped dialect (and schema check), recorded. */
    const app = (verify: boolean): { db: Kysely<AnyDB>; wire: ScanningDialect } => {
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key }),
        keyTable,
        verifySchema: verify ? onlyTables(users, plain) : false,
      })
      const scanned = scanningDialect(newDialect(), () => [SECRET])
      const made = new Kysely<AnyDB>({ dialect: encryption.wrap(scanned), plugins: [encryption.plugin] })
      encryptions.push(encryption)
      dbs.push(made)
      return { db: made, wire: scanned }
    }

    beforeAll(async () => {
      raw = new Kysely<AnyDB>({ dialect: newDialect() })
      // `emails` is a real plain column spelt near the encrypted `email`; `emial` one of the plain table.
      await raw.schema
        .createTable(users)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('name', 'varchar(100)')
        .addColumn('emails', 'varchar(100)')
        .$call(addEncryptedColumns(schema, users, backend.family))
        .execute()
      await raw.schema
        .createTable(plain)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('emial', 'varchar(100)')
        .execute()
      await createBlindIndexes(raw, schema, users)
      ;({ db, wire } = app(true))
      ;({ db: offDb, wire: offWire } = app(false))
      await encryptions[0]!.init(db)
      await db
        .insertInto(users)
        .values({ id: 1, name: 'ada', emails: 'list@x.io', email: 'ada@x.io' })
        .execute()
      await db.insertInto(plain).values({ id: 1, emial: 'plain@x.io' }).execute()
    })
    afterAll(async () => {
      // Tables first: destroying a Kysely over PGlite closes the instance all share.
      await dropTables(raw, [users, plain, keyTable])
      for (const e of encryptions) await e.close()
      if (backend.name === 'pglite') await raw?.destroy()
      else for (const k of [raw, ...dbs]) await k.destroy()
    })
    beforeEach(() => {
      wire.reset()
      offWire.reset()
    })

    for (const c of REFUSED) {
      it.runIf(c.family === undefined || c.family === backend.family)(
        `refuses ${c.name}, with nothing sent`,
        async () => {
          const error = await c
            .build(db, users, plain)
            .execute()
            .then(
              () => undefined,
              (e: unknown) => e,
            )
          expect(error).toBeInstanceOf(QueryRefusedError)
          expect(error).toMatchObject({ code: 'AMBIGUOUS_COLUMN', table: users, column: c.column })
          expect((error as Error).message).not.toContain(SECRET)
          expect(wire.count()).toBe(0)
        },
      )
    }

    it('refuses on the first query of a wrapped dialect too, once its schema check has read the catalog', async () => {
      const fresh = app(true)
      await expect(
        fresh.db.selectFrom(users).select('id').where('emial', '=', SECRET).execute(),
      ).rejects.toMatchObject({ code: 'AMBIGUOUS_COLUMN' })
      // The schema check's own catalog queries ran; nothing of the query did.
      expect(fresh.wire.hits()).toEqual([])
      expect(fresh.wire.queries.some((q) => q.sql.includes('emial'))).toBe(false)
    })

    it('runs a real plain column spelt near an encrypted one (emails beside email)', async () => {
      expect(
        await db.selectFrom(users).select(['id', 'emails']).where('emails', '=', 'list@x.io').execute(),
      ).toEqual([{ id: 1, emails: 'list@x.io' }])
      await db.updateTable(users).set({ emails: 'list2@x.io' }).where('id', '=', 1).execute()
      await db.insertInto(users).values({ id: 2, name: 'bob', emails: 'bob-list@x.io' }).execute()
      expect(
        await db
          .selectFrom(`${users} as u`)
          .select('u.emails')
          .where('u.emails', '=', 'list2@x.io')
          .execute(),
      ).toEqual([{ emails: 'list2@x.io' }])
      await db.deleteFrom(users).where('id', '=', 2).execute()
    })

    it('runs an unqualified name that is a column of another relation in scope', async () => {
      const rows = await db
        .selectFrom(`${users} as u`)
        .innerJoin(`${plain} as p`, 'p.id', 'u.id')
        .select('u.id')
        .where('emial', '=', 'plain@x.io')
        .execute()
      expect(rows).toEqual([{ id: 1 }])
    })

    it("runs an unqualified name that a derived table's selectAll() brings, read with the catalog (F5)", async () => {
      const rows = await db
        .selectFrom([`${users} as u`, db.selectFrom(plain).selectAll().as('d')])
        .select('u.id')
        .whereRef('d.id', '=', 'u.id')
        .where('emial', '=', 'plain@x.io')
        .execute()
      expect(rows).toEqual([{ id: 1 }])
      // And a qualified one that is a real column of the table the `*` is over.
      expect(
        await db
          .selectFrom(db.selectFrom(users).selectAll().as('d'))
          .select('d.id')
          .where('d.emails', 'is not', null)
          .execute(),
      ).toEqual([{ id: 1 }])
    })

    it("runs a subquery's unqualified name that is a column of an enclosing query's relation", async () => {
      const rows = await db
        .selectFrom(`${plain} as p`)
        .select('p.id')
        .where((eb) =>
          eb.exists(
            eb
              .selectFrom(`${users} as u`)
              .select('u.id')
              .whereRef('u.id', '=', 'p.id')
              .where('emial', '=', 'plain@x.io'),
          ),
        )
        .execute()
      expect(rows).toEqual([{ id: 1 }])
    })

    describe("leaves a subquery's name alone where raw SQL may define it (helper-126)", () => {
      /** `emial` is a column of the raw SQL's `p` around it, not of `u2`. */
      const sub = () => db.selectFrom(`${users} as u2`).select('u2.id').where('emial', '=', 'plain@x.io')

      it('a query in raw SQL with a FROM of its own', async () => {
        const rows = await db
          .selectFrom(users)
          .select('id')
          .where('id', 'in', sql<number>`(select p.id from ${sql.table(plain)} p where exists (${sub()}))`)
          .execute()
        expect(rows).toEqual([{ id: 1 }])
      })

      it('a query under an expression in raw SQL with a FROM of its own (helper-128)', async () => {
        const rows = await db
          .selectFrom(users)
          .select('id')
          .where((eb) =>
            eb('id', 'in', sql<number>`(select p.id from ${sql.table(plain)} p where ${eb.exists(sub())})`),
          )
          .execute()
        expect(rows).toEqual([{ id: 1 }])
      })

      it('a query in a whole statement of raw SQL', async () => {
        const { rows } = await sql<{
          id: number
        }>`select p.id from ${sql.table(plain)} p where exists (${sub()})`.execute(db)
        expect(rows).toEqual([{ id: 1 }])
      })

      it.runIf(backend.family === 'mysql')(
        'an enclosing select-list alias given in raw SQL, which MySQL lets a subquery read',
        async () => {
          const rows = await db
            .selectFrom(users)
            .select([
              // biome-ignore lint/suspicious/noExplicitAny: a raw select item names its own output.
              sql`upper(name) as emial` as any,
              db.selectFrom(`${users} as u2`).select('u2.id').where('emial', '=', 'ADA').limit(1).as('x'),
            ])
            .where('id', '=', 1)
            .execute()
          expect(rows).toEqual([{ emial: 'ADA', x: 1 }])
        },
      )

      it.runIf(backend.family === 'mysql')(
        "ON DUPLICATE KEY UPDATE of an INSERT … SELECT, which may read the SELECT's columns",
        async () => {
          await db
            .insertInto(users)
            .columns(['id', 'name'])
            .expression(db.selectFrom(`${plain} as p`).select(['p.id', 'p.emial as name']))
            .onDuplicateKeyUpdate((eb) => ({
              name: eb
                .selectFrom(`${users} as o`)
                .select(sql<string>`max(o.name)`.as('m'))
                .where('emial', '=', 'plain@x.io'),
            }))
            .execute()
          expect(await db.selectFrom(users).select('name').where('id', '=', 1).execute()).toEqual([
            { name: 'ada' },
          ])
        },
      )
    })

    it('runs a derived table output aliased by raw SQL, and a CTE column list shorter than its query (helper-127)', async () => {
      const derived = db
        .selectFrom(users)
        .select(['id', 'email', sql<string>`'x'`.as(sql`emial` as never)])
        .as('d')
      expect(await db.selectFrom(derived).select('d.id').where('d.emial', '=', 'x').execute()).toEqual([
        { id: 1 },
      ])
      if (backend.family !== 'postgres') return
      const rows = await db
        .with('c(a)', (q) => q.selectFrom(plain).select(['id', 'emial']) as never)
        .selectFrom([users, 'c'])
        .select(`${users}.id`)
        .where('emial', '=', 'plain@x.io')
        .execute()
      expect(rows).toEqual([{ id: 1 }])
    })

    it('leaves an unqualified name alone beside a relation it cannot list (raw SQL)', async () => {
      const rows = await db
        .selectFrom(`${users} as u`)
        .innerJoin(sql<{ emial: number }>`(select 1 as emial)`.as('r'), (j) => j.onTrue())
        .select('u.id')
        .where('emial', '=', 1)
        .execute()
      expect(rows).toEqual([{ id: 1 }])
    })

    it.runIf(backend.family === 'postgres')(
      'runs a relation named like an encrypted column, which PostgreSQL reads as its whole row (helper-125)',
      async () => {
        const rows = await db
          .selectFrom(`${users} as u`)
          .leftJoin(`${plain} as e_mail`, 'e_mail.id', 'u.id')
          .select('u.id')
          .where('e_mail', 'is not', null)
          .execute()
        expect(rows).toEqual([{ id: 1 }])
      },
    )

    it.runIf(backend.family === 'postgres')(
      'leaves names alone beside a table aliased by raw SQL, which may rename its columns (helper-125)',
      async () => {
        // biome-ignore lint/suspicious/noExplicitAny: a raw alias leaves the joined row untyped.
        const query: any = db
          .selectFrom(`${users} as u`)
          .innerJoin(sql.table(plain).as(sql`o(oid, emai)`), (j) => j.onTrue())
        const rows = await query.select('u.id').where('emai', '=', 'plain@x.io').execute()
        expect(rows).toEqual([{ id: 1 }])
      },
    )

    it('leaves a name that differs only in case from a real column to the database', async () => {
      const query = db.selectFrom(users).select('id').where('EMAILS', '=', 'list2@x.io')
      if (backend.family === 'mysql') expect(await query.execute()).toEqual([{ id: 1 }])
      else await expect(query.execute()).rejects.not.toBeInstanceOf(QueryRefusedError)
    })

    it('with schema verification off, sends the query as before (no catalog to tell a typo)', async () => {
      const error = await offDb
        .selectFrom(users)
        .select('id')
        .where('emial', '=', 'not-a-secret@x.io')
        .execute()
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(error).toBeDefined()
      expect(error).not.toBeInstanceOf(QueryRefusedError)
      expect(offWire.queries.some((q) => q.sql.includes('emial'))).toBe(true)
    })
  })
})
