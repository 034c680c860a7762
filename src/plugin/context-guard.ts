import type { BinaryOperationNode, OperationNode, ReferenceNode, WhereNode } from 'kysely'
import { contextValue } from '../fields/context-values.js'
import type { TableInfo } from '../schema/schema.js'
import { conjuncts, equality, isColumn } from './context-writes.js'
import { referenceNode, valueNode } from './nodes.js'

/**
 * Exact context guards. Where the plugin takes a row's context value from an equality of the
 * statement (`tenant_id = 'acme'` fixing an UPDATE's row context, or naming the tenant of a
 * search on a table with per-tenant keys), it binds ciphertexts, AADs and keys to that value's
 * canonical string. The database may match rows whose stored value is another string: MySQL and
 * MariaDB's default collations compare case- and trailing-space-insensitively (`'acme'` matches
 * `'Acme'` and `'acme '`), and any engine converts a string to a column's type (`'05'` matches
 * the integer 5). Such a row's own context is another value: an UPDATE would write ciphertexts
 * bound to `'acme'` into a row of tenant `'Acme'` (unreadable afterwards), a search would compute
 * the wrong tenant's blind index for it.
 *
 * So beside each such equality the plugin adds a guard that the database evaluates on the stored
 * value's text, byte for byte, in every engine and collation:
 *
 * ```sql
 * md5(concat("tenant_id")) = md5('acme')            -- a string
 * md5(lower(concat("tenant_id"))) = md5('0c0a…')    -- a UUID (canonical lower case)
 * ```
 *
 * `concat(col)` is the column's text in both engines (an integer's decimal form, a uuid's
 * lower-case form); `md5` compares bytes whatever the collation. The equality itself stays, so
 * the database's index on the context column still selects the rows; the guard only drops the
 * rows whose context is another value than the one bound. Context values are plaintext columns
 * (never encrypted), so the guard's value is no secret.
 */

/** The SQL function of a guard (the outer call). */
const GUARD_HASH = 'md5'

/** A UUID's canonical string (what `contextValue` returns for a UUID). */
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function fn(name: string, args: readonly OperationNode[]): OperationNode {
  return Object.freeze({
    kind: 'FunctionNode',
    func: name,
    arguments: Object.freeze([...args]),
  }) as OperationNode
}

/**
 * The guard that a context column's stored value is exactly `canonical`.
 *
 * @param column - The context column's name as the statement writes it.
 * @param qualifier - The relation the statement's equality qualifies it with, if any.
 * @param canonical - The canonical context value the plugin binds (see `contextValue`).
 */
export function exactContextGuard(
  column: string,
  qualifier: ReferenceNode['table'],
  canonical: string,
): OperationNode {
  const text = fn('concat', [referenceNode(column, qualifier)])
  // contextValue lower-cases a UUID: a text column may hold it in upper case (the same tenant).
  const stored = CANONICAL_UUID.test(canonical) ? fn('lower', [text]) : text
  return Object.freeze({
    kind: 'BinaryOperationNode',
    leftOperand: fn(GUARD_HASH, [stored]),
    operator: Object.freeze({ kind: 'OperatorNode', operator: '=' }),
    rightOperand: fn(GUARD_HASH, [valueNode(canonical)]),
  }) as OperationNode
}

/**
 * True when `theirs` is the same tree as `ours` (kinds, names, values), whatever its object
 * identities: a key `theirs` leaves undefined counts as absent. The walk follows `ours`, a guard
 * of a few nodes, so it ends on any `theirs`, cyclic values included.
 */
function sameTree(ours: unknown, theirs: unknown): boolean {
  if (ours === theirs) return true
  if (typeof ours !== 'object' || ours === null || typeof theirs !== 'object' || theirs === null) return false
  if (Array.isArray(ours) !== Array.isArray(theirs)) return false
  const o = ours as Record<string, unknown>
  const t = theirs as Record<string, unknown>
  for (const key of Object.keys(o)) if (!sameTree(o[key], t[key])) return false
  for (const key of Object.keys(t)) if (!(key in o) && t[key] !== undefined) return false
  return true
}

/**
 * True when the top-level AND chain of `where` holds `guard` itself: the same column, qualifier
 * and value (a tree this plugin rewrote before). Another `md5(concat(…))` term (on another
 * relation's column of the same name, with another operator or value) is not this guard, nor is
 * the same guard inside parentheses: a search's own tenant guard, `(bidx in (…) and md5(…))`,
 * restricts that search only, which raw SQL beside it may have put under an OR (helper-85).
 */
function holdsGuard(where: OperationNode | undefined, guard: OperationNode): boolean {
  return conjuncts(where, false).some((c) => sameTree(guard, c))
}

/**
 * `condition AND guard`: a search condition with the guard of the tenant it was computed for.
 * The guard sits in the same conjunction as the tenant's equality (the search required it there).
 */
export function andGuard(condition: OperationNode, guard: OperationNode): OperationNode {
  return Object.freeze({
    kind: 'ParensNode',
    node: Object.freeze({ kind: 'AndNode', left: condition, right: guard }),
  }) as OperationNode
}

/**
 * The WHERE of an UPDATE that writes ciphertexts bound to the row context its WHERE fixes, with
 * the guard of each context column fixed there (not those the statement sets: their new value
 * is the one written). Unchanged when every such guard is there already, exactly (a tree
 * rewritten before): a term that only looks like one (another relation's column of the same
 * name, say a search's guard in an UPDATE … FROM) does not stand for it.
 *
 * @param where - The statement's (rewritten) WHERE.
 * @param table - The table updated (it binds a context).
 * @param relation - The name the statement gives it.
 * @param sets - Its SET items of plain columns, by column name.
 */
export function guardUpdate(
  where: WhereNode,
  table: TableInfo,
  relation: string,
  sets: ReadonlyMap<string, OperationNode>,
): WhereNode {
  const guards: OperationNode[] = []
  for (const name of table.context) {
    if ([...sets.keys()].some((c) => isColumn(c, name))) continue
    // The first equality fixes the value, as in updateRowContext.
    for (const conjunct of conjuncts(where)) {
      const eq = equality(conjunct, relation)
      if (eq === undefined || !isColumn(eq.column, name)) continue
      const canonical = contextValue(eq.value)
      const left = (conjunct as BinaryOperationNode).leftOperand as Partial<ReferenceNode>
      if (canonical === undefined) break
      const guard = exactContextGuard(eq.column, left.table, canonical)
      if (!holdsGuard(where, guard)) guards.push(guard)
      break
    }
  }
  if (guards.length === 0) return where
  // The WHERE as written in parentheses: whatever it holds (raw SQL with an OR), the guards
  // restrict every row it selects.
  const all = guards.reduce(
    (left, right) => Object.freeze({ kind: 'AndNode', left, right }) as OperationNode,
    Object.freeze({ kind: 'ParensNode', node: where.where }) as OperationNode,
  )
  return Object.freeze({ ...where, where: all }) as WhereNode
}
