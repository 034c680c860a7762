/**
 * Errors after which the database rolled the whole transaction back (a job's batch, a job's
 * planning) and running it again is safe:
 * PostgreSQL deadlock (40P01) and serialization failure (40001); MySQL/MariaDB deadlock (1213),
 * lock wait timeout (1205), and MariaDB's `ER_CHECKREAD` (1020, "Record has changed since last
 * read"), which InnoDB returns under `innodb_snapshot_isolation` (the default from MariaDB 11.6)
 * when the batch writes a row changed after its snapshot was taken.
 */
export function isRetryable(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return (
    e?.code === '40P01' ||
    e?.code === '40001' ||
    e?.errno === 1213 ||
    e?.errno === 1205 ||
    e?.errno === 1020 ||
    e?.code === 'ER_CHECKREAD'
  )
}
