import type { OperationNode, RawNode, ReferenceNode, SelectionNode, SelectQueryNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { AnalysisContext, Origin, PendingFilter } from './analysis-context.js'
import { exposedName } from './column-rules.js'
import { selectedFrom } from './hidden-selections.js'
import { columnName, identifier, mayCombineRows, referenceNode, tableNode } from './nodes.js'
import { HIDDEN_PREFIX } from './plan.js'
import { type RefusedShape, refuse, searchIndexRefusal } from './refusal.js'
import { isRowLock } from './row-lock.js'
import type { Source } from './scope.js'
import { identifierName, tableName } from './table-names.js'

/**
 * The check of a root select's rows after decryption, for its blind-index conditions: a search
 * index has false positives by design, and a unique index copied from another row would match
 * it. The rows are checked through hidden selections of the ciphertexts the conditions name.
 */

/**
 * The index conditions whose rows can be checked after decryption. A search (truncated) index
 * needs it: a query shape that combines or counts rows before the check is refused. A unique
 * index is checked too (a row whose index was copied from another row is dropped), where the
 * shape allows; elsewhere the unique index is trusted.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` for a search index in a shape that cannot be checked
 */
export function postFilterable(
  node: SelectQueryNode,
  pending: readonly PendingFilter[],
): readonly PendingFilter[] {
  const search = pending.find((p) => p.index.spec.kind === 'search')
  let blocker: RefusedShape | undefined
  if (node.distinctOn) blocker = 'distinct on'
  else if (node.groupBy || node.having) blocker = 'group by'
  else if (node.setOperations) blocker = 'a set operation'
  else if (node.frontModifiers?.some((m) => (m as unknown as { modifier?: string }).modifier === 'Distinct'))
    blocker = 'distinct'
  else if (
    (node.selections !== undefined && mayCombineRows(node.selections)) ||
    (node.orderBy !== undefined && mayCombineRows([node.orderBy]))
  )
    blocker = 'an aggregate, a window or an unknown function'
  // Dropping a row after LIMIT returns fewer rows: wrong for false positives, which are
  // expected; right for a unique index, where a mismatch means a tampered index.
  if (blocker === undefined && search !== undefined && (node.limit || node.offset || node.fetch || node.top))
    blocker = 'limit/offset'
  // A row lock takes the false positives with the matches: SKIP LOCKED and NOWAIT then make a
  // concurrent search for one of those rows skip it, or fail. (A plain FOR UPDATE only waits.)
  if (blocker === undefined && search !== undefined && skipsLocked(node.endModifiers))
    blocker = 'skip locked/nowait'
  // modifyEnd(sql`limit 1`), modifyFront(sql`distinct`): SQL the plugin cannot read.
  if (
    blocker === undefined &&
    search !== undefined &&
    (hasRawModifier(node.frontModifiers) || hasRawModifier(node.endModifiers))
  )
    blocker = 'raw SQL modifiers'
  if (blocker === undefined) return pending
  if (search !== undefined) throw searchIndexRefusal(search.index, blocker)
  return []
}

/**
 * True when a modifier list holds raw SQL (Kysely's `modifyFront` / `modifyEnd`) other than a
 * row lock: `modifyEnd(sql\`for update\`)` combines no row and limits none, as `.forUpdate()`.
 */
function hasRawModifier(modifiers: ReadonlyArray<OperationNode> | undefined): boolean {
  return (
    modifiers?.some((m) => {
      const raw = (m as unknown as { rawModifier?: RawNode }).rawModifier
      return raw !== undefined && !isRowLock(raw)
    }) ?? false
  )
}

/** `.skipLocked()`, `.noWait()`, or a raw row lock ending in `skip locked` or `nowait`. */
function skipsLocked(modifiers: ReadonlyArray<OperationNode> | undefined): boolean {
  return (
    modifiers?.some((m) => {
      const { modifier, rawModifier } = m as unknown as { modifier?: string; rawModifier?: RawNode }
      if (modifier === 'SkipLocked' || modifier === 'NoWait') return true
      return (
        rawModifier !== undefined && /\b(?:nowait|skip\s+locked)\s*$/i.test(rawModifier.sqlFragments.join(''))
      )
    }) ?? false
  )
}

/**
 * Finds or adds the hidden selections carrying the ciphertexts of index conditions, and records
 * a post filter for each condition.
 *
 * The plugin's pass decides which output each check reads; the wrapper's `verify` pass (the final
 * tree, with the catalog where a `*` needed it) must read the same one, or refuse: a check is
 * never skipped because the two passes disagree.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` for a derived table that does not pass the column on,
 *   and in `verify` mode for a unique-index condition that lost its hidden selection;
 *   `PLAINTEXT_SEARCH` in `verify` mode when a search condition lost its hidden selection
 */
export function hiddenSelections(
  a: AnalysisContext,
  selections: ReadonlyArray<SelectionNode>,
  pending: readonly PendingFilter[],
  outputs: Map<string, Source>,
  origins: Map<string, Origin>,
): ReadonlyArray<SelectionNode> {
  // Built only when a condition needs a hidden selection: a lookup that selects the column it
  // searches (the usual shape) checks that output and adds nothing.
  let known: HiddenAliases | undefined
  let next: SelectionNode[] | undefined
  for (const p of pending) {
    const unique = p.index.spec.kind === 'unique'
    const exposed = exposedName(p.relation, { kind: 'column', info: p.column })
    // The verify pass reads the hidden selection the plugin's pass added, where there is one,
    // before an output of the column's name: the plugin's pass adds one where it could not tell
    // which relation's column that output is (see shownColumn), and the hidden key must be read
    // to be removed from the rows. The plugin's pass reads one it added for an earlier condition
    // on the same column (`known` then holds its own additions only): one hidden column each.
    if (exposed !== undefined && (a.mode === 'verify' || known !== undefined)) {
      known ??= hiddenAliases(selections, true)
      const hidden = known.existing.get(hiddenKey(p, exposed))
      if (hidden !== undefined) {
        a.addPostFilter(Object.freeze({ hidden, column: p.column, index: p.index, probes: p.probes }))
        continue
      }
    }
    // The column is selected already, from the same relation: check that output, and keep it.
    const shown = unique ? shownColumn(a, outputs, origins, p) : undefined
    if (shown !== undefined) {
      a.addPostFilter(
        Object.freeze({ hidden: shown, column: p.column, index: p.index, probes: p.probes, keep: true }),
      )
      continue
    }
    // A derived table that does not pass the column on: its unique index is trusted. (In the
    // verify pass too: a `*` the catalog settles only removes a derived table's outputs, and one
    // the plugin's pass still saw, and read through a hidden column, is then a name the derived
    // table holds twice, which the database rejects: ambiguous in PostgreSQL, a duplicate in MySQL.)
    if (exposed === undefined && unique) continue
    if (exposed === undefined)
      throw refuse(
        p.column,
        'search index',
        `the derived table ${p.relation.name} does not select ${p.column.physical}`,
      )
    if (a.mode === 'verify') throw lostCheck(p)
    known ??= hiddenAliases(selections, false)
    const hidden = `${HIDDEN_PREFIX}${known.counter++}`
    known.existing.set(hiddenKey(p, exposed), hidden)
    const ref = referenceNode(exposed, tableNode(p.relation.name))
    next ??= [...selections]
    next.push(
      Object.freeze({
        kind: 'SelectionNode',
        selection: Object.freeze({ kind: 'AliasNode', node: ref, alias: identifier(hidden) }),
      }) as SelectionNode,
    )
    outputs.set(hidden, { kind: 'column', info: p.column })
    origins.set(hidden, p.relation) // its row context (if any) is read from the same relation
    a.addPostFilter(Object.freeze({ hidden, column: p.column, index: p.index, probes: p.probes }))
  }
  return next === undefined ? selections : Object.freeze(next)
}

/** How {@link hiddenAliases} keys a hidden selection: its relation and column. */
function hiddenKey(p: PendingFilter, exposed: string): string {
  return `${p.relation.name}\0${exposed}`
}

/**
 * The output a unique-index condition's check reads, when the query selects the column itself
 * from the same relation. Not one a later relation of a `*` may shadow once the catalog is read
 * (see {@link AnalysisContext.shadowable}): the verify pass, with the catalog, could find it to be
 * that relation's plaintext column, and no column left to check (helper-119: `selectAll()` over
 * users joined to a plain table with its own `email`).
 */
function shownColumn(
  a: AnalysisContext,
  outputs: ReadonlyMap<string, Source>,
  origins: ReadonlyMap<string, Origin>,
  p: PendingFilter,
): string | undefined {
  const shown = selectedFrom(outputs, origins, p)
  return shown === undefined || a.shadowable(shown) ? undefined : shown
}

/**
 * The verify pass found no output and no hidden selection for an index condition's check: the
 * tree was rewritten elsewhere, or the two passes disagree. Its rows cannot be checked.
 */
function lostCheck(p: PendingFilter): QueryRefusedError {
  if (p.index.spec.kind === 'unique') {
    return refuse(
      p.column,
      'unique index',
      'the check of the rows it matches lost its hidden ciphertext column',
      'Build the query with encryption.plugin, and do not edit its select list after the plugin ran.',
    )
  }
  return new QueryRefusedError(
    'PLAINTEXT_SEARCH',
    'A search-index condition lost its hidden ciphertext column.',
    {
      table: p.column.table.logical,
      column: p.column.logical,
    },
  )
}

/** The hidden selections a select list has already (a tree transformed before), and the next number. */
interface HiddenAliases {
  readonly existing: Map<string, string>
  counter: number
}

function hiddenAliases(selections: ReadonlyArray<SelectionNode>, reuse: boolean): HiddenAliases {
  const found: HiddenAliases = { existing: new Map<string, string>(), counter: 0 }
  for (const s of selections) {
    const sel = s.selection
    if (sel.kind !== 'AliasNode') continue
    const name = identifierName(sel.alias)
    // Only names of the plugin's form (prefix and a number) take part; a user alias that merely
    // starts like one must not derail the numbering. Every one of them, whatever it selects, is
    // numbered around (two outputs of one name: the driver keeps only the last).
    const number = name.startsWith(HIDDEN_PREFIX) ? name.slice(HIDDEN_PREFIX.length) : ''
    if (!/^\d+$/.test(number)) continue
    found.counter = Math.max(found.counter, Number(number) + 1)
    // Reused only in a tree this plugin rewrote (the verify pass): in a query as written, the
    // selection is the user's, which the rows must keep.
    if (!reuse || sel.node.kind !== 'ReferenceNode') continue
    const ref = sel.node as ReferenceNode
    const qualifier = ref.table === undefined ? '' : tableName(ref.table).name
    found.existing.set(`${qualifier}\0${columnName(ref)}`, name)
  }
  return found
}
