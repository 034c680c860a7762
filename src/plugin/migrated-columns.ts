import type {
  ColumnUpdateNode,
  DeleteQueryNode,
  InsertQueryNode,
  OperationNode,
  ReferenceNode,
  RootOperationNode,
  SelectionNode,
  SelectQueryNode,
  UpdateQueryNode,
} from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema, TableInfo } from '../schema/schema.js'
import { isDeferred } from './deferred-value.js'
import { mapChildren, someChild } from './node-utils.js'
import {
  columnName,
  columnNode,
  DEFAULT,
  identifier,
  nodeValue,
  rebuild,
  referenceNode,
  valueNode,
} from './nodes.js'
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
export class MigratedColumns {
  /** Mapped columns of the view, by their table. */
  readonly #tables = new Map<TableInfo, readonly Mapping[]>()
  /** The plaintext comparisons this pass wrote, left alone when a tree comes back (idempotence). */
  readonly #produced = new WeakSet<OperationNode>()

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
    if (root.kind === 'InsertQueryNode') this.#checkInsert(root as InsertQueryNode, rel)
    if (root.kind === 'UpdateQueryNode') this.#checkSets((root as UpdateQueryNode).updates, rel)
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
    // The relation is this one table: any other mention of a mapped table is in a nested query,
    // which `#plain` refuses.
    return { names: new Set([alias ?? name]), mappings }
  }

  #select(node: SelectQueryNode, rel: Relation): SelectQueryNode {
    const patch: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) {
      if (key === 'kind' || value === undefined) continue
      if (key === 'selections') patch.selections = this.#selections(node.selections!, rel)
      else if (key === 'where')
        patch.where = rebuild(node.where!, { where: this.#condition(node.where!.where, rel) })
      else if (key !== 'from') patch[key] = this.#plainValue(value, rel)
    }
    return rebuild(node, patch)
  }

  #delete(node: DeleteQueryNode, rel: Relation): DeleteQueryNode {
    const patch: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) {
      if (key === 'kind' || value === undefined) continue
      if (key === 'returning') patch.returning = this.#returning(node.returning!, rel)
      else if (key === 'where')
        patch.where = rebuild(node.where!, { where: this.#condition(node.where!.where, rel) })
      else if (key !== 'from') patch[key] = this.#plainValue(value, rel)
    }
    return rebuild(node, patch)
  }

  #update(node: UpdateQueryNode, rel: Relation): UpdateQueryNode {
    const patch: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) {
      if (key === 'kind' || value === undefined) continue
      if (key === 'returning') patch.returning = this.#returning(node.returning!, rel)
      else if (key === 'where')
        patch.where = rebuild(node.where!, { where: this.#condition(node.where!.where, rel) })
      else if (key === 'updates') patch.updates = this.#sets(node.updates!, rel)
      else if (key !== 'table') patch[key] = this.#plainValue(value, rel)
    }
    return rebuild(node, patch)
  }

  #insert(node: InsertQueryNode, rel: Relation): InsertQueryNode {
    const patch: Record<string, unknown> = {}
    const excluded: Relation = { names: new Set([...rel.names, 'excluded']), mappings: rel.mappings }
    for (const [key, value] of Object.entries(node)) {
      if (key === 'kind' || value === undefined) continue
      if (key === 'returning') patch.returning = this.#returning(node.returning!, rel)
      else if (key === 'onDuplicateKey')
        patch.onDuplicateKey = rebuild(node.onDuplicateKey!, {
          updates: this.#sets(node.onDuplicateKey!.updates, excluded),
        })
      else if (key === 'onConflict') {
        const oc = node.onConflict!
        patch.onConflict = rebuild(oc, {
          ...(oc.columns === undefined
            ? {}
            : { columns: oc.columns.map((c) => this.#conflictColumn(c, rel)) }),
          ...(oc.updates === undefined ? {} : { updates: this.#sets(oc.updates, excluded) }),
          ...(oc.updateWhere === undefined
            ? {}
            : {
                updateWhere: rebuild(oc.updateWhere, {
                  where: this.#condition(oc.updateWhere.where, excluded),
                }),
              }),
          ...(oc.indexWhere === undefined ? {} : { indexWhere: this.#plain(oc.indexWhere, rel) }),
        })
      } else if (key !== 'into' && key !== 'columns' && key !== 'values')
        patch[key] = this.#plainValue(value, rel)
    }
    Object.assign(patch, this.#insertValues(node, rel))
    return rebuild(node, patch)
  }

  /** The column list and rows of an INSERT: each mapped column written in its phase's form. */
  #insertValues(node: InsertQueryNode, rel: Relation): Record<string, unknown> {
    const columns = [...(node.columns ?? [])]
    const names = columns.map((c) => columnName(c))
    const values = node.values
    if (values === undefined) return {}
    if (values.kind !== 'ValuesNode') {
      // INSERT … SELECT: the analyzer refuses it into the encrypted column, named as such.
      return {
        columns: Object.freeze(columns.map((c) => this.#plain(c, rel))),
        values: this.#plain(values, rel),
      }
    }
    type Row = { kind: string; values: readonly unknown[] }
    let rows = (values as unknown as { values: readonly Row[] }).values.map((r) => ({
      ...r,
      values: [...r.values],
    }))
    for (const m of rel.mappings) {
      const at = names.indexOf(m.name)
      if (at === -1) continue
      if (names.includes(m.stored)) {
        // A tree this pass rewrote before (or the application writing both itself).
        if (m.nullPlaintext) for (const r of rows) refuseWrittenPlaintext(m, rowValue(r, at))
        continue
      }
      if (m.form === 'both') {
        columns.push(columnNode(m.stored))
        for (const r of rows) r.values.push(r.values[at])
        continue
      }
      columns[at] = columnNode(m.stored)
      if (m.nullPlaintext) {
        columns.push(columnNode(m.name))
        for (const r of rows) r.values.push(r.kind === 'PrimitiveValueListNode' ? null : valueNode(null))
      }
    }
    rows = rows.map((r) => ({
      ...r,
      values:
        r.kind === 'PrimitiveValueListNode'
          ? r.values
          : r.values.map((v) => this.#plain(v as OperationNode, rel)),
    }))
    return {
      columns: Object.freeze(columns),
      values: Object.freeze({
        ...values,
        values: Object.freeze(rows.map((r) => Object.freeze({ ...r, values: Object.freeze(r.values) }))),
      }),
    }
  }

  /** An ON CONFLICT target: the encrypted column's (its unique blind index, by the analyzer) once the plaintext is not written. */
  #conflictColumn(c: OperationNode, rel: Relation): OperationNode {
    const m = this.#mapped(c, rel)
    return m === undefined || m.form === 'both' ? c : columnNode(m.stored)
  }

  /** SET items: a mapped column written in its phase's form. */
  #sets(items: ReadonlyArray<ColumnUpdateNode>, rel: Relation): ReadonlyArray<ColumnUpdateNode> {
    const out: ColumnUpdateNode[] = []
    const written = new Set(items.map((u) => columnName(u.column)))
    for (const u of items) {
      const m = this.#mapped(u.column, rel)
      if (m === undefined) {
        out.push(rebuild(u, { value: this.#plain(u.value, rel) }))
        continue
      }
      if (written.has(m.stored)) {
        if (m.nullPlaintext) refuseWrittenPlaintext(m, nodeValue(u.value))
        out.push(u)
        continue
      }
      const encrypted = Object.freeze({
        kind: 'ColumnUpdateNode',
        column: this.#renamed(u.column, m),
        value: this.#plain(u.value, rel),
      }) as ColumnUpdateNode
      if (m.form === 'both') out.push(u, encrypted)
      else {
        out.push(encrypted)
        if (m.nullPlaintext) out.push(rebuild(u, { value: valueNode(null) }))
      }
    }
    return Object.freeze(out)
  }

  #returning<T extends { selections: ReadonlyArray<SelectionNode> }>(node: T, rel: Relation): T {
    return rebuild(node as unknown as OperationNode, {
      selections: this.#selections(node.selections, rel),
    }) as unknown as T
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
      const m = this.#mapped(inner, rel)
      if (m === undefined) {
        out.push(this.#plain(s, rel) as SelectionNode)
        continue
      }
      name ??= m.name
      if (m.form === 'both' && hidden.has(`${MAPPED_PREFIX}${name}`)) out.push(s)
      else if (m.form === 'both') out.push(s, selection(this.#renamed(inner, m), `${MAPPED_PREFIX}${name}`))
      else out.push(selection(this.#renamed(inner, m), name))
    }
    return Object.freeze(out)
  }

  /** WHERE, and ON CONFLICT's: comparisons of a mapped column in its phase's form. */
  #condition(node: OperationNode, rel: Relation): OperationNode {
    if (this.#produced.has(node)) return node
    switch (node.kind) {
      case 'AndNode':
      case 'OrNode':
      case 'ParensNode':
        return mapChildren(node, (child) => this.#condition(child, rel))
      case 'UnaryOperationNode': {
        const n = node as unknown as { operator: { operator?: string }; operand: OperationNode }
        if (n.operator.operator === 'not') return rebuild(node, { operand: this.#condition(n.operand, rel) })
        return this.#plain(node, rel)
      }
      case 'BinaryOperationNode':
        return this.#comparison(node, rel)
      default:
        return this.#plain(node, rel)
    }
  }

  #comparison(node: OperationNode, rel: Relation): OperationNode {
    const n = node as unknown as {
      leftOperand: OperationNode
      operator: { operator?: string }
      rightOperand: OperationNode
    }
    const left = this.#mapped(n.leftOperand, rel)
    const right = this.#mapped(n.rightOperand, rel)
    const m = left ?? right
    // Column against column, or an encrypted-only phase: the encrypted column's name, and the
    // analyzer's rules (blind index, refusals) as for any encrypted column.
    if (m === undefined || (left !== undefined && right !== undefined) || m.form === 'encrypted')
      return this.#plain(node, rel)
    const op = n.operator.operator ?? ''
    const ref = left !== undefined ? n.leftOperand : n.rightOperand
    const other = left !== undefined ? n.rightOperand : n.leftOperand
    const stored = this.#renamed(ref, m)
    const encrypted = rebuild(node, left !== undefined ? { leftOperand: stored } : { rightOperand: stored })
    if ((op === 'is' || op === 'is not') && isNullValue(other)) {
      // The value is NULL when both forms are (writes keep them in step, NULL with NULL).
      const both = op === 'is' ? and(node, encrypted) : or(node, encrypted)
      this.#produced.add(both)
      return parens(both)
    }
    if (!EQUALITY.has(op) || !isValues(other)) return this.#plain(node, rel)
    // As a read takes it: the plaintext when there is one, else the encrypted value.
    const noPlaintext = nullTest(ref, 'is')
    this.#produced.add(node)
    this.#produced.add(noPlaintext)
    return parens(or(node, parens(and(noPlaintext, encrypted))))
  }

  /** Any other part of the statement: a mapped column under the encrypted column's name (the analyzer refuses what it must). */
  #plain(node: OperationNode, rel: Relation): OperationNode {
    if (this.#produced.has(node)) return node
    const m = this.#mapped(node, rel)
    if (m !== undefined) return this.#renamed(node, m)
    if (NESTED.has(node.kind)) {
      this.#refuseNested(node, rel)
      return node
    }
    return mapChildren(node, (child) => this.#plain(child, rel))
  }

  #plainValue(value: unknown, rel: Relation): unknown {
    if (Array.isArray(value))
      return Object.freeze(value.map((v) => (isNodeLike(v) ? this.#plain(v, rel) : v)))
    return isNodeLike(value) ? this.#plain(value, rel) : value
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

  /** The mapping a column reference of the statement's table names, if any. */
  #mapped(node: OperationNode, rel: Relation): Mapping | undefined {
    if (node.kind !== 'ColumnNode' && node.kind !== 'ReferenceNode') return undefined
    if (node.kind === 'ReferenceNode') {
      const ref = node as ReferenceNode
      if (ref.column.kind !== 'ColumnNode') return undefined
      if (ref.table !== undefined && !rel.names.has(tableName(ref.table).name)) return undefined
    }
    const name = columnName(node)
    return rel.mappings.find((m) => m.name === name)
  }

  #renamed(node: OperationNode, m: Mapping): OperationNode {
    if (node.kind === 'ColumnNode') return columnNode(m.stored)
    return referenceNode(m.stored, (node as ReferenceNode).table)
  }

  #checkInsert(node: InsertQueryNode, rel: Relation): void {
    const names = (node.columns ?? []).map((c) => columnName(c))
    const values = node.values as unknown as {
      kind: string
      values: ReadonlyArray<{ kind: string; values: readonly unknown[] }>
    }
    for (const m of rel.mappings) {
      const at = names.indexOf(m.name)
      if (!m.nullPlaintext || at === -1 || values?.kind !== 'ValuesNode') continue
      for (const r of values.values) refuseWrittenPlaintext(m, rowValue(r, at))
    }
    if (node.onConflict?.updates) this.#checkSets(node.onConflict.updates, rel)
    if (node.onDuplicateKey) this.#checkSets(node.onDuplicateKey.updates, rel)
  }

  #checkSets(items: ReadonlyArray<ColumnUpdateNode> | undefined, rel: Relation): void {
    for (const u of items ?? []) {
      const m = this.#mapped(u.column, rel)
      if (m?.nullPlaintext) refuseWrittenPlaintext(m, nodeValue(u.value))
    }
  }
}

interface Mapping {
  /** The name queries use (the plaintext column while it exists). */
  readonly name: string
  /** The column holding the ciphertext. */
  readonly stored: string
  /** The view's encrypted column. */
  readonly info: ColumnInfo
  /** `both`: the plaintext column is still read and written; `encrypted`: only the ciphertext. */
  readonly form: 'both' | 'encrypted'
  /** `cut-over`: a write of the column sets its plaintext column to NULL. */
  readonly nullPlaintext: boolean
}

/** The statement's one (mapped) table: the names that qualify its columns, and its mappings. */
interface Relation {
  readonly names: ReadonlySet<string>
  readonly mappings: readonly Mapping[]
}

const EQUALITY = new Set(['=', '==', '!=', '<>', 'in', 'not in'])
const NESTED = new Set([
  'SelectQueryNode',
  'InsertQueryNode',
  'UpdateQueryNode',
  'DeleteQueryNode',
  'MergeQueryNode',
])

function isNodeLike(v: unknown): v is OperationNode {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { kind?: unknown }).kind === 'string' &&
    !isDeferred(v)
  )
}

function isNullValue(node: OperationNode): boolean {
  return node.kind === 'ValueNode' && (node as unknown as { value: unknown }).value === null
}

/** A value, or a list of values (the right side of `in`). */
function isValues(node: OperationNode): boolean {
  return node.kind === 'ValueNode' || node.kind === 'ValueListNode' || node.kind === 'PrimitiveValueListNode'
}

function rowValue(row: { kind: string; values: readonly unknown[] }, at: number): unknown {
  const v = row.values[at]
  return row.kind === 'PrimitiveValueListNode'
    ? v
    : v === undefined
      ? undefined
      : nodeValue(v as OperationNode)
}

/** After cut-over the plaintext column takes NULL only: anything else is a plaintext sent for it. */
function refuseWrittenPlaintext(m: Mapping, value: unknown): void {
  if (value === null || value === undefined || value === DEFAULT) return
  throw new QueryRefusedError(
    'PLAINTEXT_WRITE',
    `${m.info.table.physical}.${m.name} is cut over to ${m.stored}: its plaintext column takes only NULL; nothing was sent.`,
    {
      table: m.info.table.logical,
      column: m.info.logical,
      hint: `Write ${m.name} only (the plugin writes ${m.stored} and sets ${m.name} to NULL).`,
    },
  )
}

function selection(node: OperationNode, alias: string): SelectionNode {
  return Object.freeze({
    kind: 'SelectionNode',
    selection: Object.freeze({ kind: 'AliasNode', node, alias: identifier(alias) }),
  }) as SelectionNode
}

function and(left: OperationNode, right: OperationNode): OperationNode {
  return Object.freeze({ kind: 'AndNode', left, right }) as OperationNode
}

function or(left: OperationNode, right: OperationNode): OperationNode {
  return Object.freeze({ kind: 'OrNode', left, right }) as OperationNode
}

function parens(node: OperationNode): OperationNode {
  return Object.freeze({ kind: 'ParensNode', node }) as OperationNode
}

function nullTest(ref: OperationNode, op: 'is' | 'is not'): OperationNode {
  return Object.freeze({
    kind: 'BinaryOperationNode',
    leftOperand: ref,
    operator: Object.freeze({ kind: 'OperatorNode', operator: op }),
    // As kysely writes `is null`: the keyword, not a parameter (`is $1` is a syntax error).
    rightOperand: Object.freeze({ kind: 'ValueNode', value: null, immediate: true }),
  }) as OperationNode
}
