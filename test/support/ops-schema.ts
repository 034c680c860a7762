import type { EncryptedSchema, encrypted, encryptedSchema } from '../../src/index.js'

/** The two builders {@link opsSchema} needs: from `src/` in a test, from the CLI's build in a `kfe.config.ts`. */
export interface SchemaBuilders {
  readonly encrypted: typeof encrypted
  readonly encryptedSchema: typeof encryptedSchema
}

/**
 * `table` (id, name, email with a unique blind index, ssn with a 16-bit search index): the schema of
 * the ops and CLI suites. A test and the `kfe.config.ts` its child process loads build it from this
 * one function, so they hold the same schema; it imports no value, so the config loads none of `src/`.
 */
export function opsSchema(
  table: string,
  { encrypted, encryptedSchema }: SchemaBuilders,
  options: { readonly rotationSlot?: boolean } = {},
): EncryptedSchema {
  return encryptedSchema({
    [table]: {
      email: encrypted.text({
        index: {
          name: 'email_bidx',
          normalize: ['trim', 'lowercase'],
          // Gives `email_bidx` a rotation slot column (`email_bidx_next`).
          ...(options.rotationSlot === true ? { rotationSlot: 'email_bidx_next' } : {}),
        },
        maxBytes: 200,
      }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
    },
  })
}

/**
 * `table` with per-tenant keys (`keyScope: 'tenant_id'`, context `tenant_id, id`): id (varchar 36),
 * tenant_id, name, email (unique blind index), ssn (16-bit search index). For the CLI suites over
 * per-tenant keys, built from this one function by the test and its `kfe.config.ts`.
 */
export function tenantSchema(table: string, { encrypted, encryptedSchema }: SchemaBuilders): EncryptedSchema {
  return encryptedSchema(
    {
      [table]: {
        email: encrypted.text({ index: { name: 'email_bidx', normalize: ['lowercase'] } }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
      },
    },
    { tables: { [table]: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
  )
}
