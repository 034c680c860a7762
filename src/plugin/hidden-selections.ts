import type { OperationNode, ReferenceNode, SelectionNode } from 'kysely'
import type { Origin, PendingFilter } from './analysis-context.js'
import { HIDDEN_CONTEXT_PREFIX, HIDDEN_PREFIX } from './plan.js'
import type { Source } from './scope.js'
import { identifierName } from './table-names.js'

/**
 * Helpers of the hidden selections the analyzer adds to a select for the index conditions it
 * checks after decryption (`"users"."ssn" as "__kfe_fp_0"`), and of the `t.*` references it meets.
 */

/** The output that passes `p`'s column on as a plain reference of `p`'s relation, if any. */
export function selectedFrom(
  outputs: ReadonlyMap<string, Source>,
  origins: ReadonlyMap<string, Origin>,
  p: PendingFilter,
): string | undefined {
  for (const [name, source] of outputs) {
    if (isHiddenName(name)) continue
    if (source.kind === 'column' && source.info === p.column && origins.get(name) === p.relation) return name
  }
  return undefined
}

/** A select list without the hidden selections the plugin adds for index conditions. */
export function withoutHidden(selections: ReadonlyArray<SelectionNode>): ReadonlyArray<SelectionNode> {
  const kept = selections.filter((s) => !isHiddenSelection(s))
  return kept.length === selections.length ? selections : Object.freeze(kept)
}

/** True for `<ref> as __kfe_fp_<n>` and `<ref> as __kfe_ctx_<n>` (row context). */
function isHiddenSelection(s: SelectionNode): boolean {
  const sel = s.selection
  if (sel.kind !== 'AliasNode' || sel.node.kind !== 'ReferenceNode') return false
  const name = identifierName(sel.alias)
  return isHiddenName(name) || isHiddenContextName(name)
}

/** True for the plugin's own hidden aliases (prefix and a number). */
export function isHiddenName(name: string): boolean {
  return name.startsWith(HIDDEN_PREFIX) && /^\d+$/.test(name.slice(HIDDEN_PREFIX.length))
}

/** True for `t.*`. */
export function isStarOf(node: OperationNode): boolean {
  const ref = node as ReferenceNode
  return node.kind === 'ReferenceNode' && ref.column.kind === 'SelectAllNode' && ref.table !== undefined
}

/** True for the plugin's hidden row-context aliases (prefix and a number). */
export function isHiddenContextName(name: string): boolean {
  return name.startsWith(HIDDEN_CONTEXT_PREFIX) && /^\d+$/.test(name.slice(HIDDEN_CONTEXT_PREFIX.length))
}
