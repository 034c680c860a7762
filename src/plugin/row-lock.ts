import type { OperationNode } from 'kysely'
import { fragmentsOf, identifierOf, parametersOf } from './raw-text.js'
import { rawTable } from './table-names.js'

/**
 * A row-locking clause written as raw SQL: `for update`, `for no key update`, `for share`,
 * `for key share` (each with `of t, …`, `nowait` or `skip locked`), MySQL's `lock in share mode`.
 * Its parameters may only be names (`for update of ${sql.table('users')}`).
 */
export function isRowLock(raw: OperationNode): boolean {
  return locks(raw, ROW_LOCK)
}

/**
 * A row lock after a LIMIT (and OFFSET) of literal numbers: `limit 1 for update of ${sql.table(t)}`.
 * Like {@link isRowLock} it holds no value and reads no relation, so its raw SQL needs no check;
 * unlike it, it limits rows, which a search index's post filter must not meet
 * (analyze-post-filters.ts still counts it as a raw modifier).
 */
export function isLimitedRowLock(raw: OperationNode): boolean {
  return locks(raw, LIMITED_ROW_LOCK)
}

function locks(raw: OperationNode, pattern: RegExp): boolean {
  if (raw.kind !== 'RawNode' || !parametersOf(raw).every(isName)) return false
  return pattern.test(fragmentsOf(raw).join('t'))
}

/** `sql.table()`, `sql.id()`, `sql.ref()`, `sql.raw()` of a name, an identifier: a name and nothing else. */
function isName(p: OperationNode): boolean {
  if (p.kind === 'TableNode' || p.kind === 'IdentifierNode') return true
  if (p.kind !== 'RawNode') return false
  if (identifierOf(p) !== undefined || rawTable(p) !== undefined) return true
  const parameters = parametersOf(p)
  if (parameters.length === 0) return NAME_CHAIN.test(fragmentsOf(p).join(''))
  const only = parameters[0] as OperationNode
  return (
    parameters.length === 1 && fragmentsOf(p).every((f) => f.trim() === '') && only.kind === 'ReferenceNode'
  )
}

const NAME_CHAIN = /^\s*[\w"`.]+\s*$/

/** One lock clause; a row lock is one or more (`for update of a for share of b`). */
const LOCK = String.raw`(?:for\s+(?:update|no\s+key\s+update|share|key\s+share)(?:\s+of\s+[\w"\x60.]+(?:\s*,\s*[\w"\x60.]+)*)?(?:\s+(?:nowait|skip\s+locked))?|lock\s+in\s+share\s+mode)`
const LOCKS = String.raw`${LOCK}(?:\s+${LOCK})*\s*$`
const ROW_LOCK = new RegExp(String.raw`^\s*${LOCKS}`, 'i')
const LIMITED_ROW_LOCK = new RegExp(String.raw`^\s*limit\s+\d+(?:\s+offset\s+\d+)?\s+${LOCKS}`, 'i')
