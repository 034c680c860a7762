import type { BlindIndexSpec } from '../blindindex/blind-index.js'
import type { FieldAad } from '../fields/field-cipher.js'
import type { EncryptedColumn } from './columns.js'
import type { MigrationPhase } from './migration-phase.js'

/**
 * The schema's types, apart from the code that builds them (schema.ts), so that the helpers
 * schema.ts uses (key-scope.ts, table-options.ts) can name them without an import cycle.
 */

/** A table's key scope, resolved from its options. */
export interface KeyScope {
  /** The scope column (physical name); one of the table's context columns. */
  readonly column: string
  /** Its position in `table.context`: where a row's context values carry the tenant. */
  readonly at: number
}

/** Options of an annotated table. */
export interface TableOptions {
  /**
   * Logical table name bound into the keys and the AAD. Defaults to the physical name; set it
   * before renaming the table so existing ciphertexts keep decrypting.
   */
  readonly logicalName?: string
  /**
   * The table's primary-key column(s), physical names. Used only to name a row in an error about
   * a stored value (`NOT_CIPHERTEXT`) when the query selected them; never an annotated column.
   * @default 'id'
   */
  readonly primaryKey?: string | readonly string[]
  /**
   * Row context: plaintext columns (physical names) whose values are bound into the AAD of every
   * encrypted column of the row, e.g. `['tenant_id', 'id']`. A ciphertext copied to another row,
   * or swapped with another row's, then fails with `DECRYPT_AUTH_FAILED` instead of reading back
   * as the other row's value. Costs: every insert must carry each value (client-generated ids,
   * never serial/auto-increment: `CONTEXT_MISSING`), every read selects them (hidden when the
   * query did not), and updates of encrypted columns must fix them by equality in the WHERE.
   * Values must be strings or integers (see `contextValue`). Setting it on a table that already
   * holds ciphertexts makes those unreadable: declare it before the first write.
   * @default none: ciphertexts are bound to table and column only
   */
  readonly context?: readonly string[]
  /**
   * Per-tenant keys: the name of one of the `context` columns (e.g. `'tenant_id'`). Each of its
   * values (each tenant) gets its own data and index keys and versions, stored wrapped in the key
   * table under `<logical table>#<column>=<tenant>`; rows are written and read with their own
   * tenant's keys, and a tenant's keys can be destroyed (crypto-shredding, `kfe shred`).
   *
   * Costs: keys are created per tenant (`kfe init --tenant`, `encryption.initTenant`, or on a
   * new tenant's first write with `createTenantKeys`); the key cache must hold the keys of the
   * tenants a process touches (`cache.max` ≥ 2 × tenants, more during a rotation), and each
   * tenant costs one key-store read per `metadataTtlMs` and one provider call per key per cache
   * TTL. A search on an encrypted column must name the tenant by equality in its WHERE
   * (`TENANT_REQUIRED` otherwise), since blind indexes differ per tenant; a unique blind index is
   * unique within a tenant only.
   * @default none: one set of keys for the whole table
   */
  readonly keyScope?: string
}

/** Options of the whole schema. */
export interface SchemaOptions<O extends boolean = boolean> {
  /** Per-table options, by physical table name, e.g. `{ users: { logicalName: 'people' } }`. */
  readonly tables?: Readonly<Record<string, TableOptions>>
  /**
   * Leave blind-index columns out of result rows: a query that returns a table's encrypted
   * columns (`selectAll()`, `returningAll()`, …) does not return that table's index columns
   * (HMAC tokens that would otherwise travel into API payloads and logs), and `Decrypted<>`
   * drops them from the table types. The plugin still writes and searches them; name one in raw
   * `sql` where you must (e.g. an ON CONFLICT target: `oc.expression(sql.ref('email_bidx'))`).
   * Costs a key deletion per index column per row returned.
   * @default false: index columns are returned as bytes, like any column
   */
  readonly omitBlindIndexes?: O
}

/** What `encryptedSchema` takes: physical table name → physical column name → annotation. */
// biome-ignore lint/suspicious/noExplicitAny: columns of every plaintext type; `Decrypted<>` recovers each one.
export type SchemaDefinition = Readonly<Record<string, Readonly<Record<string, EncryptedColumn<any>>>>>

/** One annotated column, resolved: physical and logical names, codec, indexes. */
export interface ColumnInfo {
  readonly table: TableInfo
  readonly physical: string
  readonly logical: string
  /**
   * Physical column holding its ciphertext: `physical` unless the annotation maps it elsewhere
   * (`storedAs`); then `physical` is the name queries use (and, under migration, the plaintext column).
   */
  readonly stored: string
  /** Its migration phase from plaintext, when under migration (`migration` option). */
  readonly migration: MigrationPhase | undefined
  /**
   * Only in the plugin's view of a schema (plugin-view.ts), where a column stored elsewhere is
   * annotated under the column that holds its ciphertext: the name queries use for it, and its phase.
   */
  readonly mapped?: MappedName
  readonly spec: EncryptedColumn<unknown>
  /** What its ciphertexts are bound to: logical table and column names (no context). */
  readonly aad: FieldAad
}

/** The name queries use for a column stored under another (`storedAs`), and its migration phase. */
export interface MappedName {
  /** The annotated name: what queries and result rows use (the plaintext column while it exists). */
  readonly name: string
  /** Its phase (`undefined`: mapped for good, as `dropped`). */
  readonly phase: MigrationPhase | undefined
}

/** One blind index column, resolved. */
export interface IndexInfo {
  readonly column: ColumnInfo
  readonly spec: BlindIndexSpec
  /** Physical column holding the index. */
  readonly physical: string
  /**
   * For an index with a rotation slot (`spec.rotationSlot`): 0 for `spec.name` (odd index key
   * versions), 1 for the slot column (even versions). `undefined` for a one-column index.
   */
  readonly slot?: 0 | 1
}

/** One annotated table, resolved. */
export interface TableInfo {
  readonly physical: string
  readonly logical: string
  /** Primary-key column(s), physical names (see {@link TableOptions.primaryKey}). */
  readonly primaryKey: readonly string[]
  /** Row-context columns, physical names, in AAD order (see {@link TableOptions.context}); empty when none. */
  readonly context: readonly string[]
  /** The tenant column whose values choose the keys (see {@link TableOptions.keyScope}); absent when none. */
  readonly keyScope: KeyScope | undefined
  /** Annotated columns by physical name. */
  readonly columns: ReadonlyMap<string, ColumnInfo>
  /** Blind index columns by physical name. */
  readonly indexColumns: ReadonlyMap<string, IndexInfo>
  /** Index columns removed from result rows (`omitBlindIndexes`); empty when they are returned. */
  readonly omittedFromResults: readonly string[]
  /** Looks a column up by the name a query uses: the physical name or its camelCase form (CamelCasePlugin). */
  column(name: string): ColumnInfo | undefined
  /** Same for an index column. */
  indexColumn(name: string): IndexInfo | undefined
  /** An annotated or index column whose name equals `name` ignoring case (MySQL's rule), if any. */
  columnIgnoringCase(name: string): ColumnInfo | undefined
}

/** The frozen, resolved schema the plugin and the wrapper share. */
export interface EncryptedSchema<D extends SchemaDefinition = SchemaDefinition, O extends boolean = boolean> {
  readonly definition: D
  /** Whether result rows leave out blind-index columns (see {@link SchemaOptions.omitBlindIndexes}). */
  readonly omitBlindIndexes: O
  /**
   * Looks a table up by the name a query uses (optionally schema-qualified, or camelCase). A name
   * without a schema is also the one schema-qualified key of that table name (`users` for
   * `public.users`); a name several schemas' keys share gives undefined (see `ambiguousTable`).
   */
  table(name: string, schema?: string): TableInfo | undefined
  /**
   * A table whose name equals `name` ignoring case (MySQL's rule where table names fold), if any;
   * without `schema`, a qualified key's table name counts too (one of them, when several share it).
   */
  tableIgnoringCase(name: string, schema?: string): TableInfo | undefined
  /** True when `name`, given without a schema, is the table name of keys of several schemas. */
  ambiguousTable(name: string): boolean
  /**
   * A table by a name an operation is given: physical (`users`, `app.users`), then logical, then
   * the one qualified key of that table name.
   */
  tableNamed(name: string): TableInfo | undefined
  readonly tables: ReadonlyMap<string, TableInfo>
}
