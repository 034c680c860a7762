import type { OperationNode } from 'kysely'

/**
 * The node kinds a cached query shape may hold (shape-cache.ts): a select of one table's columns
 * filtered by comparisons, ordered and limited. Everything else (joins, subqueries, raw SQL,
 * functions, writes) is analyzed in full every time. The analysis of these kinds reads a value
 * only for its kind (see {@link valueTag}) and for the codec check of a searched value, which a
 * cached shape runs again: that is what makes reusing it sound, and why the list is short.
 */
const CACHEABLE_KIND_LIST = [
  'SelectQueryNode',
  'FromNode',
  'TableNode',
  'SchemableIdentifierNode',
  'IdentifierNode',
  'AliasNode',
  'SelectionNode',
  'SelectAllNode',
  'ReferenceNode',
  'ColumnNode',
  'WhereNode',
  'BinaryOperationNode',
  'UnaryOperationNode',
  'OperatorNode',
  'AndNode',
  'OrNode',
  'ParensNode',
  'ValueNode',
  'ValueListNode',
  'PrimitiveValueListNode',
  'OrderByNode',
  'OrderByItemNode',
  'LimitNode',
  'OffsetNode',
]

/** Each cacheable kind's code in a key: one character (the key is hashed on every query). */
const KIND_CODES: ReadonlyMap<string, string> = new Map(
  CACHEABLE_KIND_LIST.map((kind, i) => [kind, String.fromCharCode(0x41 + i)]),
)

/** The properties of those kinds, by code; any other property is written out in full. */
const PROPERTY_CODES: ReadonlyMap<string, string> = new Map(
  [
    'from',
    'froms',
    'table',
    'identifier',
    'schema',
    'name',
    'node',
    'alias',
    'selections',
    'selection',
    'column',
    'where',
    'leftOperand',
    'operator',
    'rightOperand',
    'operand',
    'left',
    'right',
    'orderBy',
    'items',
    'direction',
    'limit',
    'offset',
    'values',
  ].map((name, i) => [name, String.fromCharCode(0x61 + i)]),
)

/** Past this many characters a shape's key is not worth keeping: the query is analyzed in full. */
const MAX_KEY_LENGTH = 1024

/**
 * Past this many values (a long `in` list), neither: a template grows with its values, and a list
 * of another length is another shape.
 */
const MAX_VALUES = 32

/**
 * A query tree without its values: `key` names everything the analysis of a cacheable tree reads
 * (every node kind, identifier, operator and flag, and each value's {@link valueTag}); `values`
 * are the values in the order the walk met them (a `ValueNode`'s value, each element of a
 * `PrimitiveValueListNode`).
 */
export interface QueryShape {
  readonly key: string
  readonly values: readonly unknown[]
}

/**
 * The shape of `root`, or undefined when it holds a node kind outside {@link KIND_CODES}, a
 * value without a {@link valueTag}, or is too large (more than {@link MAX_VALUES} values). One walk over the tree, no analysis.
 */
export function queryShape(root: OperationNode): QueryShape | undefined {
  if (root.kind !== 'SelectQueryNode') return undefined
  const walk: Walk = { key: '', values: [] }
  return node(root, walk) && walk.key.length <= MAX_KEY_LENGTH ? walk : undefined
}

interface Walk {
  key: string
  values: unknown[]
}

function node(n: OperationNode, walk: Walk): boolean {
  const kind = n.kind
  const code = KIND_CODES.get(kind)
  if (code === undefined) return false
  // A nested select is a subquery: it has scopes of its own.
  if (kind === 'SelectQueryNode' && walk.key.length !== 0) return false
  if (kind === 'ValueNode') {
    const value = (n as unknown as { value: unknown }).value
    const tag = valueTag(value)
    if (tag === undefined) return false
    walk.key += `=${tag}${(n as { immediate?: boolean }).immediate === true ? '!' : ''};`
    if (walk.values.push(value) > MAX_VALUES) return false
    return onlyKeys(n, VALUE_NODE_KEYS)
  }
  if (kind === 'PrimitiveValueListNode') {
    const values = (n as unknown as { values: readonly unknown[] }).values
    if (walk.values.length + values.length > MAX_VALUES) return false
    walk.key += `*${values.length}[`
    for (const value of values) {
      const tag = valueTag(value)
      if (tag === undefined) return false
      walk.key += tag
      walk.values.push(value)
    }
    walk.key += ']'
    return onlyKeys(n, LIST_NODE_KEYS)
  }
  walk.key += `${code}{`
  const record = n as unknown as Record<string, unknown>
  for (const key in record) {
    if (key === 'kind') continue
    const value = record[key]
    if (value === undefined) continue
    walk.key += PROPERTY_CODES.get(key) ?? `${key.length}'${key}`
    if (!part(value, walk)) return false
  }
  walk.key += '}'
  return walk.key.length <= MAX_KEY_LENGTH
}

function part(value: unknown, walk: Walk): boolean {
  switch (typeof value) {
    case 'string':
      // Length first: no identifier can end early and read as the next part.
      walk.key += `${value.length}"${value}`
      return true
    case 'number':
      walk.key += `#${value};`
      return true
    case 'boolean':
      walk.key += value ? 'T;' : 'F;'
      return true
    case 'object': {
      if (value === null) return false
      if (Array.isArray(value)) {
        walk.key += `[${value.length}`
        for (const item of value) if (!part(item, walk)) return false
        walk.key += ']'
        return true
      }
      const kind = (value as { kind?: unknown }).kind
      return typeof kind === 'string' && node(value as OperationNode, walk)
    }
    default:
      return false
  }
}

const VALUE_NODE_KEYS: ReadonlySet<string> = new Set(['kind', 'value', 'immediate'])
const LIST_NODE_KEYS: ReadonlySet<string> = new Set(['kind', 'values'])

/** A node with a property the walk would not read (a later Kysely's) is not cached. */
function onlyKeys(n: OperationNode, keys: ReadonlySet<string>): boolean {
  for (const key in n) if (!keys.has(key)) return false
  return true
}

/**
 * What the analysis of a cacheable tree may tell apart in a value: null, undefined, each boolean,
 * and the type of anything else it takes (a string, a finite number, a bigint, bytes, a valid
 * date). `undefined` for what it would refuse or treat as an expression (NaN, symbols, objects,
 * arrays, deferred values): such a tree is analyzed in full.
 */
export function valueTag(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return 's'
    case 'number':
      return Number.isFinite(value) ? 'd' : undefined
    case 'bigint':
      return 'i'
    case 'boolean':
      return value ? 'T' : 'F'
    case 'undefined':
      return 'u'
    case 'object':
      if (value === null) return 'n'
      if (value instanceof Uint8Array) return 'y'
      if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : 't'
      return undefined
    default:
      return undefined
  }
}

/** True for a value whose {@link valueTag} already fixes it (null, undefined, true, false). */
export function fixedByTag(value: unknown): boolean {
  return value === null || value === undefined || typeof value === 'boolean'
}
