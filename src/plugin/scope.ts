import type { OperationNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema } from '../schema/schema.js'
import {
  checkAlias,
  encryptedIn,
  firstSource,
  lookup,
  type Relation,
  type Resolved,
  type Source,
} from './relation.js'
import { refuseAmbiguousTable, refuseNearName } from './table-name-refusals.js'
import { identifierName, rawTable, tableName } from './table-names.js'

export type { Relation, Resolved, Source } from './relation.js'
export { encryptedColumnOf, encryptedIn, firstSource } from './relation.js'

/**
 * A CTE of a WITH RECURSIVE whose query is not analyzed yet: its name is in scope (SQL lets a
 * recursive WITH read a CTE before, or inside, its own definition), its outputs are not known.
 * The analyzer refuses the query if one that was read turns out to carry encrypted columns.
 */
export class PendingCte extends Map<string, Source> {
  /** Set when a FROM or JOIN names this CTE. */
  read = false
}

/** Names in scope for one query level, with a link to the enclosing level (correlated subqueries). */
export class Scope {
  readonly relations: Relation[] = []
  /** CTEs of this level's WITH; made on the first one (most queries have none). */
  #ctes: Map<string, ReadonlyMap<string, Source>> | undefined
  /** Every output name of this level's CTEs, where known (see {@link Relation.columns}). */
  #cteColumns: Map<string, readonly string[] | undefined> | undefined
  /** Where CTE names not declared at this level are looked up next. */
  readonly #outerCtes: Scope | undefined
  /** This level's select-list outputs, once known: WHERE, ORDER BY, … must not reach them by alias. */
  #aliases: ReadonlyMap<string, Source> | undefined
  /** The names this level's select list gives to plaintext values, as far as known. */
  #plainAliases: ReadonlySet<string> | undefined

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

  /**
   * Declares a CTE of this level's WITH: later CTEs, the query and its subqueries see it.
   *
   * @param columns - every output name, in order, when known (see {@link Relation.columns})
   */
  addCte(name: string, outputs: ReadonlyMap<string, Source>, columns?: readonly string[]): void {
    this.#ctes ??= new Map()
    this.#ctes.set(name, outputs)
    this.#cteColumns ??= new Map()
    this.#cteColumns.set(name, columns)
  }

  /** Every output name of the CTE `name` visible here, when known (see {@link cte}). */
  #cteColumnsOf(name: string): readonly string[] | undefined {
    for (let s: Scope | undefined = this; s !== undefined; s = s.#outerCtes) {
      if (s.#ctes?.has(name)) return s.#cteColumns?.get(name)
    }
    return undefined
  }

  /** The outputs of the CTE `name` visible here: this level's first, then the enclosing levels'. */
  cte(name: string): ReadonlyMap<string, Source> | undefined {
    for (let s: Scope | undefined = this; s !== undefined; s = s.#outerCtes) {
      const found = s.#ctes?.get(name)
      if (found !== undefined) return found
    }
    return undefined
  }

  /**
   * What a visible CTE named `name` (ignoring case) passes on first, for raw SQL that reads it
   * by name (raw-operands.ts `refuseRawRead`): an encrypted column or blind index, else undefined.
   */
  cteSource(name: string): Source | undefined {
    return this.#cteIgnoringCase(name)
  }

  /**
   * A visible CTE whose name equals `name` only ignoring case and that passes an encrypted
   * column on (MySQL matches CTE names that way), if any.
   */
  #cteIgnoringCase(name: string): Source | undefined {
    let folded: string | undefined
    for (let s: Scope | undefined = this; s !== undefined; s = s.#outerCtes) {
      if (s.#ctes === undefined) continue
      folded ??= name.toLowerCase()
      for (const [cte, outputs] of s.#ctes) {
        if (cte.toLowerCase() !== folded) continue
        // Not analyzed yet: whether it carries an encrypted column is decided when it is.
        if (outputs instanceof PendingCte) outputs.read = true
        return firstSource(outputs)
      }
    }
    return undefined
  }

  /**
   * Adds a FROM/JOIN item, or the table a statement writes: `TableNode` or `AliasNode(TableNode)`.
   * A derived table goes in through {@link addDerived} instead.
   *
   * @param write - the table an INSERT, UPDATE or DELETE writes: SQL never writes to a CTE, so a
   *   name that is both a visible CTE and an encrypted table is refused as ambiguous
   * @returns the relation, or `undefined` when `node` is not a table
   * @throws QueryRefusedError `AMBIGUOUS_COLUMN` for a table or CTE name that differs from an
   *   encrypted one only in case, or a write target named like both a CTE and an encrypted table
   */
  addTable(node: OperationNode, write = false): Relation | undefined {
    let alias: string | undefined
    let target = node
    if (target.kind === 'AliasNode') {
      const a = target as unknown as { node: OperationNode; alias: OperationNode }
      alias = identifierName(a.alias)
      target = a.node
    }
    // `sql.table('users')`: raw SQL that is only a table name names that table.
    if (target.kind === 'RawNode') target = rawTable(target) ?? target
    if (target.kind !== 'TableNode') return undefined
    const { schema, name } = tableName(target)
    const cte = schema === undefined ? this.cte(name) : undefined
    let relation: Relation
    if (cte !== undefined) {
      if (cte instanceof PendingCte) cte.read = true
      const shadowed = write ? this.schema.table(name, schema) : undefined
      if (shadowed !== undefined) {
        // PostgreSQL writes the table, MySQL a table of the list: we cannot tell which is meant.
        const first = shadowed.columns.values().next().value as ColumnInfo
        throw new QueryRefusedError(
          'AMBIGUOUS_COLUMN',
          `The statement writes ${name}, which names both a CTE of this query and encrypted table ${shadowed.physical}.`,
          { table: shadowed.logical, column: first.logical, hint: `Give the CTE another name than ${name}.` },
        )
      }
      relation = { name: alias ?? name, table: undefined, derived: cte, columns: this.#cteColumnsOf(name) }
    } else {
      const table = this.schema.table(name, schema)
      if (table === undefined) {
        if (schema === undefined && this.schema.ambiguousTable(name)) refuseAmbiguousTable(name)
        refuseNearName(this.schema.tableIgnoringCase(name, schema), name)
        const near = schema === undefined ? this.#cteIgnoringCase(name) : undefined
        if (near !== undefined)
          refuseNearName(near.kind === 'column' ? near.info.table : near.info.column.table, name)
      }
      relation = { name: alias ?? name, table, derived: undefined, base: { schema, name } }
    }
    this.#push(relation)
    return relation
  }

  /**
   * Adds a relation of this level. SQL rejects two relations of one name at one level (MySQL's
   * multi-table DELETE, whose targets name relations of USING, does not come through here), so
   * a second one is refused when either carries an encrypted column: a qualified name would
   * otherwise resolve to whichever came first.
   */
  #push(relation: Relation): void {
    const twin = this.relations.find((r) => r.name === relation.name && !r.qualifiedOnly)
    const carried = twin === undefined ? undefined : (encryptedIn(twin) ?? encryptedIn(relation))
    if (carried !== undefined) {
      throw new QueryRefusedError(
        'AMBIGUOUS_COLUMN',
        `Two relations of this query are named ${relation.name}, and one carries encrypted column ${carried.table.physical}.${carried.physical}.`,
        {
          table: carried.table.logical,
          column: carried.logical,
          hint: 'Give each table an alias of its own.',
        },
      )
    }
    this.relations.push(relation)
  }

  /**
   * Declares this level's select-list outputs (aliases included), as they become known.
   *
   * @param plain - the names the list gives to plaintext values (see {@link hasOutputNamed})
   */
  setAliases(outputs: ReadonlyMap<string, Source>, plain?: ReadonlySet<string>): void {
    this.#aliases = outputs
    this.#plainAliases = plain
  }

  /** Whether this level's select list (as far as it is known yet) has an output named `name` ignoring case. */
  hasOutputNamed(name: string): boolean {
    const folded = name.toLowerCase()
    const named = (names: Iterable<string> | undefined) => {
      for (const n of names ?? []) if (n.toLowerCase() === folded) return true
      return false
    }
    return named(this.#aliases?.keys()) || named(this.#plainAliases)
  }

  /** The relation named exactly `qualifier` visible here: at this level first, then the enclosing ones. */
  relationNamed(qualifier: string): Relation | undefined {
    for (let s: Scope | undefined = this; s !== undefined; s = s.parent) {
      const relation = s.relations.find((r) => r.name === qualifier)
      if (relation !== undefined) return relation
    }
    return undefined
  }

  /** True when a relation named exactly `qualifier` is visible here (at this level or an enclosing one). */
  sees(qualifier: string): boolean {
    return this.relationNamed(qualifier) !== undefined
  }

  /**
   * Adds a derived table of this level.
   *
   * @param columns - every output name, in order, when known (see {@link Relation.columns})
   */
  addDerived(name: string, outputs: ReadonlyMap<string, Source>, columns?: readonly string[]): void {
    this.#push({ name, table: undefined, derived: outputs, columns })
  }

  /**
   * The encrypted column some relation in scope, at any level, carries under `column` (its own,
   * its blind index's, or one a derived table passes on under that name), qualified or not.
   *
   * @throws QueryRefusedError `AMBIGUOUS_COLUMN` for a name that differs only in case from one
   */
  carrying(column: string): ColumnInfo | undefined {
    for (let s: Scope | undefined = this; s !== undefined; s = s.parent) {
      for (const relation of s.relations) {
        const hit = lookup(relation, column)
        if (hit !== undefined) return hit.source.kind === 'column' ? hit.source.info : hit.source.info.column
      }
    }
    return undefined
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
      // MySQL lets a subquery see the select-list aliases of the queries around it too.
      if (s.#aliases !== undefined) checkAlias(s.#aliases, column, found)
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
