import type {
  DeleteQueryNode,
  InsertQueryNode,
  OperationNode,
  RootOperationNode,
  SelectionNode,
  SelectQueryNode,
  UpdateQueryNode,
} from 'kysely'
import type { EncryptedSchema, TableInfo } from '../schema/schema.js'
import { condition } from './migrated-conditions.js'
import {
  type MappedPass,
  type Mapping,
  mappedIn,
  type Relation,
  refuseCamelSpelling,
  refuseCteNamedLike,
  refusePlaintextReference,
  renamed,
  selection,
} from './migrated-nodes.js'
import { checkInsert, checkSets, insertValues, setItems } from './migrated-writes.js'
import { isNode, mapChildren, ROW_STATEMENTS, someChild } from './node-utils.js'
import { columnName, columnNode, rebuild } from './nodes.js'
import { MAPPED_PREFIX } from './plan.js'
import { refuse } from './refusal.js'
import { identifierName, tableName } from './table-names.js'

/**
 * Columns stored under another name (`storedAs`) and the phases of a migration from plaintext
 * (docs/migrating.md), as a pass that runs before the analyzer on each query of a table that has
 * one. It rewrites the query as the application of that phase would write it by hand against
 * the plugin's view of the schema (schema/plugin-view.ts), where the encrypted column is
 * annotated under its own name (`email_encrypted`); the analyzer then encrypts, indexes and
 * refuses as for any encrypted column.
 *
 * - `dual-writing`, `backfilled` ("both"): a write of `email` also writes `email_encrypted` (and,
 *   through the analyzer, its blind index); a read of `email` also reads `email_encrypted` under a
 *   hidden alias, which the wrapper decrypts into `email` when the plaintext is NULL; `email = $1`
 *   becomes `(email = $1 or (email is null and email_bidx in (…)))`: a row reads and matches as
 *   its plaintext when it has one (written by this phase, an `added` one or the backfill's
 *   source, it is never stale), else as its encrypted value (a row a `cut-over` process wrote).
 *   The plaintext comes first because it is the one form no deploy leaves stale: an `added`
 *   process beside this one updates the plaintext alone (docs/migrating.md, phase pairs).
 * - `cut-over`: `email` is `email_encrypted` everywhere; a write of it also sets the plaintext
 *   column to NULL.
 * - `dropped`, or `storedAs` alone: `email` is `email_encrypted` everywhere.
 *
 * Supported shapes: a SELECT, INSERT (values, ON CONFLICT, ON DUPLICATE KEY UPDATE), UPDATE or
 * DELETE whose one table is the mapped table (an alias is fine); anything else that names the
 * table or the column (joins, subqueries, CTEs reading it, MERGE) is refused with
 * `QUERY_REFUSED`, since an unqualified `email` there may be another table's.
 */
export class MigratedColumns implements MappedPass {
  /** Mapped columns of the view, by their table. */
  readonly #tables = new Map<TableInfo, readonly Mapping[]>()
  /** {@inheritDoc MappedPass.produced} */
  readonly produced = new WeakSet<OperationNode>()

  constructor(readonly view: EncryptedSchema) {
    for (const table of view.tables.values()) {
      const mappings: Mapping[] = []
      for (const info of table.columns.values()) {
        if (info.mapped === undefined) continue
        const phase = info.mapped.phase
        mappings.push({
          name: info.mapped.name,
          stored: info.physical,
          info,
          form: phase === 'dual-writing' || phase === 'backfilled' ? 'both' : 'encrypted',
          nullPlaintext: phase === 'cut-over',
        })
      }
      if (mappings.length > 0) this.#tables.set(table, mappings)
    }
  }

  /** True when some column of the schema is stored under another name. */
  get active(): boolean {
    return this.#tables.size > 0
  }

  /**
   * The query as the analyzer takes it (see the class).
   * @throws QueryRefusedError `QUERY_REFUSED` for a shape it does not rewrite, `PLAINTEXT_WRITE`
   *   for a plaintext written to a plaintext column after cut-over
   */
  rewrite(root: RootOperationNode): RootOperationNode {
    if (this.#tables.size === 0) return root
    const first = this.#mention(root)
    if (first === undefined) return root
    const rel = this.#target(root)
    if (rel === undefined)
      throw refuse(
        first.info,
        'join or subquery',
        `${first.name} is stored as ${first.stored} (under migration): a query may name its table only as its one table`,
        `Query ${first.info.table.physical} on its own (select, insert, update or delete of that one table), then combine in the application.`,
      )
    refuseCamelSpelling(root, rel)
    switch (root.kind) {
      case 'SelectQueryNode':
        return this.#select(root as SelectQueryNode, rel)
      case 'InsertQueryNode':
        return this.#insert(root as InsertQueryNode, rel)
      case 'UpdateQueryNode':
        return this.#update(root as UpdateQueryNode, rel)
      default:
        return this.#delete(root as DeleteQueryNode, rel)
    }
  }

  /**
   * The wrapper's check of a tree the plugin did not produce (see prepare-query.ts): after
   * cut-over, a value written to the plaintext column must be NULL.
   * @throws QueryRefusedError `PLAINTEXT_WRITE`
   */
  check(root: RootOperationNode): void {
    if (this.#tables.size === 0 || this.#mention(root) === undefined) return
    const rel = this.#target(root)
    if (rel === undefined) return
    refuseCamelSpelling(root, rel)
    refusePlaintextReference(root, rel)
    if (root.kind === 'InsertQueryNode') checkInsert(root as InsertQueryNode, rel)
    if (root.kind === 'UpdateQueryNode') checkSets((root as UpdateQueryNode).updates, rel)
  }

  /** The first mapped column of a table the tree names, if any. */
  #mention(root: OperationNode): Mapping | undefined {
    let found: Mapping | undefined
    const visit = (node: OperationNode): boolean => {
      if (node.kind === 'TableNode') {
        const { schema, name } = tableName(node)
        const table = this.view.table(name, schema)
        found = table === undefined ? undefined : this.#tables.get(table)?.[0]
        if (found !== undefined) return true
      }
      return someChild(node, visit)
    }
    visit(root)
    return found
  }

  /** The statement's one table when it is a mapped one, with the name queries qualify it by. */
  #target(root: RootOperationNode): Relation | undefined {
    let item: OperationNode | undefined
    switch (root.kind) {
      case 'SelectQueryNode': {
        const s = root as SelectQueryNode
        if (s.joins !== undefined || s.setOperations !== undefined || s.from?.froms.length !== 1)
          return undefined
        item = s.from.froms[0]
        break
      }
      case 'InsertQueryNode':
        item = (root as InsertQueryNode).into
        break
      case 'UpdateQueryNode': {
        const u = root as UpdateQueryNode
        if (u.from !== undefined || u.joins !== undefined) return undefined
        item = u.table
        break
      }
      case 'DeleteQueryNode': {
        const d = root as DeleteQueryNode
        if (d.using !== undefined || d.joins !== undefined || d.from.froms.length !== 1) return undefined
        item = d.from.froms[0]
        break
      }
      default:
        return undefined
    }
    let alias: string | undefined
    if (item?.kind === 'AliasNode') {
      const a = item as unknown as { node: OperationNode; alias: OperationNode }
      alias = identifierName(a.alias)
      item = a.node
    }
    if (item?.kind !== 'TableNode') return undefined
    const { schema, name } = tableName(item)
    const table = this.view.table(name, schema)
    const mappings = table === undefined ? undefined : this.#tables.get(table)
    if (mappings === undefined) return undefined
    if (schema === undefined) refuseCteNamedLike(root, name, mappings)
    // The relation is this one table: any other mention of a mapped table is in a nested query,
    // which `#plain` refuses.
    return { names: new Set([alias ?? name]), mappings }
  }

  #select(node: SelectQueryNode, rel: Relation): SelectQueryNode {
    return this.#clauses(node, rel, ['from'], {})
  }

  #delete(node: DeleteQueryNode, rel: Relation): DeleteQueryNode {
    return this.#clauses(node, rel, ['from'], {})
  }

  #update(node: UpdateQueryNode, rel: Relation): UpdateQueryNode {
    return this.#clauses(node, rel, ['table'], { updates: () => setItems(this, node.updates!, rel) })
  }

  #insert(node: InsertQueryNode, rel: Relation): InsertQueryNode {
    const excluded: Relation = { names: new Set([...rel.names, 'excluded']), mappings: rel.mappings }
    const oc = node.onConflict
    const rewritten = this.#clauses(node, rel, ['into', 'columns', 'values'], {
      onDuplicateKey: () =>
        rebuild(node.onDuplicateKey!, { updates: setItems(this, node.onDuplicateKey!.updates, excluded) }),
      onConflict: () =>
        rebuild(oc!, {
          ...(oc?.columns === undefined
            ? {}
            : { columns: oc.columns.map((c) => this.#conflictColumn(c, rel)) }),
          ...(oc?.updates === undefined ? {} : { updates: setItems(this, oc.updates, excluded) }),
          ...(oc?.updateWhere === undefined
            ? {}
            : {
                updateWhere: rebuild(oc.updateWhere, {
                  where: condition(this, oc.updateWhere.where, excluded),
                }),
              }),
          ...(oc?.indexWhere === undefined ? {} : { indexWhere: this.plain(oc.indexWhere, rel) }),
        }),
    })
    return rebuild(rewritten, insertValues(this, node, rel))
  }

  /**
   * Each clause of a statement: its select list, RETURNING, WHERE and HAVING as such, those `own`
   * names by their function, every other one (but the `kept` target clauses) as {@link #plain}.
   */
  #clauses<T extends SelectQueryNode | InsertQueryNode | UpdateQueryNode | DeleteQueryNode>(
    node: T,
    rel: Relation,
    kept: readonly string[],
    own: Readonly<Record<string, () => unknown>>,
  ): T {
    const patch: Record<string, unknown> = {}
    const clauses = node as unknown as Record<string, unknown>
    for (const [key, value] of Object.entries(clauses)) {
      if (key === 'kind' || value === undefined || kept.includes(key)) continue
      const rewrite = own[key]
      if (rewrite !== undefined) patch[key] = rewrite()
      else if (key === 'selections' || key === 'returning') {
        const list =
          key === 'selections' ? value : (value as { selections: ReadonlyArray<SelectionNode> }).selections
        const selections = this.#selections(list as ReadonlyArray<SelectionNode>, rel)
        patch[key] = key === 'selections' ? selections : rebuild(value as OperationNode, { selections })
      } else if (key === 'where') {
        const where = value as { where: OperationNode } & OperationNode
        patch.where = rebuild(where, { where: condition(this, where.where, rel) })
      } else if (key === 'having') {
        // A search in HAVING finds a row by either form while both are written, as in WHERE.
        const having = value as { having: OperationNode } & OperationNode
        patch.having = rebuild(having, { having: condition(this, having.having, rel) })
      } else patch[key] = this.#plainValue(value, rel)
    }
    return rebuild(node, patch)
  }

  /** An ON CONFLICT target: the encrypted column's (its unique blind index, by the analyzer) once the plaintext is not written. */
  #conflictColumn(c: OperationNode, rel: Relation): OperationNode {
    const m = mappedIn(c, rel)
    return m === undefined || m.form === 'both' ? c : columnNode(m.stored)
  }

  /**
   * A select list (or RETURNING). `*` is left as it is: the wrapper moves the encrypted column's
   * decrypted value into the annotated name (decrypt-rows.ts, `mergeMapped`).
   */
  #selections(list: ReadonlyArray<SelectionNode>, rel: Relation): ReadonlyArray<SelectionNode> {
    const out: SelectionNode[] = []
    // A list this pass rewrote before already carries the hidden aliases.
    const hidden = new Set(
      list.flatMap((s) =>
        s.selection.kind === 'AliasNode'
          ? [identifierName((s.selection as unknown as { alias: OperationNode }).alias)]
          : [],
      ),
    )
    for (const s of list) {
      const sel = s.selection
      let inner: OperationNode = sel
      let name: string | undefined
      if (sel.kind === 'AliasNode') {
        inner = (sel as unknown as { node: OperationNode }).node
        name = identifierName((sel as unknown as { alias: OperationNode }).alias)
      }
      const m = mappedIn(inner, rel)
      if (m === undefined) {
        out.push(this.plain(s, rel) as SelectionNode)
        continue
      }
      name ??= m.name
      if (m.nullPlaintext && name === m.name) refuseLaterStar(list, s, m)
      if (m.form === 'both' && hidden.has(`${MAPPED_PREFIX}${name}`)) out.push(s)
      else if (m.form === 'both') out.push(s, selection(renamed(inner, m), `${MAPPED_PREFIX}${name}`))
      else out.push(selection(renamed(inner, m), name))
    }
    return Object.freeze(out)
  }

  /** Any other part of the statement: a mapped column under the encrypted column's name (the analyzer refuses what it must). */
  plain(node: OperationNode, rel: Relation): OperationNode {
    if (this.produced.has(node)) return node
    const m = mappedIn(node, rel)
    if (m !== undefined) return renamed(node, m)
    if (ROW_STATEMENTS.has(node.kind)) {
      this.#refuseNested(node, rel)
      return node
    }
    return mapChildren(node, (child) => this.plain(child, rel))
  }

  #plainValue(value: unknown, rel: Relation): unknown {
    if (Array.isArray(value)) return Object.freeze(value.map((v) => (isNode(v) ? this.plain(v, rel) : v)))
    return isNode(value) ? this.plain(value, rel) : value
  }

  /** A nested query may not name the mapped table or column: its scope is not modelled here. */
  #refuseNested(node: OperationNode, rel: Relation): void {
    const names = new Set(rel.mappings.flatMap((m) => [m.name, m.stored]))
    const visit = (n: OperationNode): boolean => {
      if ((n.kind === 'ColumnNode' || n.kind === 'ReferenceNode') && names.has(columnName(n))) return true
      return someChild(n, visit)
    }
    if (this.#mention(node) === undefined && !visit(node)) return
    const m = rel.mappings[0]!
    throw refuse(
      m.info,
      'subquery',
      `${m.name} is stored as ${m.stored} (under migration): a subquery may not name it or its table`,
      `Run the subquery as a query of its own, then pass its result as values.`,
    )
  }
}

/**
 * Cut-over: `select('email').selectAll()` sends `"email_encrypted" as "email", *`, and the `*`
 * brings the plaintext column (NULL or stale) back under the same name after it: the driver keeps
 * the last, which would fail decryption after the query ran. `*` first (`selectAll().select(…)`)
 * is fine. @throws QueryRefusedError `QUERY_REFUSED`
 */
function refuseLaterStar(list: ReadonlyArray<SelectionNode>, item: SelectionNode, m: Mapping): void {
  const later = list.slice(list.indexOf(item) + 1)
  const star = later.some((s) => {
    const sel = s.selection as OperationNode
    return (
      sel.kind === 'SelectAllNode' ||
      (sel.kind === 'ReferenceNode' &&
        (sel as unknown as { column: OperationNode }).column.kind === 'SelectAllNode')
    )
  })
  if (!star) return
  throw refuse(
    m.info,
    'select all',
    `a * after ${m.name} brings its plaintext column (cut over to ${m.stored}) back under the same name`,
    `Put selectAll() before select('${m.name}'), or list the columns.`,
  )
}
