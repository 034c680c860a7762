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
