import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, IndexInfo, TableInfo } from '../schema/schema.js'

/**
 * The relations of a query's scope (scope.ts) and what a name resolves to in one of them: the
 * lookup of a column in a relation and of an unqualified name among select-list aliases.
 */

/** Where a column of a relation comes from: an annotated column, a blind index column, or nothing we know. */
export type Source =
  | { readonly kind: 'column'; readonly info: ColumnInfo }
  | { readonly kind: 'index'; readonly info: IndexInfo }

/** A relation visible in a FROM clause: a table (annotated or not), a derived table or a CTE. */
export interface Relation {
  /** The name a query qualifies columns with: the alias, else the table name. */
  readonly name: string
  /** The annotated table, when the relation is a base table the schema knows. */
  readonly table: TableInfo | undefined
  /** For derived tables and CTEs: the annotated columns they pass through, by output name. */
  readonly derived: ReadonlyMap<string, Source> | undefined
  /** For a base table (annotated or not): its name, to look its columns up in the catalog. */
  readonly base?: { readonly schema: string | undefined; readonly name: string }
  /**
   * For derived tables and CTEs: every output name, in order (duplicates kept), when known; what
   * `*` over the relation returns.
   */
  readonly columns?: readonly string[] | undefined
  /** Reachable only by a qualified name (`excluded` of ON CONFLICT). */
  readonly qualifiedOnly?: boolean
}

/** A resolved reference to something we care about: which relation, and what it is. */
export interface Resolved {
  readonly relation: Relation
  readonly source: Source
}

/** An encrypted column a relation carries (a table's, or one a derived table passes on), if any. */
export function encryptedIn(relation: Relation): ColumnInfo | undefined {
  if (relation.table !== undefined) return relation.table.columns.values().next().value
  return relation.derived === undefined ? undefined : encryptedColumnOf(relation.derived)
}

/** The encrypted column the first output of a derived table or CTE passes on (itself or its index), if any. */
export function encryptedColumnOf(outputs: ReadonlyMap<string, Source>): ColumnInfo | undefined {
  const source = firstSource(outputs)
  if (source === undefined) return undefined
  return source.kind === 'column' ? source.info : source.info.column
}

/** The first output of a derived table or CTE that passes an encrypted column or index on, if any. */
export function firstSource(outputs: ReadonlyMap<string, Source>): Source | undefined {
  for (const source of outputs.values()) return source
  return undefined
}

/**
 * Refuses an unqualified name in WHERE, HAVING, GROUP BY, ORDER BY or DISTINCT ON that is a
 * select-list alias of an encrypted column, unless it names that very column anyway: the database
 * would sort, group or compare the ciphertext (ORDER BY and GROUP BY take output names), or
 * receive a plaintext it then rejects (WHERE).
 */
export function checkAlias(
  aliases: ReadonlyMap<string, Source>,
  column: string,
  found: Resolved | undefined,
): void {
  const alias = aliases.get(column) ?? aliasIgnoringCase(aliases, column)
  if (alias?.kind !== 'column') return
  if (found?.source.kind === 'column' && found.source.info === alias.info) return
  const info = alias.info
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${column}" is the select-list alias of encrypted column ${info.table.physical}.${info.physical}; it cannot be searched, sorted or grouped by that name.`,
    {
      table: info.table.logical,
      column: info.logical,
      hint: `Qualify the name: "${info.table.physical}.${info.physical}" for the encrypted column, "<table>.${column}" for a column of another table; or give the alias a name of its own.`,
    },
  )
}

/** An alias of an encrypted column whose name equals `column` only ignoring case (MySQL's rule). */
function aliasIgnoringCase(aliases: ReadonlyMap<string, Source>, column: string): Source | undefined {
  let folded: string | undefined
  for (const [name, source] of aliases) {
    if (source.kind !== 'column') continue
    folded ??= column.toLowerCase()
    if (name.toLowerCase() === folded) return source
  }
  return undefined
}

export function lookup(relation: Relation, column: string): Resolved | undefined {
  if (relation.table !== undefined) {
    const info = relation.table.column(column)
    if (info !== undefined) return { relation, source: { kind: 'column', info } }
    const index = relation.table.indexColumn(column)
    if (index !== undefined) return { relation, source: { kind: 'index', info: index } }
    const near = relation.table.columnIgnoringCase(column)
    if (near !== undefined) {
      // MySQL matches column names case-insensitively: `Email` would be the encrypted `email`.
      throw new QueryRefusedError(
        'AMBIGUOUS_COLUMN',
        `"${column}" differs only in case from encrypted column ${relation.table.physical}.${near.physical}.`,
        { table: near.table.logical, column: near.logical, hint: `Spell it exactly "${near.physical}".` },
      )
    }
    return undefined
  }
  const derived = relation.derived
  if (derived === undefined) return undefined
  const source = derived.get(column)
  if (source !== undefined) return { relation, source }
  // MySQL matches the column names of derived tables and CTEs ignoring case, as any column's.
  const folded = column.toLowerCase()
  for (const [name, near] of derived) {
    if (name.toLowerCase() !== folded) continue
    const info = near.kind === 'column' ? near.info : near.info.column
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${column}" differs only in case from "${name}" of ${relation.name}, which carries encrypted column ${info.table.physical}.${info.physical}.`,
      { table: info.table.logical, column: info.logical, hint: `Spell it exactly "${name}".` },
    )
  }
  return undefined
}
