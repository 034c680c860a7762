import type {
  DeleteQueryNode,
  InsertQueryNode,
  SelectionNode,
  SelectQueryNode,
  UpdateQueryNode,
} from 'kysely'
import type { AnalysisContext, Origin, Outputs, Role } from './analysis-context.js'
import { opaque, reference } from './analyze-expressions.js'
import { firstColumn } from './column-rules.js'
import { contextSelections } from './context-selections.js'
import { columnName, rebuild, rebuildList } from './nodes.js'
import { checkSourceAlias } from './output-alias.js'
import { checkRawAlias } from './raw-operands.js'
import { endAliasLine, hasStarItem } from './raw-text.js'
import { refuse } from './refusal.js'
import { checkReservedAliases } from './reserved-aliases.js'
import type { Relation, Resolved, Scope, Source } from './scope.js'
import { expandAll } from './select-all.js'
import { identifierName, tableName } from './table-names.js'
import { markUnnamedOutput } from './unlisted-columns.js'

/**
 * Select lists and RETURNING: which outputs pass an annotated column (or blind index) on, under
 * which name, and from which relation.
 */

/**
 * Records that the select list has an output `name` (from `source` when it is an annotated
 * column or index; else in `plainNamed`, for ORDER BY). A module function, not a closure made
 * per query: under tsx, which the benchmarks run through, every named closure also costs a
 * `__name` call (docs/benchmarks.md).
 *
 * @throws QueryRefusedError `QUERY_REFUSED` when `name` was output before and either is encrypted
 */
function claim(
  named: Set<string>,
  plainNamed: Set<string>,
  outputs: ReadonlyMap<string, Source>,
  name: string,
  source: Source | undefined,
): void {
  const prior = outputs.get(name)
  const annotated = source ?? prior
  const same =
    source !== undefined && prior !== undefined && source.kind === prior.kind && source.info === prior.info
  if (named.has(name) && annotated !== undefined && !same) {
    const info = annotated.kind === 'column' ? annotated.info : annotated.info.column
    throw refuse(info, 'alias', `two outputs of the select list are named "${name}"`)
  }
  named.add(name)
  if (source === undefined) plainNamed.add(name)
}

/**
 * The outputs of a select list (or RETURNING) and where each came from: the relation a plain
 * reference resolved through, or `null` for a subquery's output. An output named like an earlier
 * one replaces it in the result rows, as the driver keeps the last column of a name.
 *
 * @param role - how the outputs are used (see {@link expandAll})
 * @returns also every output name in order (`names`), when known
 * @throws QueryRefusedError `QUERY_REFUSED` for two explicit outputs of one name where either is
 *   encrypted, or an encrypted output a later `*` may shadow (see {@link expandAll})
 */
export function selections(
  a: AnalysisContext,
  selections: ReadonlyArray<SelectionNode>,
  scope: Scope,
  role: Role,
): {
  nodes: ReadonlyArray<SelectionNode>
  outputs: Map<string, Source>
  origins: Map<string, Origin>
  /** Names an explicit item gives to a plaintext value; see {@link plainOutputs}. */
  plainNamed: ReadonlySet<string>
  names: readonly string[] | undefined
} {
  const outputs = new Map<string, Source>()
  const origins = new Map<string, Origin>()
  // Two outputs of one name come back as one key (the driver keeps one of them): when either is
  // encrypted, the plan could decrypt the other's value, so the list is refused, unless both are
  // the same encrypted column (`u1.email, u2.email`: either value decrypts under its key).
  const named = new Set<string>()
  // Names an explicit item of the list gives to a plaintext value (a column the schema does not
  // annotate, an expression, a subquery): ORDER BY may sort by them (see {@link plainOutputs}).
  const plainNamed = new Set<string>()
  // MySQL lets a subquery of the select list read the aliases before it (not after: "forward
  // reference in item list"): it sees these as they fill.
  scope.setAliases(outputs, plainNamed)
  // Every output name in order, while known (an expression without an alias, or a `*` over a
  // relation whose columns are not known, ends that).
  let names: string[] | undefined = []
  const nodes = rebuildList(selections, (item) => withEndedAlias(selection(item)))
  function selection(s: SelectionNode): SelectionNode {
    const sel = s.selection
    if (sel.kind === 'SelectAllNode') {
      for (const r of scope.relations) {
        if (!r.qualifiedOnly) names = expand(a, r, outputs, origins, role, names)
      }
      return s
    }
    if (sel.kind === 'ReferenceNode' && sel.column.kind === 'SelectAllNode') {
      const qualifier = sel.table === undefined ? undefined : tableName(sel.table).name
      // `q.*` may name a relation of an enclosing query (LATERAL, correlated subqueries).
      const relation = qualifier === undefined ? undefined : scope.relationNamed(qualifier)
      if (relation !== undefined) names = expand(a, relation, outputs, origins, role, names)
      else {
        if (qualifier !== undefined) a.checkUnseen(qualifier, '*')
        names = undefined
      }
      return s
    }
    if (sel.kind === 'ReferenceNode' || sel.kind === 'ColumnNode') {
      const ref = reference(a, sel, scope)
      claim(named, plainNamed, outputs, columnName(sel), ref?.source)
      place(outputs, origins, columnName(sel), ref)
      names?.push(columnName(sel))
      return s
    }
    if (sel.kind === 'AliasNode') {
      // `.as(sql\`…\`)`: raw SQL names the output, with a name not known here (refused for an
      // encrypted value, and for a blind index in a derived table or CTE: checkSourceAlias). It
      // claims, places and replaces none (helper-127): `name` is then no output's name (String
      // of an undefined).
      const rawAlias = sel.alias.kind !== 'IdentifierNode'
      const name = identifierName(sel.alias)
      if (rawAlias) {
        checkRawAlias(scope, sel.alias)
        names = undefined
        markUnnamedOutput(scope)
      } else names?.push(name)
      const inner = sel.node
      const ref = reference(a, inner, scope)
      if (inner.kind !== 'SelectQueryNode' && !rawAlias) claim(named, plainNamed, outputs, name, ref?.source)
      if (ref !== undefined) {
        checkSourceAlias(ref.source, sel.alias, name, role)
        // A scalar subquery's one output is read by position: what it passes on goes on.
        if (!rawAlias || role === 'scalar') {
          outputs.set(name, ref.source)
          origins.set(name, ref.relation)
        }
        return s
      }
      if (inner.kind === 'SelectQueryNode') {
        const sub = a.query(inner, scope, 'scalar')
        const only = sub.outputs.size === 1 ? [...sub.outputs.values()][0] : undefined
        const passes = only !== undefined && (inner as SelectQueryNode).selections?.length === 1
        if (!rawAlias) claim(named, plainNamed, outputs, name, passes ? only : undefined)
        if (passes && only !== undefined) {
          // The row key is the alias here too (a 64-byte one came back as ciphertext on PostgreSQL).
          checkSourceAlias(only, sel.alias, name, role)
          if (!rawAlias) {
            outputs.set(name, only)
            origins.set(name, null)
          }
        } else {
          const hit = [...sub.outputs.values()].find((o) => o.kind === 'column')
          if (hit?.kind === 'column')
            throw refuse(hit.info, 'subquery', 'a scalar subquery must select exactly one column')
          if (!rawAlias) place(outputs, origins, name, undefined)
        }
        return rebuild(s, { selection: rebuild(sel, { node: sub.node }) })
      }
      // Claimed above, as a plaintext value.
      if (!rawAlias) place(outputs, origins, name, undefined)
      return rebuild(s, { selection: rebuild(sel, { node: opaque(a, inner, scope, 'expression') }) })
    }
    names = undefined
    markUnnamedOutput(scope)
    const node = opaque(a, sel, scope, 'expression')
    if (role !== 'exists' && hasStarItem(sel)) refuseRawStarAfter(outputs, role)
    return rebuild(s, { selection: node })
  }
  return { nodes, outputs, origins, plainNamed, names }
}

/**
 * A selection whose alias is raw SQL (`sql\`count(*)\`.as(sql\`n -- all\`)`), ended as raw SQL
 * is: its comment swallowed the FROM and the WHERE, and any row-context guard (helper-90).
 */
function withEndedAlias(s: SelectionNode): SelectionNode {
  const ended = endAliasLine(s.selection)
  return ended === s.selection ? s : rebuild(s, { selection: ended })
}

/**
 * `*` over `relation` (see {@link expandAll}), its column names added to `names`. A module
 * function, not a closure made per query (see {@link claim}).
 *
 * @returns `names`, or `undefined` once a relation's columns are not known
 */
function expand(
  a: AnalysisContext,
  relation: Relation,
  outputs: Map<string, Source>,
  origins: Map<string, Origin>,
  role: Role,
  names: string[] | undefined,
): string[] | undefined {
  const added = expandAll(a, relation, outputs, origins, role)
  if (added === undefined) return undefined
  names?.push(...added)
  return names
}

/**
 * A `*` or `q.*` in raw SQL (`select(['u.email', sql\`p.*\`])`) after an encrypted output: its
 * columns are not known, and one named like the output would replace it in the rows (the driver
 * keeps the last), to fail decryption after the query ran. Raw `*` over a relation with
 * encrypted columns is refused on its own (raw-operands.ts); `selectAll('p')` is expanded instead.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `select all`)
 */
function refuseRawStarAfter(outputs: ReadonlyMap<string, Source>, role: Role): void {
  for (const [name, source] of outputs) {
    // At the root only decrypted outputs matter; a derived table's index outputs are searched.
    if (source.kind === 'index' && role === 'root') continue
    throw refuse(
      source.kind === 'column' ? source.info : source.info.column,
      'select all',
      `a * in raw SQL after output "${name}" may bring a column of that name in its place (the driver keeps the last)`,
      "List the columns, use selectAll('<table>') instead of raw SQL, or put the raw * first.",
    )
  }
}

/**
 * Records an explicit output `name`: what `ref` resolved to, or, for a plaintext value, nothing,
 * replacing an encrypted output of that name a `*` before it made (the driver keeps the last).
 */
function place(
  outputs: Map<string, Source>,
  origins: Map<string, Origin>,
  name: string,
  ref: Resolved | undefined,
): void {
  if (ref === undefined) {
    outputs.delete(name)
    origins.delete(name)
    return
  }
  outputs.set(name, ref.source)
  origins.set(name, ref.relation)
}

/**
 * The output names that stand for plaintext values only: named by an explicit item with no
 * annotated source, and by no output that passes an encrypted column or blind index on (not even
 * one whose name differs only in case, as MySQL matches names; nor a `*` that includes one).
 * Computed only for a query with ORDER BY, the one clause that reads them.
 */
export function plainOutputs(
  named: ReadonlySet<string>,
  outputs: ReadonlyMap<string, Source>,
): ReadonlySet<string> {
  if (named.size === 0 || outputs.size === 0) return named
  const annotated = new Set([...outputs.keys()].map((n) => n.toLowerCase()))
  return new Set([...named].filter((n) => !annotated.has(n.toLowerCase())))
}

/**
 * The outputs of a derived table or CTE, which later queries search through: a blind index it
 * passes on must come from the same relation as the encrypted column it indexes (plain
 * references both), or a search on the column would match another row's index.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
export function checkIndexPairs(
  outputs: ReadonlyMap<string, Source>,
  origins: ReadonlyMap<string, Origin>,
): void {
  for (const [name, source] of outputs) {
    if (source.kind !== 'index') continue
    for (const [other, paired] of outputs) {
      if (paired.kind !== 'column' || paired.info !== source.info.column) continue
      const from = origins.get(name) ?? null
      if (from !== null && from === (origins.get(other) ?? null)) continue
      throw refuse(
        paired.info,
        'derived table',
        `"${other}" and "${name}" (its blind index ${source.info.physical}) must both be plain columns of one relation`,
      )
    }
  }
}

/**
 * The end of every write (INSERT, UPDATE, DELETE): its RETURNING list makes its outputs, which a
 * derived use checks like a select's and an expression may not receive encrypted.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
export function returning(
  a: AnalysisContext,
  node: InsertQueryNode | UpdateQueryNode | DeleteQueryNode,
  scope: Scope,
  role: Role,
  patch: Record<string, unknown>,
): Outputs {
  let outputs = new Map<string, Source>()
  let names: readonly string[] | undefined = []
  if (node.returning) {
    const r = selections(a, node.returning.selections, scope, role)
    checkReservedAliases(a, node.returning.selections, r.outputs, r.origins, scope, role, false)
    names = r.names
    let nodes = r.nodes
    if (role === 'root') {
      const context = contextSelections(nodes, r.outputs, r.origins, a.mode === 'verify')
      if (context !== undefined) {
        nodes = context.nodes
        a.addOutputContext(context.context, context.hidden)
      }
    }
    patch.returning = rebuild(node.returning, { selections: nodes })
    outputs = r.outputs
    if (role === 'derived') checkIndexPairs(outputs, r.origins)
  }
  if (role === 'opaque') {
    const hit = firstColumn(outputs)
    if (hit !== undefined) throw refuse(hit.info, 'subquery', 'its result is used in an expression')
  }
  return { node: rebuild(node, patch), outputs, names }
}
