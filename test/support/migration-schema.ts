import type { EncryptedSchema, MigrationPhase } from '../../src/index.js'
import type { SchemaBuilders } from './ops-schema.js'

/**
 * The schema of a table whose plaintext `email` is moving to `email_encrypted` (what the ops see),
 * with the table's options when given (`context`: its ciphertexts bound to the row's context
 * columns; `keyScope`: per-tenant keys).
 * Built with the given builders (from `src/` in a test, from the CLI's build in a `kfe.config.ts`):
 * this file imports no value, so the config loads none of `src/`.
 */
export function migrationSchema(
  table: string,
  phase: MigrationPhase,
  { encrypted, encryptedSchema }: SchemaBuilders,
  tableOptions?: { readonly context?: readonly string[]; readonly keyScope?: string },
): EncryptedSchema {
  return encryptedSchema(
    {
      [table]: {
        email: encrypted.text({
          index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
          storedAs: 'email_encrypted',
          migration: phase,
          maxBytes: 200,
        }),
      },
    },
    tableOptions === undefined ? {} : { tables: { [table]: tableOptions } },
  )
}
