/**
 * The key store's SQL: creating the key table, reading its rows, inserting a version only when it
 * is absent, and locking a key's versions, for each SQL family (PostgreSQL and PGlite; MySQL and
 * MariaDB). {@link KeyStore} is the public face of these.
 */
import { type Kysely, sql, type Transaction } from 'kysely'
import { scrubDriverError } from '../driver-errors.js'
import { ConfigError, FieldEncryptionError, KeyError } from '../errors.js'
import { tableExists as relationExists } from '../schema/migration-ddl.js'
import { detectSqlFamily } from '../schema/sql-family.js'
import type { KeyPurpose, KeyRef } from './key-provider.js'
import {
  checkValueColumn,
  describeKeyRef,
  type KeyRow,
  type KeysDb,
  parseKeyRow,
  toStoredKey,
} from './key-row.js'
import type { CorruptKey, KeyRows, KeyState, StoredKey } from './stored-key.js'

/** A key table: where it is and how to speak to it. */
export interface KeyTable {
  readonly db: Kysely<KeysDb>
  readonly tableName: string
  readonly family: 'postgres' | 'mysql'
}

/**
 * The SQL family of the key store's database, from its Kysely adapter.
 * @throws ConfigError `CONFIG_INVALID` when it cannot be told.
 */
export function detectKeyStoreFamily(db: Kysely<KeysDb>): 'postgres' | 'mysql' {
  const executor = db.getExecutor()
  const family = detectSqlFamily(executor.adapter, {
    compileQuery: (node, queryId) => executor.compileQuery(node, queryId),
  })
  if (family !== undefined) return family
  const name = executor.adapter.constructor.name
  throw new ConfigError(
    'CONFIG_INVALID',
    `Cannot tell the SQL family of the key store's database from its adapter (${name}); pass { family: 'postgres' | 'mysql' }.`,
  )
}

/** PostgreSQL 42P01 / MySQL 1146: the key table does not exist. */
export function isMissingRelation(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return e?.code === '42P01' || e?.errno === 1146 || e?.code === 'ER_NO_SUCH_TABLE'
}

function isDeadlock(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return e?.code === '40P01' || e?.code === '40001' || e?.code === 'ER_LOCK_DEADLOCK' || e?.errno === 1213
}

/**
 * Wraps a database error as `KEY_STORE_ERROR`; our own typed errors pass through unchanged. The
 * driver error is scrubbed first (and a typed error's causes): mysql2's `sql` writes every value
 * of a failed INSERT or UPDATE into the statement, here a key's wrappings and check value. The
 * wrapped dialect scrubs what reaches it, but the operations (`fieldEncryptionOps`) and a
 * {@link KeyStore} given a plain Kysely do not pass through it.
 */
export function keyStoreError(what: string, error: unknown, table?: string): FieldEncryptionError {
  scrubDriverError(error)
  if (error instanceof FieldEncryptionError) return error
  return new KeyError('KEY_STORE_ERROR', `Key store: could not ${what}.`, { cause: error, table })
}

/**
 * Creates the key table if it does not exist (no DDL runs when it does), then adds `check_value`
 * to a table made before it.
 * @throws KeyError `KEY_STORE_ERROR` when the table cannot be created.
 */
export async function createKeyTable(t: KeyTable): Promise<void> {
  const textType = t.family === 'mysql' ? sql`longtext` : sql`text`
  const timeType = t.family === 'mysql' ? sql`datetime(3)` : sql`timestamptz`
  // Key names compare byte for byte: MySQL's default collations are case-insensitive, and would
  // make tenants 'Acme' and 'acme' (orders#tenant_id=Acme, …=acme) share one key row. A trailing
  // space cannot end a tenant's name (percent-encoded), so utf8mb4_bin's PAD SPACE is harmless.
  const nameType =
    t.family === 'mysql' ? sql`varchar(255) character set utf8mb4 collate utf8mb4_bin` : sql`varchar(255)`
  const pkName = `${t.tableName.replace('.', '_')}_pkey`
  const create = t.db.schema
    .createTable(t.tableName)
    .ifNotExists()
    .addColumn('logical_table', nameType, (c) => c.notNull())
    .addColumn('purpose', 'varchar(16)', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('wrappings', textType, (c) => c.notNull())
    .addColumn('created_at', timeType, (c) => c.notNull())
    .addColumn('check_value', 'varchar(64)')
    .addPrimaryKeyConstraint(pkName, ['logical_table', 'purpose', 'version'])
  // MySQL commits the open transaction at any DDL, CREATE TABLE IF NOT EXISTS of a table that
  // exists included: a table that is there gets none.
  for (let attempt = 0; !(await tableExists(t)); attempt++) {
    try {
      await create.execute()
      break
    } catch (error) {
      // PostgreSQL: two concurrent CREATE TABLE IF NOT EXISTS can collide on pg_type (23505)
      // or report 42P07; the table then exists and we are done.
      if (attempt < 3 && (await tableExists(t))) break
      if (attempt >= 3) throw keyStoreError('create the key table', error)
    }
  }
  await ensureCheckColumn(t)
  await ensureExactNames(t)
}

/**
 * MySQL: a key table made before key names compared byte for byte (its `logical_table` under the
 * database's default collation, case-insensitive) gets the `utf8mb4_bin` collation, so tenants
 * 'Acme' and 'acme' never share a key row. Safe: names unique case-insensitively are unique
 * byte for byte. Idempotent; run by `init` (`kfe init`, `encryption.init`).
 */
async function ensureExactNames(t: KeyTable): Promise<void> {
  if (t.family !== 'mysql') return
  const dot = t.tableName.indexOf('.')
  const database = dot < 0 ? sql`database()` : sql`${t.tableName.slice(0, dot)}`
  const name = dot < 0 ? t.tableName : t.tableName.slice(dot + 1)
  try {
    const { rows } = await sql<{
      c: string | null
    }>`select collation_name as c from information_schema.columns
      where table_schema = ${database} and table_name = ${name} and column_name = 'logical_table'`.execute(
      t.db,
    )
    const collation = rows[0]?.c
    if (collation === undefined || collation === null || collation.endsWith('_bin')) return
    await sql`alter table ${sql.table(t.tableName)} modify logical_table varchar(255) character set utf8mb4 collate utf8mb4_bin not null`.execute(
      t.db,
    )
  } catch (error) {
    throw keyStoreError('make the key table compare key names byte for byte (utf8mb4_bin)', error)
  }
}

/** A key table made before key check values gets its `check_value` column (nullable). */
async function ensureCheckColumn(t: KeyTable): Promise<void> {
  const present = async () => {
    try {
      await t.db.selectFrom(t.tableName).select('check_value').limit(1).execute()
      return true
    } catch {
      return false
    }
  }
  if (await present()) return
  try {
    await t.db.schema.alterTable(t.tableName).addColumn('check_value', 'varchar(64)').execute()
  } catch (error) {
    // Another process added it at the same time.
    if (!(await present())) throw keyStoreError('add the check_value column to the key table', error)
  }
}

/**
 * Whether the key table exists, asked of the catalog: no error when it does not (a failing
 * statement would abort the caller's PostgreSQL transaction).
 */
export function tableExists(t: KeyTable): Promise<boolean> {
  return relationExists(t.db, t.family, t.tableName)
}

/**
 * Every row of a logical table's keys, parsed one by one, ordered by purpose then version; none
 * when the key table does not exist.
 * @throws KeyError `KEY_STORE_ERROR` on a database error.
 */
export async function readKeyRows(t: KeyTable, logicalTable: string, purpose?: KeyPurpose): Promise<KeyRows> {
  let rows: KeyRow[]
  try {
    let q = t.db.selectFrom(t.tableName).selectAll().where('logical_table', '=', logicalTable)
    if (purpose !== undefined) q = q.where('purpose', '=', purpose)
    rows = await q.orderBy('purpose').orderBy('version').execute()
  } catch (error) {
    // No key table (never initialised, or dropped): no keys. The key ring then tells a table
    // that was never initialised from one that lost its keys.
    if (isMissingRelation(error)) return { keys: [], corrupt: [] }
    throw keyStoreError(`list the keys of ${logicalTable}`, error, logicalTable)
  }
  const keys: StoredKey[] = []
  const corrupt: CorruptKey[] = []
  for (const row of rows) {
    const parsed = parseKeyRow(row)
    if ('error' in parsed) corrupt.push(parsed)
    else keys.push(parsed)
  }
  return { keys, corrupt }
}

/**
 * The sound rows of {@link readKeyRows}.
 * @throws KeyError `KEY_STORE_CORRUPT` when a row cannot be parsed (the first one).
 * @throws KeyError `KEY_STORE_ERROR` on a database error.
 */
export async function listKeys(
  t: KeyTable,
  logicalTable: string,
  purpose?: KeyPurpose,
): Promise<StoredKey[]> {
  const { keys, corrupt } = await readKeyRows(t, logicalTable, purpose)
  const bad = corrupt[0]
  if (bad !== undefined) throw bad.error
  return [...keys]
}

/** Key names per `in (…)` list of {@link listAllKeys}: well under every driver's parameter limit. */
const NAMES_PER_QUERY = 500

/**
 * Every row of the key table, or of the key names `names` (one query per 500 names), ordered by
 * table, purpose, version; none when the table does not exist.
 * @throws KeyError `KEY_STORE_CORRUPT` when a row cannot be parsed.
 * @throws KeyError `KEY_STORE_ERROR` on a database error.
 */
export async function listAllKeys(t: KeyTable, names?: readonly string[]): Promise<StoredKey[]> {
  const chunks: Array<readonly string[] | undefined> = []
  if (names === undefined) chunks.push(undefined)
  else
    for (let i = 0; i < names.length; i += NAMES_PER_QUERY) chunks.push(names.slice(i, i + NAMES_PER_QUERY))
  const out: StoredKey[] = []
  try {
    for (const chunk of chunks) {
      const rows = await t.db
        .selectFrom(t.tableName)
        .selectAll()
        .$if(chunk !== undefined, (q) => q.where('logical_table', 'in', chunk as string[]))
        .orderBy('logical_table')
        .orderBy('purpose')
        .orderBy('version')
        .execute()
      for (const row of rows) out.push(toStoredKey(row))
    }
    return out
  } catch (error) {
    if (isMissingRelation(error)) return []
    throw keyStoreError('list the keys', error)
  }
}

/** A new row of the key table, before it is written. */
export interface NewKeyRow {
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  readonly version: number
  readonly state: KeyState
  /** Encoded by `encodeWrappings`. */
  readonly wrappings: string
  readonly checkValue?: Uint8Array | undefined
}

function rowValues(r: NewKeyRow) {
  return {
    logical_table: r.logicalTable,
    purpose: r.purpose,
    version: r.version,
    state: r.state,
    wrappings: r.wrappings,
    created_at: new Date(),
    // Only when given: a key table made before check values may lack the column.
    ...checkValueColumn(r.checkValue),
  }
}

/**
 * Inserts new rows whose primary key is free and leaves the others as they are: `ON CONFLICT DO
 * NOTHING` (PostgreSQL) or an `ON DUPLICATE KEY UPDATE` no-op (MySQL). Raw database errors are
 * thrown as they are.
 */
async function insertRows(t: KeyTable, rows: readonly NewKeyRow[]): Promise<void> {
  const insert = t.db.insertInto(t.tableName).values(rows.map(rowValues))
  await (t.family === 'mysql'
    ? insert.onDuplicateKeyUpdate({ version: sql.ref('version') })
    : insert.onConflict((oc) => oc.doNothing())
  ).execute()
}

/**
 * Inserts one version if its primary key is free, and reads back the stored row: the new one, or
 * the one another process stored first (then its `wrappings` differ from the new one's). Raw
 * database errors are thrown as they are.
 */
export async function insertIfAbsent(t: KeyTable, row: NewKeyRow): Promise<KeyRow> {
  await insertRows(t, [row])
  const stored = await t.db
    .selectFrom(t.tableName)
    .selectAll()
    .where((eb) => eb.and({ logical_table: row.logicalTable, purpose: row.purpose }))
    .where('version', '=', row.version)
    .executeTakeFirst()
  if (stored === undefined) throw new Error('the inserted key row is not visible')
  return stored
}

/**
 * Inserts version 1 of several purposes of one table in one statement (rows that exist are left
 * alone), and reads back the stored row of each, in order. Raw database errors are thrown as they are.
 */
export async function insertInitialRows(
  t: KeyTable,
  logicalTable: string,
  rows: readonly NewKeyRow[],
): Promise<KeyRow[]> {
  await insertRows(t, rows)
  const stored = await t.db
    .selectFrom(t.tableName)
    .selectAll()
    .where('logical_table', '=', logicalTable)
    .where('version', '=', 1)
    .execute()
  return rows.map((r) => {
    const row = stored.find((x) => x.purpose === r.purpose)
    if (row === undefined) throw new Error('the inserted key row is not visible')
    return row
  })
}

/**
 * Runs `fn` in a transaction holding row locks on every version of (table, purpose)
 * (`SELECT … FOR UPDATE`), with `target` the version `version`. A deadlock victim is rerun.
 * @throws KeyError `KEY_NOT_FOUND` when the version does not exist.
 * @throws KeyError `KEY_STORE_ERROR` on a database error (`what` names the operation).
 */
export async function withLockedVersions(
  t: KeyTable,
  ref: KeyRef,
  what: string,
  fn: (trx: Transaction<KeysDb>, target: StoredKey) => Promise<void>,
): Promise<void> {
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await lockedOnce(t, ref, fn)
        return
      } catch (error) {
        // Both engines may pick a locking transaction as a deadlock victim; it is safe to rerun.
        if (attempt >= 4 || !isDeadlock(error)) throw error
      }
    }
  } catch (error) {
    throw keyStoreError(`${what} ${describeKeyRef(ref)}`, error, ref.logicalTable)
  }
}

async function lockedOnce(
  t: KeyTable,
  ref: KeyRef,
  fn: (trx: Transaction<KeysDb>, target: StoredKey) => Promise<void>,
): Promise<void> {
  const { logicalTable, purpose, version } = ref
  await t.db.transaction().execute(async (trx) => {
    const rows = await trx
      .selectFrom(t.tableName)
      .selectAll()
      .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
      .orderBy('version')
      .forUpdate()
      .execute()
    const target = rows.map(toStoredKey).find((k) => k.version === version)
    if (target === undefined) {
      throw new KeyError('KEY_NOT_FOUND', `No stored key ${describeKeyRef(ref)}.`, {
        table: logicalTable,
      })
    }
    await fn(trx, target)
  })
}
