import { createHash } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import { OperationError } from '../errors.js'
import { SCOPE_SEPARATOR } from '../schema/key-scope.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'

/**
 * The key generation of a table with per-tenant keys: a SHA-256 over the active versions above 1
 * of its tenants' keys (`key name, purpose, version`, sorted), as hex. It changes when any tenant's
 * data or index key is rotated (or a rotated tenant is shredded), and not when a new tenant gets
 * its first keys. A whole-table job records it when planned (its version targets are 0/0: each row
 * onto its own tenant's active versions), and a later run joins the job only while it is the same:
 * a job interrupted before a rotation is planned again, so the rows its done batches moved onto the
 * former versions are not left behind.
 *
 * One query over the key table (names, purposes and versions of active rows only; no wrapped key),
 * on `db` (the transaction that holds the job row's lock). The LIKE escapes with `!`, not the
 * backslash MySQL's NO_BACKSLASH_ESCAPES mode disables.
 * @internal
 */
export async function tenantKeyGeneration(
  ctx: OpsContext,
  table: TableInfo,
  // biome-ignore lint/suspicious/noExplicitAny: the key table is named at run time.
  db: Kysely<any> = ctx.db,
): Promise<string> {
  const scope = table.keyScope
  if (scope === undefined)
    throw new OperationError('OPS_INVALID', `${table.physical} has no per-tenant keys (keyScope).`, {
      table: table.logical,
    })
  const prefix = `${table.logical}${SCOPE_SEPARATOR}${scope.column}=`
  const rows = await db
    .selectFrom(sql.table(ctx.store.tableName).as('k'))
    .select(['logical_table', 'purpose', 'version'])
    .where('state', '=', 'active')
    .where('version', '>', 1)
    .where(sql<boolean>`logical_table like ${`${prefix.replace(/[!%_]/g, '!$&')}%`} escape '!'`)
    .execute()
  const entries = rows
    .map((r) => ({
      name: String(r.logical_table),
      line: `${r.logical_table}\n${r.purpose}\n${Number(r.version)}`,
    }))
    // LIKE may fold case (a collation): the prefix itself is compared byte for byte.
    .filter((e) => e.name.startsWith(prefix))
    .map((e) => e.line)
    .sort()
  const hash = createHash('sha256')
  for (const line of entries) hash.update(`${line}\n`)
  return hash.digest('hex')
}
