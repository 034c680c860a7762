import { type EncryptedSchema, encrypted, encryptedSchema } from '../../src/index.js'

/** The schema both a test's `kfe.config.ts` and the test itself build (one source, so the same schema). */
export function cliSchema(table: string): EncryptedSchema {
  return encryptedSchema({
    [table]: {
      email: encrypted.text({
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        maxBytes: 200,
      }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
    },
  })
}
