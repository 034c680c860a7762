/**
 * The tables the re-encryption benchmarks share (bench/ops.ts, bench/ops-profile.ts,
 * bench/ops-micro.ts): ours, (id, name, email, ssn) with email and ssn encrypted, each with its
 * blind index, written through the application; and, when asked, the floor's table of the very same
 * columns and indexes, written by hand (bench/ops-floor.ts); the key table and the ops on them.
 */
import { randomBytes } from 'node:crypto'
import { type Dialect, Kysely, sql } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  type KeyProvider,
  localKeyProvider,
  type SqlFamily,
} from '../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../src/ops.js'
import { type Person, people } from './db-variants.js'
import { FloorCipher } from './ops-floor.js'

// biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
type AnyDB = Kysely<any>

/** What {@link opsTables} made. */
export interface OpsTables {
  /** Ours: re-encrypted by the ops. */
  readonly ours: string
  /** The floor's table: made and filled with `floor` only. */
  readonly floorTable: string
  readonly keyTable: string
  readonly jobsTable: string
  readonly schema: EncryptedSchema
  /** The ops on the plain Kysely, with the tables' keys made (`init`); metadata TTL 50 ms. */
  readonly ops: FieldEncryptionOps
  /** The rows of both tables. */
  readonly people: readonly Person[]
  /** The floor's keys (the floor table's rows are under its key 0). */
  readonly cipher: FloorCipher
  /** A key provider of its own on the benchmark's KEK (closing one closes its own). */
  provider(): KeyProvider
  /** Closes the ops and drops every table. */
  drop(): Promise<void>
}

/** Options of {@link opsTables}. */
export interface OpsTablesOptions {
  /** Prefix of the tables' names (a tag of the process and a random one follow). */
  readonly prefix: string
  readonly family: SqlFamily
  readonly rows: number
  /** Make and fill the floor's table too. */
  readonly floor: boolean
  /** The application's dialect (the same database as `raw`): the rows of ours are written through it. */
  readonly appDialect: Dialect
  /**
   * The application's dialect shares `raw`'s connection (one PGlite instance), which destroying its
   * Kysely would close: it is left to close with `raw`.
   */
  readonly sharesRaw?: boolean
  /** The KEK of the tables' keys (default: random); a process of its own opens the same keys with it. */
  readonly kek?: Buffer
}

/** The encrypted columns of every table of the benchmark. */
export const opsColumns = () => ({
  email: encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 200 }),
  ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
})

/** Creates and fills the tables of a re-encryption benchmark through `raw` (a plain Kysely). */
export async function opsTables(raw: AnyDB, options: OpsTablesOptions): Promise<OpsTables> {
  const tag = `${process.pid}_${randomBytes(3).toString('hex')}`
  const ours = `${options.prefix}_${tag}`
  const floorTable = `${options.prefix}_floor_${tag}`
  const keyTable = `${options.prefix}_keys_${tag}`
  const jobsTable = `${options.prefix}_jobs_${tag}`
  const tables = options.floor ? [ours, floorTable] : [ours]
  // Both tables get the very same columns and indexes.
  const schema = encryptedSchema(Object.fromEntries(tables.map((t) => [t, opsColumns()])))
  const kek = options.kek ?? randomBytes(32)
  const provider = () => localKeyProvider({ id: 'local:bench', key: kek })
  for (const t of tables) {
    await raw.schema
      .createTable(t)
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .addColumn('name', 'varchar(100)', (c) => c.notNull())
      .$call(addEncryptedColumns(schema, t, options.family))
      .execute()
    await createBlindIndexes(raw, schema, t)
  }
  const ops = fieldEncryptionOps({
    db: raw,
    schema,
    keyProvider: provider(),
    keyTable,
    jobsTable,
    metadataTtlMs: 50,
  })
  await ops.init()
  const encryption = fieldEncryption({ schema, keyProvider: provider(), keyTable, autoCreateKeys: false })
  const app: AnyDB = new Kysely({
    dialect: encryption.wrap(options.appDialect),
    plugins: [encryption.plugin],
  })
  const cipher = new FloorCipher()
  const all = people(options.rows)
  const drop = async () => {
    await ops.close()
    for (const t of [...tables, keyTable, jobsTable, `${jobsTable}_batches`])
      await sql`drop table if exists ${sql.table(t)}`.execute(raw)
  }
  try {
    for (let i = 0; i < all.length; i += 1000) {
      const slice = all.slice(i, i + 1000)
      await app.insertInto(ours).values(slice).execute()
      if (options.floor)
        await raw
          .insertInto(floorTable)
          .values(slice.map((p) => cipher.row(p.id, p.name, p.email, p.ssn)))
          .execute()
    }
  } catch (error) {
    // A refused write (the schema check finding the database wrong): nothing left open to keep
    // the process alive (bench:ops hung after reporting it), and no table left to be found by
    // the next run's check.
    await drop()
    throw error
  } finally {
    if (options.sharesRaw !== true) await app.destroy()
    await encryption.close()
  }
  return {
    ours,
    floorTable,
    keyTable,
    jobsTable,
    schema,
    ops,
    people: all,
    cipher,
    provider,
    drop,
  }
}
