import type { AnalysisContext, Origin, Role } from './analysis-context.js'
import { addAll } from './column-rules.js'
import type { Relation, Source } from './scope.js'

/**
 * `*` and `q.*` in a select list or RETURNING. The driver hands back one value per result key,
 * the *last* column of a name (pg, mysql2 and PGlite alike), so which relation's column an output
 * name stands for depends on every column of every relation after it: an encrypted output of one
 * relation is shadowed by a later relation's plaintext column of the same name, and must then not
 * be decrypted. A base table's columns are known from the catalog the schema verification read,
 * a derived table's or CTE's from its select list; a relation whose columns are not known makes
 * every encrypted output before it uncertain (see {@link AnalysisContext.mayBeShadowed}).
 */

/**
 * Adds the columns `*` takes from `relation` to `outputs`, each replacing an output of its name
 * (an encrypted or index column recorded as coming from `relation`, a plaintext one removed).
 *
 * @param role - how the query's outputs are used: those of an EXISTS subquery are never read
 * @returns every column name added, in order, or `undefined` when they are not known
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `select all`) for an encrypted output an
 *   unknown column of `relation` may shadow, when the catalog is not pending
 */
export function expandAll(
  a: AnalysisContext,
  relation: Relation,
  outputs: Map<string, Source>,
  origins: Map<string, Origin>,
  role: Role,
): readonly string[] | undefined {
  const columns = a.columnsOf(relation)
  if (columns !== undefined) {
    for (const name of columns) {
      const source = sourceOf(relation, name)
      if (source === undefined) {
        outputs.delete(name)
        origins.delete(name)
      } else {
        outputs.set(name, source)
        origins.set(name, relation)
      }
    }
    return columns
  }
  // Its encrypted and index columns are known, its others are not: an output before it that it
  // does not replace with one of its own may be shadowed by one of those.
  const before = role === 'exists' || outputs.size === 0 ? undefined : [...outputs]
  addAll(outputs, relation, origins)
  for (const [name, source] of before ?? []) {
    if (origins.get(name) === relation) continue
    // At the root only decrypted outputs matter; a derived table's index outputs are searched.
    if (source.kind === 'index' && role === 'root') continue
    a.mayBeShadowed(source.kind === 'column' ? source.info : source.info.column, name, relation)
  }
  return undefined
}

/** What the column `name` of `relation` passes on: an encrypted column, a blind index, or nothing. */
function sourceOf(relation: Relation, name: string): Source | undefined {
  const table = relation.table
  if (table === undefined) return relation.derived?.get(name)
  // Physical names only: the catalog spells columns as the database returns them.
  const info = table.columns.get(name)
  if (info !== undefined) return { kind: 'column', info }
  const index = table.indexColumns.get(name)
  return index === undefined ? undefined : { kind: 'index', info: index }
}
