import type { OperationNode } from 'kysely'
import { isDeferred } from './deferred-value.js'

/** Applies `fn` to every child node; returns `node` itself when nothing changed. */
export function mapChildren(node: OperationNode, fn: (child: OperationNode) => OperationNode): OperationNode {
  let patch: Record<string, unknown> | undefined
  for (const [key, value] of Object.entries(node)) {
    if (Array.isArray(value)) {
      let changed = false
      const next = value.map((v) => {
        if (!isNode(v)) return v
        const r = fn(v)
        if (r !== v) changed = true
        return r
      })
      if (changed) {
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
 * `fn` returns `true`; returns whether it did. For walks that only read the tree: no entry pairs,
 * mapped arrays or clones per node, as {@link mapChildren} makes (the row-combining check that
 * runs on every root select takes half the time this way, docs/benchmarks.md).
 */
export function someChild(node: OperationNode, fn: (child: OperationNode) => boolean): boolean {
  const record = node as unknown as Record<string, unknown>
  // Object.keys, not for…in: it reads V8's enum cache of the node's shape (frozen nodes keep theirs).
  const keys = Object.keys(record)
  for (let k = 0; k < keys.length; k++) {
    const value = record[keys[k] as string]
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const v: unknown = value[i]
        if (isNode(v) && fn(v)) return true
      }
    } else if (isNode(value) && fn(value)) return true
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
