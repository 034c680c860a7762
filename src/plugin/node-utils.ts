import type { OperationNode } from 'kysely'
import { isDeferred } from './deferred-value.js'

/**
 * Applies `fn` to every child node; returns `node` itself when nothing changed. Allocates only
 * on the path to a changed child: a list is copied from its first changed element on, and the
 * node cloned once, so an unchanged subtree costs no array, entry pair or closure.
 */
export function mapChildren(node: OperationNode, fn: (child: OperationNode) => OperationNode): OperationNode {
  const record = node as unknown as Record<string, unknown>
  let patch: Record<string, unknown> | undefined
  // for…in, not Object.keys or Object.entries: no array per node (nodes are plain frozen object
  // literals, so it lists exactly their own keys, in the same order).
  for (const key in record) {
    const value = record[key]
    if (Array.isArray(value)) {
      let next: unknown[] | undefined
      for (let i = 0; i < value.length; i++) {
        const v: unknown = value[i]
        if (!isNode(v)) {
          next?.push(v)
          continue
        }
        const r = fn(v)
        if (next === undefined && r !== v) next = value.slice(0, i)
        next?.push(r)
      }
      if (next !== undefined) {
        patch ??= {}
        patch[key] = Object.freeze(next)
      }
    } else if (isNode(value)) {
      const r = fn(value)
      if (r !== value) {
        patch ??= {}
        patch[key] = r
      }
    }
  }
  return patch === undefined ? node : Object.freeze({ ...node, ...patch })
}

/**
 * Calls `fn` on every child node of `node`, in the order {@link mapChildren} visits them, until
 * `fn` returns `true`; returns whether it did. For walks that only read the tree: no copies.
 * for…in, not Object.keys: it reads V8's enum cache of the node's shape without copying it into
 * a new array per node (a whole-tree walk of a lookup, 28 nodes: 1.12 -> 0.70 µs, and ~1 KB of
 * garbage less per lookup, docs/benchmarks.md).
 */
export function someChild<A>(
  node: OperationNode,
  fn: (child: OperationNode, arg: A) => boolean,
  /** Passed on to `fn`: a recursive walk with state passes itself and needs no closure per node. */
  arg?: A,
): boolean {
  const record = node as unknown as Record<string, unknown>
  for (const key in record) {
    const value = record[key]
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const v: unknown = value[i]
        if (isNode(v) && fn(v, arg as A)) return true
      }
    } else if (isNode(value) && fn(value, arg as A)) return true
  }
  return false
}

export function isNode(v: unknown): v is OperationNode {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { kind?: unknown }).kind === 'string' &&
    !isDeferred(v)
  )
}

/** Statements that read or write rows: nested ones get a scope of their own. */
export const ROW_STATEMENTS: ReadonlySet<string> = new Set([
  'SelectQueryNode',
  'InsertQueryNode',
  'UpdateQueryNode',
  'DeleteQueryNode',
  'MergeQueryNode',
])
