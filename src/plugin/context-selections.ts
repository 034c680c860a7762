import type { ReferenceNode, SelectionNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { isHiddenContextName } from './hidden-selections.js'
import { columnName, identifier, referenceNode, tableNode } from './nodes.js'
import { HIDDEN_CONTEXT_PREFIX } from './plan.js'
import { refuse } from './refusal.js'
import type { Relation, Source } from './scope.js'
import { identifierName, tableName } from './table-names.js'

/**
 * Hidden selections that carry the row context of the encrypted columns a query returns
 * (`"u"."tenant_id" as "__kfe_ctx_0"`): the wrapper decrypts each value with its own row's
 * context values, then removes these columns from the rows. Always added, even when the query
 * selects the context column itself: a user's output may be renamed or computed, the hidden one
 * is exactly the stored value.
 */

/** What {@link contextSelections} adds to a select list or RETURNING. */
export interface ContextSelections {
  readonly nodes: ReadonlyArray<SelectionNode>
  /** Output name of an encrypted column → the result keys of its row's context values. */
  readonly context: ReadonlyMap<string, readonly string[]>
  /** The hidden result keys, removed from the rows returned. */
  readonly hidden: readonly string[]
}

/**
 * Adds (or, on a tree rewritten before, finds) the hidden context selections of every returned
 * encrypted column whose table binds a row context.
 *
 * @param selections - The select list (or RETURNING) as rewritten so far.
 * @param outputs - Its outputs, by result key.
 * @param origins - The relation each output was read through (`null`: a subquery).
 * @param verify - The verify pass: a missing hidden selection is refused, never added.
 * @returns `undefined` when no returned column binds a context (the common case).
 * @throws QueryRefusedError `QUERY_REFUSED` for such a column read through a subquery, derived
 *   table or CTE (its row context is not at hand), or, in the verify pass, without its hidden
 *   context selection.
 */
export function contextSelections(
  selections: ReadonlyArray<SelectionNode>,
  outputs: ReadonlyMap<string, Source>,
  origins: ReadonlyMap<string, Relation | null>,
  verify: boolean,
): ContextSelections | undefined {
  let result: { nodes: SelectionNode[]; context: Map<string, string[]>; hidden: string[] } | undefined
  let existing: Map<string, string> | undefined
  let counter = 0
  for (const [name, source] of outputs) {
    if (source.kind !== 'column' || source.info.table.context.length === 0) continue
    const info = source.info
    const relation = origins.get(name)
    if (relation === undefined || relation === null || relation.table !== info.table) {
      throw refuse(
        info,
        'row context',
        `${info.table.physical} binds its ciphertexts to (${info.table.context.join(', ')}), which a subquery, derived table or CTE does not pass on`,
        `Select ${info.physical} straight from ${info.table.physical} (joins and aliases are fine).`,
      )
    }
    if (result === undefined) {
      result = { nodes: [...selections], context: new Map(), hidden: [] }
      existing = new Map()
      for (const s of selections) {
        const sel = s.selection
        if (sel.kind !== 'AliasNode' || sel.node.kind !== 'ReferenceNode') continue
        const alias = identifierName(sel.alias)
        if (!isHiddenContextName(alias)) continue
        counter = Math.max(counter, Number(alias.slice(HIDDEN_CONTEXT_PREFIX.length)) + 1)
        const ref = sel.node as ReferenceNode
        const qualifier = ref.table === undefined ? '' : tableName(ref.table).name
        existing.set(`${qualifier}\0${columnName(ref)}`, alias)
        result.hidden.push(alias)
      }
    }
    const keys: string[] = []
    for (const column of info.table.context) {
      const key = `${relation.name}\0${column}`
      let hidden = existing?.get(key)
      if (hidden === undefined) {
        if (verify) {
          throw new QueryRefusedError(
            'QUERY_REFUSED',
            `A read of ${info.table.physical}.${info.physical} lost the hidden selection of its row context column ${column}. Nothing was sent.`,
            {
              table: info.table.logical,
              column: info.logical,
              operator: 'row context',
              hint: 'Do not remove the selections the plugin adds.',
            },
          )
        }
        hidden = `${HIDDEN_CONTEXT_PREFIX}${counter++}`
        existing?.set(key, hidden)
        result.hidden.push(hidden)
        result.nodes.push(
          Object.freeze({
            kind: 'SelectionNode',
            selection: Object.freeze({
              kind: 'AliasNode',
              node: referenceNode(column, tableNode(relation.name)),
              alias: identifier(hidden),
            }),
          }) as SelectionNode,
        )
      }
      keys.push(hidden)
    }
    result.context.set(name, keys)
  }
  if (result === undefined) return undefined
  return { nodes: Object.freeze(result.nodes), context: result.context, hidden: Object.freeze(result.hidden) }
}
