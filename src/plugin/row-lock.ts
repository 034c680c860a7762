import type { OperationNode } from 'kysely'
import { fragmentsOf, identifierOf, parametersOf } from './raw-text.js'
import { rawTable } from './table-names.js'

/**
 * A row-locking clause written as raw SQL: `for update`, `for no key update`, `for share`,
 * `for key share` (each with `of t, …`, `nowait` or `skip locked`), MySQL's `lock in share mode`.
 * Its parameters may only be names (`for update of ${sql.table('users')}`).
 */
export function isRowLock(raw: OperationNode): boolean {
  if (raw.kind !== 'RawNode' || !parametersOf(raw).every(isName)) return false
  return ROW_LOCK.test(fragmentsOf(raw).join('t'))
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
const ROW_LOCK = new RegExp(String.raw`^\s*${LOCK}(?:\s+${LOCK})*\s*$`, 'i')
