import type { OperationNode } from 'kysely'
import type { ColumnInfo } from '../schema/schema.js'
import { ROW_STATEMENTS, someChild } from './node-utils.js'
import { fullText, rawWords } from './raw-text.js'
import { refuse } from './refusal.js'
import type { Source } from './scope.js'

/**
 * Raw SQL in ORDER BY, GROUP BY, DISTINCT ON or HAVING that names an output of the select list
 * holding an encrypted column (`orderBy(sql\`c0\`)` beside `ssn as c0`; MySQL reads select-list
 * aliases in HAVING, where `having(sql\`c0 = ${v}\`)` sent `v`), or a position in ORDER BY,
 * GROUP BY or DISTINCT ON (`sql\`2 desc\``, `sql.lit(2)`, `sql\`1, 2\``) while the select list
 * holds one: the database sorts, groups or compares by the ciphertext, and the plugin cannot
 * rewrite raw text (helper-89's fuzzer, helper-90). A position is refused whatever column it
 * points at. `orderBy('c0')` is refused by the analysis of references already. Subqueries in the
 * clause are their own queries.
 *
 * @param clause - The clause's node.
 * @param outputs - The select list's outputs by name.
 * @param label - `order by`, `group by`, `distinct on` or `having`, for the refusal.
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
    if (ROW_STATEMENTS.has(node.kind)) return false
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
    }
    return someChild(node, visit)
  }
  visit(clause)
  if (label === 'having') return
  for (const item of itemsOf(clause)) {
    if (isPosition(item))
      throw refuse(
        first,
        label,
        'a position, where the select list holds a ciphertext (name the column instead)',
      )
  }
}

/** The expressions a clause sorts or groups by (DISTINCT ON: the clause is one). */
function itemsOf(clause: OperationNode): readonly OperationNode[] {
  const items = (clause as unknown as { items?: readonly Record<string, OperationNode>[] }).items
  if (clause.kind === 'OrderByNode') return (items ?? []).map((i) => i.orderBy as OperationNode)
  if (clause.kind === 'GroupByNode') return (items ?? []).map((i) => i.groupBy as OperationNode)
  return [clause]
}

/** `2`, `2 desc`, `1, 2`, `2 nulls last`: one item of a list that is a position. */
const POSITION = /^\s*\d+(\s+(asc|desc|nulls\s+(first|last)))*\s*$/i

/**
 * A number given as it is (`sql.lit(2)`), or raw SQL one of whose comma-separated items is a
 * number (with such literals inlined): what ORDER BY and GROUP BY read as a position.
 */
function isPosition(node: OperationNode): boolean {
  if (node.kind === 'ValueNode') return literalNumber(node) !== undefined
  if (node.kind !== 'RawNode') return false
  return fullText(node, (p) => literalNumber(p) ?? '?')
    .split(',')
    .some((item) => POSITION.test(item))
}

/** The text of a number Kysely prints as it is (`sql.lit`, an immediate value), else undefined. */
function literalNumber(node: OperationNode): string | undefined {
  if (node.kind !== 'ValueNode') return undefined
  const { value, immediate } = node as unknown as { value: unknown; immediate?: boolean }
  return immediate === true && (typeof value === 'number' || typeof value === 'bigint')
    ? String(value)
    : undefined
}
