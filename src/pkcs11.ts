/**
 * `kysely-field-encryption/pkcs11`: the PKCS#11 (HSM) key provider. A subpath of its own so that
 * graphene-pk11 stays an optional peer dependency of the main entry point.
 */
export type {
  GeneratePkcs11KekOptions,
  Pkcs11KeyProvider,
  Pkcs11ProviderOptions,
} from './keys/providers/pkcs11-provider.js'
export { generatePkcs11Kek, pkcs11KeyProvider } from './keys/providers/pkcs11-provider.js'
