import type { BlindIndexSpec } from '../blindindex/blind-index.js'
import { ConfigError } from '../errors.js'
import { refuseUnknownKeys } from '../option-keys.js'
import { camelCase } from './camel-case.js'
import type { EncryptedColumn } from './columns.js'
import { SCOPE_SEPARATOR } from './key-scope.js'
import { refuseAnnotatedKey, refuseDottedColumn, refuseStoredOverPlaintext } from './name-rules.js'
import type {
  ColumnInfo,
  EncryptedSchema,
  IndexInfo,
  MappedName,
  SchemaDefinition,
  SchemaOptions,
  TableInfo,
  TableOptions,
} from './schema-types.js'
import { contextColumns, keyScopeOf } from './table-options.js'

export type {
  ColumnInfo,
  EncryptedSchema,
  IndexInfo,
  MappedName,
  SchemaDefinition,
  SchemaOptions,
  TableInfo,
  TableOptions,
} from './schema-types.js'

/** The physical columns of one declared index: its name, then its rotation slot if it has one. */
export function indexColumnNames(spec: BlindIndexSpec): readonly string[] {
  return spec.rotationSlot === undefined ? [spec.name] : [spec.name, spec.rotationSlot]
}

/** The slot (0 or 1) that index key `version` lives in, for an index with a rotation slot. */
export function slotOfVersion(version: number): 0 | 1 {
  return version % 2 === 1 ? 0 : 1
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
    // The typed form: `encryptedSchema<DB>()(definition)`; the names' check is the compiler's.
    return ((d: SchemaDefinition, o?: SchemaOptions) => {
      checkSchemaOptions(d, o ?? {})
      return buildSchema(d, o ?? {})
    }) as TypedSchemaBuilder<unknown>
  }
  checkSchemaOptions(definition, options)
  return buildSchema(definition, options)
}

/**
 * The schema's options, for keys it does not know (a misspelt `context` would leave every value
 * unbound to its row) and tables its definition does not hold (a misspelt table name, whose
 * options would apply to nothing).
 * @throws ConfigError `CONFIG_INVALID`
 */
function checkSchemaOptions(definition: SchemaDefinition, options: SchemaOptions): void {
  if (typeof options !== 'object' || options === null)
    throw new ConfigError('CONFIG_INVALID', 'encryptedSchema: its options must be an object.')
  refuseUnknownKeys(options, ['tables', 'omitBlindIndexes'], 'encryptedSchema')
  if (options.omitBlindIndexes !== undefined && typeof options.omitBlindIndexes !== 'boolean')
    throw new ConfigError('CONFIG_INVALID', 'encryptedSchema: option omitBlindIndexes must be true or false.')
  for (const [table, tableOptions] of Object.entries(options.tables ?? {})) {
    if (!Object.hasOwn(definition, table))
      throw new ConfigError(
        'CONFIG_INVALID',
        `encryptedSchema: tables.${table} names no table of the schema (its tables are ${Object.keys(definition).join(', ')}).`,
        { table },
      )
    refuseUnknownKeys(
      tableOptions,
      ['logicalName', 'primaryKey', 'context', 'keyScope'],
      `encryptedSchema: tables.${table}`,
    )
    const o = tableOptions as { logicalName?: unknown; primaryKey?: unknown }
    const name = (v: unknown) => typeof v === 'string' && v.length > 0
    if (o.logicalName !== undefined && !name(o.logicalName))
      throw new ConfigError(
        'CONFIG_INVALID',
        `encryptedSchema: tables.${table}.logicalName must be a non-empty string.`,
        {
          table,
        },
      )
    if (
      o.primaryKey !== undefined &&
      !name(o.primaryKey) &&
      !(Array.isArray(o.primaryKey) && o.primaryKey.length > 0 && o.primaryKey.every(name))
    )
      throw new ConfigError(
        'CONFIG_INVALID',
        `encryptedSchema: tables.${table}.primaryKey must be a column name or a non-empty list of them.`,
        { table },
      )
  }
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
 * A table's definition that is not an object of column annotations (`encrypted.text()`), or a
 * column that is not one: `encrypted.text` without its parentheses, a type name, `null`. Checked
 * by shape, not by identity: a config loaded as CommonJS holds another copy of the library.
 */
function refuseMalformedTable(physical: string, columns: unknown): void {
  if (typeof columns !== 'object' || columns === null || Array.isArray(columns))
    throw new ConfigError(
      'CONFIG_INVALID',
      `Table ${physical} must map its encrypted columns to annotations such as encrypted.text().`,
      { table: physical },
    )
  for (const [name, spec] of Object.entries(columns)) {
    const s = spec as { codec?: unknown; indexes?: unknown } | null
    if (typeof s !== 'object' || s === null || typeof s.codec !== 'object' || !Array.isArray(s.indexes))
      throw new ConfigError(
        'CONFIG_INVALID',
        `${physical}.${name} must be a column annotation such as encrypted.text()${typeof spec === 'function' ? ' (did you forget the parentheses?)' : ''}.`,
        { table: physical, column: name },
      )
  }
}

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
    refuseMalformedTable(physical, columns)
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
      refuseStoredOverPlaintext(table, info)
      // Two columns writing one stored column: each write would replace the other's ciphertext
      // (MySQL/MariaDB take names that differ in case alone for one column).
      const sharing = [...cols.values()].find((c) => c.stored.toLowerCase() === info.stored.toLowerCase())
      if (sharing !== undefined) {
        throw new ConfigError(
          'CONFIG_INVALID',
          `${physical}.${colName} and ${physical}.${sharing.physical} are both stored as ${info.stored}: give each its own column.`,
          { table: logical, column: info.logical },
        )
      }
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
      lookup.set(camelCase(colName), info)
      folded.set(colName.toLowerCase(), info)
      folded.set(camelCase(colName).toLowerCase(), info)
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
          idxLookup.set(camelCase(name), index)
          folded.set(name.toLowerCase(), info)
          folded.set(camelCase(name).toLowerCase(), info)
        }
      }
    }
    refuseAnnotatedKey(table)
    Object.freeze(omittedHere)
    Object.freeze(table)
    tables.set(physical, table)
    byName.set(physical, table)
    byName.set(camelCase(physical), table)
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
  const bare = bareNames(byName)
  const foldedTables = new Map([...byName].map(([name, table]) => [name.toLowerCase(), table]))
  // Bare names ignoring case, for a name given without a schema only; an ambiguous one maps to
  // one of its tables (a near name is refused either way).
  const foldedBare = new Map<string, TableInfo>()
  for (const [name, table] of bare) {
    const first = table ?? [...byName.values()].find((t) => t.physical.endsWith(`.${name}`))
    if (first !== undefined) foldedBare.set(name.toLowerCase(), first)
  }
  const byLogical = (name: string) => [...tables.values()].find((t) => t.logical === name)
  return Object.freeze({
    definition,
    omitBlindIndexes: omit as O,
    tables,
    table: (name: string, schema?: string) =>
      (schema === undefined ? undefined : byName.get(`${schema}.${name}`)) ??
      byName.get(name) ??
      (schema === undefined ? (bare.get(name) ?? undefined) : undefined),
    tableIgnoringCase: (name: string, schema?: string) =>
      (schema === undefined
        ? foldedBare.get(name.toLowerCase())
        : foldedTables.get(`${schema}.${name}`.toLowerCase())) ?? foldedTables.get(name.toLowerCase()),
    ambiguousTable: (name: string) => bare.get(name) === null,
    tableNamed: (name: string) => byName.get(name) ?? byLogical(name) ?? bare.get(name) ?? undefined,
  })
}

/**
 * The table names of schema-qualified keys (`public.users`, `app.users`) without their schema,
 * where no unqualified key has that name: what a query naming the table without its schema may
 * mean. The connection's search path (MySQL: its current database) decides which schema that is,
 * which the plugin cannot see, so such a name is taken for the one qualified key of that name
 * (were it another schema's table, its writes would fail its binary column check or decrypt
 * under the wrong table, loudly; taken for a plaintext table, the plaintext would be sent). A
 * name several schemas' keys share maps to `null`: the plugin refuses it (`ambiguousTable`).
 */
function bareNames(byName: ReadonlyMap<string, TableInfo>): Map<string, TableInfo | null> {
  const bare = new Map<string, TableInfo | null>()
  for (const [name, table] of byName) {
    const dot = name.indexOf('.')
    if (dot < 0) continue
    const rest = name.slice(dot + 1)
    if (byName.has(rest)) continue
    const seen = bare.get(rest)
    bare.set(rest, seen === undefined || seen === table ? table : null)
  }
  return bare
}
