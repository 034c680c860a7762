import type { Kysely } from 'kysely'
import type { SchemaProblem } from '../errors.js'
import { type Catalog, type CatalogTable, isBinaryType } from './catalog.js'
import { ciphertextColumns } from './sample-ciphertext.js'
import type { TableInfo } from './schema.js'

/**
 * The binary columns of an annotated table that the schema does not name: not an encrypted
 * column (by its physical or stored name), a blind-index column, or a context column. An
 * encrypted column spelt otherwise in the schema, or one whose annotation was removed, is one of
 * them, and the plugin writes it unencrypted. Catalog spelling; names compared ignoring case on
 * MySQL, whose column names do.
 */
export function unannotatedBinaryColumns(catalog: Catalog, table: CatalogTable, info: TableInfo): string[] {
  const fold = catalog.family === 'mysql' ? (s: string) => s.toLowerCase() : (s: string) => s
  const known = new Set<string>()
  for (const column of info.columns.values()) {
    known.add(fold(column.physical))
    known.add(fold(column.stored))
  }
  for (const name of info.indexColumns.keys()) known.add(fold(name))
  for (const name of info.context) known.add(fold(name))
  return [...table.columns]
    .filter(([name, type]) => isBinaryType(catalog.family, type) && !known.has(fold(name)))
    .map(([name]) => name)
}

/**
 * Columns of an annotated table that hold this library's ciphertext but are not annotated (a
 * sample of up to 8 rows, as for unannotated tables, of which at least two hold a value): an
 * annotation removed, or a column misspelt in the schema after rows were written. Their values are returned undecrypted, and new
 * ones written unencrypted. Columns another problem of the table already names are left out.
 *
 * @param db - any Kysely on the database.
 * @param where - the table's name in problems.
 * @param reported - the problems found so far.
 */
export async function unannotatedCiphertextProblem(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  catalog: Catalog,
  table: CatalogTable,
  info: TableInfo,
  where: string,
  reported: readonly SchemaProblem[],
): Promise<SchemaProblem | undefined> {
  const named = new Set(reported.filter((p) => p.table === where).flatMap((p) => p.columns))
  const candidates = unannotatedBinaryColumns(catalog, table, info).filter((c) => !named.has(c))
  // Two values at least: a plaintext column of hashes or random tokens passes the header check
  // about once in 32 per value, and one such value must not stop the application.
  const held = await ciphertextColumns(db, where, candidates, 2)
  if (held.length === 0) return undefined
  return {
    kind: 'unannotated-ciphertext',
    table: where,
    columns: held,
    message: `Encrypted table ${where} has columns the encrypted schema does not annotate that hold this library's ciphertext (${held.join(', ')}): they are returned undecrypted, and new values are written to them unencrypted.`,
    fix: `-- no DDL: annotate ${held.join(', ')} in encryptedSchema (or correct the spelling of the annotated name meant)`,
  }
}
