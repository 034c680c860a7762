import type { OperationNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema, IndexInfo, TableInfo } from '../schema/schema.js'

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
  /** Reachable only by a qualified name (`excluded` of ON CONFLICT). */
  readonly qualifiedOnly?: boolean
}

/** A resolved reference to something we care about: which relation, and what it is. */
export interface Resolved {
  readonly relation: Relation
  readonly source: Source
}

/** Names in scope for one query level, with a link to the enclosing level (correlated subqueries). */
export class Scope {
  readonly relations: Relation[] = []
  /** CTEs of this level's WITH; made on the first one (most queries have none). */
  #ctes: Map<string, ReadonlyMap<string, Source>> | undefined
  /** Where CTE names not declared at this level are looked up next. */
  readonly #outerCtes: Scope | undefined

  /**
   * @param parent - the enclosing level whose relations this level sees (correlated references)
   * @param outerCtes - the level whose CTEs this level sees, when it is not `parent`: a derived
   *   table or a set-operation branch sees no sibling relation, yet every CTE of its query
   */
  constructor(
    readonly schema: EncryptedSchema,
    readonly parent: Scope | undefined,
    outerCtes: Scope | undefined = parent,
  ) {
    this.#outerCtes = outerCtes
  }

  /** Declares a CTE of this level's WITH: later CTEs, the query and its subqueries see it. */
  addCte(name: string, outputs: ReadonlyMap<string, Source>): void {
    this.#ctes ??= new Map()
    this.#ctes.set(name, outputs)
  }

  /** The outputs of the CTE `name` visible here: this level's first, then the enclosing levels'. */
  cte(name: string): ReadonlyMap<string, Source> | undefined {
    for (let s: Scope | undefined = this; s !== undefined; s = s.#outerCtes) {
      const found = s.#ctes?.get(name)
      if (found !== undefined) return found
    }
    return undefined
  }

  /** Adds a FROM/JOIN item: `TableNode`, `AliasNode(TableNode)`, or a derived table given its outputs. */
  addTable(node: OperationNode): Relation | undefined {
    let alias: string | undefined
    let target = node
    if (target.kind === 'AliasNode') {
      const a = target as unknown as { node: OperationNode; alias: OperationNode }
      alias = identifierName(a.alias)
      target = a.node
    }
    if (target.kind !== 'TableNode') return undefined
    const { schema, name } = tableName(target)
    const cte = schema === undefined ? this.cte(name) : undefined
    const relation: Relation =
      cte !== undefined
        ? { name: alias ?? name, table: undefined, derived: cte }
        : { name: alias ?? name, table: this.schema.table(name, schema), derived: undefined }
    this.relations.push(relation)
    return relation
  }

  addDerived(name: string, outputs: ReadonlyMap<string, Source>): void {
    this.relations.push({ name, table: undefined, derived: outputs })
  }

  /**
   * Resolves a column reference. Qualified: the relation of that name, innermost level first.
   * Unqualified: the one relation at the innermost level that has an annotated column of that
   * name; two such relations make the reference ambiguous.
   *
   * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
   */
  resolve(column: string, qualifier: string | undefined): Resolved | undefined {
    if (qualifier !== undefined) {
      for (let s: Scope | undefined = this; s !== undefined; s = s.parent) {
        const relation = s.relations.find((r) => r.name === qualifier)
        if (relation !== undefined) return lookup(relation, column)
      }
      // A qualifier that names an encrypted table not in scope (e.g. aliased away): the database
      // would reject the query, but only after receiving its parameters. Refuse first.
      const info = this.schema.table(qualifier)?.column(column)
      if (info !== undefined) {
        throw new QueryRefusedError(
          'AMBIGUOUS_COLUMN',
          `"${qualifier}.${column}" names encrypted table ${qualifier}, which is not in scope here (aliased?).`,
          {
            table: info.table.logical,
            column: info.logical,
            hint: 'Qualify the column with the alias used in FROM/JOIN.',
          },
        )
      }
      return undefined
    }
    for (let s: Scope | undefined = this; s !== undefined; s = s.parent) {
      let found: Resolved | undefined
      for (const relation of s.relations) {
        if (relation.qualifiedOnly) continue
        const hit = lookup(relation, column)
        if (hit === undefined) continue
        if (found !== undefined && found.relation !== relation) {
          const info = hit.source.kind === 'column' ? hit.source.info : hit.source.info.column
          throw new QueryRefusedError(
            'AMBIGUOUS_COLUMN',
            `Column "${column}" is encrypted in both ${found.relation.name} and ${relation.name}; an unqualified reference is ambiguous.`,
            {
              table: info.table.logical,
              column: info.logical,
              hint: `Qualify it, e.g. "${relation.name}.${column}".`,
            },
          )
        }
        found = hit
      }
      if (found !== undefined) {
        if (s !== this) {
          // SQL resolves an unqualified name at the innermost level that has the column, and we
          // do not know every column of every inner table: a correlated reference must be qualified.
          const info = found.source.kind === 'column' ? found.source.info : found.source.info.column
          throw new QueryRefusedError(
            'AMBIGUOUS_COLUMN',
            `Unqualified "${column}" in a subquery would be taken as the encrypted ${found.relation.name}.${column} of an enclosing query, but an inner table may have its own "${column}".`,
            {
              table: info.table.logical,
              column: info.logical,
              hint: `Qualify it: "${found.relation.name}.${column}" (outer) or "<inner table>.${column}".`,
            },
          )
        }
        return found
      }
    }
    return undefined
  }
}

function lookup(relation: Relation, column: string): Resolved | undefined {
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
  const source = relation.derived?.get(column)
  return source === undefined ? undefined : { relation, source }
}

/** The name of an `IdentifierNode` (or anything with a `name`). */
export function identifierName(node: OperationNode): string {
  return (node as unknown as { name: string }).name
}

/** Table and schema names of a `TableNode`. */
export function tableName(node: OperationNode): { schema: string | undefined; name: string } {
  const t = (node as unknown as { table: { schema?: OperationNode; identifier: OperationNode } }).table
  return {
    schema: t.schema === undefined ? undefined : identifierName(t.schema),
    name: identifierName(t.identifier),
  }
}
