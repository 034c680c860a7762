import type { OperationNode } from 'kysely'
import type { ColumnInfo } from '../schema/schema.js'
import { someChild } from './node-utils.js'
import { fragmentsOf, rawWords } from './raw-text.js'
import { refuse } from './refusal.js'
import type { Source } from './scope.js'

const QUERIES: ReadonlySet<string> = new Set([
  'SelectQueryNode',
  'InsertQueryNode',
  'UpdateQueryNode',
  'DeleteQueryNode',
])

/**
 * Raw SQL in ORDER BY, GROUP BY or DISTINCT ON that names an output of the select list holding an
 * encrypted column (`orderBy(sql\`c0\`)` beside `ssn as c0`), or a position (`orderBy(sql\`2\`)`)
 * where the select list holds one: the database sorts or groups by the ciphertext, and the plugin
 * cannot rewrite raw text (helper-89's fuzzer). `orderBy('c0')` is refused by the analysis of
 * references already. Subqueries in the clause are their own queries.
 *
 * @param clause - The clause's node.
 * @param outputs - The select list's outputs by name.
 * @param label - `order by`, `group by` or `distinct on`, for the refusal.
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
export function refuseRawOutputRefs(
  clause: OperationNode,
  outputs: ReadonlyMap<string, Source>,
  label: string,
): void {
  let encrypted: Map<string, ColumnInfo> | undefined
  for (const [name, source] of outputs) {
    if (source.kind !== 'column') continue
    encrypted ??= new Map()
    encrypted.set(name.toLowerCase(), source.info)
  }
  if (encrypted === undefined) return
  const outputsByName = encrypted
  const first = outputsByName.values().next().value as ColumnInfo
  const visit = (node: OperationNode): boolean => {
    if (QUERIES.has(node.kind)) return false
    if (node.kind === 'RawNode') {
      const words = new Set<string>()
      rawWords(node, words)
      for (const word of words) {
        const info = outputsByName.get(word)
        if (info !== undefined)
          throw refuse(
            info,
            label,
            `raw SQL names ${word}, an output of the select list that holds its ciphertext`,
          )
      }
      if (/^\s*\d+\s*$/.test(fragmentsOf(node).join(' ? ')))
        throw refuse(first, label, 'a position given in raw SQL, where the select list holds a ciphertext')
    }
    return someChild(node, visit)
  }
  visit(clause)
}
