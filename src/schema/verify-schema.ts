import type { Kysely } from 'kysely'
import { SchemaMismatchError, type SchemaProblem } from '../errors.js'
import { FORMAT_V1_OVERHEAD } from '../fields/format.js'
import { type Catalog, type CatalogTable, isBinaryType, readCatalog } from './catalog.js'
import { contextColumnProblems } from './context-column-types.js'
import { ciphertextColumns } from './sample-ciphertext.js'
import type { EncryptedSchema, TableInfo } from './schema.js'
import { schemaFixes } from './schema-fixes.js'
import { sessionProblems } from './session-settings.js'
import { type SqlFamily, sqlFamily } from './sql-family.js'
import { engineProblem } from './sql-mode.js'
import { unannotatedBinaryColumns, unannotatedCiphertextProblem } from './unannotated-columns.js'

/** Options of {@link verifySchema} (and of `fieldEncryption({ verifySchema })`). */
export interface VerifySchemaOptions {
  /**
   * Which tables the schema does NOT annotate are looked at for columns named like the
   * schema's blind-index columns and for binary columns holding this library's ciphertext (a
   * misspelt or forgotten table), and which annotated tables are looked at for binary columns
   * the schema does not annotate that hold its ciphertext (an annotation removed; at least two
   * sampled values, so that a column of hashes is not taken for one). `false` skips that half; a
   * function keeps the tables it returns true for (e.g. leave out another application's tables
   * in a shared database). Costs one query of up to 8 rows per such table that has binary columns.
   * @default true: every table of the schemas the annotated tables live in, but the key table
   */
  readonly unannotatedTables?: boolean | ((table: string) => boolean)
  /** The key table, never reported (its wrapped keys are bytes). @default 'kfe_keys' */
  readonly keyTable?: string
}

/** What a verification found: every problem, and the catalog it read. */
export interface SchemaReport {
  readonly problems: readonly SchemaProblem[]
  readonly catalog: Catalog
}

/**
 * Checks the encrypted schema against the live database and lists every problem: an annotated
 * table or column that does not exist, an encrypted or blind-index column that is not binary
 * (`bytea`; `varbinary`/`blob` on MySQL), a unique blind index without a single-column UNIQUE
 * index; and, the other way round, a table the schema does not annotate that has columns named
 * like its blind-index columns or binary columns holding its ciphertext.
 *
 * @param db - a Kysely on the database (wrapped or not); raw catalog SQL, so plugins leave it alone.
 * @param schema - the encrypted schema.
 * @param options - see {@link VerifySchemaOptions}.
 * @returns the problems (empty when the database matches) and the catalog read.
 * @throws ConfigError `CONFIG_INVALID` when the database is neither PostgreSQL nor MySQL.
 */
export async function findSchemaProblems(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  schema: EncryptedSchema,
  options: VerifySchemaOptions = {},
): Promise<SchemaReport> {
  const family = sqlFamily(db)
  const catalog = await readCatalog(db, family, schema.tables.keys())
  const fixes = schemaFixes(db, schema, family)
  const problems: SchemaProblem[] = []
  problems.push(...sessionProblems(catalog.session))
  const missing: TableInfo[] = []
  const annotated = new Set<CatalogTable>()
  for (const info of schema.tables.values()) {
    const table = catalog.table(info.physical)
    if (table === undefined) {
      missing.push(info)
      problems.push({
        kind: 'table-missing',
        table: info.physical,
        columns: [],
        message: `Table ${info.physical} of the encrypted schema does not exist.`,
        fix: fixes.createTable(info),
      })
      continue
    }
    annotated.add(table)
    const engine = engineProblem(catalog.sqlMode, table.engine, info.physical)
    if (engine !== undefined) problems.push(engine)
    problems.push(...tableProblems(catalog, table, info, fixes, family))
    // With the reverse checks (unannotatedTables): the columns the schema does not annotate.
    if (
      options.unannotatedTables !== false &&
      (typeof options.unannotatedTables !== 'function' || options.unannotatedTables(info.physical))
    ) {
      const held = await unannotatedCiphertextProblem(db, catalog, table, info, info.physical, problems)
      if (held !== undefined) problems.push(held)
    }
  }
  if (options.unannotatedTables !== false) {
    const keep = typeof options.unannotatedTables === 'function' ? options.unannotatedTables : () => true
    const keyTable = options.keyTable ?? 'kfe_keys'
    const others = catalog.tables.filter((t) => {
      const name = qualified(catalog, t)
      return t.base && !annotated.has(t) && name !== keyTable && t.name !== keyTable && keep(name)
    })
    problems.push(...(await unannotatedProblems(db, catalog, schema, others, missing, fixes)))
  }
  return { problems, catalog }
}

/**
 * Verifies the encrypted schema against the live database (see {@link findSchemaProblems}).
 *
 * @param db - a Kysely on the database.
 * @param schema - the encrypted schema.
 * @param options - see {@link VerifySchemaOptions}.
 * @returns the catalog read, when the database matches.
 * @throws SchemaMismatchError `SCHEMA_MISMATCH` listing every problem, each with the DDL that fixes it.
 * @example
 * ```ts
 * await verifySchema(db, schema)
 * // SchemaMismatchError: … 1. Table user of the encrypted schema does not exist. Fix: create table "user" (…)
 * ```
 */
export async function verifySchema(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  schema: EncryptedSchema,
  options: VerifySchemaOptions = {},
): Promise<Catalog> {
  const { problems, catalog } = await findSchemaProblems(db, schema, options)
  if (problems.length > 0) throw new SchemaMismatchError(problems)
  return catalog
}

type Fixes = ReturnType<typeof schemaFixes>

/** `homeAddress` → `home_address`, as Kysely's CamelCasePlugin writes a name to the database. */
function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
}

/**
 * Why a binary column of `width` bytes (varbinary(n); undefined: unbounded) cannot hold every
 * ciphertext of a value of up to `maxBytes` bytes, or undefined when it can. Sized as
 * `addEncryptedColumns` sizes it: the format's overhead, and 4 more bytes for key versions up to 2^32.
 */
function widthProblem(width: number | undefined, maxBytes: number | undefined): string | undefined {
  if (width === undefined) return undefined
  if (maxBytes === undefined)
    return `no maxBytes is declared, so a longer value's ciphertext is not refused before it is sent (declare maxBytes: ${Math.max(0, width - FORMAT_V1_OVERHEAD - 4)} or less, or widen it)`
  // The overhead holds a key version up to 127 in one varint byte; versions from 128 take up to 4
  // more (addEncryptedColumns leaves them). A column with room for 127 only would refuse, or
  // under a non-strict sql_mode cut short, every ciphertext after the 127th rotation, and a
  // re-encryption job would rewrite readable rows into unreadable ones.
  const needed = maxBytes + FORMAT_V1_OVERHEAD + 4
  return width >= needed
    ? undefined
    : `a value of maxBytes (${maxBytes}) needs ${needed} under every key version (${needed - 4} up to version 127, one more byte from 128, up to 4)`
}

/**
 * The bytes a MySQL binary type holds at most, where that bounds a ciphertext: `varbinary(n)`,
 * `tinyblob` (255), `blob` (65,535). MEDIUMBLOB and LONGBLOB are left out: 16 MiB is more than
 * a row usually holds, and `max_allowed_packet` refuses a larger value before that.
 */
function mysqlWidth(type: string, length: number | undefined): number | undefined {
  if (type === 'varbinary') return length
  if (type === 'tinyblob') return 255
  if (type === 'blob') return 65_535
  return undefined
}

/**
 * What is wrong with a MySQL blind-index column of `type` for an index of `bytes` bytes:
 * `binary(n)` pads a shorter value with zero bytes (searches then miss it) and `varbinary(n)`
 * narrower than the index cuts it short, or refuses it.
 */
function indexWidthProblem(type: string, length: number | undefined, bytes: number): string | undefined {
  if (type === 'binary' && length !== bytes)
    return `is binary(${length}), which pads values to ${length} bytes, and the index is ${bytes} bytes: a padded index never matches a search (rewrite the rows written so far after the fix)`
  if ((type === 'varbinary' || type === 'binary') && length !== undefined && length < bytes)
    return `holds at most ${length} bytes, and the index is ${bytes} bytes (the database would refuse it, or cut it short, and searches would miss it)`
  return undefined
}

/** Encoded sizes of the codecs whose values have one (no maxBytes needed for them). */
const FIXED_SIZE: Readonly<Partial<Record<string, number>>> = {
  number: 8,
  boolean: 1,
  date: 8,
  calendarDate: 10,
}

function tableProblems(
  catalog: Catalog,
  table: CatalogTable,
  info: TableInfo,
  fixes: Fixes,
  family: SqlFamily,
): SchemaProblem[] {
  const out: SchemaProblem[] = contextColumnProblems(
    table,
    info,
    (t, c) => catalog.column(t, c),
    family,
    (t, c) => catalog.charset(t, c),
    (t, c) => catalog.zerofill(t, c),
  )
  const where = info.physical
  for (const column of info.columns.values()) {
    const type = catalog.column(table, column.stored)
    // CamelCasePlugin: `homeAddress` is written to `home_address`, whatever the schema says.
    const snake = snakeCase(column.stored)
    const snakeType = snake === column.stored ? undefined : catalog.column(table, snake)
    if (type === undefined && snakeType !== undefined) {
      out.push({
        kind: 'column-missing',
        table: where,
        columns: [column.stored],
        message: `Encrypted column ${where}.${column.stored} does not exist, but ${snake} does: with CamelCasePlugin, annotate a column by its name in the database.`,
        fix: `rename the schema's key ${column.stored} to ${snake} (do not add a column ${column.stored}: with CamelCasePlugin before encryption.plugin, writes would go to ${snake} unencrypted)`,
      })
    } else if (type === undefined) {
      // A binary column the schema does not name may be the one meant (`emial` for `email`):
      // adding the misspelt one would leave the values written to it unencrypted.
      const unnamed = unannotatedBinaryColumns(catalog, table, info)
      out.push({
        kind: 'column-missing',
        table: where,
        columns: [column.stored],
        message: `Encrypted column ${where}.${column.stored} does not exist.`,
        fix:
          unnamed.length === 0
            ? fixes.addColumn(info, column.stored)
            : `if ${unnamed.join(' or ')} is the column meant, rename the schema's key ${column.stored} to it (adding ${column.stored} would leave the values written to ${unnamed.length === 1 ? 'it' : 'them'} unencrypted); otherwise ${fixes.addColumn(info, column.stored)}`,
      })
    } else if (
      snakeType !== undefined &&
      // A binary one: what following the former advice made (an unrelated plaintext user_id of
      // another type beside an encrypted userId is left alone).
      isBinaryType(family, snakeType) &&
      !info.columns.has(snake) &&
      !info.indexColumns.has(snake)
    ) {
      out.push({
        kind: 'column-spelling',
        table: where,
        columns: [column.stored, snake],
        message: `${where} has both ${column.stored} (encrypted) and ${snake} (not annotated): CamelCasePlugin before encryption.plugin turns ${column.stored} into ${snake}, which would then be written unencrypted.`,
        fix: `annotate ${snake} instead of ${column.stored}, and drop ${column.stored} once empty`,
      })
    } else if (family === 'mysql' && type === 'binary') {
      out.push({
        kind: 'column-not-binary',
        table: where,
        columns: [column.stored],
        found: type,
        message: `Encrypted column ${where}.${column.stored} is binary(${catalog.maxLength(table, column.stored)}), which pads every shorter value with zero bytes: a padded ciphertext does not decrypt (values written so far are lost; rewrite them after the fix).`,
        fix: fixes.makeBinary(info, column.stored, catalog.maxOctets(table, column.stored)),
      })
    } else if (!isBinaryType(family, type)) {
      out.push({
        kind: 'column-not-binary',
        table: where,
        columns: [column.stored],
        found: type,
        message: `Encrypted column ${where}.${column.stored} is ${type}, not a binary type (values it holds stay as they are: make it binary with the fix, which keeps each value's bytes, declare the column migratingFromPlaintext, then \`kfe reencrypt\` encrypts them; or move it to a new encrypted column, docs/migrating.md).`,
        fix: fixes.makeBinary(info, column.stored, catalog.maxOctets(table, column.stored)),
      })
    } else {
      const width = family === 'mysql' ? mysqlWidth(type, catalog.maxLength(table, column.stored)) : undefined
      const narrow = widthProblem(width, column.spec.maxBytes ?? FIXED_SIZE[column.spec.codec.kind])
      if (narrow !== undefined)
        out.push({
          kind: 'column-too-narrow',
          table: where,
          columns: [column.stored],
          found: type,
          message: `Encrypted column ${where}.${column.stored} holds at most ${width} bytes: ${narrow} (the database would refuse such a ciphertext, or cut it short and make it unreadable).`,
          fix: fixes.makeBinary(info, column.stored),
        })
    }
  }
  for (const index of info.indexColumns.values()) {
    const own = catalog.columnName(table, index.physical)
    const type = own === undefined ? undefined : table.columns.get(own)
    if (own === undefined || type === undefined) {
      out.push({
        kind: 'index-column-missing',
        table: where,
        columns: [index.physical],
        message: `Blind-index column ${where}.${index.physical} (of ${index.column.stored}) does not exist.`,
        fix:
          index.spec.kind === 'unique'
            ? `${fixes.addColumn(info, index.physical)}; ${fixes.uniqueIndex(info, index.physical)}`
            : fixes.addColumn(info, index.physical),
      })
      continue
    }
    if (!isBinaryType(family, type)) {
      out.push({
        kind: 'index-column-not-binary',
        table: where,
        columns: [index.physical],
        found: type,
        message: `Blind-index column ${where}.${index.physical} is ${type}, not a binary type.`,
        fix: fixes.makeBinary(info, index.physical, catalog.maxOctets(table, own)),
      })
    } else if (family === 'mysql') {
      const problem = indexWidthProblem(type, catalog.maxLength(table, own), Math.ceil(index.spec.bits / 8))
      if (problem !== undefined)
        out.push({
          kind: type === 'binary' ? 'index-column-not-binary' : 'column-too-narrow',
          table: where,
          columns: [index.physical],
          found: type,
          message: `Blind-index column ${where}.${index.physical} ${problem}.`,
          fix: fixes.makeBinary(info, index.physical, catalog.maxOctets(table, own)),
        })
    }
    if (index.spec.kind === 'unique' && !table.uniqueColumns.has(own)) {
      out.push({
        kind: 'unique-index-missing',
        table: where,
        columns: [index.physical],
        message: `Unique blind-index column ${where}.${index.physical} has no single-column UNIQUE index (duplicates would be accepted, and searches scan the table).`,
        fix: fixes.uniqueIndex(info, index.physical),
      })
    }
  }
  return out
}

async function unannotatedProblems(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  catalog: Catalog,
  schema: EncryptedSchema,
  tables: readonly CatalogTable[],
  missing: readonly TableInfo[],
  fixes: Fixes,
): Promise<SchemaProblem[]> {
  const fold = catalog.family === 'mysql' ? (s: string) => s.toLowerCase() : (s: string) => s
  const indexNames = new Set<string>()
  for (const info of schema.tables.values()) for (const i of info.indexColumns.keys()) indexNames.add(fold(i))
  const out: SchemaProblem[] = []
  for (const table of tables) {
    const name = qualified(catalog, table)
    // A missing annotated table whose columns this one has: most likely a misspelling.
    const twin = missing.find((info) =>
      [...info.columns.keys(), ...info.indexColumns.keys()].every(
        (c) => catalog.column(table, c) !== undefined,
      ),
    )
    const hint = (what: string) =>
      twin === undefined
        ? `-- no DDL: annotate ${name} in encryptedSchema (it ${what}), or leave it out with verifySchema.unannotatedTables`
        : `${fixes.rename(name, twin.physical)} -- or rename ${twin.physical} to ${name} in encryptedSchema`
    const indexLike = [...table.columns.keys()].filter((c) => indexNames.has(fold(c)))
    if (indexLike.length > 0) {
      out.push({
        kind: 'unannotated-index-columns',
        table: name,
        columns: indexLike,
        message: `Table ${name} is not in the encrypted schema but has columns named like its blind-index columns (${indexLike.join(', ')}): values written to it are not encrypted.`,
        fix: hint('looks like an encrypted table'),
      })
    }
    const binary = [...table.columns].filter(([, t]) => isBinaryType(catalog.family, t)).map(([c]) => c)
    const held = await ciphertextColumns(db, name, binary)
    if (held.length > 0) {
      out.push({
        kind: 'unannotated-ciphertext',
        table: name,
        columns: held,
        message: `Table ${name} is not in the encrypted schema but its columns ${held.join(', ')} hold this library's ciphertext: they are returned undecrypted and written unencrypted.`,
        fix: hint('holds ciphertext'),
      })
    }
  }
  return out
}

/** The name a query would use for `table`: bare in the default schema, else schema-qualified. */
function qualified(catalog: Catalog, table: CatalogTable): string {
  return table.schema === catalog.defaultSchema ? table.name : `${table.schema}.${table.name}`
}
