import type { OperationNode, RootOperationNode } from 'kysely'
import { LRUCache } from 'lru-cache'
import type { ColumnInfo, IndexInfo } from '../schema/schema.js'
import { checkCodec } from './column-rules.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import type { PostFilter, QueryPlan } from './plan.js'
import { type Analysis, sameAnalysis } from './shape-compare.js'
import { fixedByTag, type QueryShape, queryShape } from './shape-key.js'
import { otherValues } from './shape-values.js'

/**
 * Shapes remembered per plugin. Each entry holds one rewritten tree with its values taken out
 * (a few KB: at most 32 values and a 1 KiB key, shape-key.ts): an application has a bounded set
 * of query shapes, and one outside the cache is analyzed in full, as before.
 * @default 500
 */
const MAX_SHAPES = 500

/** A path from a tree's root to a value: property names and array indexes. */
type Path = readonly (string | number)[]

/** Where a value sits in the rewritten tree, and where it comes from in the query's values. */
interface Slot {
  readonly path: Path
  /** The index in {@link QueryShape.values}. */
  readonly from: number
  /** The deferred value that takes it, when the rewrite took it out of the query (a search). */
  readonly group?: number
}

/** A deferred value of the rewritten tree: made again on each use, with that query's value. */
interface Group {
  readonly from: number
  readonly column: ColumnInfo
  readonly index: IndexInfo | undefined
}

/** A shape's rewrite, with its values and deferred values taken out. Holds no plaintext. */
interface Template {
  /** The rewritten tree, each slot holding {@link HOLE}. */
  readonly node: RootOperationNode
  readonly trie: Trie
  readonly groups: readonly Group[]
  /** The plan, its deferred values taken out: filled per query by {@link planFor}. */
  readonly plan: QueryPlan
  /** Per post-filter of the plan, the groups of its probes. */
  readonly probes: readonly (readonly number[])[]
}

/** Nested path steps, so a fill copies each node on the way to its slots once. */
interface Trie {
  readonly steps: (string | number)[]
  readonly next: (Trie | Slot)[]
}

const HOLE = Symbol('kfe.shape-cache.hole')
/** A shape whose rewrite cannot be reused (see {@link learn}): analyzed in full every time. */
const NEVER = 'never'

/**
 * Reuses the plugin's analysis of a query shape it has seen: a select of one table, filtered by
 * comparisons (see shape-key.ts). The first query of a shape is analyzed in full and noted; the
 * second is analyzed in full, and its rewrite, with the query's values taken out, is checked
 * against the full analysis of the same shape with other values (made up: see {@link learn}) and
 * kept only if the two agree exactly. A later query of the shape gets that rewrite with its own
 * values put back: its searched values are checked by their column's codec and taken into new
 * deferred values, as the analysis does.
 *
 * Why: the analysis of a point lookup runs a few thousand lines of the plugin's code, which a
 * database round trip pushes out of the CPU's caches between two queries; a reused shape runs a
 * walk and a copy of the path to each value (docs/benchmarks.md).
 */
export class ShapeCache {
  readonly #shapes = new LRUCache<string, Template | typeof NEVER | number>({ max: MAX_SHAPES })

  /**
   * The analysis of `root`: reused when its shape is known, else `analyze(root)` (and the shape
   * learnt when it can be).
   * @throws what `analyze` throws; CodecError `CODEC_INVALID_VALUE` for a searched value of the
   *   wrong type, as the analysis does.
   */
  analyze(root: RootOperationNode, analyze: (root: RootOperationNode) => Analysis): Analysis {
    const shape = queryShape(root)
    if (shape === undefined) return analyze(root)
    const known = this.#shapes.get(shape.key)
    if (known === NEVER) return analyze(root)
    if (typeof known === 'object')
      return verifying ? verified(known, shape, root, analyze) : reuse(known, shape)
    const analysis = analyze(root)
    // The first query of a shape is only noted: a shape is learnt (two analyses) when it comes
    // again, so an application with more shapes than the cache holds pays a walk, not a learning,
    // per query.
    if (known === undefined) {
      this.#shapes.set(shape.key, 0)
      return analysis
    }
    const learnt = learn(root, shape, analysis, analyze)
    // A query that could not tell (equal values, other values refused) leaves the next one to
    // try; after a few, the shape is analyzed in full for good.
    this.#shapes.set(shape.key, learnt ?? (known + 1 >= MAX_TRIES ? NEVER : known + 1))
    return analysis
  }
}

/** Queries of a shape that may fail to tell whether its rewrite can be reused (see {@link learn}). */
const MAX_TRIES = 3

let verifying = false

/**
 * Tests: every reused rewrite is also analyzed in full and compared, and a difference throws.
 * @internal Not exported by the package.
 */
export function verifyShapeCache(on: boolean): void {
  verifying = on
}

/** {@link reuse}, and the full analysis, which must agree (tests: {@link verifyShapeCache}). */
function verified(
  template: Template,
  shape: QueryShape,
  root: RootOperationNode,
  analyze: (root: RootOperationNode) => Analysis,
): Analysis {
  const run = (f: () => Analysis): { analysis?: Analysis; error?: unknown } => {
    try {
      return { analysis: f() }
    } catch (error) {
      return { error }
    }
  }
  const full = run(() => analyze(root))
  const reused = run(() => reuse(template, shape))
  if (full.analysis !== undefined && reused.analysis !== undefined) {
    if (!sameAnalysis(full.analysis, reused.analysis))
      throw new Error('shape cache: a reused rewrite differs')
    return reused.analysis
  }
  const code = (e: unknown) => (e as { code?: unknown } | undefined)?.code
  if (full.analysis === undefined && reused.analysis === undefined && code(full.error) === code(reused.error))
    throw full.error
  throw new Error('shape cache: a reused rewrite is refused where the analysis is not, or the other way')
}

/** The rewrite of a known shape with the query's values. */
function reuse(template: Template, shape: QueryShape): Analysis {
  const values = shape.values
  const deferred = template.groups.map((g) => {
    const value = values[g.from]
    checkCodec(g.column, value)
    return new DeferredValue('probe', g.column, value, g.index)
  })
  const node = fill(template.node, template.trie, (slot) =>
    slot.group === undefined ? values[slot.from] : deferred[slot.group],
  )
  return { node: node as RootOperationNode, plan: planFor(template, deferred) }
}

function planFor(template: Template, deferred: readonly DeferredValue[]): QueryPlan {
  const plan = template.plan
  if (deferred.length === 0) return plan
  const postFilters: PostFilter[] = plan.postFilters.map((f, i) => ({
    ...f,
    probes: (template.probes[i] as readonly number[]).map((g) => deferred[g] as DeferredValue),
  }))
  return Object.freeze({ ...plan, postFilters, deferredValues: new Set(deferred) })
}

/**
 * A template of `analysis` (the full analysis of `root`), or {@link NEVER} when this shape's
 * rewrite cannot be reused, or undefined when this query cannot tell (try the next one).
 *
 * Each value of the rewrite is traced to the query's value it is (the same value; no two of the
 * query's values may be the same), or to the one its deferred value took; any other value is the
 * plugin's own and stays. Then the shape is analyzed in full once more with every traced value
 * replaced by another of its kind, and the template, filled with those, must give exactly that
 * analysis: a value of the plugin's that only happened to equal one of the query's, or an
 * analysis that reads more of a value than its kind, shows up as a difference.
 */
function learn(
  root: RootOperationNode,
  shape: QueryShape,
  analysis: Analysis,
  analyze: (root: RootOperationNode) => Analysis,
): Template | typeof NEVER | undefined {
  const { plan } = analysis
  if (plan.needsCatalog === true) return NEVER
  const values = shape.values
  if (!distinct(values)) return undefined
  const template = trace(analysis, values)
  if (template === undefined) return NEVER
  const others = otherValues(values)
  if (others === undefined) return undefined
  let check: Analysis
  try {
    check = analyze(fill(root, trieOf(inputSlots(root)), (slot) => others[slot.from]) as RootOperationNode)
  } catch {
    // The other values were refused (a codec's length limit, say): this query cannot tell.
    return undefined
  }
  const reused = reuse(template, { key: shape.key, values: others })
  return sameAnalysis(check, reused) ? template : NEVER
}

/** The template of `analysis`, or undefined when a value of its rewrite cannot be traced. */
function trace(analysis: Analysis, values: readonly unknown[]): Template | undefined {
  const { node, plan } = analysis
  const slots: Slot[] = []
  const groups: Group[] = []
  const groupOf = new Map<DeferredValue, number>()
  let untraced = false
  visitValues(node, [], (value, path) => {
    if (isDeferred(value)) {
      let group = groupOf.get(value)
      if (group === undefined) {
        const from = indexOf(values, value.reveal())
        // Only a search's deferred value is made again, and only one made as the analysis makes it.
        if (
          from === undefined ||
          value.kind !== 'probe' ||
          value.context !== undefined ||
          value.column.table.keyScope !== undefined ||
          value.column.table.context.length !== 0
        ) {
          untraced = true
          return
        }
        group = groups.length
        groups.push({ from, column: value.column, index: value.index })
        groupOf.set(value, group)
      }
      slots.push({ path, from: (groups[group] as Group).from, group })
      return
    }
    if (fixedByTag(value)) return
    const from = indexOf(values, value)
    if (from !== undefined) slots.push({ path, from })
  })
  if (untraced) return undefined
  // Every deferred value of the plan is in the tree, and every probe is one of them.
  if (plan.deferredValues.size !== groups.length) return undefined
  for (const v of plan.deferredValues) if (!groupOf.has(v)) return undefined
  const probes: number[][] = []
  for (const f of plan.postFilters) {
    const list: number[] = []
    for (const p of f.probes) {
      const g = groupOf.get(p)
      if (g === undefined) return undefined
      list.push(g)
    }
    probes.push(list)
  }
  const trie = trieOf(slots)
  const template: Template = {
    node: fill(node, trie, () => HOLE) as RootOperationNode,
    trie,
    groups,
    plan:
      groups.length === 0
        ? plan
        : Object.freeze({
            ...plan,
            postFilters: plan.postFilters.map((f) => ({ ...f, probes: [] })),
            deferredValues: new Set<DeferredValue>(),
          }),
    probes,
  }
  return template
}

/** The index of `value` in `values` (`Object.is`), for a value that is not fixed by its tag. */
function indexOf(values: readonly unknown[], value: unknown): number | undefined {
  if (fixedByTag(value)) return undefined
  for (let i = 0; i < values.length; i++) if (Object.is(values[i], value)) return i
  return undefined
}

/** No two values that their tags do not fix are the same. */
function distinct(values: readonly unknown[]): boolean {
  const seen = new Set<unknown>()
  for (const v of values) {
    if (fixedByTag(v)) continue
    if (seen.has(v)) return false
    seen.add(v)
  }
  return true
}

/** Calls `visit` with every value of the tree (a ValueNode's value, a primitive list's element) and its path. */
function visitValues(node: unknown, path: Path, visit: (value: unknown, path: Path) => void): void {
  if (typeof node !== 'object' || node === null) return
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) visitValues(node[i], [...path, i], visit)
    return
  }
  const kind = (node as { kind?: unknown }).kind
  if (kind === 'ValueNode') {
    visit((node as { value: unknown }).value, [...path, 'value'])
    return
  }
  if (kind === 'PrimitiveValueListNode') {
    const values = (node as { values: readonly unknown[] }).values
    for (let i = 0; i < values.length; i++) visit(values[i], [...path, 'values', i])
    return
  }
  if (typeof kind !== 'string' || isDeferred(node)) return
  for (const key in node) visitValues((node as Record<string, unknown>)[key], [...path, key], visit)
}

/** The slots of the query's own values, in the order queryShape lists them. */
function inputSlots(root: OperationNode): Slot[] {
  const slots: Slot[] = []
  visitValues(root, [], (_, path) => slots.push({ path, from: slots.length }))
  return slots
}

function trieOf(slots: readonly Slot[]): Trie {
  const root: Trie = { steps: [], next: [] }
  for (const slot of slots) {
    let at = root
    const last = slot.path.length - 1
    for (let i = 0; i < last; i++) {
      const step = slot.path[i] as string | number
      const j = at.steps.indexOf(step)
      if (j === -1) {
        const sub: Trie = { steps: [], next: [] }
        at.steps.push(step)
        at.next.push(sub)
        at = sub
      } else at = at.next[j] as Trie
    }
    at.steps.push(slot.path[last] as string | number)
    at.next.push(slot)
  }
  return root
}

/** `node` with each slot of `trie` holding `valueAt(slot)`; the nodes on the way copied and frozen. */
function fill(node: unknown, trie: Trie, valueAt: (slot: Slot) => unknown): unknown {
  const copy = (Array.isArray(node) ? [...node] : { ...(node as object) }) as Record<string | number, unknown>
  const { steps, next } = trie
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i] as string | number
    const sub = next[i] as Trie | Slot
    copy[step] =
      'steps' in sub ? fill((node as Record<string | number, unknown>)[step], sub, valueAt) : valueAt(sub)
  }
  return Object.freeze(copy)
}
