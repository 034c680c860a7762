import { type Compilable, type Kysely, sql } from 'kysely'
import * as mysqlHelpers from 'kysely/helpers/mysql'
import * as pgHelpers from 'kysely/helpers/postgres'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { CodecError, type FieldEncryptionError, QueryRefusedError } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, type TestDB } from '../support/encrypted-db.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'

/**
 * Every construct the plugin cannot run safely on an encrypted column is refused with a typed
 * error (code, logical table, column, operator, hint) at compile time, before anything reaches the
 * database, and the error never carries the plaintext the query used.
 */

/** Distinctive plaintexts: if one shows up in an error, a message leaked it. */
const SECRET = 'secret-plaintext-7731@x.io'
const SECRET_SSN = '771-31-9931'
const SECRET_NAME = 'secret-name-9941'
const PLAINTEXTS = [SECRET, SECRET_SSN, SECRET_NAME, '77319931', '7731']

type Query = Compilable & { execute(): Promise<unknown> }

interface RefusalCase {
  readonly name: string
  /** Only on these SQL families (default: every backend). */
  readonly family?: 'postgres' | 'mysql'
  readonly code?: 'QUERY_REFUSED' | 'AMBIGUOUS_COLUMN'
  /** 'users' or 'orders': the logical table the error must name. */
  readonly table: 'users' | 'orders' | ReadonlyArray<'users' | 'orders'>
  readonly column: string
  /** Expected operator; `undefined` where the error concerns a name, not an operator (AMBIGUOUS_COLUMN). */
  readonly operator: string | RegExp | undefined
  /** Also check through `t.raw` that the table still holds `rowsBefore` rows with unchanged names. */
  readonly write?: boolean
  readonly build: (db: Kysely<TestDB>, u: string, o: string, family: 'postgres' | 'mysql') => Query
}

const CASES: readonly RefusalCase[] = [
  {
    name: 'like',
    table: 'users',
    column: 'email',
    operator: 'like',
    build: (db, u) => db.selectFrom(u).selectAll().where('email', 'like', `${SECRET}%`),
  },
  {
    name: 'ilike',
    table: 'users',
    column: 'email',
    operator: 'ilike',
    build: (db, u) => db.selectFrom(u).selectAll().where('email', 'ilike', `${SECRET}%`),
  },
  {
    name: 'not like',
    table: 'users',
    column: 'email',
    operator: 'not like',
    build: (db, u) => db.selectFrom(u).selectAll().where('email', 'not like', `%${SECRET}`),
  },
  ...(['<', '>', '<=', '>='] as const).map(
    (op): RefusalCase => ({
      name: op,
      table: 'users',
      column: 'score',
      operator: op,
      build: (db, u) => db.selectFrom(u).selectAll().where('score', op, 7731),
    }),
  ),
  {
    name: 'between',
    table: 'users',
    column: 'score',
    operator: 'between',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb.between('score', 1, 5)),
  },
  {
    name: 'regex ~',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: '~',
    build: (db, u) => db.selectFrom(u).selectAll().where('email', '~', SECRET),
  },
  {
    name: 'regexp',
    family: 'mysql',
    table: 'users',
    column: 'email',
    operator: 'regexp',
    build: (db, u) => db.selectFrom(u).selectAll().where('email', 'regexp', SECRET),
  },
  {
    name: 'order by',
    table: 'users',
    column: 'email',
    operator: 'order by',
    build: (db, u) => db.selectFrom(u).selectAll().orderBy('email'),
  },
  {
    name: 'group by',
    table: 'users',
    column: 'email',
    operator: 'group by',
    build: (db, u) => db.selectFrom(u).select('email').groupBy('email'),
  },
  {
    name: 'distinct',
    table: 'users',
    column: 'email',
    operator: 'distinct',
    build: (db, u) => db.selectFrom(u).distinct().select('email'),
  },
  {
    name: 'distinct on',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'distinct on',
    build: (db, u) => db.selectFrom(u).distinctOn('email').select('id'),
  },
  {
    name: 'function in select',
    table: 'users',
    column: 'email',
    operator: /lower/,
    build: (db, u) => db.selectFrom(u).select((eb) => eb.fn('lower', ['email']).as('e')),
  },
  {
    name: 'function in where',
    table: 'users',
    column: 'email',
    operator: /lower/,
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb(eb.fn('lower', ['email']), '=', SECRET)),
  },
  {
    name: 'cast',
    table: 'users',
    column: 'email',
    operator: 'cast',
    build: (db, u, _o, family) =>
      db.selectFrom(u).select((eb) => eb.cast('email', family === 'postgres' ? 'text' : 'char').as('e')),
  },
  {
    name: 'arithmetic in select',
    table: 'users',
    column: 'score',
    operator: '+',
    build: (db, u) => db.selectFrom(u).select((eb) => eb('score', '+', 1).as('s')),
  },
  {
    name: 'arithmetic in where',
    table: 'users',
    column: 'score',
    operator: '+',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb(eb('score', '+', 1), '=', 7731)),
  },
  {
    name: 'compared with another column',
    table: 'users',
    column: 'email',
    operator: '=',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb('email', '=', eb.ref('name'))),
  },
  {
    name: 'join on users.email = orders.email (different tables)',
    table: ['users', 'orders'],
    column: 'email',
    operator: /^= /,
    build: (db, u, o) => db.selectFrom(u).innerJoin(o, `${o}.email`, `${u}.email`).selectAll(),
  },
  {
    name: 'sql.lit as a value',
    table: 'users',
    column: 'email',
    operator: 'sql.lit',
    build: (db, u) => db.selectFrom(u).selectAll().where('email', '=', sql.lit(SECRET)),
  },
  {
    name: 'sql.lit written by insert',
    table: 'users',
    column: 'email',
    operator: 'sql.lit',
    write: true,
    build: (db, u) => db.insertInto(u).values({ name: SECRET_NAME, email: sql.lit(SECRET) }),
  },
  {
    name: 'eb.lit as a value',
    table: 'users',
    column: 'score',
    operator: 'sql.lit',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb('score', '=', eb.lit(7731))),
  },
  {
    name: 'insert … select into annotated columns',
    table: 'users',
    column: 'email',
    operator: 'insert … select',
    write: true,
    build: (db, u, o) =>
      db
        .insertInto(u)
        .columns(['name', 'email'])
        .expression(db.selectFrom(o).select(['item', 'email'])),
  },
  ...(['jsonArrayFrom', 'jsonObjectFrom'] as const).map(
    (helper): RefusalCase => ({
      name: `${helper} over a subquery selecting email`,
      table: 'orders',
      column: 'email',
      operator: /subquery|json/,
      build: (db, u, o, family) => {
        // Both helpers take a subquery and return an aliasable expression; one signature suffices here.
        const fn = (family === 'postgres' ? pgHelpers : mysqlHelpers)[
          helper
        ] as typeof pgHelpers.jsonArrayFrom
        return db
          .selectFrom(u)
          .select((eb) =>
            fn(eb.selectFrom(o).select(['id', 'email']).whereRef(`${o}.user_id`, '=', `${u}.id`)).as(
              'orders',
            ),
          )
      },
    }),
  ),
  {
    name: 'merge',
    family: 'postgres',
    table: 'users',
    column: /* first annotated column */ 'email',
    operator: 'merge',
    write: true,
    build: (db, u, o) =>
      db.mergeInto(u).using(o, `${o}.user_id`, `${u}.id`).whenMatched().thenUpdateSet({ name: SECRET_NAME }),
  },
  {
    name: '<> on a search index',
    table: 'users',
    column: 'ssn',
    operator: '<>',
    build: (db, u) => db.selectFrom(u).selectAll().where('ssn', '<>', SECRET_SSN),
  },
  {
    name: 'not in on a search index',
    table: 'users',
    column: 'ssn',
    operator: 'not in',
    build: (db, u) => db.selectFrom(u).selectAll().where('ssn', 'not in', [SECRET_SSN]),
  },
  {
    name: 'search index inside or',
    table: 'users',
    column: 'ssn',
    operator: '=',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb.or([eb('ssn', '=', SECRET_SSN), eb('name', '=', SECRET_NAME)])),
  },
  {
    name: 'search index under not',
    table: 'users',
    column: 'ssn',
    operator: '=',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb.not(eb('ssn', '=', SECRET_SSN))),
  },
  {
    name: 'search index in update where',
    table: 'users',
    column: 'ssn',
    operator: '=',
    write: true,
    build: (db, u) => db.updateTable(u).set({ name: SECRET_NAME }).where('ssn', '=', SECRET_SSN),
  },
  {
    name: 'search index in delete where',
    table: 'users',
    column: 'ssn',
    operator: '=',
    write: true,
    build: (db, u) => db.deleteFrom(u).where('ssn', '=', SECRET_SSN),
  },
  {
    name: 'search index with limit',
    table: 'users',
    column: 'ssn',
    operator: /limit/,
    build: (db, u) => db.selectFrom(u).selectAll().where('ssn', '=', SECRET_SSN).limit(1),
  },
  // LIMIT, FETCH or DISTINCT as raw SQL: the database would count the false positives.
  {
    name: 'search index with modifyEnd(sql`limit 1`)',
    table: 'users',
    column: 'ssn',
    operator: /raw SQL modifiers/,
    build: (db, u) => db.selectFrom(u).selectAll().where('ssn', '=', SECRET_SSN).modifyEnd(sql`limit 1`),
  },
  {
    name: 'search index with modifyFront(sql`distinct`)',
    table: 'users',
    column: 'ssn',
    operator: /raw SQL modifiers/,
    build: (db, u) => db.selectFrom(u).selectAll().where('ssn', '=', SECRET_SSN).modifyFront(sql`distinct`),
  },
  // `=` with an array is a row value `($1, $2)`, which the database refuses; rewritten as `in`
  // it matched the rows holding either value (and updated or deleted them).
  {
    name: '= with a list of values (a row value)',
    table: 'users',
    column: 'email',
    operator: '=',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where('email', '=', [SECRET, 'other@x.io'] as never),
  },
  {
    name: '<> with a list of values',
    table: 'users',
    column: 'email',
    operator: '<>',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where('email', '<>', [SECRET, 'other@x.io'] as never),
  },
  {
    name: 'delete where = with a list of values',
    table: 'users',
    column: 'email',
    operator: '=',
    write: true,
    build: (db, u) => db.deleteFrom(u).where('email', '=', [SECRET, 'other@x.io'] as never),
  },
  {
    name: 'compared with a function of a value',
    table: 'users',
    column: 'email',
    operator: '=',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb('email', '=', eb.fn('lower', [eb.val(SECRET)]))),
  },
  {
    name: 'column with no index',
    table: 'users',
    column: 'dob',
    operator: '=',
    build: (db, u) => db.selectFrom(u).selectAll().where('dob', '=', new Date(7731)),
  },
  {
    name: 'in (subquery)',
    table: ['users', 'orders'],
    column: 'email',
    operator: 'in',
    build: (db, u, o) =>
      db
        .selectFrom(u)
        .selectAll()
        .where('email', 'in', db.selectFrom(o).select('email').where('item', '=', SECRET_NAME)),
  },
  {
    name: 'unqualified column encrypted in two joined tables',
    code: 'AMBIGUOUS_COLUMN',
    table: ['users', 'orders'],
    column: 'email',
    operator: undefined,
    build: (db, u, o) =>
      db.selectFrom(u).innerJoin(o, `${o}.user_id`, `${u}.id`).selectAll().where('email', '=', SECRET),
  },
  // Regressions from the security review of the scope model.
  {
    name: 'a column name that differs from an encrypted one only in case (MySQL would match it)',
    code: 'AMBIGUOUS_COLUMN',
    table: 'users',
    column: 'email',
    operator: undefined,
    write: true,
    build: (db, u) => db.insertInto(u).values({ name: SECRET_NAME, Email: SECRET } as never),
  },
  {
    name: 'a qualifier naming an encrypted table that is aliased away',
    code: 'AMBIGUOUS_COLUMN',
    table: 'users',
    column: 'email',
    operator: undefined,
    build: (db, u) =>
      db
        .selectFrom(`${u} as x`)
        .select('x.id')
        .where(`${u}.email` as never, '=', SECRET as never),
  },
  {
    name: 'a qualifier that names no relation of the query (a misspelt alias) on an encrypted column',
    code: 'AMBIGUOUS_COLUMN',
    table: ['users', 'orders'],
    column: 'email',
    operator: undefined,
    build: (db, u) =>
      db
        .selectFrom(`${u} as u1`)
        .select('u1.id')
        .where('x.email' as never, '=', SECRET as never),
  },
  {
    name: 'a qualifier that names no relation of the query, on a blind index spelt in another case',
    code: 'AMBIGUOUS_COLUMN',
    table: 'users',
    column: 'ssn',
    operator: undefined,
    build: (db, u) =>
      db
        .selectFrom(u)
        .select('id')
        .where('nope.SSN_BIDX' as never, '=', SECRET_SSN as never),
  },
  {
    name: 'an encrypted table named in raw SQL as a FROM item (sql`users`.as(…))',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .selectFrom(sql`${sql.raw(u)}`.as('q') as never)
        .select('q.id' as never)
        .where('q.email' as never, '=', SECRET as never),
  },
  {
    name: 'an encrypted table named through sql.id in a raw FROM item',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .selectFrom(sql`${sql.id(u)}`.as('q') as never)
        .select('q.id' as never)
        .where('q.email' as never, '=', SECRET as never),
  },
  {
    name: 'a CTE written as raw SQL that reads an encrypted table',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .with('c', () => sql`select id, email from ${sql.raw(u)}`)
        .selectFrom('c' as never)
        .select('c.id' as never)
        .where('c.email' as never, '=', SECRET as never),
  },
  {
    name: 'an encrypted table aliased by raw SQL (a column list)',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .selectFrom(sql`${sql.table(u)}`.as(sql`t(a, b, c)`) as never)
        .selectAll()
        .where(sql.ref('t.b'), '=', SECRET),
  },
  {
    name: 'an encrypted column named through sql.id() in raw SQL',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) => db.selectFrom(u).select('id').where(sql.id('email'), '=', SECRET),
  },
  {
    name: 'an encrypted column named through sql.table() as table.column',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .selectFrom(u)
        .select('id')
        .where(sql.table(`${u}.email`), '=', SECRET),
  },
  {
    name: 'a bare * in raw SQL over a table with encrypted columns (ciphertexts returned as values)',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(u).select(sql`*` as never),
  },
  {
    name: 'a key of set() holding "." (written as one quoted column name)',
    code: 'AMBIGUOUS_COLUMN',
    table: 'users',
    column: 'email',
    operator: undefined,
    write: true,
    build: (db, u) => db.updateTable(u).set({ [`${u}.email`]: SECRET } as never),
  },
  {
    name: 'a key of values() holding "."',
    code: 'AMBIGUOUS_COLUMN',
    table: 'users',
    column: 'email',
    operator: undefined,
    write: true,
    build: (db, u) => db.insertInto(u).values({ name: SECRET_NAME, [`${u}.email`]: SECRET } as never),
  },
  {
    name: 'insertInto with an alias, which Kysely takes for part of the table name',
    table: 'users',
    column: 'email',
    operator: 'insert',
    write: true,
    build: (db, u) =>
      db.insertInto(`${u} as x` as never).values({ name: SECRET_NAME, email: SECRET } as never),
  },
  {
    name: "a multi-table update's SET on a derived table's output that carries an encrypted column",
    family: 'mysql',
    table: 'orders',
    column: 'email',
    operator: 'update',
    write: true,
    build: (db, u, o) =>
      db
        .updateTable([`${u} as uu`, db.selectFrom(o).select(['email', 'user_id']).as('d')] as never)
        .set('d.email' as never, SECRET as never),
  },
  {
    name: 'an unqualified name in a subquery that would resolve to the enclosing encrypted table',
    code: 'AMBIGUOUS_COLUMN',
    table: 'users',
    column: 'ssn',
    operator: undefined,
    build: (db, u, o) =>
      db
        .selectFrom(u)
        .select('id')
        .where((eb) =>
          eb.exists(
            eb
              .selectFrom(`${o} as inner_o`)
              .select('inner_o.id')
              .where('ssn' as never, '=', SECRET_SSN as never),
          ),
        ),
  },
  {
    name: 'insert … select without a column list into a table with encrypted columns',
    table: 'users',
    column: 'email',
    operator: 'insert … select',
    write: true,
    build: (db, u, o) => db.insertInto(u).expression(db.selectFrom(o).selectAll()),
  },
  {
    name: 'a search index with distinct on',
    family: 'postgres',
    table: 'users',
    column: 'ssn',
    operator: 'search index with distinct on',
    build: (db, u) =>
      db.selectFrom(u).distinctOn('tenant').select(['id', 'tenant']).where('ssn', '=', SECRET_SSN),
  },
  // Whole-row values of a table with encrypted columns (issue 12, item 2).
  {
    name: 'eb.fn.jsonAgg(table)',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(u).select((eb) => eb.fn.jsonAgg(u).as('j')),
  },
  {
    name: 'eb.fn.toJson(alias)',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(`${u} as x`).select((eb) => eb.fn.toJson('x').as('j')),
  },
  {
    name: 'eb.fn.toJson(table) through withSchema',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) =>
      db
        .withSchema('public')
        .selectFrom(u)
        .select((eb) => eb.fn.toJson(u).as('j')),
  },
  {
    name: 'row_to_json(sql.table(t))',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(u).select(sql`row_to_json(${sql.table(u)})`.as('j')),
  },
  {
    name: 'row_to_json(alias) as raw text',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(`${u} as x`).select(sql`row_to_json(x)`.as('j')),
  },
  {
    name: 'to_jsonb(table) as a function argument',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(u).select((eb) => eb.fn('to_jsonb', [sql.table(u)]).as('j')),
  },
  {
    name: 'json_build_object over an encrypted column',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: /raw sql|function/,
    build: (db, u) =>
      db.selectFrom(u).select((eb) => pgHelpers.jsonBuildObject({ e: eb.ref('email') }).as('j')),
  },
  {
    name: 'jsonObjectFrom of a subquery selecting an encrypted column',
    family: 'postgres',
    table: 'users',
    column: 'email',
    operator: /subquery/,
    build: (db, u, o) =>
      db
        .selectFrom(o)
        .select((eb) => pgHelpers.jsonObjectFrom(eb.selectFrom(u).select('email').limit(1)).as('j')),
  },
  {
    name: 'mysql json_object over an encrypted column',
    family: 'mysql',
    table: 'users',
    column: 'email',
    operator: /function json_object/,
    build: (db, u) => db.selectFrom(u).select((eb) => eb.fn('json_object', [sql.lit('e'), 'email']).as('j')),
  },
  {
    name: 'mysql json_arrayagg of an encrypted column',
    family: 'mysql',
    table: 'users',
    column: 'email',
    operator: /json_arrayagg/,
    build: (db, u) => db.selectFrom(u).select((eb) => eb.fn.agg('json_arrayagg', ['email']).as('j')),
  },
  {
    name: 'mysql jsonArrayFrom of a subquery selecting an encrypted column',
    family: 'mysql',
    table: 'users',
    column: 'email',
    operator: /subquery|raw sql|function/,
    build: (db, u, o) =>
      db.selectFrom(o).select((eb) => mysqlHelpers.jsonArrayFrom(eb.selectFrom(u).select('email')).as('j')),
  },
  {
    name: 'a relation name selected as a value (whole row)',
    table: 'users',
    column: 'email',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(`${u} as x`).select((eb) => eb.ref('x').as('j')),
  },
  // Raw SQL naming an encrypted column (issue 12, item 3).
  {
    name: 'where(sql`email`, =, v)',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) => db.selectFrom(u).selectAll().where(sql`email`, '=', SECRET),
  },
  {
    name: 'where(sql`users.email`, =, v)',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where(sql.raw(`${u}.email`), '=', SECRET),
  },
  {
    name: 'a raw condition: email in (sql.join(list))',
    table: 'users',
    column: 'email',
    operator: 'raw sql',
    build: (db, u) =>
      db
        .selectFrom(u)
        .selectAll()
        .where(sql<boolean>`email in (${sql.join([SECRET, 'other@x.io'])})`),
  },
  {
    name: 'a raw condition: score between a and b',
    table: 'users',
    column: 'score',
    operator: 'raw sql',
    build: (db, u) => db.selectFrom(u).selectAll().where(sql<boolean>`score between ${7731} and ${7732}`),
  },
  {
    name: 'a raw condition on an aliased table: "o"."email" = v in an update',
    table: 'orders',
    column: 'email',
    operator: 'raw sql',
    write: true,
    build: (db, _u, o) =>
      db.updateTable(`${o} as o`).set({ item: SECRET_NAME }).where(sql<boolean>`"o"."email" = ${SECRET}`),
  },
  {
    name: 'an alias of an encrypted column longer than 63 bytes',
    table: 'users',
    column: 'email',
    operator: 'alias',
    build: (db, u) => db.selectFrom(u).select(`email as ${'e'.repeat(70)}` as never),
  },
]

/** The refusal from compiling a query; fails the test if nothing was thrown. */
function compileError(query: Query): unknown {
  try {
    query.compile()
  } catch (error) {
    return error
  }
  throw new Error('compile() did not refuse the query')
}

function expectNoPlaintext(error: unknown): void {
  const e = error as FieldEncryptionError & { hint?: string; operator?: string }
  const text = [e.message, e.hint ?? '', e.operator ?? '', String(e.stack ?? '')].join('\n')
  for (const p of PLAINTEXTS) expect(text).not.toContain(p)
}

describe.each(backends())('plugin refusals on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let scanner: ScanningDialect
    const logical = (which: 'users' | 'orders') => (which === 'users' ? t.names.users : t.names.orders)

    const snapshot = async () => ({
      users: await t.raw.selectFrom(t.names.users).select(['id', 'name']).orderBy('id').execute(),
      orders: await t.raw.selectFrom(t.names.orders).select(['id', 'item']).orderBy('id').execute(),
    })

    beforeAll(async () => {
      t = await encryptedTestDb(backend, {
        wrapInner: (d) => {
          scanner = scanningDialect(d, () => PLAINTEXTS)
          return scanner
        },
      })
      await t.db
        .insertInto(t.names.users)
        .values([
          { name: 'ada', email: 'ada@x.io', ssn: '078-05-1120', score: 1 },
          { name: 'bob', email: 'bob@x.io', ssn: '219-09-9999', score: 2 },
          { name: 'cyd', email: null, ssn: null, score: null },
        ])
        .execute()
      const ada = await t.db
        .selectFrom(t.names.users)
        .select('id')
        .where('email', '=', 'ada@x.io')
        .executeTakeFirstOrThrow()
      await t.db
        .insertInto(t.names.orders)
        .values({ user_id: ada.id, item: 'book', email: 'ada@x.io' })
        .execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })
    beforeEach(() => {
      scanner.reset()
    })

    for (const c of CASES) {
      if (c.family !== undefined && c.family !== backend.family) continue
      it(`refuses ${c.name} before anything is sent`, async () => {
        const before = c.write ? await snapshot() : undefined
        scanner.reset()
        const query = c.build(t.db, t.names.users, t.names.orders, backend.family)
        const error = compileError(query)
        expect(error).toBeInstanceOf(QueryRefusedError)
        const e = error as QueryRefusedError
        expect(e.code).toBe(c.code ?? 'QUERY_REFUSED')
        const tables = (typeof c.table === 'string' ? [c.table] : c.table).map(logical)
        expect(tables).toContain(e.table)
        expect(e.column).toBe(c.column)
        if (c.operator instanceof RegExp) expect(e.operator).toMatch(c.operator)
        else if (c.operator !== undefined) expect(e.operator).toBe(c.operator)
        expect(typeof e.hint).toBe('string')
        expect(e.hint!.length).toBeGreaterThan(0)
        expectNoPlaintext(e)

        // The same refusal at execute(), and still nothing reached the driver.
        const executed = await c
          .build(t.db, t.names.users, t.names.orders, backend.family)
          .execute()
          .then(
            () => undefined,
            (err: unknown) => err,
          )
        expect(executed).toBeInstanceOf(QueryRefusedError)
        expect((executed as QueryRefusedError).code).toBe(e.code)
        expect((executed as QueryRefusedError).operator).toBe(e.operator)
        expectNoPlaintext(executed)
        expect(scanner.count()).toBe(0)
        if (before !== undefined) expect(await snapshot()).toEqual(before)
      })
    }

    it('refuses a value of the wrong type with CODEC_INVALID_VALUE, without echoing it', async () => {
      const query = t.db
        .selectFrom(t.names.users)
        .selectAll()
        .where('score', '=', SECRET as never)
      const error = compileError(query)
      expect(error).toBeInstanceOf(CodecError)
      expect((error as CodecError).code).toBe('CODEC_INVALID_VALUE')
      expect((error as CodecError).table).toBe(t.names.users)
      expect((error as CodecError).column).toBe('score')
      expectNoPlaintext(error)
      await expect(query.execute()).rejects.toMatchObject({ code: 'CODEC_INVALID_VALUE' })
      const write = t.db.insertInto(t.names.users).values({ name: SECRET_NAME, score: SECRET as never })
      await expect(write.execute()).rejects.toMatchObject({ code: 'CODEC_INVALID_VALUE', column: 'score' })
      expect(scanner.count()).toBe(0)
    })

    it('refuses JSON nested 20,000 deep with CODEC_INVALID_VALUE (never a RangeError) before anything is sent', async () => {
      let deep: unknown = SECRET
      for (let i = 0; i < 20_000; i++) deep = i % 2 === 0 ? [deep] : { [SECRET_NAME]: deep }
      const write = t.db.insertInto(t.names.users).values({ name: 'deep', notes: deep })
      const error = await write.execute().then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(error).toBeInstanceOf(CodecError)
      expect((error as CodecError).code).toBe('CODEC_INVALID_VALUE')
      expect((error as CodecError).table).toBe(t.names.users)
      expect((error as CodecError).column).toBe('notes')
      expect((error as CodecError).message).toMatch(/at most 1000 levels/)
      expectNoPlaintext(error)
      expect(scanner.count()).toBe(0)
    })

    it('names the missing index in the hint of a search on a column without one', () => {
      const error = compileError(
        t.db.selectFrom(t.names.users).selectAll().where('dob', '=', new Date(7731)),
      ) as QueryRefusedError
      expect(error.hint).toMatch(/index/i)
      expect(error.message).toMatch(/no blind index/i)
    })

    it('runs a search-index query with a row lock written as raw SQL (modifyEnd(sql`for update`)), as .forUpdate()', async () => {
      const u = t.names.users
      const locks =
        backend.family === 'mysql'
          ? ['for update', 'lock in share mode']
          : ['for update', 'for no key update', `for share of ${u}`]
      for (const lock of locks) {
        const rows = await t.db
          .transaction()
          .execute((trx) =>
            trx
              .selectFrom(u)
              .select('name')
              .where('ssn', '=', '078-05-1120')
              .modifyEnd(sql.raw(lock))
              .execute(),
          )
        expect({ lock, rows }).toEqual({ lock, rows: [{ name: 'ada' }] })
      }
      // A lock with a parameter, or anything else, stays refused (it may hold a LIMIT).
      expect(
        compileError(
          t.db.selectFrom(u).select('name').where('ssn', '=', '078-05-1120').modifyEnd(sql`for update ${1}`),
        ),
      ).toBeInstanceOf(QueryRefusedError)
    })

    it('refuses index bytes (encryption.indexOf) against a search index where a plaintext search is refused: they carry no plaintext to remove false positives with', async () => {
      const u = t.names.users
      const bytes = await t.encryption.indexOf(u, 'ssn', '078-05-1120')
      // biome-ignore lint/suspicious/noExplicitAny: the index column is not in the test DB type.
      const db = t.db as Kysely<any>
      for (const query of [
        db.deleteFrom(u).where('ssn_bidx', 'in', bytes),
        db.updateTable(u).set({ name: 'x' }).where('ssn_bidx', 'in', bytes),
        db
          .selectFrom(u)
          .select('name')
          .where('id', 'in', db.selectFrom(u).select('id').where('ssn_bidx', 'in', bytes)),
        db.selectFrom(u).select('name').where('ssn_bidx', 'not in', bytes),
      ]) {
        const error = compileError(query) as QueryRefusedError
        expect(error).toBeInstanceOf(QueryRefusedError)
        expect(error.code).toBe('QUERY_REFUSED')
      }
      // A top-level select returns what the index matches: the caller asked for index semantics.
      expect(await db.selectFrom(u).select('name').where('ssn_bidx', 'in', bytes).execute()).toEqual([
        { name: 'ada' },
      ])
      expect(await snapshot()).toMatchObject({ users: [{ name: 'ada' }, { name: 'bob' }, { name: 'cyd' }] })
    })

    it('refuses SKIP LOCKED and NOWAIT on a search-index query (the lock takes its false positives: another search for one would skip it or fail); a unique index keeps them', () => {
      const u = t.names.users
      const search = () => t.db.selectFrom(u).select('name').where('ssn', '=', '078-05-1120')
      for (const query of [
        search().forUpdate().skipLocked(),
        search().forUpdate().noWait(),
        search().modifyEnd(sql.raw('for update skip locked')),
        search().modifyEnd(sql.raw('for share nowait')),
      ]) {
        const error = compileError(query) as QueryRefusedError
        expect(error).toBeInstanceOf(QueryRefusedError)
        expect(error).toMatchObject({
          code: 'QUERY_REFUSED',
          operator: 'search index with skip locked/nowait',
        })
        expect(error.hint).toContain("where('id', 'in', ids).forUpdate().skipLocked()")
      }
      // A unique index has no false positives: its lock takes only the matching row.
      expect(() =>
        t.db.selectFrom(u).select('name').where('email', '=', 'ada@x.io').forUpdate().skipLocked().compile(),
      ).not.toThrow()
    })

    it('allows a self-join on the same uniquely indexed column and returns the right pairs', async () => {
      const u = t.names.users
      const rows = await t.db
        .selectFrom(`${u} as u1`)
        .innerJoin(`${u} as u2`, 'u1.email', 'u2.email')
        .select(['u1.name as left', 'u2.name as right', 'u1.email as leftEmail', 'u2.email as rightEmail'])
        .execute()
      const pairs = rows.map((r) => `${r.left}:${r.right}`).sort()
      // cyd has no email: NULL joins nothing. Emails are unique, so each row pairs with itself.
      expect(pairs).toEqual(['ada:ada', 'bob:bob'])
      for (const r of rows) {
        expect(r.leftEmail).toBe(`${r.left}@x.io`)
        expect(r.rightEmail).toBe(`${r.right}@x.io`)
      }
      const compiled = t.db
        .selectFrom(`${u} as u1`)
        .innerJoin(`${u} as u2`, 'u1.email', 'u2.email')
        .select('u1.id')
        .compile()
      expect(compiled.sql).toMatch(/email_bidx.*=.*email_bidx/)
    })
  })
})
