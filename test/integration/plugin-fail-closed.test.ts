import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import {
  CamelCasePlugin,
  IdentifierNode,
  Kysely,
  type KyselyPlugin,
  type LogEvent,
  OperationNodeTransformer,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type QueryResult,
  type RootOperationNode,
  sql,
  type UnknownRow,
} from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  DecryptionError,
  encrypted,
  encryptedSchema,
  type FieldEncryptionError,
  fieldEncryption,
  localKeyProvider,
  QueryRefusedError,
} from '../../src/index.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, type TestDB } from '../support/encrypted-db.js'

/**
 * Every way around the plugin fails closed: nothing is sent, nothing is written, no plaintext
 * shows up in errors, logs or serialised queries, and bytes that are not our ciphertext (or a
 * ciphertext of another column) are never returned as if they were.
 */

const SECRET = 'fail-closed-secret-5519@x.io'
const SECRET_SSN = '551-99-5519'
const SECRET_NOTE = 'fail-closed-note-5519'
const PLAINTEXTS = [SECRET, SECRET_SSN, SECRET_NOTE]

/** Renames one identifier everywhere in a query tree (e.g. an app-side alias for a column). */
class RenameTransformer extends OperationNodeTransformer {
  constructor(
    private readonly from: string,
    private readonly to: string,
  ) {
    super()
  }

  protected override transformIdentifier(node: IdentifierNode): IdentifierNode {
    const next = super.transformIdentifier(node)
    return next.name === this.from ? IdentifierNode.create(this.to) : next
  }
}

/** A plugin that renames `from` to `to`: placed after ours, it hides an annotated column from it. */
class RenamePlugin implements KyselyPlugin {
  readonly #transformer: RenameTransformer
  constructor(from: string, to: string) {
    this.#transformer = new RenameTransformer(from, to)
  }
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return this.#transformer.transformNode(args.node)
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

async function failure(promise: Promise<unknown>): Promise<FieldEncryptionError> {
  return promise.then(
    () => {
      throw new Error('expected the query to fail')
    },
    (error: unknown) => error as FieldEncryptionError,
  )
}

function expectNoPlaintext(value: unknown, plaintexts: readonly string[] = PLAINTEXTS): void {
  const text =
    typeof value === 'string'
      ? value
      : `${inspect(value, { depth: Number.POSITIVE_INFINITY })}\n${safeJson(value)}\n${String((value as Error)?.stack ?? '')}`
  for (const p of plaintexts) expect(text).not.toContain(p)
}

/** `e` is a {@link DecryptionError} with `code` (or a code it matches) on `table` (and `column`, if given). */
function expectDecryptionError(
  e: FieldEncryptionError,
  code: string | RegExp,
  table: string,
  column?: string,
): void {
  expect(e).toBeInstanceOf(DecryptionError)
  if (typeof code === 'string') expect(e.code).toBe(code)
  else expect(e.code).toMatch(code)
  expect(e.table).toBe(table)
  if (column !== undefined) expect(e.column).toBe(column)
}

/** Rejects when `promise` has not settled after `ms`: a hang becomes a test failure. */
function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (hang)`)), ms)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? ''
  } catch {
    return ''
  }
}

function asBytes(value: unknown): Buffer {
  expect(value).toBeInstanceOf(Uint8Array)
  const u = value as Uint8Array
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

describe.each(backends())('plugin fails closed on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let u: string
    let o: string

    const count = async (table: string) => {
      const row = await t.raw
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
      return Number(row.n)
    }

    beforeAll(async () => {
      t = await encryptedTestDb(backend)
      u = t.names.users
      o = t.names.orders
      // Orders has keys before the copy tests (a first read of a table without keys is tested apart).
      await t.db.insertInto(o).values({ user_id: 1, item: 'first', email: 'first-order@x.io' }).execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    describe('bypassing the plugin', () => {
      it('withoutPlugins() insert of plaintext throws PLAINTEXT_WRITE and inserts nothing', async () => {
        const before = await count(u)
        const e = await failure(
          t.db
            .withoutPlugins()
            .insertInto(u)
            .values({ name: 'wp', email: SECRET, ssn: SECRET_SSN })
            .execute(),
        )
        expect(e).toBeInstanceOf(QueryRefusedError)
        expect(e.code).toBe('PLAINTEXT_WRITE')
        expect(e.table).toBe(u)
        expect(['email', 'ssn']).toContain(e.column)
        expectNoPlaintext(e)
        expect(await count(u)).toBe(before)
      })

      it('withoutPlugins() search on plaintext throws PLAINTEXT_SEARCH', async () => {
        const e = await failure(
          t.db.withoutPlugins().selectFrom(u).selectAll().where('email', '=', SECRET).execute(),
        )
        expect(e).toBeInstanceOf(QueryRefusedError)
        expect(e.code).toBe('PLAINTEXT_SEARCH')
        expect(e.table).toBe(u)
        expect(e.column).toBe('email')
        expectNoPlaintext(e)
      })

      it('a withoutPlugins() query embedded in a sql template: refused the same way, or rewritten when the plugin runs the template', async () => {
        const before = await count(u)
        const insert = t.db.withoutPlugins().insertInto(u).values({ name: 'wp-raw', email: SECRET })
        // Run without the plugin: the wrapper's check reaches the query inside the raw SQL.
        const refused = await failure(sql`${insert}`.execute(t.db.withoutPlugins()))
        expect(refused.code).toBe('PLAINTEXT_WRITE')
        expectNoPlaintext(refused)
        const search = t.db.withoutPlugins().selectFrom(u).select('name').where('email', '=', SECRET)
        const searched = await failure(
          sql`select count(*) as n from (${search}) as x`.execute(t.db.withoutPlugins()),
        )
        expect(searched.code).toBe('PLAINTEXT_SEARCH')
        expectNoPlaintext(searched)
        expect(await count(u)).toBe(before)
        // Run by the plugin (through t.db), the embedded queries are rewritten: encrypted at rest, found.
        await sql`${insert}`.execute(t.db)
        const stored = await t.raw
          .selectFrom(u)
          .select('email')
          .where('name', '=', 'wp-raw')
          .executeTakeFirstOrThrow()
        expect(Buffer.from(stored.email as Uint8Array).includes(Buffer.from(SECRET))).toBe(false)
        const { rows } = await sql<{
          n: number | string
        }>`select count(*) as n from (${search}) as x`.execute(t.db)
        expect(Number(rows[0]?.n)).toBe(1)
        // A select embedded as a derived table passes its encrypted columns on as stored.
        const all = await sql<{
          n: number | string
        }>`select count(*) as n from (${t.db.selectFrom(u).selectAll()}) as x`.execute(t.db)
        expect(Number(all.rows[0]?.n)).toBe(await count(u))
        await t.db.deleteFrom(u).where('name', '=', 'wp-raw').execute()
      })

      it('withoutPlugins() update of plaintext throws PLAINTEXT_WRITE and changes nothing', async () => {
        await t.db.insertInto(u).values({ name: 'wp-update', email: 'wp-update@x.io' }).execute()
        const before = await t.raw.selectFrom(u).select(['id', 'email', 'email_bidx']).orderBy('id').execute()
        const e = await failure(t.db.withoutPlugins().updateTable(u).set({ email: SECRET }).execute())
        expect(e.code).toBe('PLAINTEXT_WRITE')
        expect(e.table).toBe(u)
        expect(e.column).toBe('email')
        expectNoPlaintext(e)
        expect(
          await t.raw.selectFrom(u).select(['id', 'email', 'email_bidx']).orderBy('id').execute(),
        ).toEqual(before)
      })

      it('a query compiled by the plugin but run without the wrapper throws and inserts nothing', async () => {
        const before = await count(u)
        const compiled = t.db
          .insertInto(u)
          .values({ name: 'unresolved', email: SECRET, notes: SECRET_NOTE })
          .compile()
        const e = await failure(t.raw.executeQuery(compiled))
        expectNoPlaintext(e)
        if (backend.name === 'pglite') {
          // PGlite serialises by the parameter's server type and never calls toPostgres(): a
          // bytea parameter that is not a Uint8Array is rejected by PGlite itself, before sending.
          expect(e).toBeInstanceOf(Error)
        } else {
          // pg calls toPostgres(), mysql2 calls toSqlString(): both throw UNRESOLVED_VALUE instead
          // of sending (mysql2 would otherwise write '[object Object]').
          expect(e).toBeInstanceOf(QueryRefusedError)
          expect(e.code).toBe('UNRESOLVED_VALUE')
          expect(e.table).toBe(u)
          expect(['email', 'notes']).toContain(e.column)
        }
        expect(await count(u)).toBe(before)
        const objectObject = await t.raw.selectFrom(u).select('id').where('name', '=', 'unresolved').execute()
        expect(objectObject).toEqual([])
      })

      it('a compiled search run without the wrapper throws UNRESOLVED_VALUE (pg, mysql2)', async () => {
        const compiled = t.db.selectFrom(u).selectAll().where('email', '=', SECRET).compile()
        const e = await failure(t.raw.executeQuery(compiled))
        expectNoPlaintext(e)
        if (backend.name !== 'pglite') expect(e.code).toBe('UNRESOLVED_VALUE')
      })
    })

    describe('other plugins', () => {
      // A second Kysely on the same dialect and encryption, with CamelCasePlugin and a renaming
      // plugin AFTER ours. Not destroyed: it shares the fixture's pool / PGlite instance.
      let other: Kysely<TestDB>
      beforeAll(() => {
        other = new Kysely<TestDB>({
          dialect: t.encryption.wrap(t.appDialect),
          plugins: [t.encryption.plugin, new CamelCasePlugin(), new RenamePlugin('contact', 'email')],
        })
      })

      it('CamelCasePlugin after ours rewrites the tree, and values are still encrypted at rest', async () => {
        await other.insertInto(o).values({ userId: 7, item: 'camel', email: SECRET }).execute()
        const raw = await t.raw.selectFrom(o).selectAll().where('item', '=', 'camel').execute()
        expect(raw).toHaveLength(1)
        const email = asBytes(raw[0]!.email)
        asBytes(raw[0]!.email_bidx)
        expect(email.includes(Buffer.from(SECRET))).toBe(false)
        expect(raw[0]!.user_id).toBe(7)
        const back = await other
          .selectFrom(o)
          .select(['userId', 'email'])
          .where('email', '=', SECRET.toUpperCase())
          .execute()
        expect(back).toEqual([{ userId: 7, email: SECRET }])
      })

      it('a plugin after ours that renames a plaintext column into an annotated one is caught by the wrapper', async () => {
        const insert = await failure(other.insertInto(u).values({ name: 'alias', contact: SECRET }).execute())
        expect(insert.code).toBe('PLAINTEXT_WRITE')
        expect(insert.column).toBe('email')
        expectNoPlaintext(insert)
        const search = await failure(other.selectFrom(u).selectAll().where('contact', '=', SECRET).execute())
        expect(search.code).toBe('PLAINTEXT_SEARCH')
        expectNoPlaintext(search)
        const before = await t.raw.selectFrom(u).select(['id', 'email', 'email_bidx']).orderBy('id').execute()
        const update = await failure(other.updateTable(u).set({ contact: SECRET }).execute())
        expect(update.code).toBe('PLAINTEXT_WRITE')
        expect(await t.raw.selectFrom(u).select('id').where('name', '=', 'alias').execute()).toEqual([])
        expect(
          await t.raw.selectFrom(u).select(['id', 'email', 'email_bidx']).orderBy('id').execute(),
        ).toEqual(before)
      })
    })

    describe('deferred values redact themselves', () => {
      it('in JSON, util.inspect and String() of a compiled query', () => {
        const insert = t.db
          .insertInto(u)
          .values({ name: 'redact', email: SECRET, ssn: SECRET_SSN, notes: { note: SECRET_NOTE } })
          .compile()
        const search = t.db
          .selectFrom(u)
          .selectAll()
          .where('email', '=', SECRET)
          .where('ssn', '=', SECRET_SSN)
          .compile()
        for (const compiled of [insert, search]) {
          expect(compiled.parameters.length).toBeGreaterThan(0)
          expectNoPlaintext(JSON.stringify(compiled.parameters))
          expectNoPlaintext(JSON.stringify(compiled))
          expectNoPlaintext(inspect(compiled, { depth: Number.POSITIVE_INFINITY }))
          expectNoPlaintext(
            inspect(compiled.parameters, { depth: Number.POSITIVE_INFINITY, showHidden: true }),
          )
          expectNoPlaintext(compiled.sql)
          for (const p of compiled.parameters) {
            expectNoPlaintext(String(p))
            expectNoPlaintext(`${p}`)
            expectNoPlaintext(Object.keys(p as object).join(','))
          }
        }
        // The deferred values are in the parameters, not the plaintext.
        expect(insert.parameters).not.toContain(SECRET)
        expect(search.parameters).not.toContain(SECRET)
      })

      it("in Kysely's query log, for successful and failing queries", async () => {
        const logs: LogEvent[] = []
        const logged = new Kysely<TestDB>({
          dialect: t.encryption.wrap(t.appDialect),
          plugins: [t.encryption.plugin],
          log: (event) => {
            logs.push(event)
          },
        })
        // Not destroyed: it shares the fixture's pool / PGlite instance, which t.destroy() closes.
        await logged.insertInto(u).values({ name: 'logged', email: SECRET, ssn: SECRET_SSN }).execute()
        const found = await logged
          .selectFrom(u)
          .select(['name', 'email'])
          .where('email', '=', SECRET)
          .execute()
        expect(found).toEqual([{ name: 'logged', email: SECRET }])
        await logged.selectFrom(u).select('name').where('ssn', '=', SECRET_SSN).execute()
        // A unique violation on email_bidx: the driver fails, Kysely logs the query and the error.
        await failure(logged.insertInto(u).values({ name: 'logged-dup', email: SECRET }).execute())
        expect(logs.some((e) => e.level === 'error')).toBe(true)
        expect(logs.filter((e) => e.level === 'query').length).toBeGreaterThanOrEqual(3)
        expectNoPlaintext(logs)
        for (const e of logs) expectNoPlaintext(e.query.parameters.map(String).join('\n'))
      })
    })

    describe('decrypting what is not our ciphertext', () => {
      const selectById = (id: number, column: string) =>
        t.db.selectFrom(u).select(['id', column]).where('id', '=', id).execute()

      const rawInsert = async (values: Record<string, unknown>) => {
        await t.raw
          .insertInto(u)
          .values({ name: 'raw', ...values })
          .execute()
        const row = await t.raw
          .selectFrom(u)
          .select('id')
          .orderBy('id', 'desc')
          .limit(1)
          .executeTakeFirstOrThrow()
        return row.id as number
      }

      it('garbage bytes: DecryptionError with table and column, never the bytes', async () => {
        const garbage = Buffer.concat([Buffer.from([0xff]), randomBytes(40)])
        const id = await rawInsert({ email: garbage })
        const e = await failure(selectById(id, 'email'))
        expectDecryptionError(e, /^(NOT_CIPHERTEXT|FORMAT_)/, u, 'email')
        expect(e.message).not.toContain(garbage.toString('hex'))
        expect(e.message).not.toContain(garbage.toString('base64'))
      })

      it('bytes that start like our format but are not: DecryptionError, never a value', async () => {
        const fake = Buffer.concat([Buffer.from([0x01, 0x01]), randomBytes(60)])
        const id = await rawInsert({ email: fake })
        const e = await failure(selectById(id, 'email'))
        expectDecryptionError(
          e,
          /^(NOT_CIPHERTEXT|FORMAT_|DECRYPT_AUTH_FAILED|WRONG_KEY|KEY_NOT_FOUND)/,
          u,
          'email',
        )
      })

      it('a legacy plaintext stored as bytes: NOT_CIPHERTEXT without echoing it', async () => {
        const legacy = 'legacy-plaintext-5519@x.io'
        const id = await rawInsert({ email: Buffer.from(legacy, 'utf8') })
        const e = await failure(selectById(id, 'email'))
        expectDecryptionError(e, /^(NOT_CIPHERTEXT|FORMAT_)/, u, 'email')
        expectNoPlaintext(e, [legacy])
      })

      it('a ciphertext copied into another table: DECRYPT_AUTH_FAILED, never the plaintext', async () => {
        const plain = 'copied-5519@x.io'
        await t.db.insertInto(u).values({ name: 'copy-source', email: plain }).execute()
        const source = await t.raw
          .selectFrom(u)
          .select(['email', 'email_bidx'])
          .where('name', '=', 'copy-source')
          .executeTakeFirstOrThrow()
        await t.raw
          .insertInto(o)
          .values({ user_id: 1, item: 'copied', email: source.email, email_bidx: source.email_bidx })
          .execute()
        const e = await failure(
          t.db.selectFrom(o).select(['id', 'email']).where('item', '=', 'copied').execute(),
        )
        expectDecryptionError(e, 'DECRYPT_AUTH_FAILED', o, 'email')
        expectNoPlaintext(e, [plain])
      })

      it('a ciphertext copied into another column: DECRYPT_AUTH_FAILED, never the plaintext', async () => {
        const plain = 'copied-col-5519@x.io'
        await t.db.insertInto(u).values({ name: 'copy-col', email: plain }).execute()
        await t.raw
          .updateTable(u)
          .set((eb) => ({ ssn: eb.ref('email') }))
          .where('name', '=', 'copy-col')
          .execute()
        const e = await failure(
          t.db.selectFrom(u).select(['id', 'ssn']).where('name', '=', 'copy-col').execute(),
        )
        expectDecryptionError(e, 'DECRYPT_AUTH_FAILED', u, 'ssn')
        expectNoPlaintext(e, [plain])
      })
    })

    describe('the first read of a table that has no keys yet', () => {
      // Its own fixture: if the read hangs, it holds a connection (PGlite: the only session).
      let fresh: EncryptedTestDb | undefined
      beforeAll(async () => {
        fresh = await encryptedTestDb(backend)
      })
      afterAll(async () => {
        if (fresh !== undefined) await withDeadline(fresh.destroy(), 1_000, 'destroy').catch(() => undefined)
      })

      it('a ciphertext copied into a table never written through the plugin: DECRYPT_AUTH_FAILED, no hang', async () => {
        const f = fresh!
        const plain = 'copied-fresh-5519@x.io'
        await f.db.insertInto(f.names.users).values({ name: 'src', email: plain }).execute()
        const source = await f.raw
          .selectFrom(f.names.users)
          .select(['email', 'email_bidx'])
          .executeTakeFirstOrThrow()
        await f.raw
          .insertInto(f.names.orders)
          .values({ user_id: 1, item: 'copied', email: source.email, email_bidx: source.email_bidx })
          .execute()
        // The orders keys do not exist yet: reading creates them (autoCreateKeys), then must fail
        // authentication. A deadline turns a hang into a failure (a generous one: on a loaded
        // machine, PGlite creating the keys takes seconds).
        const e = await failure(
          withDeadline(f.db.selectFrom(f.names.orders).select(['id', 'email']).execute(), 30_000, 'select'),
        )
        expectDecryptionError(e, 'DECRYPT_AUTH_FAILED', f.names.orders)
        expectNoPlaintext(e, [plain])
      })
    })

    describe('a column declared migratingFromPlaintext', () => {
      // Its own schema and key table, on the fixture's database (a second Kysely on its dialect).
      const table = uniqueName('legacy')
      const keyTable = uniqueName('kfe_keys_legacy')
      const schema = encryptedSchema({
        [table]: {
          email: encrypted.text({
            index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
            migratingFromPlaintext: true,
            maxBytes: 320,
          }),
        },
      })
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: randomBytes(32) }),
        keyTable,
        verifySchema: onlyTables(),
      })
      let db: Kysely<TestDB>

      beforeAll(async () => {
        db = new Kysely<TestDB>({ dialect: encryption.wrap(t.appDialect), plugins: [encryption.plugin] })
        await db.schema
          .createTable(table)
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('name', 'varchar(50)')
          .$call(addEncryptedColumns(schema, table, backend.family))
          .execute()
        await createBlindIndexes(db, schema, table)
        await encryption.init(db)
      })
      afterAll(async () => {
        await sql`drop table if exists ${sql.table(table)}`.execute(t.raw)
        await sql`drop table if exists ${sql.table(keyTable)}`.execute(t.raw)
        await encryption.close()
      })

      it('returns legacy plaintext (counted in stats) beside decrypted ciphertexts', async () => {
        const legacy = 'legacy-migrating-5519@x.io'
        await db.insertInto(table).values({ id: 1, name: 'new', email: 'new-5519@x.io' }).execute()
        await t.raw
          .insertInto(table)
          .values({ id: 2, name: 'old', email: Buffer.from(legacy, 'utf8') })
          .execute()
        const before = encryption.stats().plaintextReads
        const rows = await db.selectFrom(table).select(['id', 'email']).orderBy('id').execute()
        expect(rows).toEqual([
          { id: 1, email: 'new-5519@x.io' },
          { id: 2, email: legacy },
        ])
        expect(encryption.stats().plaintextReads).toBe(before + 1)
        // At rest, the new row is ciphertext.
        const atRest = await t.raw
          .selectFrom(table)
          .select('email')
          .where('id', '=', 1)
          .executeTakeFirstOrThrow()
        expect(asBytes(atRest.email).includes(Buffer.from('new-5519@x.io'))).toBe(false)
      })
    })
  })
})
