import { type Kysely, sql, type Transaction } from 'kysely'
import { ConfigError, FieldEncryptionError, KeyError } from '../errors.js'
import { detectSqlFamily } from '../schema/sql-family.js'
import type { KeyPurpose, KeyRef, WrappedKey } from './key-provider.js'

/**
 * Lifecycle state of a key version (DESIGN.md §5).
 *
 * - `staged`: readable and searchable by every process, not yet written with.
 * - `active`: THE write key; exactly one per (logical table, purpose).
 * - `decrypt-only`: a former active version, still read and searched while rows are re-encrypted
 *   or re-indexed.
 * - `retired`: no longer searched; still decryptable (data is never lost) but expected unused.
 */
export type KeyState = 'staged' | 'active' | 'decrypt-only' | 'retired'

/** One key version as stored: only ever wrapped. */
export interface StoredKey {
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  readonly version: number
  readonly state: KeyState
  /** One wrapping per KEK that can unwrap this key; never empty. */
  readonly wrappings: readonly WrappedKey[]
  readonly createdAt: Date
  /**
   * The key check value ({@link keyCheckValue}): checked after every unwrap, so a wrong key is
   * named (`KEY_CHECK_FAILED`). Absent for keys stored without one (before it existed, or staged
   * by a caller that did not pass it): those are not checked.
   */
  readonly checkValue?: Uint8Array
}

/**
 * A key-store row that could not be parsed: its fields as far as they could be read, and the
 * `KEY_STORE_CORRUPT` error naming it. One corrupt row never hides the table's other versions.
 */
export interface CorruptKey {
  readonly logicalTable: string
  /** `undefined` when the row's purpose is not one this library knows. */
  readonly purpose: KeyPurpose | undefined
  /** `undefined` when the row's version is not a positive integer. */
  readonly version: number | undefined
  /** `undefined` when the row's state is not one this library knows. */
  readonly state: KeyState | undefined
  readonly error: KeyError
}

/** The rows of a logical table, parsed one by one. */
export interface KeyRows {
  readonly keys: readonly StoredKey[]
  readonly corrupt: readonly CorruptKey[]
}

/** Options of {@link KeyStore}. */
export interface KeyStoreOptions {
  /**
   * Name of the key table (a plain SQL identifier, optionally `schema.table`).
   * @default 'kfe_keys'
   */
  readonly tableName?: string
  /** SQL family; detected from the Kysely adapter (PostgreSQL, PGlite, MySQL/MariaDB) when omitted. */
  readonly family?: 'postgres' | 'mysql'
}

const STATES: readonly KeyState[] = ['staged', 'active', 'decrypt-only', 'retired']
const PURPOSES: readonly KeyPurpose[] = ['data', 'index']
const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/

interface Row {
  logical_table: string
  purpose: string
  version: number
  state: string
  wrappings: string
  created_at: Date
  check_value?: string | null
}

/** The key table, under whatever name it is given. */
type KeysDb = Record<string, Row>

/**
 * The key store (DESIGN.md §2): a table in the user's database holding every data and index key,
 * only in wrapped form, with its version and state. Works on PostgreSQL, PGlite and MySQL/MariaDB.
 *
 * Table (default `kfe_keys`): `logical_table varchar(255)`, `purpose varchar(16)`,
 * `version integer`, `state varchar(16)`, `wrappings text` (PostgreSQL) / `longtext` (MySQL) holding
 * JSON `[{"kekId": "...", "wrapped": "<base64>"}]`, `created_at timestamptz` / `datetime(3)`,
 * primary key `(logical_table, purpose, version)`.
 *
 * The store never touches user rows.
 *
 * @example
 * ```ts
 * const store = new KeyStore(db)            // db: a Kysely on the un-wrapped dialect
 * await store.ensureSchema()
 * // SQL: create table if not exists "kfe_keys" ("logical_table" varchar(255) not null, …,
 * //      constraint "kfe_keys_pkey" primary key ("logical_table", "purpose", "version"))
 * ```
 */
export class KeyStore {
  /** Name of the key table. */
  readonly tableName: string
  /** SQL family in use. */
  readonly family: 'postgres' | 'mysql'
  readonly #db: Kysely<KeysDb>

  /**
   * @param db - a Kysely instance on the plain (not wrapped) dialect.
   * @param options - table name and SQL family.
   * @throws ConfigError `CONFIG_INVALID` when the table name is not a plain identifier or the
   *   family cannot be detected.
   */
  // biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type, can hold the key table.
  constructor(db: Kysely<any>, options: KeyStoreOptions = {}) {
    const tableName = options.tableName ?? 'kfe_keys'
    if (!IDENT.test(tableName)) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `Key store table name '${tableName}' is not a plain SQL identifier.`,
      )
    }
    this.tableName = tableName
    this.family = options.family ?? detectFamily(db)
    // The key table's name is only known at run time; its columns are fixed.
    this.#db = db as Kysely<KeysDb>
  }

  /**
   * Creates the key table if it does not exist. Idempotent, and safe when several processes run
   * it at once (PostgreSQL may report a concurrent creation as a duplicate; that is ignored once
   * the table is visible).
   * @throws KeyError `KEY_STORE_ERROR` when the table cannot be created.
   */
  async ensureSchema(): Promise<void> {
    const textType = this.family === 'mysql' ? sql`longtext` : sql`text`
    const timeType = this.family === 'mysql' ? sql`datetime(3)` : sql`timestamptz`
    const pkName = `${this.tableName.replace('.', '_')}_pkey`
    const create = this.#db.schema
      .createTable(this.tableName)
      .ifNotExists()
      .addColumn('logical_table', 'varchar(255)', (c) => c.notNull())
      .addColumn('purpose', 'varchar(16)', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('state', 'varchar(16)', (c) => c.notNull())
      .addColumn('wrappings', textType, (c) => c.notNull())
      .addColumn('created_at', timeType, (c) => c.notNull())
      .addColumn('check_value', 'varchar(64)')
      .addPrimaryKeyConstraint(pkName, ['logical_table', 'purpose', 'version'])
    for (let attempt = 0; ; attempt++) {
      try {
        await create.execute()
        break
      } catch (error) {
        // PostgreSQL: two concurrent CREATE TABLE IF NOT EXISTS can collide on pg_type (23505)
        // or report 42P07; the table then exists and we are done.
        if (attempt < 3 && (await this.#tableExists())) break
        if (attempt >= 3) throw storeError('create the key table', error)
      }
    }
    await this.#ensureCheckColumn()
  }

  /** A key table made before key check values gets its `check_value` column (nullable). */
  async #ensureCheckColumn(): Promise<void> {
    const present = async () => {
      try {
        await this.#db.selectFrom(this.tableName).select('check_value').limit(1).execute()
        return true
      } catch {
        return false
      }
    }
    if (await present()) return
    try {
      await this.#db.schema.alterTable(this.tableName).addColumn('check_value', 'varchar(64)').execute()
    } catch (error) {
      // Another process added it at the same time.
      if (!(await present())) throw storeError('add the check_value column to the key table', error)
    }
  }

  /**
   * Every version of a logical table's keys, ordered by purpose then version. None when the key
   * table does not exist.
   * @param logicalTable - the logical table.
   * @param purpose - only this purpose, when given.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   * @throws KeyError `KEY_STORE_CORRUPT` when a row cannot be parsed ({@link KeyStore.read} returns the others).
   */
  async list(logicalTable: string, purpose?: KeyPurpose): Promise<StoredKey[]> {
    const { keys, corrupt } = await this.read(logicalTable, purpose)
    const bad = corrupt[0]
    if (bad !== undefined) throw bad.error
    return [...keys]
  }

  /**
   * Every row of a logical table's keys, parsed one by one: the sound ones ordered by purpose then
   * version, and the corrupt ones apart, so one bad row does not hide the others (the key ring
   * refuses only what needs a corrupt row). None when the key table does not exist.
   * @param logicalTable - the logical table.
   * @param purpose - only this purpose, when given.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async read(logicalTable: string, purpose?: KeyPurpose): Promise<KeyRows> {
    let rows: Row[]
    try {
      let q = this.#db.selectFrom(this.tableName).selectAll().where('logical_table', '=', logicalTable)
      if (purpose !== undefined) q = q.where('purpose', '=', purpose)
      rows = await q.orderBy('purpose').orderBy('version').execute()
    } catch (error) {
      // No key table (never initialised, or dropped): no keys. The key ring then tells a table
      // that was never initialised from one that lost its keys.
      if (isMissingRelation(error)) return { keys: [], corrupt: [] }
      throw storeError(`list the keys of ${logicalTable}`, error, logicalTable)
    }
    const keys: StoredKey[] = []
    const corrupt: CorruptKey[] = []
    for (const row of rows) {
      const parsed = parseRow(row)
      if ('error' in parsed) corrupt.push(parsed)
      else keys.push(parsed)
    }
    return { keys, corrupt }
  }

  /**
   * Every stored key of every logical table, ordered by table, purpose, version. None when the
   * key table does not exist.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   * @throws KeyError `KEY_STORE_CORRUPT` when a row cannot be parsed.
   */
  async listAll(): Promise<StoredKey[]> {
    try {
      const rows = await this.#db
        .selectFrom(this.tableName)
        .selectAll()
        .orderBy('logical_table')
        .orderBy('purpose')
        .orderBy('version')
        .execute()
      return rows.map(toStoredKey)
    } catch (error) {
      if (isMissingRelation(error)) return []
      throw storeError('list the keys', error)
    }
  }

  /**
   * Inserts version 1, `active`, if the (table, purpose) has no version 1 yet. Concurrency rests on
   * the primary key (`ON CONFLICT DO NOTHING` / `ON DUPLICATE KEY UPDATE` no-op): if another
   * process won the race, its row is returned with `created: false` and the caller must discard
   * the key it generated.
   * @param logicalTable - the logical table.
   * @param purpose - data or index.
   * @param wrappings - the new key wrapped under each KEK (at least one).
   * @param checkValue - the key's check value (`keyCheckValue(key, ref)`), checked after every unwrap.
   * @returns the stored version 1, and whether this call created it.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async createInitial(
    logicalTable: string,
    purpose: KeyPurpose,
    wrappings: readonly WrappedKey[],
    checkValue?: Uint8Array,
  ): Promise<{ key: StoredKey; created: boolean }> {
    checkRef({ logicalTable, purpose, version: 1 })
    const encoded = encodeWrappings(wrappings)
    try {
      const stored = await this.#insertIfAbsent(
        this.#db,
        logicalTable,
        purpose,
        1,
        'active',
        encoded,
        checkValue,
      )
      return { key: toStoredKey(stored), created: stored.wrappings === encoded }
    } catch (error) {
      throw storeError(`create version 1 of the ${purpose} key of ${logicalTable}`, error, logicalTable)
    }
  }

  /**
   * Inserts version 1, `active`, of several purposes of one table in one statement, so no other
   * process ever sees one purpose without the other (which the key ring takes as a sign of
   * deleted keys). Rows that exist already are left alone, as in {@link KeyStore.createInitial}.
   * @param logicalTable - the logical table.
   * @param entries - per purpose: the new key wrapped under each KEK, and its check value.
   * @returns per entry, in order: the stored version 1, and whether this call created it.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async createInitialKeys(
    logicalTable: string,
    entries: readonly { purpose: KeyPurpose; wrappings: readonly WrappedKey[]; checkValue?: Uint8Array }[],
  ): Promise<{ key: StoredKey; created: boolean }[]> {
    const rows = entries.map((e) => {
      checkRef({ logicalTable, purpose: e.purpose, version: 1 })
      return {
        logical_table: logicalTable,
        purpose: e.purpose,
        version: 1,
        state: 'active',
        wrappings: encodeWrappings(e.wrappings),
        created_at: new Date(),
        ...(e.checkValue === undefined ? {} : { check_value: Buffer.from(e.checkValue).toString('hex') }),
      }
    })
    if (rows.length === 0) return []
    try {
      const insert = this.#db.insertInto(this.tableName).values(rows)
      await (this.family === 'mysql'
        ? insert.onDuplicateKeyUpdate({ version: sql.ref('version') })
        : insert.onConflict((oc) => oc.doNothing())
      ).execute()
      const stored = await this.#db
        .selectFrom(this.tableName)
        .selectAll()
        .where('logical_table', '=', logicalTable)
        .where('version', '=', 1)
        .execute()
      return rows.map((r) => {
        const row = stored.find((x) => x.purpose === r.purpose)
        if (row === undefined) throw new Error('the inserted key row is not visible')
        return { key: toStoredKey(row), created: row.wrappings === r.wrappings }
      })
    } catch (error) {
      throw storeError(`create version 1 of the keys of ${logicalTable}`, error, logicalTable)
    }
  }

  /**
   * Adds the next version as `staged`: readable and searchable once every process has reloaded its
   * key metadata, not yet written with.
   * @param logicalTable - the logical table.
   * @param purpose - data or index.
   * @param wrappings - the new key wrapped under each KEK (at least one).
   * @param version - the version the key was wrapped for (providers bind a wrapping to its
   *   version). Pass it: when it is not the next version, nothing is staged.
   * @param checkValue - the key's check value (`keyCheckValue(key, ref)`), checked after every unwrap.
   * @returns the new version.
   * @throws KeyError `KEY_VERSION_MISMATCH` when `version` is given and is not the next version.
   * @throws KeyError `KEY_NOT_FOUND` when the (table, purpose) has no version yet (create it first).
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async stage(
    logicalTable: string,
    purpose: KeyPurpose,
    wrappings: readonly WrappedKey[],
    version?: number,
    checkValue?: Uint8Array,
  ): Promise<StoredKey> {
    checkRef({ logicalTable, purpose, version: version ?? 1 })
    const encoded = encodeWrappings(wrappings)
    try {
      // Two stagers may pick the same next version; the primary key lets one win, the other retries.
      for (let attempt = 0; attempt < 20; attempt++) {
        const existing = await this.list(logicalTable, purpose)
        const last = existing.at(-1)
        if (last === undefined) {
          throw new KeyError(
            'KEY_NOT_FOUND',
            `No ${purpose} key exists for ${logicalTable}; nothing to stage after.`,
            {
              table: logicalTable,
            },
          )
        }
        const next = last.version + 1
        // Providers bind a wrapping to its version: stored under another one, it never unwraps.
        if (version !== undefined && version !== next) {
          throw new KeyError(
            'KEY_VERSION_MISMATCH',
            `The ${purpose} key was wrapped for version ${version} of ${logicalTable}, but the next version is ${next}; nothing was staged. Generate and wrap the key for version ${next}.`,
            { table: logicalTable },
          )
        }
        const stored = await this.#insertIfAbsent(
          this.#db,
          logicalTable,
          purpose,
          next,
          'staged',
          encoded,
          checkValue,
        )
        if (stored.wrappings === encoded) return toStoredKey(stored)
      }
      throw new KeyError(
        'KEY_STORE_ERROR',
        `Could not stage a new ${purpose} key for ${logicalTable}: too much contention.`,
        {
          table: logicalTable,
        },
      )
    } catch (error) {
      throw storeError(`stage a ${purpose} key of ${logicalTable}`, error, logicalTable)
    }
  }

  /**
   * Makes `version` the write key: the previous active version becomes `decrypt-only`. Runs in
   * one transaction that locks every version of the (table, purpose) (`SELECT … FOR UPDATE`), so
   * exactly one version stays active when activations race. A `decrypt-only` version may be
   * re-activated (rollback); a `retired` one may not.
   *
   * Before activating, wait at least the key ring's `metadataTtlMs` after staging, so every process
   * can already read the new version when the first row is written with it.
   * @throws KeyError `KEY_NOT_FOUND` when the version does not exist.
   * @throws KeyError `KEY_STATE_INVALID` when the version is retired.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async activate(logicalTable: string, purpose: KeyPurpose, version: number): Promise<void> {
    checkRef({ logicalTable, purpose, version })
    await this.#locked(logicalTable, purpose, version, 'activate', async (trx, target) => {
      if (target.state === 'active') return
      if (target.state === 'retired') {
        throw new KeyError(
          'KEY_STATE_INVALID',
          `Version ${version} of the ${purpose} key of ${logicalTable} is retired and cannot be activated; stage a new version.`,
          { table: logicalTable },
        )
      }
      await trx
        .updateTable(this.tableName)
        .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
        .set({ state: 'decrypt-only' })
        .where('state', '=', 'active')
        .execute()
      await trx
        .updateTable(this.tableName)
        .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
        .set({ state: 'active' })
        .where('version', '=', version)
        .execute()
    })
  }

  /**
   * Changes the state of a version, e.g. `decrypt-only` → `retired`. Setting `active` is
   * {@link KeyStore.activate}. Refuses to demote the active version (that would leave none: activate
   * another instead) and to move a version back to `staged`.
   * @throws KeyError `KEY_NOT_FOUND` when the version does not exist.
   * @throws KeyError `KEY_STATE_INVALID` for a refused transition.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async setState(logicalTable: string, purpose: KeyPurpose, version: number, state: KeyState): Promise<void> {
    checkRef({ logicalTable, purpose, version })
    if (!STATES.includes(state)) {
      throw new ConfigError('CONFIG_INVALID', `Unknown key state '${String(state)}'.`, {
        table: logicalTable,
      })
    }
    if (state === 'active') return this.activate(logicalTable, purpose, version)
    await this.#locked(logicalTable, purpose, version, `set to ${state}`, async (trx, target) => {
      if (target.state === state) return
      if (target.state === 'active') {
        throw new KeyError(
          'KEY_STATE_INVALID',
          `Version ${version} of the ${purpose} key of ${logicalTable} is the active one; activate another version instead of leaving none.`,
          { table: logicalTable },
        )
      }
      if (state === 'staged') {
        throw new KeyError(
          'KEY_STATE_INVALID',
          `Version ${version} of the ${purpose} key of ${logicalTable} is ${target.state}; a version cannot return to staged.`,
          { table: logicalTable },
        )
      }
      await trx
        .updateTable(this.tableName)
        .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
        .set({ state })
        .where('version', '=', version)
        .execute()
    })
  }

  /**
   * Replaces the wrappings of one key version (adds or removes a KEK wrapping after a rewrap).
   * Never touches user rows.
   * @param ref - the key version.
   * @param wrappings - the new, non-empty list; kek ids must be distinct.
   * @param expected - compare-and-set: write only if the stored list is still exactly this one.
   * @returns true when the stored list is now `wrappings`; false when `expected` no longer matched
   *   (another process changed it: re-read and retry).
   * @throws KeyError `KEY_NOT_FOUND` when the version does not exist.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   * @throws ConfigError `CONFIG_INVALID` when the list is empty or repeats a kek id.
   */
  async setWrappings(
    ref: KeyRef,
    wrappings: readonly WrappedKey[],
    expected?: readonly WrappedKey[],
  ): Promise<boolean> {
    checkRef(ref)
    const encoded = encodeWrappings(wrappings)
    let updated: bigint
    try {
      let query = this.#db
        .updateTable(this.tableName)
        .where((eb) => eb.and({ logical_table: ref.logicalTable, purpose: ref.purpose }))
        .set({ wrappings: encoded })
        .where('version', '=', ref.version)
      // Compare-and-set: two concurrent rewraps must not drop each other's wrapping.
      if (expected !== undefined) query = query.where('wrappings', '=', encodeWrappings(expected))
      const result = await query.executeTakeFirst()
      updated = result.numUpdatedRows
    } catch (error) {
      throw storeError(`update the wrappings of ${describe(ref)}`, error, ref.logicalTable)
    }
    if (updated > 0n) return true
    // MySQL reports 0 changed rows when the value is unchanged; check existence before failing.
    const current = (await this.list(ref.logicalTable, ref.purpose)).find((k) => k.version === ref.version)
    if (current === undefined) {
      throw new KeyError('KEY_NOT_FOUND', `No stored key ${describe(ref)}.`, { table: ref.logicalTable })
    }
    return encodeWrappings(current.wrappings) === encoded
  }

  async #tableExists(): Promise<boolean> {
    try {
      await this.#db.selectFrom(this.tableName).select('version').limit(1).execute()
      return true
    } catch {
      return false
    }
  }

  async #insertIfAbsent(
    db: Kysely<KeysDb>,
    logicalTable: string,
    purpose: KeyPurpose,
    version: number,
    state: KeyState,
    wrappings: string,
    checkValue?: Uint8Array,
  ): Promise<Row> {
    const values = {
      logical_table: logicalTable,
      purpose,
      version,
      state,
      wrappings,
      created_at: new Date(),
      // Only when given: a key table made before check values may lack the column.
      ...(checkValue === undefined ? {} : { check_value: Buffer.from(checkValue).toString('hex') }),
    }
    const insert = db.insertInto(this.tableName).values(values)
    await (this.family === 'mysql'
      ? insert.onDuplicateKeyUpdate({ version: sql.ref('version') })
      : insert.onConflict((oc) => oc.doNothing())
    ).execute()
    const row = await db
      .selectFrom(this.tableName)
      .selectAll()
      .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
      .where('version', '=', version)
      .executeTakeFirst()
    if (row === undefined) throw new Error('the inserted key row is not visible')
    return row
  }

  /** Runs `fn` in a transaction holding row locks on every version of (table, purpose). */
  async #locked(
    logicalTable: string,
    purpose: KeyPurpose,
    version: number,
    what: string,
    fn: (trx: Transaction<KeysDb>, target: StoredKey) => Promise<void>,
  ): Promise<void> {
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await this.#lockedOnce(logicalTable, purpose, version, fn)
          return
        } catch (error) {
          // Both engines may pick a locking transaction as a deadlock victim; it is safe to rerun.
          if (attempt >= 4 || !isDeadlock(error)) throw error
        }
      }
    } catch (error) {
      throw storeError(`${what} ${describe({ logicalTable, purpose, version })}`, error, logicalTable)
    }
  }

  async #lockedOnce(
    logicalTable: string,
    purpose: KeyPurpose,
    version: number,
    fn: (trx: Transaction<KeysDb>, target: StoredKey) => Promise<void>,
  ): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      const rows = await trx
        .selectFrom(this.tableName)
        .selectAll()
        .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
        .orderBy('version')
        .forUpdate()
        .execute()
      const target = rows.map(toStoredKey).find((k) => k.version === version)
      if (target === undefined) {
        throw new KeyError(
          'KEY_NOT_FOUND',
          `No stored key ${describe({ logicalTable, purpose, version })}.`,
          {
            table: logicalTable,
          },
        )
      }
      await fn(trx, target)
    })
  }
}

function detectFamily(db: Kysely<KeysDb>): 'postgres' | 'mysql' {
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
function isMissingRelation(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return e?.code === '42P01' || e?.errno === 1146 || e?.code === 'ER_NO_SUCH_TABLE'
}

function isDeadlock(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return e?.code === '40P01' || e?.code === '40001' || e?.code === 'ER_LOCK_DEADLOCK' || e?.errno === 1213
}

function describe(ref: KeyRef): string {
  return `${ref.logicalTable}/${ref.purpose}/v${ref.version}`
}

function checkRef(ref: KeyRef): void {
  if (
    typeof ref.logicalTable !== 'string' ||
    ref.logicalTable.length === 0 ||
    ref.logicalTable.length > 255
  ) {
    throw new ConfigError('CONFIG_INVALID', 'A logical table name must be 1 to 255 characters.')
  }
  if (!PURPOSES.includes(ref.purpose)) {
    throw new ConfigError('CONFIG_INVALID', `Unknown key purpose '${String(ref.purpose)}'.`, {
      table: ref.logicalTable,
    })
  }
  if (!Number.isSafeInteger(ref.version) || ref.version < 1 || ref.version > 2_147_483_647) {
    throw new ConfigError('CONFIG_INVALID', `A key version must be a positive 32-bit integer.`, {
      table: ref.logicalTable,
    })
  }
}

function encodeWrappings(wrappings: readonly WrappedKey[]): string {
  if (wrappings.length === 0)
    throw new ConfigError('CONFIG_INVALID', 'A stored key needs at least one wrapping.')
  const ids = new Set(wrappings.map((w) => w.kekId))
  if (ids.size !== wrappings.length)
    throw new ConfigError('CONFIG_INVALID', 'A stored key lists a kek id twice.')
  return JSON.stringify(
    wrappings.map((w) => ({ kekId: w.kekId, wrapped: Buffer.from(w.wrapped).toString('base64') })),
  )
}

/** A row as a stored key; throws `KEY_STORE_CORRUPT` when it cannot be parsed. */
function toStoredKey(row: Row): StoredKey {
  const parsed = parseRow(row)
  if ('error' in parsed) throw parsed.error
  return parsed
}

/**
 * Parses one row. Whatever cannot be parsed (an unknown state or purpose, a version that is not a
 * positive integer, wrappings that are not a non-empty JSON list of `{ kekId, wrapped }`) makes it
 * a {@link CorruptKey}: an edited or damaged row, not an outage, so no grace period applies.
 */
function parseRow(row: Row): StoredKey | CorruptKey {
  const table = String(row.logical_table)
  const state = STATES.includes(row.state as KeyState) ? (row.state as KeyState) : undefined
  const purpose = PURPOSES.includes(row.purpose as KeyPurpose) ? (row.purpose as KeyPurpose) : undefined
  const n = Number(row.version)
  const version = Number.isSafeInteger(n) && n >= 1 ? n : undefined
  const corrupt = (why: string, cause?: unknown): CorruptKey => ({
    logicalTable: table,
    purpose,
    version,
    state,
    error: new KeyError(
      'KEY_STORE_CORRUPT',
      `Corrupt key-store row ${table}/${purpose ?? '?'}/v${version ?? '?'}: ${why}. The key table was edited or damaged; restore the row from the key table's backup (docs/keys.md).`,
      { table, ...(cause === undefined ? {} : { cause }) },
    ),
  })
  if (state === undefined) return corrupt('unknown state')
  if (purpose === undefined) return corrupt('unknown purpose')
  if (version === undefined) return corrupt('the version is not a positive integer')
  let wrappings: WrappedKey[]
  try {
    const parsed = JSON.parse(row.wrappings) as unknown
    if (!Array.isArray(parsed) || parsed.length === 0) throw new Error('not a non-empty array')
    wrappings = parsed.map((w: unknown) => {
      const { kekId, wrapped } = (w ?? {}) as { kekId?: unknown; wrapped?: unknown }
      if (typeof kekId !== 'string' || typeof wrapped !== 'string') throw new Error('bad wrapping entry')
      return Object.freeze({ kekId, wrapped: new Uint8Array(Buffer.from(wrapped, 'base64')) })
    })
  } catch (error) {
    // The cause says only what was wrong with the shape: JSON.parse's own message would echo the text.
    const what = error instanceof SyntaxError ? 'not JSON' : (error as Error).message
    return corrupt('its wrappings are not a list of { kekId, wrapped }', new Error(what))
  }
  const check = row.check_value
  if (check !== undefined && check !== null && !/^[0-9a-f]{32}$/.test(check)) {
    return corrupt('its check value is not 32 hex digits')
  }
  return Object.freeze({
    logicalTable: table,
    purpose,
    version,
    state,
    wrappings: Object.freeze(wrappings),
    createdAt: row.created_at instanceof Date ? row.created_at : new Date(row.created_at),
    ...(typeof check === 'string' ? { checkValue: new Uint8Array(Buffer.from(check, 'hex')) } : {}),
  })
}

/** Wraps a database error; our own typed errors pass through unchanged. */
function storeError(what: string, error: unknown, table?: string): FieldEncryptionError {
  if (error instanceof FieldEncryptionError) return error
  return new KeyError('KEY_STORE_ERROR', `Key store: could not ${what}.`, { cause: error, table })
}
