import type { EncryptedSchema, MigrationPhase } from '../../src/index.js'
import type { SchemaBuilders } from './ops-schema.js'

/**
 * The schema of a table whose plaintext `email` is moving to `email_encrypted` (what the ops see).
 * Built with the given builders (from `src/` in a test, from the CLI's build in a `kfe.config.ts`):
 * this file imports no value, so the config loads none of `src/`.
 */
export function migrationSchema(
  table: string,
  phase: MigrationPhase,
  { encrypted, encryptedSchema }: SchemaBuilders,
): EncryptedSchema {
  return encryptedSchema({
    [table]: {
      email: encrypted.text({
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        storedAs: 'email_encrypted',
        migration: phase,
        maxBytes: 200,
      }),
    },
  })
}

/**
 * What the test application's plugin sees until the plugin handles phases itself: the encrypted
 * column under its own name, bound to the logical name `email` (same keys and AAD as the ops'),
 * so the application writes both forms and searches either explicitly.
 */
export function dualWriteSchema(
  table: string,
  { encrypted, encryptedSchema }: SchemaBuilders,
): EncryptedSchema {
  return encryptedSchema({
    [table]: {
      email_encrypted: encrypted.text({
        logicalName: 'email',
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        maxBytes: 200,
      }),
    },
  })
}
