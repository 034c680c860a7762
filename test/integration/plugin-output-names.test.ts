import { type Compilable, type Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import { backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/**
 * Output names the engines do not treat as written (helper-119's review). An alias of an encrypted
 * column that an engine returns as other text (MariaDB drops a leading space: `as ' e'` came back
 * as `e`) left the ciphertext undecrypted, or a search's row check dropped the row; a bare name
 * in HAVING that MySQL reads as a plaintext output was rewritten as a search of the encrypted
 * column of that name. Each is refused on every engine, before anything is sent.
 */

const SECRET = 'secret-plaintext-5512@x.io'

type Query = Compilable & { execute(): Promise<unknown> }

interface Case {
  readonly name: string
  readonly code: 'QUERY_REFUSED' | 'AMBIGUOUS_COLUMN'
  readonly column: string
  readonly build: (db: Kysely<TestDB>, u: string) => Query
}

const ALIASES: readonly Case[] = [
  {
    name: "an alias with a leading space (MariaDB returns ' e' as 'e')",
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) => db.selectFrom(u).select(['id', (eb) => eb.ref('email').as(' e')]),
  },
  {
    name: 'an alias with a leading space, beside a search (whose row check read the key as written)',
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select(['id', (eb) => eb.ref('email').as(' e')])
        .where('email', '=', SECRET),
  },
  {
    name: 'an alias with a leading tab, of a JSON column',
    code: 'QUERY_REFUSED',
    column: 'notes',
    build: (db, u) => db.selectFrom(u).select(['id', (eb) => eb.ref('notes').as('\tn')]),
  },
  {
    name: 'an alias with a leading control character',
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) => db.selectFrom(u).select(['id', (eb) => eb.ref('email').as('\u0001e')]),
  },
  {
    name: "a derived table's alias with a leading space, read by selectAll()",
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(
          db
            .selectFrom(u)
            .select(['id', (eb) => eb.ref('email').as(' e')])
            .as('d'),
        )
        .selectAll(),
  },
  {
    name: "a scalar subquery's alias with a leading space",
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(`${u} as o`)
        .select(['o.id', (eb) => eb.selectFrom(u).select('email').whereRef('id', '=', 'o.id').as(' e')]),
  },
  {
    name: "a scalar subquery's alias over 63 bytes (PostgreSQL cuts it)",
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(`${u} as o`)
        .select([
          'o.id',
          (eb) => eb.selectFrom(u).select('email').whereRef('id', '=', 'o.id').as('e'.repeat(64)),
        ]),
  },
  {
    name: 'an alias holding an unpaired surrogate (sent as U+FFFD)',
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) => db.selectFrom(u).select(['id', (eb) => eb.ref('email').as('e\ud800')]),
  },
  {
    name: 'an alias holding a character beyond the BMP (MySQL does not permit it)',
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) => db.selectFrom(u).select(['id', (eb) => eb.ref('email').as('e\u{1F600}')]),
  },
  {
    name: 'an alias given as raw SQL',
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) => db.selectFrom(u).select(['id', (eb) => eb.ref('email').as(sql`e` as never)]),
  },
  {
    name: "a blind index's alias given as raw SQL in a derived table, read by a search (helper-129)",
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(
          db
            .selectFrom(u)
            .select(['id', (eb) => eb.ref('email_bidx').as(sql`y` as never)])
            .as('d'),
        )
        .select('d.id')
        // biome-ignore lint/suspicious/noExplicitAny: the raw alias leaves the output untyped.
        .where('d.y' as any, '=', SECRET),
  },
  {
    name: 'a RETURNING alias with a leading space',
    code: 'QUERY_REFUSED',
    column: 'email',
    build: (db, u) =>
      db
        .insertInto(u)
        .values({ name: 'x', email: SECRET })
        .returning(['id', (eb) => eb.ref('email').as(' e')]),
  },
]

const HAVING: readonly Case[] = [
  {
    name: 'a bare name in HAVING that is a plaintext output named like an encrypted column',
    code: 'AMBIGUOUS_COLUMN',
    column: 'email',
    build: (db, u) => db.selectFrom(u).select(['name as email']).groupBy('id').having('email', '=', SECRET),
  },
  {
    name: '… with the blind index selected too (MySQL returned no row)',
    code: 'AMBIGUOUS_COLUMN',
    column: 'email',
    build: (db, u) =>
      db.selectFrom(u).select(['name as email', 'email_bidx']).groupBy('id').having('email', '=', SECRET),
  },
  {
    name: '… the output named in another case (MySQL matches aliases ignoring case)',
    code: 'AMBIGUOUS_COLUMN',
    column: 'email',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select(['name as Email'])
        .groupBy('id')
        .having((eb) => eb.and([eb('id', '>', 0), eb('email', 'is not', null)])),
  },
  {
    name: '… inside an expression of HAVING',
    code: 'AMBIGUOUS_COLUMN',
    column: 'score',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select(['name as score'])
        .groupBy('id')
        .having((eb) => eb.and([eb('id', '>', 0), eb.not(eb('score', 'in', [1, 2]))])),
  },
]

/** The refusal from building and compiling a query (a subquery built from `db` is analyzed as it is built). */
function compileError(build: () => Query): unknown {
  try {
    build().compile()
  } catch (error) {
    return error
  }
  throw new Error('compile() did not refuse the query')
}

describe.each(backends())('plugin output names [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, [SECRET], insertAdaAndBob)
    const t = fx.t

    for (const c of [...ALIASES, ...HAVING]) {
      it(`refuses ${c.name}`, async () => {
        const e = compileError(() => c.build(t.db, t.names.users)) as QueryRefusedError
        expect(e).toBeInstanceOf(QueryRefusedError)
        expect(e.code).toBe(c.code)
        expect(e.table).toBe(t.names.users)
        expect(e.column).toBe(c.column)
        if (c.code === 'QUERY_REFUSED') expect(e.operator).toBe('alias')
        expect(e.message).not.toContain(SECRET)
        const executed = Promise.resolve().then(() => c.build(t.db, t.names.users).execute())
        await expect(executed).rejects.toMatchObject({ code: c.code })
        expect(fx.scanner.count()).toBe(0)
      })
    }

    it("runs a blind index's alias given as raw SQL at the root, and in an EXISTS (nothing reads it)", async () => {
      const u = t.names.users
      const rows = await t.db
        .selectFrom(u)
        .select(['id', (eb) => eb.ref('email_bidx').as(sql`y` as never)])
        .where('id', '=', 1)
        .execute()
      expect(rows).toHaveLength(1)
      expect(Object.values(rows[0]!).some((v) => v instanceof Uint8Array)).toBe(true)
      const exists = await t.db
        .selectFrom(u)
        .select('id')
        .where((eb) =>
          eb.exists(
            eb
              .selectFrom(`${u} as o`)
              .select((e) => e.ref('o.email_bidx').as(sql`y` as never))
              .whereRef('o.id', '=', `${u}.id` as never),
          ),
        )
        .orderBy('id')
        .execute()
      expect(exists).toEqual([{ id: 1 }, { id: 2 }])
    })

    it('carries a blind index a scalar subquery selects under a raw alias on, by position (helper-130)', async () => {
      const u = t.names.users
      const scalar = (db: Kysely<TestDB>) =>
        db.selectFrom(u).select([
          'id',
          (eb) =>
            eb
              .selectFrom(`${u} as o`)
              .select((e) => e.ref('o.email_bidx').as(sql`y` as never))
              .whereRef('o.id', '=', `${u}.id` as never)
              .limit(1)
              .as('b'),
        ])
      // Its name is read by no one: it runs.
      expect(await scalar(t.db).orderBy('id').execute()).toHaveLength(2)
      fx.scanner.reset()
      // A search through the outer name is a search of the index: refused, nothing sent.
      const search = t.db
        .selectFrom(scalar(t.db).as('d'))
        .select('d.id')
        // biome-ignore lint/suspicious/noExplicitAny: the subquery's output is untyped.
        .where('d.b' as any, '=', SECRET)
      await expect(search.execute()).rejects.toMatchObject({ code: 'QUERY_REFUSED', operator: '=' })
      expect(fx.scanner.count()).toBe(0)
    })

    it("refuses a CTE column list that renames a blind index (helper-130's K2)", async () => {
      const query = t.db
        .with('c(i, y)', (q) => q.selectFrom(t.names.users).select(['id', 'email_bidx']) as never)
        .selectFrom('c' as never)
        .select('c.i' as never)
        .where('c.y' as never, '=', SECRET as never)
      await expect(query.execute()).rejects.toMatchObject({
        code: 'QUERY_REFUSED',
        operator: 'cte column list',
        column: 'email',
      })
      expect(fx.scanner.count()).toBe(0)
    })

    it('refuses a streamed select of an alias with a leading space', async () => {
      const stream = t.db
        .selectFrom(t.names.users)
        .select(['id', (eb) => eb.ref('email').as(' e')])
        .stream()
      try {
        await expect(stream.next()).rejects.toMatchObject({ code: 'QUERY_REFUSED', operator: 'alias' })
      } finally {
        await stream.return?.(undefined)
      }
      expect(fx.scanner.count()).toBe(0)
    })

    it('decrypts an alias every engine keeps: a trailing space, a leading no-break space', async () => {
      const rows = await t.db
        .selectFrom(t.names.users)
        .select(['id', (eb) => eb.ref('email').as('e '), (eb) => eb.ref('email').as('\u00a0f')])
        .orderBy('id')
        .execute()
      expect(rows).toEqual([
        { id: 1, 'e ': 'ada@x.io', '\u00a0f': 'ada@x.io' },
        { id: 2, 'e ': 'bob@x.io', '\u00a0f': 'bob@x.io' },
      ])
    })

    // PostgreSQL reads no output names in HAVING.
    it.runIf(backend.family === 'mysql')(
      'runs HAVING on a plaintext output not named like an encrypted column',
      async () => {
        const rows = await t.db
          .selectFrom(t.names.users)
          .select(['name as label'])
          .groupBy('id')
          .having('label', '=', 'Ada')
          .execute()
        expect(rows).toEqual([{ label: 'Ada' }])
      },
    )
  })
})
