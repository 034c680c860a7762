/**
 * The ways case 2 stores (id, email, name, ssn): plaintext Kysely (twice: the A/A control); the
 * hand-written floor (node:crypto in application code), alone and through Kysely's own
 * WithSchemaPlugin; the plugin on an annotated table; the plugin on a table with no annotated column.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, randomFillSync } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import { encryptedColumnTypes } from '../src/schema/migration.js'
import type { EncryptedSchema } from '../src/schema/schema.js'

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per run.
export type AnyDB = Kysely<any>

export type Family = 'postgres' | 'mysql'

/** One row as the application sees it. */
export interface Person {
  id: number
  email: string
  name: string
  ssn: string
}

/** `count` deterministic people (ids 1..count). */
export function people(count: number): Person[] {
  const out: Person[] = []
  for (let i = 0; i < count; i++) {
    const n = (i * 2_654_435_761) % 1_000_000_000
    out.push({
      id: i + 1,
      email: `user${i}.${n.toString(36)}@example.com`,
      name: `Person ${i}`,
      ssn: `${String(100 + (n % 800)).padStart(3, '0')}-${String(n % 100).padStart(2, '0')}-${String(n % 10_000).padStart(4, '0')}`,
    })
  }
  return out
}

/** Stands for an HMAC-SHA256 value where only the query's shape matters. */
const PLACEHOLDER_INDEX = Buffer.alloc(32)
/** Stands for one ciphertext of the floor (nonce ‖ body ‖ tag of a short value) where its crypto is left out. */
const PLACEHOLDER_CIPHERTEXT = Buffer.alloc(12 + 24 + 16)

/** What each variant does. Every method runs inside the timed region except `create`/`drop`. */
export interface DbVariant {
  readonly id: string
  readonly label: string
  /** The variant this one is compared with (its median / the reference's median). */
  readonly reference?: string
  create(): Promise<void>
  insert(rows: readonly Person[], batchSize: number): Promise<void>
  /** Looks one person up by email; returns the row (decrypted) or undefined. */
  lookup(email: string): Promise<Person | undefined>
  /** Builds and compiles the lookup's query without running it (the plugin's rewrite included). */
  compileLookup(email: string): unknown
  /** Builds and compiles one insert of `rows` without running it (the plugin's rewrite included). */
  compileInsert(rows: readonly Person[]): unknown
  selectAll(): Promise<Person[]>
  drop(): Promise<void>
}

/** Plaintext columns, email with a unique index: used by plain Kysely and by the plugin on a table it does not annotate. */
function plainVariant(id: string, label: string, db: AnyDB, table: string, reference?: string): DbVariant {
  const lookupQuery = (email: string) => db.selectFrom(table).selectAll().where('email', '=', email)
  return {
    id,
    label,
    ...(reference === undefined ? {} : { reference }),
    async create() {
      await db.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('email', 'varchar(320)', (c) => c.notNull())
        .addColumn('name', 'varchar(100)', (c) => c.notNull())
        .addColumn('ssn', 'varchar(11)')
        .execute()
      await db.schema.createIndex(`${table}_email_idx`).on(table).column('email').unique().execute()
    },
    insert: (rows, batchSize) => insertInBatches(db, table, rows, batchSize),
    lookup: (email) => lookupQuery(email).executeTakeFirst() as Promise<Person | undefined>,
    compileLookup: (email) => lookupQuery(email).compile(),
    compileInsert: (rows) => db.insertInto(table).values(rows).compile(),
    selectAll: () => db.selectFrom(table).selectAll().execute() as Promise<Person[]>,
    drop: () => dropTable(db, table),
  }
}

/** The plaintext reference: Kysely with no plugin. */
export function plainKysely(db: AnyDB, table: string): DbVariant {
  return plainVariant('plain', 'plain Kysely (plaintext)', db, table)
}

/**
 * The A/A control: plain Kysely again, on a table of its own. Its ratio to {@link plainKysely}
 * would be exactly 1 on a quiet machine; how far it strays is how far any ratio of this run can
 * be trusted.
 */
export function plainKyselyControl(db: AnyDB, table: string): DbVariant {
  return plainVariant('plain-control', 'plain Kysely again (A/A control)', db, table, 'plain')
}

/** A table with no annotated column, through the wrapped dialect and the plugin. */
export function pluginPlaintextTable(db: AnyDB, table: string): DbVariant {
  return plainVariant('plugin-plain', 'plugin, table with no encrypted column', db, table, 'plain')
}

/** Who a hand-written variant is in the report. */
export interface VariantName {
  readonly id: string
  readonly label: string
  readonly reference: string
}

/** The floor itself, compared with plain Kysely. */
export const FLOOR: VariantName = {
  id: 'floor',
  label: 'node:crypto by hand (floor)',
  reference: 'plain',
}

/**
 * The floor's very queries through Kysely's own WithSchemaPlugin, which only walks each query
 * tree and qualifies its tables: what any plugin that rewrites queries costs before it does any
 * work of its own. Compared with the floor.
 */
export const FLOOR_THROUGH_KYSELY_PLUGIN: VariantName = {
  id: 'floor-kysely-plugin',
  label: "the floor through Kysely's WithSchemaPlugin (a plugin's bare cost)",
  reference: 'floor',
}

/**
 * The floor: encryption written by hand in the application. AES-256-GCM under one key, nonces
 * from a pooled CSPRNG buffer, `nonce ‖ ct ‖ tag`; the email's HMAC-SHA256 in `email_bidx`
 * (unique index). Same column types as the plugin's table.
 *
 * @param name - {@link FLOOR}, or {@link FLOOR_THROUGH_KYSELY_PLUGIN} with `db` carrying that plugin
 */
export function handWritten(
  db: AnyDB,
  table: string,
  family: Family,
  schema: EncryptedSchema,
  like: string,
  name: VariantName = FLOOR,
): DbVariant {
  const key = randomBytes(32)
  const macKey = randomBytes(32)
  const pool = Buffer.alloc(12 * 1024)
  let offset = pool.length
  const seal = (text: string): Buffer => {
    if (offset + 12 > pool.length) {
      randomFillSync(pool)
      offset = 0
    }
    const iv = pool.subarray(offset, offset + 12)
    offset += 12
    const cipher = createCipheriv('aes-256-gcm', key, iv)
    const body = cipher.update(text, 'utf8')
    cipher.final()
    return Buffer.concat([iv, body, cipher.getAuthTag()])
  }
  const open = (ct: Uint8Array): string => {
    const decipher = createDecipheriv('aes-256-gcm', key, ct.subarray(0, 12))
    decipher.setAuthTag(ct.subarray(ct.length - 16))
    const text = decipher.update(ct.subarray(12, ct.length - 16)).toString('utf8')
    decipher.final()
    return text
  }
  const mac = (email: string) => createHmac('sha256', macKey).update(email, 'utf8').digest()
  const insertQuery = (
    rows: readonly Person[],
    encrypt: (text: string) => Buffer,
    index: (email: string) => Buffer,
  ) =>
    db.insertInto(table).values(
      rows.map((r) => ({
        id: r.id,
        name: r.name,
        email: encrypt(r.email),
        email_bidx: index(r.email),
        ssn: encrypt(r.ssn),
      })),
    )
  const lookupQuery = (index: Buffer) =>
    db.selectFrom(table).select(['id', 'name', 'email', 'ssn']).where('email_bidx', '=', index)
  const decryptRow = (r: Record<string, unknown>): Person => ({
    id: r.id as number,
    name: r.name as string,
    email: open(r.email as Uint8Array),
    ssn: open(r.ssn as Uint8Array),
  })
  return {
    ...name,
    // The very column types the plugin's table gets, so storage is identical.
    create: () => createPeopleTable(db, table, encryptedColumnTypes(schema, like, family)),
    async insert(rows, batchSize) {
      for (let i = 0; i < rows.length; i += batchSize) {
        await insertQuery(rows.slice(i, i + batchSize), seal, mac).execute()
      }
    },
    async lookup(email) {
      const row = await lookupQuery(mac(email)).executeTakeFirst()
      return row === undefined ? undefined : decryptRow(row)
    },
    // The query alone: a fixed 32-byte value stands for mac(email), which is the floor's crypto.
    compileLookup: () => lookupQuery(PLACEHOLDER_INDEX).compile(),
    // Fixed values stand for the ciphertexts and the index: the floor's crypto is left out.
    compileInsert: (rows) =>
      insertQuery(
        rows,
        () => PLACEHOLDER_CIPHERTEXT,
        () => PLACEHOLDER_INDEX,
      ).compile(),
    async selectAll() {
      const rows = await db.selectFrom(table).select(['id', 'name', 'email', 'ssn']).execute()
      return rows.map(decryptRow)
    },
    drop: () => dropTable(db, table),
  }
}

/**
 * The plugin: `email` encrypted.text with a unique blind index `email_bidx` (no normalizer, like
 * the floor's HMAC), `ssn` encrypted.text with no index.
 */
export function pluginEncrypted(
  db: AnyDB,
  table: string,
  family: Family,
  schema: EncryptedSchema,
): DbVariant {
  // Four columns (selectAll() would return email_bidx too), like the other variants.
  const lookupQuery = (email: string) =>
    db.selectFrom(table).select(['id', 'name', 'email', 'ssn']).where('email', '=', email)
  return {
    id: 'plugin',
    label: 'plugin (email unique index, ssn no index)',
    reference: 'floor',
    create: () => createPeopleTable(db, table, encryptedColumnTypes(schema, table, family)),
    insert: (rows, batchSize) => insertInBatches(db, table, rows, batchSize),
    lookup: (email) => lookupQuery(email).executeTakeFirst(),
    compileLookup: (email) => lookupQuery(email).compile(),
    compileInsert: (rows) => db.insertInto(table).values(rows).compile(),
    selectAll: () => db.selectFrom(table).select(['id', 'name', 'email', 'ssn']).execute(),
    drop: () => dropTable(db, table),
  }
}

/** The rows as they are (plain Kysely, or the plugin encrypting them), `batchSize` per statement. */
async function insertInBatches(
  db: AnyDB,
  table: string,
  rows: readonly Person[],
  batchSize: number,
): Promise<void> {
  for (let i = 0; i < rows.length; i += batchSize) {
    await db
      .insertInto(table)
      .values(rows.slice(i, i + batchSize))
      .execute()
  }
}

async function dropTable(db: AnyDB, table: string): Promise<void> {
  await sql`drop table if exists ${sql.table(table)}`.execute(db.withoutPlugins())
}

/** (id, name) plus the encrypted and blind-index columns, and the unique index on email_bidx. */
async function createPeopleTable(
  // biome-ignore lint/suspicious/noExplicitAny: bench tables are named at run time.
  db: Kysely<any>,
  table: string,
  columns: ReturnType<typeof encryptedColumnTypes>,
): Promise<void> {
  let builder = db.schema
    .createTable(table)
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'varchar(100)', (c) => c.notNull())
  for (const c of columns) builder = builder.addColumn(c.name, c.type)
  await builder.execute()
  await db.schema.createIndex(`${table}_email_bidx_idx`).on(table).column('email_bidx').unique().execute()
}
