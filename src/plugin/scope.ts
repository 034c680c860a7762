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
}

/** A resolved reference to something we care about: which relation, and what it is. */
export interface Resolved {
  readonly relation: Relation
  readonly source: Source
}

/** Names in scope for one query level, with a link to the enclosing level (correlated subqueries). */
export class Scope {
  readonly relations: Relation[] = []
  readonly ctes: Map<string, ReadonlyMap<string, Source>>

  constructor(
    readonly schema: EncryptedSchema,
    readonly parent: Scope | undefined,
  ) {
    this.ctes = new Map(parent?.ctes)
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
    const cte = schema === undefined ? this.ctes.get(name) : undefined
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
    for (let s: Scope | undefined = this; s !== undefined; s = s.parent) {
      if (qualifier !== undefined) {
        const relation = s.relations.find((r) => r.name === qualifier)
        if (relation !== undefined) return lookup(relation, column)
        continue
      }
      let found: Resolved | undefined
      for (const relation of s.relations) {
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
      if (found !== undefined) return found
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
