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

export function isNode(v: unknown): v is OperationNode {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { kind?: unknown }).kind === 'string' &&
    !isDeferred(v)
  )
}
