import type { RootOperationNode } from 'kysely'
import { type DeferredValue, isDeferred } from './deferred-value.js'
import type { PostFilter, QueryPlan } from './plan.js'

/** A rewritten tree and its plan, as the analyzer gives them. */
export type Analysis = { node: RootOperationNode; plan: QueryPlan }

/**
 * The two analyses are the same rewrite and plan: the same trees, deferred values alike (kind,
 * column, index, key name, context and plaintext), the same plan.
 */
export function sameAnalysis(a: Analysis, b: Analysis): boolean {
  const pairs = new Map<DeferredValue, DeferredValue>()
  if (!sameTree(a.node, b.node, pairs)) return false
  const pa = a.plan
  const pb = b.plan
  if (
    pa.deferred !== pb.deferred ||
    pa.needsCatalog !== pb.needsCatalog ||
    pa.deferredValues.size !== pb.deferredValues.size ||
    pa.postFilters.length !== pb.postFilters.length ||
    pa.outputs.length !== pb.outputs.length ||
    !pa.outputs.every((o, i) => {
      const p = pb.outputs[i]
      return (
        p !== undefined && o.name === p.name && o.column === p.column && sameStrings(o.context, p.context)
      )
    }) ||
    !sameStrings(pa.hiddenContext, pb.hiddenContext) ||
    !sameUnlisted(pa.unlisted, pb.unlisted) ||
    !sameSet(pa.indexComparisons, pb.indexComparisons)
  )
    return false
  for (const v of pa.deferredValues) {
    const w = pairs.get(v)
    if (w === undefined || !pb.deferredValues.has(w)) return false
  }
  return pa.postFilters.every((f, i) => {
    const g = pb.postFilters[i] as PostFilter
    return (
      f.hidden === g.hidden &&
      f.column === g.column &&
      f.index === g.index &&
      f.keep === g.keep &&
      f.probes.length === g.probes.length &&
      f.probes.every((p, j) => pairs.get(p) === g.probes[j])
    )
  })
}

function sameUnlisted(a: QueryPlan['unlisted'], b: QueryPlan['unlisted']): boolean {
  if (a === undefined || b === undefined) return a === b
  return (
    a.length === b.length &&
    a.every((u, i) => {
      const v = b[i] as (typeof b)[number]
      return (
        u.name === v.name &&
        u.near === v.near &&
        u.tables.length === v.tables.length &&
        u.tables.every((t, j) => t.schema === v.tables[j]?.schema && t.name === v.tables[j]?.name)
      )
    })
  )
}

function sameStrings(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false
  for (const x of a) if (!b.has(x)) return false
  return true
}

/**
 * Structural equality of query trees (nodes, arrays, and the values they hold); deferred values
 * pair up (recorded in `pairs`) when alike; any other object (a column or index info) must be the
 * same object.
 */
function sameTree(a: unknown, b: unknown, pairs: Map<DeferredValue, DeferredValue>): boolean {
  if (Object.is(a, b)) return true
  if (isDeferred(a) || isDeferred(b)) {
    if (!(isDeferred(a) && isDeferred(b))) return false
    const known = pairs.get(a)
    if (known !== undefined) return known === b
    const alike =
      a.kind === b.kind &&
      a.column === b.column &&
      a.index === b.index &&
      a.keyName === b.keyName &&
      sameTree(a.context, b.context, pairs) &&
      sameTree(a.reveal(), b.reveal(), pairs)
    if (alike) pairs.set(a, b)
    return alike
  }
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && Buffer.compare(a, b) === 0
  }
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime()
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (
    !Array.isArray(a) &&
    (typeof (a as { kind?: unknown }).kind !== 'string' ||
      (a as { kind?: unknown }).kind !== (b as { kind?: unknown }).kind)
  )
    return false
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false
  // A property holding undefined is no property (Kysely's compiler reads both alike; one plugin's
  // transformer writes such keys where the query builder leaves them out).
  const ka = definedKeys(a)
  const kb = definedKeys(b)
  if (ka.length !== kb.length) return false
  for (let i = 0; i < ka.length; i++) {
    const k = ka[i] as string
    if (k !== kb[i]) return false
    if (!sameTree((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], pairs)) return false
  }
  return true
}

function definedKeys(o: object): string[] {
  return Object.keys(o).filter((k) => (o as Record<string, unknown>)[k] !== undefined)
}
