import type { OperationNode } from 'kysely'
import { CodecError, QueryRefusedError } from '../errors.js'
import type { ColumnInfo, IndexInfo, TableInfo } from '../schema/schema.js'
import { refuse, searchIndexRefusal } from './refusal.js'
import type { Relation, Resolved, Source } from './scope.js'

/** Operators whose meaning is "not equal": they need an exact (unique) index. */
export const NEGATED = new Set(['!=', '<>', 'not in'])

export function isValuesCall(
  node: OperationNode,
  info: ColumnInfo,
  resolve: (n: OperationNode) => Resolved | undefined,
): boolean {
  if (node.kind !== 'FunctionNode') return false
  const fn = node as unknown as { func: string; arguments: ReadonlyArray<OperationNode> }
  if (fn.func.toLowerCase() !== 'values' || fn.arguments.length !== 1) return false
  const ref = resolve(fn.arguments[0]!)
  return ref?.source.kind === 'column' && ref.source.info === info
}

export function pickIndex(info: ColumnInfo, op: string): IndexInfo {
  // The first unique index, else the first index (a search index).
  let search: IndexInfo | undefined
  for (const spec of info.spec.indexes) {
    const index = info.table.indexColumn(spec.name)!
    if (index.spec.kind === 'unique') return index
    search ??= index
  }
  if (search === undefined) {
    throw refuse(
      info,
      op,
      'the column has no blind index, so it cannot be searched',
      `Declare one (e.g. index: { name: '${info.physical}_bidx' }), add its column with addEncryptedColumns, and backfill it.`,
    )
  }
  if (NEGATED.has(op)) throw searchIndexRefusal(search, 'negated', op)
  return search
}

/**
 * Refuses a value the column's codec cannot encode, with the codec's own reason when it gives one
 * (a JSON value nested too deep, a NaN: codec messages name the kind, never the value).
 *
 * @throws CodecError `CODEC_INVALID_VALUE`, with the logical table and column
 */
export function checkCodec(info: ColumnInfo, value: unknown): void {
  if (info.spec.codec.is(value)) return
  let reason = ''
  try {
    info.spec.codec.encode(value as never).fill(0)
  } catch (error) {
    if (error instanceof CodecError) reason = ` ${error.message}`
  }
  throw new CodecError(
    'CODEC_INVALID_VALUE',
    `Encrypted column ${info.table.physical}.${info.physical} holds ${info.spec.codec.kind} values; got a ${value === null ? 'null' : typeof value}.${reason}`,
    { table: info.table.logical, column: info.logical },
  )
}

/** The name under which a relation exposes a source (base table: physical; derived: its output name). */
export function exposedName(relation: Relation, source: Source): string | undefined {
  if (relation.table !== undefined)
    return source.kind === 'column' ? source.info.physical : source.info.physical
  for (const [name, s] of relation.derived ?? [])
    if (s.kind === source.kind && s.info === source.info) return name
  return undefined
}

/** Adds every encrypted and index column of `relation` (`q.*`, `*`), each recorded as coming from it. */
export function addAll(
  outputs: Map<string, Source>,
  relation: Relation,
  origins: Map<string, Relation | null>,
): void {
  const add = (name: string, source: Source) => {
    outputs.set(name, source)
    origins.set(name, relation)
  }
  if (relation.table !== undefined) {
    for (const info of relation.table.columns.values()) add(info.physical, { kind: 'column', info })
    for (const info of relation.table.indexColumns.values()) add(info.physical, { kind: 'index', info })
  }
  for (const [name, source] of relation.derived ?? []) add(name, source)
}

/**
 * The annotated column named exactly `name`; a name that matches one, or a context column, only
 * when case is ignored (as MySQL matches column names) is refused rather than taken for a plain
 * column.
 */
export function exact(table: TableInfo, name: string): ColumnInfo | undefined {
  const info = table.column(name)
  if (info !== undefined || table.indexColumn(name) !== undefined) return info
  // A context column spelt in another case (`TENANT_ID`): MySQL writes the context column, which
  // the checks of context writes, matching names exactly, would not see.
  const lower = name.toLowerCase()
  const context = table.context.find((c) => c !== name && c.toLowerCase() === lower)
  if (context !== undefined) {
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${name}" differs only in case from context column ${table.physical}.${context}, to which the row's ciphertexts are bound.`,
      { table: table.logical, hint: `Spell it exactly "${context}".` },
    )
  }
  const near = table.columnIgnoringCase(name)
  if (near !== undefined) {
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${name}" differs only in case from encrypted column ${table.physical}.${near.physical}.`,
      {
        table: near.table.logical,
        column: near.logical,
        hint: `Spell it exactly "${near.physical}".`,
      },
    )
  }
  return undefined
}

/** The first output that passes an annotated column's plaintext on, if any. */
export function firstColumn(
  outputs: ReadonlyMap<string, Source>,
): Extract<Source, { kind: 'column' }> | undefined {
  for (const source of outputs.values()) if (source.kind === 'column') return source
  return undefined
}

/** The source a column name of a table stands for: its annotated column, or its blind index. */
export function sourceIn(info: ColumnInfo | undefined, index: IndexInfo | undefined): Source | undefined {
  if (info !== undefined) return { kind: 'column', info }
  if (index !== undefined) return { kind: 'index', info: index }
  return undefined
}

/**
 * A written column name holding `.`: Kysely writes `{ 'users.email': v }` as one quoted column
 * name (`"users.email"`), which the plugin cannot take for the encrypted `email`, so `v` would
 * reach the database unencrypted. The schema refuses such names for encrypted columns.
 *
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refuseDottedName(table: TableInfo, name: string): void {
  if (!name.includes('.')) return
  const first = table.columns.values().next().value as ColumnInfo
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${name}" is written as one column name holding "." (Kysely does not read a key of values() or set() as table.column) in a statement that writes encrypted table ${table.physical}.`,
    {
      table: table.logical,
      column: first.logical,
      hint: "Name the column alone ({ email: v }), or use set('u.email', v) for a qualified target.",
    },
  )
}
