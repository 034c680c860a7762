import type { OperationNode } from 'kysely'
import type { IndexInfo, TableInfo } from '../schema/schema.js'
import type { AnalysisContext } from './analysis-context.js'
import { exact } from './column-rules.js'
import { columnName, columnNode, rebuildList } from './nodes.js'
import { refuse } from './refusal.js'

/**
 * The conflict target of ON CONFLICT (…): an encrypted column holds a fresh ciphertext per write,
 * so its uniqueness lives on its unique blind index, which becomes the target. Exact only while
 * one index version is live: the wrapper refuses the upsert during an index-key rotation.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` for an encrypted column without a unique index
 */
export function conflictTarget(
  a: AnalysisContext,
  columns: ReadonlyArray<OperationNode>,
  table: TableInfo,
): ReadonlyArray<OperationNode> {
  return rebuildList(columns, (c) => {
    const name = columnName(c)
    const index = table.indexColumn(name)
    if (index?.spec.kind === 'unique') a.noteIndexComparison(table.logical)
    const info = exact(table, name)
    if (info === undefined) return c
    const unique = info.spec.indexes
      .map((spec) => table.indexColumn(spec.name) as IndexInfo)
      .find((i) => i.spec.kind === 'unique')
    if (unique === undefined) {
      const search = info.spec.indexes[0]?.name
      throw refuse(
        info,
        'on conflict',
        `the conflict target ${info.physical} holds a fresh ciphertext per write, so only a unique blind index can detect the conflict`,
        search === undefined
          ? `Declare a unique index on ${info.physical} (index: { name: '${info.physical}_bidx' }) with a UNIQUE constraint, and use it as the conflict target.`
          : `Index ${search} is truncated (a search index) and cannot carry a UNIQUE constraint: declare a unique index (no bits) on ${info.physical}, or use another conflict target.`,
      )
    }
    a.noteIndexComparison(table.logical)
    return columnNode(unique.physical)
  })
}
