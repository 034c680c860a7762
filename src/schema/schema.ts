import type { BlindIndexSpec } from '../blindindex/blind-index.js'
import { ConfigError } from '../errors.js'
import type { FieldAad } from '../fields/field-cipher.js'
import type { EncryptedColumn } from './columns.js'
import { type KeyScope, SCOPE_SEPARATOR } from './key-scope.js'
import type { MigrationPhase } from './migration-phase.js'
import { refuseAnnotatedKey, refuseDottedColumn } from './name-rules.js'
import { contextColumns, keyScopeOf } from './table-options.js'

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

/** The physical columns of one declared index: its name, then its rotation slot if it has one. */
export function indexColumnNames(spec: BlindIndexSpec): readonly string[] {
  return spec.rotationSlot === undefined ? [spec.name] : [spec.name, spec.rotationSlot]
}

/** The slot (0 or 1) that index key `version` lives in, for an index with a rotation slot. */
export function slotOfVersion(version: number): 0 | 1 {
  return version % 2 === 1 ? 0 : 1
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
  /** Looks a table up by the name a query uses (optionally schema-qualified, or camelCase). */
  table(name: string, schema?: string): TableInfo | undefined
  /** A table whose name equals `name` ignoring case (MySQL's rule where table names fold), if any. */
  tableIgnoringCase(name: string): TableInfo | undefined
  readonly tables: ReadonlyMap<string, TableInfo>
}

/** `email_address` → `emailAddress`, as kysely's CamelCasePlugin maps names. */
function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}

/**
 * Declares which columns are encrypted. Keys are physical table and column names (as in the
 * database; CamelCasePlugin's camelCase spelling is recognised too).
 *
 * @param definition - table → column → `encrypted.*(…)`
 * @param options - `tables`: per-table options, e.g. `{ users: { logicalName: 'people' } }`;
 *   `omitBlindIndexes`: leave index columns out of result rows and of `Decrypted<>` types
 * @returns a frozen schema for `fieldEncryption({ schema })`
 * @throws ConfigError `CONFIG_INVALID` on duplicate index names or an index column that collides with an annotated column
 * @example
 * ```ts
 * const schema = encryptedSchema({
 *   users: { email: encrypted.text({ index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] } }) },
 * })
 * ```
 */
export function encryptedSchema<DB>(): TypedSchemaBuilder<DB>
export function encryptedSchema<D extends SchemaDefinition, O extends boolean = false>(
  definition: D,
  options?: SchemaOptions<O>,
): EncryptedSchema<D, O>
export function encryptedSchema<D extends SchemaDefinition, O extends boolean = false>(
  definition?: D,
  options: SchemaOptions<O> = {},
): EncryptedSchema<D, O> | TypedSchemaBuilder<unknown> {
  if (definition === undefined) {
    // The typed form: `encryptedSchema<DB>()(definition)`; the check is the compiler's.
    return ((d: SchemaDefinition, o?: SchemaOptions) =>
      buildSchema(d, o ?? {})) as TypedSchemaBuilder<unknown>
  }
  return buildSchema(definition, options)
}

/**
 * Table and column names checked against the application's database interface: a name that is
 * not a table of `DB`, or not a column of that table, maps to `never` (a compile error).
 */
export type KnownNames<DB, D> = {
  [T in keyof D]: T extends keyof DB
    ? // biome-ignore lint/suspicious/noExplicitAny: columns of every plaintext type.
      { [C in keyof D[T]]: C extends keyof DB[T] ? EncryptedColumn<any> : never }
    : never
}

/**
 * What `encryptedSchema<DB>()` returns: `encryptedSchema` whose table and column names must be
 * those of `DB` (kysely-codegen's interface, or your own), checked at compile time.
 *
 * @example
 * ```ts
 * const schema = encryptedSchema<DB>()({ users: { email: encrypted.text() } })
 * encryptedSchema<DB>()({ user: { email: encrypted.text() } })   // compile error: no table `user`
 * ```
 */
export type TypedSchemaBuilder<DB> = <const D extends SchemaDefinition, O extends boolean = false>(
  definition: D & KnownNames<DB, D>,
  options?: Omit<SchemaOptions<O>, 'tables'> & {
    readonly tables?: { readonly [T in keyof DB & keyof D]?: TableOptions }
  },
) => EncryptedSchema<D, O>

/**
 * Resolves a definition. @internal
 * @param mapped - for the plugin's view (plugin-view.ts): by `table\0column`, the name queries
 *   use for a column annotated here under its ciphertext column.
 */
export function buildSchema<D extends SchemaDefinition, O extends boolean>(
  definition: D,
  options: SchemaOptions<O>,
  mapped?: ReadonlyMap<string, MappedName>,
): EncryptedSchema<D, O> {
  const omit = options.omitBlindIndexes === true
  const tables = new Map<string, TableInfo>()
  const byName = new Map<string, TableInfo>()
  const logicalTables = new Set<string>()
  for (const [physical, columns] of Object.entries(definition)) {
    const logical = options.tables?.[physical]?.logicalName ?? physical
    if (logicalTables.has(logical)) {
      throw new ConfigError('CONFIG_INVALID', `Two tables share the logical name "${logical}".`, {
        table: logical,
      })
    }
    logicalTables.add(logical)
    const cols = new Map<string, ColumnInfo>()
    const idx = new Map<string, IndexInfo>()
    const lookup = new Map<string, ColumnInfo>()
    const idxLookup = new Map<string, IndexInfo>()
    const folded = new Map<string, ColumnInfo>()
    const primaryKey = options.tables?.[physical]?.primaryKey ?? 'id'
    const omittedHere: string[] = []
    const context = contextColumns(physical, logical, columns, options.tables?.[physical]?.context)
    for (const name of context) refuseDottedColumn(physical, logical, name)
    // The jobs page and write by the primary key, named through Kysely.
    for (const name of typeof primaryKey === 'string' ? [primaryKey] : primaryKey) {
      refuseDottedColumn(physical, logical, name)
    }
    const keyScope = keyScopeOf(physical, logical, context, options.tables?.[physical]?.keyScope)
    const table: TableInfo = {
      physical,
      logical,
      primaryKey: Object.freeze(typeof primaryKey === 'string' ? [primaryKey] : [...primaryKey]),
      context,
      keyScope,
      columns: cols,
      indexColumns: idx,
      omittedFromResults: omittedHere,
      column: (name) => lookup.get(name),
      indexColumn: (name) => idxLookup.get(name),
      columnIgnoringCase: (name) => folded.get(name.toLowerCase()),
    }
    const logicalColumns = new Set<string>()
    for (const [colName, spec] of Object.entries(columns)) {
      const logicalColumn = spec.logicalName ?? colName
      const info: ColumnInfo = Object.freeze({
        table,
        physical: colName,
        logical: logicalColumn,
        stored: spec.storedAs ?? colName,
        migration: spec.migration,
        ...(mapped?.has(`${physical}\0${colName}`) ? { mapped: mapped.get(`${physical}\0${colName}`) } : {}),
        spec,
        aad: Object.freeze({ table: logical, column: logicalColumn }),
      })
      if (logicalColumns.has(info.logical)) {
        throw new ConfigError(
          'CONFIG_INVALID',
          `Two columns of ${physical} share the logical name "${info.logical}".`,
          {
            table: logical,
            column: info.logical,
          },
        )
      }
      logicalColumns.add(info.logical)
      refuseDottedColumn(physical, logical, colName, info.logical)
      refuseDottedColumn(physical, logical, info.stored, info.logical)
      if (info.stored !== colName && Object.hasOwn(columns, info.stored)) {
        throw new ConfigError(
          'CONFIG_INVALID',
          `${physical}.${colName} is stored as ${info.stored}, which is annotated too.`,
          { table: logical, column: info.logical },
        )
      }
      if (info.stored !== colName || info.migration !== undefined) {
        // The migration tooling (backfill, row-by-row verify) does not handle these yet.
        if (spec.indexes.some((i) => i.rotationSlot !== undefined))
          throw new ConfigError(
            'CONFIG_INVALID',
            `${physical}.${colName} is under migration from plaintext (storedAs/migration), which a blind index with a rotationSlot does not support yet.`,
            { table: logical, column: info.logical },
          )
      }
      cols.set(colName, info)
      lookup.set(colName, info)
      lookup.set(camel(colName), info)
      folded.set(colName.toLowerCase(), info)
      folded.set(camel(colName).toLowerCase(), info)
    }
    for (const info of cols.values()) {
      for (const spec of info.spec.indexes) {
        for (const [n, name] of indexColumnNames(spec).entries()) {
          refuseDottedColumn(physical, logical, name, info.logical)
          if (idx.has(name) || cols.has(name) || [...cols.values()].some((c) => c.stored === name)) {
            throw new ConfigError('CONFIG_INVALID', `Index column ${physical}.${name} is declared twice.`, {
              table: logical,
              column: info.logical,
            })
          }
          const slot = spec.rotationSlot === undefined ? undefined : (n as 0 | 1)
          const index: IndexInfo = Object.freeze({ column: info, spec, physical: name, slot })
          idx.set(name, index)
          if (omit) omittedHere.push(name)
          idxLookup.set(name, index)
          idxLookup.set(camel(name), index)
          folded.set(name.toLowerCase(), info)
          folded.set(camel(name).toLowerCase(), info)
        }
      }
    }
    refuseAnnotatedKey(table)
    Object.freeze(omittedHere)
    Object.freeze(table)
    tables.set(physical, table)
    byName.set(physical, table)
    byName.set(camel(physical), table)
  }
  const clash = [...tables.values()].find((t) => t.logical.includes(SCOPE_SEPARATOR))
  if (clash !== undefined && [...tables.values()].some((t) => t.keyScope !== undefined)) {
    // Its keys could share a name with a tenant's keys of a table with a keyScope.
    throw new ConfigError(
      'CONFIG_INVALID',
      `Table ${clash.physical}'s logical name contains "${SCOPE_SEPARATOR}", which a schema with per-tenant keys (keyScope) reserves for tenant key names; set its logicalName.`,
      { table: clash.logical },
    )
  }
  const foldedTables = new Map([...byName].map(([name, table]) => [name.toLowerCase(), table]))
  return Object.freeze({
    definition,
    omitBlindIndexes: omit as O,
    tables,
    table: (name: string, schema?: string) =>
      (schema === undefined ? undefined : byName.get(`${schema}.${name}`)) ?? byName.get(name),
    tableIgnoringCase: (name: string) => foldedTables.get(name.toLowerCase()),
  })
}
