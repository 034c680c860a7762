/**
 * When a key ring creates keys, and when it refuses to: the explicit step ({@link KeyCreation.init}:
 * `kfe init`, `encryption.init`, `encryption.initTenant`), a tenant's first write
 * (`createTenantKeys`), development mode on first use (`autoCreate`), and never over a table or
 * tenant whose keys were lost (`KEYS_MISSING`). The key generation itself is in key-ring-init.ts.
 */
import { KeyError } from '../errors.js'
import { parseTenantKeyName } from '../schema/key-scope.js'
import type { KeyPurpose, KeyRef } from './key-provider.js'
import {
  createInitialVersions,
  type KeyInitContext,
  notCreatedNow,
  refuseOverCiphertext,
} from './key-ring-init.js'
import type { InitKeysResult, KeyRingOptions } from './key-ring-options.js'
import { KEY_PURPOSES as PURPOSES } from './key-row.js'
import { refOf } from './key-wrapping.js'

/** The creation policy of a key ring, from its options. */
export type KeyCreationOptions = Pick<
  KeyRingOptions,
  'autoCreate' | 'createTenantKeys' | 'holdsCiphertext' | 'readsInTransaction'
>

/**
 * A key ring's key creation: one per ring, sharing its providers, store and cache.
 */
export class KeyCreation {
  readonly #ctx: KeyInitContext
  readonly #autoCreate: boolean
  readonly #inTransaction: (() => boolean) | undefined
  readonly #createTenantKeys: boolean | (() => boolean)
  readonly #holdsCiphertext: ((logicalTable: string) => Promise<boolean>) | undefined
  /** Called with each key name whose keys this object created or found (its cached metadata is stale). */
  readonly #onChanged: (logicalTable: string) => void
  /** Tenants' creations in flight: both purposes of one write miss at once, and share one. */
  readonly #creating = new Map<string, Promise<InitKeysResult>>()

  /**
   * @param ctx - providers, store, cache and counters of the ring.
   * @param options - the ring's creation options.
   * @param onChanged - drops a key name's cached metadata after keys were created for it.
   */
  constructor(ctx: KeyInitContext, options: KeyCreationOptions, onChanged: (logicalTable: string) => void) {
    this.#ctx = ctx
    this.#autoCreate = options.autoCreate ?? false
    this.#inTransaction = options.readsInTransaction
    this.#createTenantKeys = options.createTenantKeys ?? false
    this.#holdsCiphertext = options.holdsCiphertext
    this.#onChanged = onChanged
  }

  /**
   * Creates version 1 of the data and index keys of each key name that has none, one name after
   * another, one query at a time (it may run on a single connection). Idempotent.
   * @throws KeyError `KEYS_MISSING` when a name has a missing purpose but its rows hold ciphertext
   *   (and the key store, read again after the sample, still lacks it) or the key store shows it
   *   was initialised.
   */
  async init(logicalTables: Iterable<string>): Promise<InitKeysResult> {
    const created: KeyRef[] = []
    const existing: KeyRef[] = []
    for (const logicalTable of new Set(logicalTables)) {
      const keys = await this.#ctx.store.list(logicalTable)
      const missing = PURPOSES.filter((p) => !keys.some((k) => k.purpose === p))
      for (const k of keys) existing.push(refOf(k))
      if (missing.length === 0) continue
      const appeared = await refuseOverCiphertext(
        this.#holdsCiphertext,
        logicalTable,
        missing,
        keys.length > 0 && this.#holdsCiphertext === undefined,
        () => this.#ctx.store.list(logicalTable),
      )
      if (appeared !== undefined) {
        // Another process created them since our read: they are existing keys, not lost ones.
        for (const k of appeared) if (missing.includes(k.purpose)) existing.push(refOf(k))
        this.#onChanged(logicalTable)
        continue
      }
      const made = await createInitialVersions(this.#ctx, logicalTable, missing)
      for (const purpose of missing) {
        const ref = { logicalTable, purpose, version: 1 }
        if (made.some((r) => r.purpose === purpose)) created.push(ref)
        else existing.push(ref)
      }
      this.#onChanged(logicalTable)
    }
    return { created, existing }
  }

  /**
   * A write found no active key (`error`, a `KEY_NOT_FOUND`): creates a tenant's keys when
   * `createTenantKeys` allows it now, else rethrows. One creation per tenant at a time.
   * @throws the given error when the name is not a tenant's or creation is off.
   * @throws KeyError `KEY_NOT_FOUND` when creation is refused now (inside a transaction).
   */
  async tenantFirstWrite(logicalTable: string, error: KeyError): Promise<void> {
    if (this.#createTenantKeys === false || parseTenantKeyName(logicalTable) === undefined) throw error
    if (this.#createTenantKeys !== true && !this.#createTenantKeys()) throw notCreatedNow(logicalTable, error)
    let creating = this.#creating.get(logicalTable)
    if (creating === undefined) {
      creating = this.init([logicalTable]).finally(() => this.#creating.delete(logicalTable))
      this.#creating.set(logicalTable, creating)
    }
    await creating
  }

  /**
   * A metadata load found purposes `missing`: refuses when the keys were lost, and in development
   * mode (`autoCreate`) creates a table's first keys (never a tenant's: those are created on
   * purpose or on its first write).
   * @param recorded - the key store holds keys of the other purpose.
   * @returns whether keys were created, here or (seen after the ciphertext sample) by another
   *   process meanwhile: the caller reads the store again.
   * @throws KeyError `KEYS_MISSING`
   */
  async onMissing(logicalTable: string, missing: readonly KeyPurpose[], recorded: boolean): Promise<boolean> {
    // Keys of one purpose without the other: the store's own record says this table was
    // initialised, so the missing rows were deleted. Never paper over that with fresh keys.
    const appeared = await refuseOverCiphertext(
      this.#holdsCiphertext,
      logicalTable,
      missing,
      recorded,
      async () => (await this.#ctx.store.read(logicalTable)).keys,
    )
    // Created by another process since the caller's read: the caller reads the store again.
    if (appeared !== undefined) return true
    if (!this.#autoCreate || parseTenantKeyName(logicalTable) !== undefined) return false
    // Never inside a transaction: its rollback would remove keys that already encrypted data
    // while this process kept them cached.
    if (this.#inTransaction?.() === true) return false
    await createInitialVersions(this.#ctx, logicalTable, missing)
    return true
  }
}

/** Whether an error is the `KEY_NOT_FOUND` of a key name without an active key. */
export function isKeyNotFound(error: unknown): error is KeyError {
  return error instanceof KeyError && error.code === 'KEY_NOT_FOUND'
}
