import { randomBytes } from 'node:crypto'
import { CamelCasePlugin, type Dialect, Kysely, type KyselyPlugin, sql } from 'kysely'
import { afterAll, beforeAll } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  type KeyProvider,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, onlyTables, uniqueName } from './backends.js'

/** Physical names of the tables one test file uses (unique per file: files share one database). */
export interface TableNames {
  readonly users: string
  readonly orders: string
  readonly plain: string
  readonly keys: string
}

/** Row types as the application sees them (plaintext). */
export interface Users {
  id: number
  name: string
  email: string | null
  ssn: string | null
  dob: Date | null
  notes: unknown
  score: number | null
  tenant: string | null
}
export interface Orders {
  id: number
  user_id: number
  email: string | null
  item: string
}
export interface Plain {
  id: number
  label: string
}

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
export type TestDB = Record<string, any>

export interface EncryptedTestDb {
  readonly backend: Backend
  readonly names: TableNames
  readonly schema: EncryptedSchema
  readonly encryption: FieldEncryption
  /** The application's Kysely: wrapped dialect + plugin. */
  readonly db: Kysely<TestDB>
  /**
   * The dialect inside `encryption.wrap` (after `wrapInner`): for a Kysely of the test's own on the
   * application's pool (PGlite: instance), which `destroy` closes; do not destroy that Kysely.
   */
  readonly appDialect: Dialect
  /** A plain Kysely on another dialect instance: what is at rest, and a way around the plugin. */
  readonly raw: Kysely<TestDB>
  destroy(): Promise<void>
}

/** Options of {@link encryptedTestDb}. */
export interface EncryptedTestDbOptions {
  readonly plugins?: (encryption: FieldEncryption) => KyselyPlugin[]
  readonly keyProvider?: KeyProvider | KeyProvider[]
  readonly ssnBits?: number
  readonly wrapInner?: (dialect: Dialect) => Dialect
  /** The tables' names (default: new unique ones). */
  readonly names?: TableNames
  /** `false` turns the wrapper's schema verification off (default: on, for this fixture's tables). */
  readonly verifySchema?: false
}

/** New unique names for the tables of one {@link encryptedTestDb}. */
export function tableNames(): TableNames {
  return {
    users: uniqueName('users'),
    orders: uniqueName('orders'),
    plain: uniqueName('plain'),
    keys: uniqueName('kfe_keys'),
  }
}

/**
 * The per-backend preamble of a plugin suite: an {@link encryptedTestDb} made in the suite's
 * `beforeAll` (then `seed` run on it) and destroyed in its `afterAll`. Call it inside the suite's
 * `describe`. Returns it at once: `names` (and `backend`) are usable while the suite is declared,
 * every other member from the suite's first hook or test on.
 */
export function useEncryptedTestDb(
  backend: Backend,
  options: EncryptedTestDbOptions & { seed?: (t: EncryptedTestDb) => Promise<void> } = {},
): EncryptedTestDb {
  const names = options.names ?? tableNames()
  let current: EncryptedTestDb | undefined
  beforeAll(async () => {
    current = await encryptedTestDb(backend, { ...options, names })
    await options.seed?.(current)
  })
  afterAll(async () => {
    await current?.destroy()
  })
  return new Proxy({} as EncryptedTestDb, {
    get(_, prop) {
      if (prop === 'names') return names
      if (prop === 'backend') return backend
      if (current === undefined)
        throw new Error(`useEncryptedTestDb: ${String(prop)} read before the suite started`)
      return Reflect.get(current, prop)
    },
  })
}

/**
 * The shared fixture of the plugin suites: a `users` table with encrypted email (unique index,
 * normalized), ssn (16-bit search index), dob, notes (json) and score; an `orders` table with an
 * encrypted email (unique index); and a `plain` table with nothing encrypted.
 *
 * @param options.plugins - where the encryption plugin sits among others (default: alone)
 * @param options.wrapInner - wraps the application's dialect INSIDE `encryption.wrap` (e.g. a leak scanner)
 */
export async function encryptedTestDb(
  backend: Backend,
  options: EncryptedTestDbOptions = {},
): Promise<EncryptedTestDb> {
  const names = options.names ?? tableNames()
  const schema = encryptedSchema({
    [names.users]: {
      email: encrypted.text({
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        maxBytes: 320,
      }),
      ssn: encrypted.text({
        index: { name: 'ssn_bidx', bits: options.ssnBits ?? 16, normalize: ['digits'] },
      }),
      dob: encrypted.date(),
      notes: encrypted.json(),
      score: encrypted.number({ index: { name: 'score_bidx' } }),
    },
    [names.orders]: {
      email: encrypted.text({
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        maxBytes: 320,
      }),
    },
  })
  const encryption = fieldEncryption({
    schema,
    keyProvider: options.keyProvider ?? localKeyProvider({ key: randomBytes(32) }),
    keyTable: names.keys,
    verifySchema: options.verifySchema ?? onlyTables(names.users, names.orders, names.plain),
  })
  const [pairDialect, rawDialect] = backend.createDialectPair()
  const appDialect = options.wrapInner?.(pairDialect) ?? pairDialect
  const db = new Kysely<TestDB>({
    dialect: encryption.wrap(appDialect),
    plugins: options.plugins?.(encryption) ?? [encryption.plugin],
  })
  const raw = new Kysely<TestDB>({ dialect: rawDialect })
  const family = backend.family
  const id = family === 'postgres' ? 'serial' : 'integer'
  const idCol = (c: { primaryKey(): typeof c; autoIncrement(): typeof c }) =>
    family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()
  await db.schema
    .createTable(names.users)
    .addColumn('id', id, idCol as never)
    .addColumn('name', 'varchar(100)', (c) => c.notNull())
    .addColumn('tenant', 'varchar(50)')
    .$call(addEncryptedColumns(schema, names.users, family))
    .execute()
  await db.schema
    .createTable(names.orders)
    .addColumn('id', id, idCol as never)
    .addColumn('user_id', 'integer', (c) => c.notNull())
    .addColumn('item', 'varchar(100)', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, names.orders, family))
    .execute()
  await db.schema
    .createTable(names.plain)
    .addColumn('id', id, idCol as never)
    .addColumn('label', 'varchar(100)', (c) => c.notNull())
    .execute()
  await createBlindIndexes(db, schema, names.users)
  await createBlindIndexes(db, schema, names.orders)
  // Keys are created only on purpose: the explicit step an application runs once (`kfe init`).
  await encryption.init(db)
  return {
    backend,
    names,
    schema,
    encryption,
    db,
    appDialect,
    raw,
    async destroy() {
      for (const t of [names.users, names.orders, names.plain, names.keys]) {
        await sql`drop table if exists ${sql.table(t)}`.execute(db.withoutPlugins())
      }
      await encryption.close()
      await db.destroy()
      if (backend.name !== 'pglite') await raw.destroy()
    },
  }
}

/** CamelCasePlugin before or after ours. */
export function withCamelCase(order: 'before' | 'after') {
  return (encryption: FieldEncryption): KyselyPlugin[] =>
    order === 'before'
      ? [new CamelCasePlugin(), encryption.plugin]
      : [encryption.plugin, new CamelCasePlugin()]
}

export type { Dialect }
