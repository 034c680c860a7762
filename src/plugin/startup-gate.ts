import type { Kysely } from 'kysely'
import { checkMigrationState } from '../schema/migration-state.js'
import type { EncryptedSchema } from '../schema/schema.js'
import { type VerifySchemaOptions, verifySchema } from '../schema/verify-schema.js'
import { ROW_STATEMENTS } from './node-utils.js'
import { relationNames } from './relation-names.js'
import { SchemaGate } from './schema-gate.js'

/**
 * The startup check of one wrapped dialect: the schema verification (unless turned off), and,
 * for a schema with a column under migration from plaintext, `checkMigrationState`, so a deploy
 * whose phase the database contradicts (docs/migrating.md, "Which phases may run at once") is
 * refused with `MIGRATION_PHASE_CONFLICT` before its first write or key use. Until it passed,
 * every query of a table under migration waits for it too, reads of plain columns included (an
 * `added` process reading a row a `cut-over` one wrote would see NULL); DDL never does (the `add`
 * migration may run through the application's Kysely before the check can pass).
 *
 * @param db - a Kysely on the query's connection (the wrapper's key-store Kysely)
 * @param verify - the schema verification's options; `undefined`: turned off
 */
export function startupGate(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  schema: EncryptedSchema,
  verify: VerifySchemaOptions | undefined,
  keyTable: string,
): SchemaGate {
  const migrating = new Set(
    [...schema.tables.values()]
      .filter((t) => [...t.columns.values()].some((c) => c.migration !== undefined))
      .map((t) => t.physical.toLowerCase()),
  )
  if (verify === undefined && migrating.size === 0) return new SchemaGate(undefined, keyTable)
  return new SchemaGate(
    async () => {
      const catalog = verify === undefined ? undefined : await verifySchema(db, schema, verify)
      if (migrating.size > 0) await checkMigrationState(db, schema)
      return catalog
    },
    keyTable,
    migrating.size === 0
      ? undefined
      : (node) => ROW_STATEMENTS.has(node.kind) && [...relationNames(node)].some((n) => migrating.has(n)),
  )
}
