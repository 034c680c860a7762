/**
 * kysely-field-encryption: field-level encryption for Kysely.
 *
 * This file is the whole public API. AWS KMS and PKCS#11 providers live behind the subpath
 * exports `kysely-field-encryption/aws-kms` and `kysely-field-encryption/pkcs11`, so their SDKs
 * stay optional.
 */

export type { BlindIndexSpec } from './blindindex/blind-index.js'
export type { Normalizer, NormalizerName } from './blindindex/normalizers.js'
export { normalizeValue } from './blindindex/normalizers.js'
export type { IndexSizing, IndexSizingInput } from './blindindex/recommend-index-bits.js'
export { recommendIndexBits } from './blindindex/recommend-index-bits.js'
export type { ErrorCode, FieldEncryptionErrorOptions, SchemaProblem, SchemaProblemKind } from './errors.js'
export {
  BlindIndexError,
  CodecError,
  ConfigError,
  DecryptionError,
  FieldEncryptionError,
  KeyError,
  KeyProviderError,
  OperationError,
  QueryRefusedError,
  SchemaMismatchError,
  UniqueViolationError,
} from './errors.js'
export type { BlindIndexValue, ExplicitHelpers } from './explicit-helpers.js'
export type { FieldEncryption, FieldEncryptionOptions, FieldEncryptionStats } from './field-encryption.js'
export { fieldEncryption } from './field-encryption.js'
export type { Codec, CodecKind } from './fields/codecs.js'
export { codecs } from './fields/codecs.js'
export type { FieldAad } from './fields/field-cipher.js'
export { decryptValue, encryptValue } from './fields/field-cipher.js'
export type { CiphertextHeader } from './fields/format.js'
export { ciphertextLength, FORMAT_V1_OVERHEAD, readHeader } from './fields/format.js'
export type { KeyCacheOptions, KeyCacheStats } from './keys/key-cache.js'
export { keyCheckValue } from './keys/key-check.js'
export { KeyMaterial } from './keys/key-material.js'
export type {
  AuditEvent,
  AuditSink,
  GeneratedKey,
  KeyProvider,
  KeyPurpose,
  KeyRef,
  RewrapSource,
  WrappedKey,
} from './keys/key-provider.js'
export type { InitKeysResult, KeyEvent, KeyRingOptions, KeyRingStats } from './keys/key-ring.js'
export { KeyRing } from './keys/key-ring.js'
export type { CorruptKey, KeyRows, KeyState, StoredKey } from './keys/key-store.js'
export { KeyStore } from './keys/key-store.js'
export type { LocalKeyProviderOptions } from './keys/local-provider.js'
export { localKeyProvider } from './keys/local-provider.js'
export { rewrapAll } from './keys/rewrap.js'
export type { ColumnOptions, EncryptedColumn, IndexNamesOf, IndexOptions } from './schema/columns.js'
export { encrypted } from './schema/columns.js'
export type { AddEncryptedColumnsOptions, SqlFamily } from './schema/migration.js'
export {
  addEncryptedColumns,
  createBlindIndexes,
  encryptedColumnTypes,
  sqlFamily,
} from './schema/migration.js'
export type { MigrationDdl, MigrationDdlOptions, MigrationStep } from './schema/migration-ddl.js'
export { applyMigrationStep, migrationDdl } from './schema/migration-ddl.js'
export { migrationFileName, migrationFileSource } from './schema/migration-file.js'
export type { MigrationPhase } from './schema/migration-phase.js'
export { MIGRATION_PHASES, phasesMayOverlap } from './schema/migration-phase.js'
export type { MigrationColumnState } from './schema/migration-state.js'
export { checkMigrationState } from './schema/migration-state.js'
export type { EncryptedSchema, SchemaDefinition, SchemaOptions, TableOptions } from './schema/schema.js'
export { encryptedSchema } from './schema/schema.js'
export type { Decrypted, PlaintextOf } from './schema/types.js'
export type { VerifySchemaOptions } from './schema/verify-schema.js'
