import type { Kysely } from 'kysely'
import { ConfigError, KeyError } from '../errors.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'
import { requireSession } from '../schema/session-settings.js'
import { activateVersion, destroyVersions, setVersionState, stageVersion } from './key-lifecycle.js'
import type { KeyPurpose, KeyRef, WrappedKey } from './key-provider.js'
import { checkKeyRef, describeKeyRef, encodeWrappings, type KeysDb, toStoredKey } from './key-row.js'
import {
  createKeyTable,
  detectKeyStoreFamily,
  insertIfAbsent,
  insertInitialRows,
  type KeyTable,
  keyStoreError,
  listAllKeys,
  listKeys,
  readKeyRows,
  tableExists,
} from './key-table.js'
import type { KeyRows, KeyState, StoredKey } from './stored-key.js'

export type { CorruptKey, KeyRows, KeyState, StoredKey } from './stored-key.js'

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

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/

/**
 * The key store (DESIGN.md §2): a table in the user's database holding every data and index key,
 * only in wrapped form, with its version and state. Works on PostgreSQL, PGlite and MySQL/MariaDB.
 *
 * Table (default `kfe_keys`): `logical_table varchar(255)`, `purpose varchar(16)`,
 * `version integer`, `state varchar(16)`, `wrappings text` (PostgreSQL) / `longtext` (MySQL) holding
 * JSON `[{"kekId": "...", "wrapped": "<base64>"}]`, `created_at timestamptz` / `datetime(3)`,
 * primary key `(logical_table, purpose, version)`.
 *
 * The store never touches user rows. Its SQL is in `key-table.ts`, row parsing in `key-row.ts`,
 * staging and state changes in `key-lifecycle.ts`.
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
  readonly #table: KeyTable

  /**
   * @param db - a Kysely instance on the plain (not wrapped) dialect.
   * @param options - table name and SQL family.
   * @throws ConfigError `CONFIG_INVALID` when the table name is not a plain identifier or the
   *   family cannot be detected.
   */
  // biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type, can hold the key table.
  constructor(db: Kysely<any>, options: KeyStoreOptions = {}) {
    refuseUnknownKeys(options, optionKeys<KeyStoreOptions>()(['tableName', 'family']), 'KeyStore')
    const tableName = options.tableName ?? 'kfe_keys'
    if (!IDENT.test(tableName)) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `Key store table name '${tableName}' is not a plain SQL identifier.`,
      )
    }
    this.tableName = tableName
    this.family = options.family ?? detectKeyStoreFamily(db)
    // The key table's name is only known at run time; its columns are fixed.
    this.#table = Object.freeze({ db: db as Kysely<KeysDb>, tableName, family: this.family })
  }

  /**
   * Runs one write of the store. On MySQL/MariaDB it first reads the settings (`sql_mode`,
   * character sets, …: session-settings.ts) of the connection the write then runs on (one
   * connection held for both, or the caller's transaction), and refuses one that would store
   * what the store writes as something else (`NO_BACKSLASH_ESCAPES` keeps the driver's escapes:
   * every quote of the JSON wrappings, every backslash of a key name, stored with a backslash
   * before it), as the plugin's schema check and the jobs do. One more query per key-store write
   * on MySQL (writes are rare: init, rotations, shredding); none on PostgreSQL.
   * @throws SchemaMismatchError `SCHEMA_MISMATCH` with a `sql-mode` or `session-setting` problem
   *   for each wrong setting
   * @throws KeyError `KEY_STORE_ERROR` when the settings cannot be read
   */
  async #write<T>(write: (table: KeyTable) => Promise<T>): Promise<T> {
    const table = this.#table
    if (this.family !== 'mysql') return write(table)
    const checked = async (db: Kysely<KeysDb>) => {
      try {
        await requireSession(db, 'mysql')
      } catch (error) {
        throw keyStoreError("read the session's settings", error)
      }
      return write(db === table.db ? table : Object.freeze({ ...table, db }))
    }
    return table.db.isTransaction ? checked(table.db) : table.db.connection().execute(checked)
  }

  /**
   * Creates the key table if it does not exist. Idempotent, and safe when several processes run
   * it at once (PostgreSQL may report a concurrent creation as a duplicate; that is ignored once
   * the table is visible).
   * @throws KeyError `KEY_STORE_ERROR` when the table cannot be created.
   */
  async ensureSchema(): Promise<void> {
    await this.#write(createKeyTable)
  }

  /**
   * Whether the key table exists, asked of the catalog: no DDL, and no failing statement (which
   * would abort a PostgreSQL transaction the store runs in).
   */
  async exists(): Promise<boolean> {
    try {
      return await tableExists(this.#table)
    } catch (error) {
      throw keyStoreError('tell whether the key table exists', error)
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
    return listKeys(this.#table, logicalTable, purpose)
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
    return readKeyRows(this.#table, logicalTable, purpose)
  }

  /**
   * Every stored key of every logical table, or of the logical tables (key names) `names`, ordered
   * by table, purpose, version. None when the key table does not exist.
   * @param names - only these key names (e.g. the tenants a job meets), read by `in (…)` lists.
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   * @throws KeyError `KEY_STORE_CORRUPT` when a row cannot be parsed.
   */
  async listAll(names?: readonly string[]): Promise<StoredKey[]> {
    return listAllKeys(this.#table, names)
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
    checkKeyRef({ logicalTable, purpose, version: 1 })
    const encoded = encodeWrappings(wrappings)
    try {
      const stored = await this.#write((t) =>
        insertIfAbsent(t, {
          logicalTable,
          purpose,
          version: 1,
          state: 'active',
          wrappings: encoded,
          checkValue,
        }),
      )
      return { key: toStoredKey(stored), created: stored.wrappings === encoded }
    } catch (error) {
      throw keyStoreError(`create version 1 of the ${purpose} key of ${logicalTable}`, error, logicalTable)
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
      checkKeyRef({ logicalTable, purpose: e.purpose, version: 1 })
      return {
        logicalTable,
        purpose: e.purpose,
        version: 1,
        state: 'active' as const,
        wrappings: encodeWrappings(e.wrappings),
        checkValue: e.checkValue,
      }
    })
    if (rows.length === 0) return []
    try {
      const stored = await this.#write((t) => insertInitialRows(t, logicalTable, rows))
      return stored.map((row, i) => ({
        key: toStoredKey(row),
        created: row.wrappings === rows[i]?.wrappings,
      }))
    } catch (error) {
      throw keyStoreError(`create version 1 of the keys of ${logicalTable}`, error, logicalTable)
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
   * @param skipAfterRetired - allow `version` to be the one after the next when the last version
   *   is retired (an index with a rotation slot whose staged version was retired unused: the next
   *   number's column is the active version's). @default false
   * @returns the new version.
   * @throws KeyError `KEY_VERSION_MISMATCH` when `version` is given and is not the next version
   *   (nor, with `skipAfterRetired`, the one after it following a retired version).
   * @throws KeyError `KEY_NOT_FOUND` when the (table, purpose) has no version yet (create it first).
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   */
  async stage(
    logicalTable: string,
    purpose: KeyPurpose,
    wrappings: readonly WrappedKey[],
    version?: number,
    checkValue?: Uint8Array,
    skipAfterRetired = false,
  ): Promise<StoredKey> {
    return this.#write((t) =>
      stageVersion(t, logicalTable, purpose, wrappings, version, checkValue, skipAfterRetired),
    )
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
    await this.#write((t) => activateVersion(t, logicalTable, purpose, version))
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
    await this.#write((t) => setVersionState(t, logicalTable, purpose, version, state))
  }

  /**
   * Crypto-shredding: erases every wrapping of every version of `logicalTable`'s data and index
   * keys, leaving each row as a `destroyed` tombstone (so the name never gets fresh keys: a read
   * fails with `KEY_DESTROYED`, never `KEYS_MISSING` or a new key). Irreversible unless a backup
   * of the key table (and a KEK to unwrap it) survives. Never touches user rows.
   * @param logicalTable - the logical key name, e.g. a tenant's `orders#tenant_id=acme`.
   * @returns how many key versions this call destroyed (0 when all already were, or none exist).
   * @throws KeyError `KEY_STORE_ERROR` on a database error.
   * @example
   * ```ts
   * await store.destroy('orders#tenant_id=acme')
   * // update "kfe_keys" set "state" = 'destroyed', "wrappings" = '[]', "check_value" = null
   * //   where "logical_table" = $1 and "state" <> 'destroyed'
   * ```
   */
  async destroy(logicalTable: string): Promise<number> {
    return this.#write((t) => destroyVersions(t, logicalTable))
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
    checkKeyRef(ref)
    const encoded = encodeWrappings(wrappings)
    let updated: bigint
    try {
      const result = await this.#write((t) => {
        let query = t.db
          .updateTable(this.tableName)
          .where((eb) => eb.and({ logical_table: ref.logicalTable, purpose: ref.purpose }))
          .set({ wrappings: encoded })
          .where('version', '=', ref.version)
        // Compare-and-set: two concurrent rewraps must not drop each other's wrapping.
        if (expected !== undefined) query = query.where('wrappings', '=', encodeWrappings(expected))
        return query.executeTakeFirst()
      })
      updated = result.numUpdatedRows
    } catch (error) {
      throw keyStoreError(`update the wrappings of ${describeKeyRef(ref)}`, error, ref.logicalTable)
    }
    if (updated > 0n) return true
    // MySQL reports 0 changed rows when the value is unchanged; check existence before failing.
    const current = (await this.list(ref.logicalTable, ref.purpose)).find((k) => k.version === ref.version)
    if (current === undefined) {
      throw new KeyError('KEY_NOT_FOUND', `No stored key ${describeKeyRef(ref)}.`, {
        table: ref.logicalTable,
      })
    }
    return encodeWrappings(current.wrappings) === encoded
  }
}
