/**
 * `kysely-field-encryption/ops`: the key and data operations (init, status, rotate, reencrypt,
 * verify, retire, rewrap, encrypt-column) the `kfe` command line runs, as a library. No terminal code.
 */
export { OperationError } from './errors.js'
export type { OpsOptions } from './ops/context.js'
export type { EncryptColumnDryRun, EncryptColumnOptions } from './ops/encrypt-column.js'
export type { FieldEncryptionOps, KfeConfig } from './ops/field-encryption-ops.js'
export { defineConfig, fieldEncryptionOps } from './ops/field-encryption-ops.js'
export type { InitKey, InitOptions, InitResult } from './ops/init.js'
export type { JobOptions, JobResult } from './ops/job-engine.js'
export type { JobRecord, JobStart, JobTargets } from './ops/job-store.js'
export type { MigrationFile } from './ops/migration.js'
export type { ColumnMigrationStatus } from './ops/migration-status.js'
export type { Progress, RunOptions } from './ops/progress.js'
export type { ReencryptDryRun, ReencryptOptions } from './ops/reencrypt.js'
export type { RetireOptions, RetireResult } from './ops/retire.js'
export type { RewrapOptions, RewrapResult } from './ops/rewrap.js'
export type { RotateOptions, RotateResult } from './ops/rotate.js'
export type { IndexSlotStatus, SlotColumnStatus } from './ops/slot-status.js'
export type { KeyVersionStatus, StatusOptions, StatusResult, TableStatus } from './ops/status.js'
export type { VerifyFailure, VerifyOptions, VerifyResult } from './ops/verify.js'
export type { VerifyColumnOptions, VerifyColumnResult } from './ops/verify-column.js'
