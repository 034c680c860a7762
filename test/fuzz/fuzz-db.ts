import { randomBytes } from 'node:crypto'
import { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { createPool } from 'mysql2'
import pg from 'pg'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'
import type { Target } from './chain.js'
import type { Family } from './generate.js'
import {
  fuzzEncryptedSchema,
  fuzzSecrets,
  SEED,
  TABLE_NAMES,
  TABLES,
  type TableName,
  TENANTS,
} from './schema.js'

export type FuzzBackendName = 'postgres' | 'mysql' | 'pglite'

/** Where a fuzz backend's database is (URLs for PostgreSQL and MariaDB; PGlite is in-process). */
export interface FuzzBackendSpec {
  readonly name: FuzzBackendName
  readonly url?: string | null
}

// biome-ignore lint/suspicious/noExplicitAny: the fuzz schema's physical names are generated.
type AnyDb = Kysely<any>

/** The two copies of the fuzz data on one backend. */
export interface FuzzDb {
  readonly backend: FuzzBackendName
  readonly family: Family
  /** The application's view: the encryption wrapper (leak scanner inside it) and the plugin. */
  readonly enc: AnyDb
  /** The oracle: plain Kysely over plaintext tables with the same logical columns. */
  readonly plain: AnyDb
  readonly encTarget: Target
  readonly plainTarget: Target
  readonly scanner: ScanningDialect
  readonly encryption: FieldEncryption
  close(): Promise<void>
}

function dialectPair(spec: FuzzBackendSpec): [Dialect, Dialect] {
  if (spec.name === 'pglite') {
    const instance = new PGlite()
    return [new PGliteDialect(instance), new PGliteDialect(instance)]
  }
  if (!spec.url) throw new Error(`fuzz: no URL for ${spec.name}`)
  const url = spec.url
  if (spec.name === 'postgres') {
    const one = () => new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 3 }) })
    return [one(), one()]
  }
  const one = () =>
    new MysqlDialect({ pool: createPool({ uri: url, connectionLimit: 3, supportBigNumbers: true }) })
  return [one(), one()]
}

/** The SQL type of a logical column on the plaintext copy (binary collation: exact like an HMAC). */
function plainType(family: Family, kind: string, encrypted: boolean) {
  if (kind === 'int') return sql`integer`
  if (kind === 'num') return family === 'postgres' ? sql`double precision` : sql`double`
  if (kind === 'date') return family === 'postgres' ? sql`timestamptz` : sql`datetime(3)`
  if (kind === 'json') return family === 'postgres' ? sql`jsonb` : sql`json`
  if (family === 'postgres') return sql`text`
  return encrypted
    ? sql`varchar(200) character set utf8mb4 collate utf8mb4_bin`
    : sql`varchar(200) character set utf8mb4`
}

/**
 * Creates both copies of the fuzz schema on one backend (tables named per process, so runs on
 * one database do not collide) and loads the same seed rows into each.
 */
export async function openFuzzDb(spec: FuzzBackendSpec): Promise<FuzzDb> {
  const family: Family = spec.name === 'mysql' ? 'mysql' : 'postgres'
  const tag = `${process.pid}_${randomBytes(3).toString('hex')}`
  const encNames = Object.fromEntries(TABLE_NAMES.map((t) => [t, `fz_${tag}_${t}`])) as Record<
    TableName,
    string
  >
  const plainNames = Object.fromEntries(TABLE_NAMES.map((t) => [t, `fz_${tag}_${t}_p`])) as Record<
    TableName,
    string
  >
  const keyTable = `fz_${tag}_keys`
  const schema = fuzzEncryptedSchema(encNames)
  const encryption = fieldEncryption({
    schema,
    keyProvider: localKeyProvider({ key: randomBytes(32) }),
    keyTable,
    // Tables are created through this instance before any key exists: keys on first use
    // (development mode). The explicit init path has its own tests (key-init.test.ts).
    autoCreateKeys: true,
    // Other files' tables share the database: only the annotated tables are checked.
    verifySchema: { unannotatedTables: false },
  })
  const [a, b] = dialectPair(spec)
  const secrets = fuzzSecrets()
  const scanner = scanningDialect(a, () => secrets)
  const enc: AnyDb = new Kysely({ dialect: encryption.wrap(scanner), plugins: [encryption.plugin] })
  const plain: AnyDb = new Kysely({ dialect: b })
  for (const t of TABLE_NAMES) {
    let create = enc.schema.createTable(encNames[t])
    let createPlain = plain.schema.createTable(plainNames[t])
    for (const c of TABLES[t]) {
      const type = plainType(family, c.kind, c.protection !== 'plain' || c.binary === true)
      const mods = (x: { primaryKey(): typeof x; notNull(): typeof x; unique(): typeof x }) => {
        let m = c.name === 'id' ? x.primaryKey() : x
        if (c.notNull === true) m = m.notNull()
        if (c.unique === true) m = m.unique()
        return m
      }
      createPlain = createPlain.addColumn(c.name, type, mods as never)
      if (c.protection === 'plain') create = create.addColumn(c.name, type, mods as never)
    }
    for (const c of TABLES[t])
      if (c.uniqueWith !== undefined)
        createPlain = createPlain.addUniqueConstraint(`${plainNames[t]}_${c.name}_uq`, [
          c.uniqueWith,
          c.name,
        ] as never)
    await create.$call(addEncryptedColumns(schema, encNames[t], family)).execute()
    await createPlain.execute()
    await createBlindIndexes(enc, schema, encNames[t])
  }
  // Each tenant's keys, on purpose (a table with keyScope has no table-wide keys).
  for (const t of TENANTS) await encryption.initTenant(enc, encNames.accounts, t)
  // Every table exists before the first write: the wrapper verifies the whole schema then.
  for (const t of TABLE_NAMES) {
    const rows = SEED[t].map((r) => ({ ...r }))
    await enc.insertInto(encNames[t]).values(rows).execute()
    const plainRows = rows.map((r) =>
      Object.fromEntries(
        Object.entries(r).map(([k, v]) => [
          k,
          TABLES[t].find((c) => c.name === k)?.kind === 'json' && v !== null ? JSON.stringify(v) : v,
        ]),
      ),
    )
    await plain.insertInto(plainNames[t]).values(plainRows).execute()
  }
  return {
    backend: spec.name,
    family,
    enc,
    plain,
    encTarget: { names: encNames, jsonAsText: false, meaning: false },
    plainTarget: { names: plainNames, jsonAsText: true, meaning: true },
    scanner,
    encryption,
    async close() {
      for (const t of TABLE_NAMES) {
        await sql`drop table if exists ${sql.table(encNames[t])}`.execute(plain)
        await sql`drop table if exists ${sql.table(plainNames[t])}`.execute(plain)
      }
      await sql`drop table if exists ${sql.table(keyTable)}`.execute(plain)
      await encryption.close()
      await enc.destroy()
      if (spec.name !== 'pglite') await plain.destroy()
    },
  }
}
