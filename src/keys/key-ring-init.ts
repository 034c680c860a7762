/**
 * Creating a table's first keys, and refusing to: version 1 of each missing purpose is generated,
 * wrapped under every KEK, each wrapping proven, and stored in one statement; never for a table whose keys were lost
 * (it holds ciphertext, or the key store shows it was initialised).
 */
import { KeyError, KeyProviderError } from '../errors.js'
import { ownKeyBuffer as copyKey } from '../fields/key-bytes.js'
import { parseTenantKeyName } from '../schema/key-scope.js'
import type { KeyCache } from './key-cache.js'
import { keyCheckValue } from './key-check.js'
import { KeyMaterial } from './key-material.js'
import type { KeyPurpose, KeyRef, WrappedKey } from './key-provider.js'
import { KEY_PURPOSES } from './key-row.js'
import type { KeyStore } from './key-store.js'
import { generateWrappedKey, type ProviderCalls } from './key-wrapping.js'
import type { StoredKey } from './stored-key.js'

/** What creating first keys needs from a key ring. */
export interface KeyInitContext extends ProviderCalls {
  readonly store: KeyStore
  /** Seeded with each created key, unless the ring is closed or forgot the name. */
  readonly cache: KeyCache
  readonly isClosed: () => boolean
  /** Whether the ring forgot this key name (it was shredded meanwhile): its keys are not seeded. */
  readonly wasForgotten: (logicalTable: string) => boolean
}

/**
 * Throws `KEYS_MISSING` when keys of `missing` purposes must not be created for the table: it
 * holds ciphertext, or (`recorded`) the key store itself shows it was initialised.
 *
 * The key store was read before the table was sampled: another process may have created the
 * keys and written a row in between (two processes starting on an empty key table). So ciphertext
 * found is checked against the key store once more, read after the sample: if the keys are there
 * now, they were created meanwhile, not lost.
 * @param holdsCiphertext - the ring's probe of the table's encrypted columns, if any.
 * @param reread - reads the name's keys again.
 * @returns the keys read again, when the missing purposes were created meanwhile (the caller uses
 *   them and creates none); undefined when the caller may create them.
 */
export async function refuseOverCiphertext(
  holdsCiphertext: ((logicalTable: string) => Promise<boolean>) | undefined,
  logicalTable: string,
  missing: readonly KeyPurpose[],
  recorded: boolean,
  reread: () => Promise<readonly StoredKey[]>,
): Promise<readonly StoredKey[] | undefined> {
  const holds = recorded ? false : ((await holdsCiphertext?.(logicalTable)) ?? false)
  if (!recorded && !holds) return undefined
  if (holds) {
    const keys = await reread()
    if (missing.every((p) => keys.some((k) => k.purpose === p))) return keys
  }
  const what = missing.map((p) => `${p} key`).join(' and ')
  const evidence = recorded
    ? `its keys of the other purpose are in the key store, so it was initialised`
    : `its encrypted columns hold ciphertext`
  throw new KeyError(
    'KEYS_MISSING',
    `The key store has no ${what} for ${logicalTable}, but ${evidence}. The key table was likely dropped, edited, or restored from another environment. No key was created: fresh keys would make the stored data unreadable and its searches silently empty. Restore the key table from its backup (docs/keys.md).`,
    { table: logicalTable },
  )
}

/**
 * Unwraps the active key of each purpose of `logicalTable` (one provider call each, then cached):
 * keys that are there must unwrap under the configured KEKs before anything is built on them. A
 * key table of another environment, or a KEK missing from the configuration (or another key
 * behind its id), is then said at once (`kfe init`, `encryption.init`, `kfe rotate` before it
 * stages), not by the first query, nor by the re-encryption after a rotation has made active a
 * version wrapped under the wrong KEK, which the application then cannot unwrap.
 * @param activeKey - the ring's `activeKey`.
 * @throws KeyProviderError `UNWRAP_FAILED` (its message names the likely causes), or the
 *   provider's code (`PROVIDER_UNAVAILABLE`, …); KeyError `KEY_CHECK_FAILED`, `KEY_STORE_ERROR`.
 */
export async function proveActiveKeys(
  activeKey: (logicalTable: string, purpose: KeyPurpose) => Promise<unknown>,
  logicalTable: string,
): Promise<void> {
  for (const purpose of KEY_PURPOSES) {
    try {
      await activeKey(logicalTable, purpose)
    } catch (error) {
      // No active key (a keyScope table's own name), or a shredded tenant's: nothing to check.
      // The key ring's own finding, not a provider's error of that code.
      if (
        !(
          error instanceof KeyError &&
          !(error instanceof KeyProviderError) &&
          (error.code === 'KEY_NOT_FOUND' || error.code === 'KEY_DESTROYED')
        )
      )
        throw error
    }
  }
}

/**
 * Generates version 1 of each purpose under providers[0], wraps each under every other
 * provider, proves every wrapping unwraps to its key, and stores them in one statement (no
 * process sees one without the other). Nothing is stored unless every wrapping of every purpose
 * was proven.
 * @returns the refs this call created (others were created first by another process).
 * @throws KeyProviderError `UNWRAP_FAILED` naming the KEK whose wrapping failed its proof; the
 *   provider's code when a KEK did not answer (`PROVIDER_UNAVAILABLE`, …).
 */
export async function createInitialVersions(
  ctx: KeyInitContext,
  logicalTable: string,
  purposes: readonly KeyPurpose[],
): Promise<KeyRef[]> {
  const generated: { ref: KeyRef; plaintext: Buffer; wrappings: WrappedKey[] }[] = []
  try {
    for (const purpose of purposes) {
      const ref: KeyRef = { logicalTable, purpose, version: 1 }
      generated.push({ ref, ...(await generateWrappedKey(ctx, ref)) })
    }
    const results = await ctx.store.createInitialKeys(
      logicalTable,
      generated.map((g) => ({
        purpose: g.ref.purpose,
        wrappings: g.wrappings,
        checkValue: keyCheckValue(g.plaintext, g.ref),
      })),
    )
    const created: KeyRef[] = []
    results.forEach((result, i) => {
      const g = generated[i]
      if (g === undefined || !result.created) return
      created.push(g.ref)
      if (ctx.isClosed() || ctx.wasForgotten(logicalTable)) return
      // Seed the cache with the key we already hold: saves one unwrap on first use.
      // Not awaited: a read of this very version (ring.key) may be in flight and waiting for
      // this creation, and joining its single-flight entry here would deadlock.
      const material = new KeyMaterial(g.ref, copyKey(g.plaintext))
      void ctx.cache
        .get(g.ref, async () => material)
        .then(
          (cached) => {
            if (cached !== material) material.destroy()
          },
          () => material.destroy(),
        )
    })
    return created
  } finally {
    for (const g of generated) g.plaintext.fill(0)
  }
}

/**
 * The error of a tenant's first write where its keys may not be created now (inside a transaction).
 * @param cause - the `KEY_NOT_FOUND` of the lookup.
 */
export function notCreatedNow(logicalTable: string, cause: unknown): KeyError {
  return new KeyError(
    'KEY_NOT_FOUND',
    `${logicalTable} has no keys yet, and a tenant's keys are not created inside a transaction (a rollback would remove them after they encrypted data). Create them first (encryption.initTenant, kfe init --tenant), or write the tenant's first row outside a transaction.`,
    { table: parseTenantKeyName(logicalTable)?.logical ?? logicalTable, cause },
  )
}
