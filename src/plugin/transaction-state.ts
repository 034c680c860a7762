import type { DatabaseConnection } from 'kysely'
import { QueryRefusedError } from '../errors.js'

/**
 * Which wrapped connections are inside a transaction, and how many times each began or ended one
 * or went back to its pool: what the wrapper asks before it creates keys or sends a query that
 * waited for its keys.
 */

/** Connections between BEGIN and COMMIT/ROLLBACK. */
export const inTransaction = new WeakSet<DatabaseConnection>()

/**
 * How many times each connection began or ended a transaction or went back to its pool. A query
 * that waited for its keys is sent only if this did not change meanwhile: a transaction rolled
 * back (a sibling of the query failed) and its connection released would otherwise run the
 * query after the rollback, in autocommit or in the next borrower's work.
 */
export const generation = new WeakMap<DatabaseConnection, number>()

export function nextGeneration(connection: DatabaseConnection): void {
  generation.set(connection, (generation.get(connection) ?? 0) + 1)
}

/**
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `transaction ended`) when the connection's
 *   transaction ended, or the connection was released, since `before` was read
 */
export function refuseIfEnded(connection: DatabaseConnection, before: number | undefined): void {
  if (generation.get(connection) === before) return
  throw new QueryRefusedError(
    'QUERY_REFUSED',
    'Refused a query whose transaction ended (or whose connection was released) while it waited for its keys: it would have run outside that transaction. Nothing was sent.',
    {
      operator: 'transaction ended',
      hint: 'Await every query of a transaction before the transaction callback returns or throws (Promise.all rejects at its first failure while the other queries still run).',
    },
  )
}

/** Leading blanks and comments of a statement. */
const LEAD = String.raw`^(?:\s+|--[^\n]*(?:\n|$)|/\*[\s\S]*?\*/)*`
/** BEGIN, not MariaDB's compound statement `BEGIN NOT ATOMIC … END`. */
const RAW_BEGIN = new RegExp(`${LEAD}(?:begin(?!\\s+not\\s+atomic\\b)|start\\s+transaction)\\b`, 'i')
/** COMMIT, ROLLBACK, END, ABORT, PREPARE TRANSACTION; not `… and chain` (a new transaction follows) nor a rollback to a savepoint. */
const RAW_END = new RegExp(
  `${LEAD}(?:(?:commit|end|rollback|abort)\\b(?![\\s\\S]*\\band\\s+chain\\b)(?!\\s+(?:work\\s+|transaction\\s+)?to\\b)|prepare\\s+transaction\\b)`,
  'i',
)

/** MySQL's `SET autocommit = 0` (`session`, `@@autocommit`, `@@session.autocommit`; `off`, `false`). */
const AUTOCOMMIT = new RegExp(
  `${LEAD}set\\s+(?:session\\s+|@@(?:session\\.)?)?autocommit\\s*(?:=|:=|\\s)\\s*(0|1|off|on|false|true)\\s*;?\\s*$`,
  'i',
)

/**
 * Connections whose session runs with autocommit off: every statement is in a transaction. The
 * mark stays when the connection goes back to its pool, as the session's setting does.
 */
const manualCommit = new WeakSet<DatabaseConnection>()

/**
 * Marks `connection` inside or outside a transaction when raw SQL began or ended one. A failed
 * COMMIT ends the transaction too (PostgreSQL rolls it back): `failed` clears the mark only. With
 * autocommit off (MySQL's `SET autocommit = 0`), the end of one transaction begins the next.
 */
export function trackRawTransaction(connection: DatabaseConnection, text: string, failed = false): void {
  const autocommit = failed ? null : AUTOCOMMIT.exec(text)
  if (autocommit) {
    const off = /^(0|off|false)$/i.test(autocommit[1] as string)
    if (off) {
      manualCommit.add(connection)
      inTransaction.add(connection)
    } else if (manualCommit.delete(connection)) {
      // Back to autocommit: the implicit transaction is committed (a START TRANSACTION before
      // it, autocommit already on, stays open).
      inTransaction.delete(connection)
    }
    nextGeneration(connection)
  } else if (!failed && RAW_BEGIN.test(text)) {
    inTransaction.add(connection)
    nextGeneration(connection)
  } else if (RAW_END.test(text)) transactionEnded(connection)
}

/**
 * A transaction of `connection` ended (COMMIT, ROLLBACK, raw or through Kysely): out of it,
 * unless its session runs with autocommit off, where the next statement begins another.
 */
export function transactionEnded(connection: DatabaseConnection): void {
  if (!manualCommit.has(connection)) inTransaction.delete(connection)
  nextGeneration(connection)
}
