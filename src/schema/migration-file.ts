import type { MigrationDdl } from './migration-ddl.js'

/**
 * A Kysely migration file (kysely-ctl's layout: `up` and `down` exported from one module in the
 * migration folder) that runs `ddl`. Its statements are frozen into the file, as a migration's
 * should be: a later change of the schema does not change what it did.
 *
 * @returns the TypeScript source
 * @example
 * ```ts
 * migrationFileSource(migrationDdl(schema, 'users', 'email', 'add', 'postgres'))
 * // export async function up(db: Kysely<any>): Promise<void> {
 * //   await sql.raw("alter table \"users\" add column if not exists \"email_encrypted\" bytea, …").execute(db)
 * ```
 */
export function migrationFileSource(ddl: MigrationDdl): string {
  const lines = [
    `import { type Kysely, sql } from 'kysely'`,
    '',
    `// Written by \`kfe migration ${ddl.table} ${ddl.column} --phase ${ddl.step}\` for ${ddl.family === 'postgres' ? 'PostgreSQL' : 'MySQL/MariaDB'}.`,
    `// Step '${ddl.step}' of moving ${ddl.table}.${ddl.column} from plaintext to encrypted: see docs/migrating.md of kysely-field-encryption.`,
  ]
  if (ddl.outsideTransaction)
    lines.push(
      '// CREATE INDEX CONCURRENTLY cannot run inside a transaction: run this migration with the',
      "// migrator's transactions disabled (kysely-ctl: `migrations: { disableTransactions: true }`).",
    )
  for (const note of ddl.notes) lines.push(`// Note: ${note}.`)
  // Said before PostgreSQL's own "cannot run inside a transaction block", which names no remedy.
  const guard = ddl.outsideTransaction
    ? [
        '  if (db.isTransaction)',
        `    throw new Error(${JSON.stringify("This migration builds an index CONCURRENTLY, which PostgreSQL cannot do in a transaction: run it with the migrator's transactions disabled (kysely-ctl: migrations: { disableTransactions: true }; Kysely's Migrator: disableTransactions: true).")})`,
      ]
    : []
  const body = (statements: readonly string[]) =>
    statements.length === 0
      ? ['  // nothing to undo']
      : [...guard, ...statements.map((s) => `  await sql.raw(${JSON.stringify(s)}).execute(db)`)]
  lines.push(
    '',
    '// biome-ignore lint/suspicious/noExplicitAny: a migration sees the database as it is, not as the app types it.',
    'export async function up(db: Kysely<any>): Promise<void> {',
    ...body(ddl.up),
    '}',
    '',
    '// biome-ignore lint/suspicious/noExplicitAny: as above.',
    'export async function down(db: Kysely<any>): Promise<void> {',
    ...body(ddl.down),
    '}',
    '',
  )
  return lines.join('\n')
}

/**
 * The file name kysely-ctl's `make` would give it: a millisecond timestamp prefix (so files sort
 * in creation order, as Kysely's migrator runs them) and a name.
 */
export function migrationFileName(ddl: MigrationDdl, now: Date = new Date()): string {
  return `${now.getTime()}_${ddl.table}_${ddl.column}_${ddl.step}.ts`
}
