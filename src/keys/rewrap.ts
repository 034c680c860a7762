import { timingSafeEqual } from 'node:crypto'
import { ConfigError, KeyError, KeyProviderError } from '../errors.js'
import { ownKeyBuffer } from '../fields/key-bytes.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'
import { isKekId, KEK_ID_RULE } from './kek-id.js'
import { keyCheckValue } from './key-check.js'
import type { AuditSink, KeyProvider, KeyRef, WrappedKey } from './key-provider.js'
import type { KeyStore, StoredKey } from './key-store.js'
import { auditedCall, checkProviders, unwrapWithFailover } from './provider-call.js'

/** Options of {@link rewrapAll}. */
export interface RewrapAllOptions {
  /** The key store to walk. */
  readonly store: KeyStore
  /** Providers able to unwrap the current wrappings, tried in this order with failover. */
  readonly from: readonly KeyProvider[]
  /** The KEK every key gets a wrapping under. */
  readonly to: KeyProvider
  /**
   * Kek ids whose wrappings are removed once the new wrapping is stored (KEK rotation). The
   * wrapping under `to` is always kept, so a key never loses its last wrapping.
   * @default []
   */
  readonly removeKekIds?: readonly string[]
  /** Receives one event per provider call. */
  readonly audit?: AuditSink
}

/** Outcome of {@link rewrapAll}. */
export interface RewrapAllResult {
  /** Stored key versions seen. */
  readonly keys: number
  /** Versions that received a new wrapping under `to` (those that already had one are skipped). */
  readonly rewrapped: number
}

/**
 * KEK rotation, or adding a KEK for disaster recovery (DESIGN.md §5): gives every stored key a
 * wrapping under `to` (`to.rewrap`, which may re-encrypt inside the KMS without ever seeing the
 * plaintext, or else unwraps through `from`), and optionally drops the wrappings of
 * `removeKekIds`. Touches no user row: only the key store's `wrappings` column changes.
 *
 * Idempotent and resumable: a key that already has a wrapping under `to` is not rewrapped again,
 * only pruned, once that wrapping is proven to unwrap to the key (see {@link proveExisting}); one
 * that does not is replaced by a new, proven one. Every plaintext it obtains is zeroed after use. Processes that cached the key
 * metadata keep using the old wrappings for up to the key ring's `metadataTtlMs`; keep the old
 * KEK usable that long after removing it.
 *
 * @param options - store, source providers, target provider, kek ids to remove, audit sink.
 * @returns how many keys were seen and how many got a new wrapping.
 * @throws ConfigError `CONFIG_INVALID` when `removeKekIds` includes `to.id` or `from` is invalid.
 * @throws KeyProviderError when a key cannot be unwrapped through `from` (keys before it stay done);
 *   `CONFIG_INVALID` when a key has no wrapping under a `from` provider (wrappings under other kek
 *   ids, which a database writer may have planted, are never used as a source).
 * @throws KeyProviderError `UNWRAP_FAILED` when the new wrapping does not unwrap to the key `from` holds.
 * @throws KeyError `KEY_STORE_ERROR` when the key store fails.
 * @example
 * ```ts
 * await rewrapAll({ store, from: [oldKek], to: newKek, removeKekIds: [oldKek.id] })
 * // SQL per key: update "kfe_keys" set "wrappings" = $1 where "logical_table" = $2 and "purpose" = $3 and "version" = $4
 * ```
 */
export async function rewrapAll(options: RewrapAllOptions): Promise<RewrapAllResult> {
  refuseUnknownKeys(
    options,
    optionKeys<RewrapAllOptions>()(['store', 'from', 'to', 'removeKekIds', 'audit']),
    'rewrapAll',
  )
  const { store, from, to, audit } = options
  const remove = new Set(options.removeKekIds ?? [])
  checkProviders(from, 'rewrapAll')
  if (!isKekId(to.id))
    throw new ConfigError(
      'CONFIG_INVALID',
      `rewrapAll: the id of its 'to' key provider is not ${KEK_ID_RULE}.`,
    )
  if (remove.has(to.id)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `rewrapAll cannot remove the wrappings of its target KEK ${to.id}.`,
    )
  }
  const keys = await store.listAll()
  let rewrapped = 0
  for (const listed of keys) {
    // A destroyed key (crypto-shredded) has no wrapping to rewrap, and must never get one.
    if (listed.state === 'destroyed') continue
    const ref: KeyRef = {
      logicalTable: listed.logicalTable,
      purpose: listed.purpose,
      version: listed.version,
    }
    let stored = listed
    // Compare-and-set loop: a concurrent rewrap of the same key makes us re-read and redo it.
    for (let attempt = 0; ; attempt++) {
      let target = stored.wrappings.find((w) => w.kekId === to.id)
      // A wrapping already under `to` (an earlier run, or one a database writer planted) is proven
      // as a new one is before anything is removed on its word; one that fails is replaced.
      if (target !== undefined && !(await proveExisting(stored, target, ref, from, to, audit)))
        target = undefined
      const made = target === undefined
      if (target === undefined) target = await rewrapOne(stored, ref, from, to, audit)
      const kept = stored.wrappings.filter((w) => w.kekId !== to.id && !remove.has(w.kekId))
      const next = [...kept, target]
      if (sameWrappings(stored.wrappings, next)) break
      if (await store.setWrappings(ref, next, stored.wrappings)) {
        // Counted once stored: a wrapping that lost the compare-and-set to a concurrent run is not.
        if (made) rewrapped++
        break
      }
      if (attempt === 4) {
        throw new KeyError(
          'KEY_STORE_ERROR',
          `The wrappings of ${ref.logicalTable}/${ref.purpose}/v${ref.version} keep changing under rewrapAll.`,
          { table: ref.logicalTable },
        )
      }
      const fresh = (await store.list(ref.logicalTable, ref.purpose)).find((k) => k.version === ref.version)
      if (fresh === undefined) break
      stored = fresh
    }
  }
  return { keys: keys.length, rewrapped }
}

/**
 * Whether a wrapping already under `to` holds the key: it unwraps through `to` to the very key the
 * `from` providers unwrap from their own wrappings, or, where none of theirs is left (an earlier
 * run removed them), to a key whose check value is the one stored. Without either there is nothing
 * to compare with, and nothing it could be trusted to replace: it is left as it is.
 */
async function proveExisting(
  stored: StoredKey,
  existing: WrappedKey,
  ref: KeyRef,
  from: readonly KeyProvider[],
  to: KeyProvider,
  audit: AuditSink | undefined,
): Promise<boolean> {
  const owned = stored.wrappings.filter((w) => from.some((p) => p.id === w.kekId))
  if (owned.length === 0 && stored.checkValue === undefined) return true
  const plaintexts: Buffer[] = []
  try {
    let check: Buffer
    try {
      check = await auditedCall(audit, 'unwrap', to.id, ref, () => to.unwrap(existing, ref))
    } catch {
      return false
    }
    plaintexts.push(check)
    if (owned.length > 0) {
      const expected = await unwrapWithFailover(owned, ref, { providers: from, audit })
      plaintexts.push(expected)
      return check.length === expected.length && timingSafeEqual(check, expected)
    }
    const value = keyCheckValue(check, ref)
    const want = Buffer.from(stored.checkValue!)
    return value.length === want.length && timingSafeEqual(value, want)
  } finally {
    for (const p of plaintexts) p.fill(0)
  }
}

/**
 * The wrapping a rewrap starts from: the first one a `from` provider owns, and no other. The kek
 * id is read from the database row, so a wrapping under a KEK the caller did not name could be
 * planted by a database writer (KMS ReEncrypt would take it as its source key, and the app would
 * adopt the writer's key): such wrappings are never used.
 * @throws KeyProviderError `CONFIG_INVALID` when no wrapping belongs to a `from` provider.
 */
function pickSource(wrappings: readonly WrappedKey[], from: readonly KeyProvider[], ref: KeyRef): WrappedKey {
  for (const provider of from) {
    const found = wrappings.find((w) => w.kekId === provider.id)
    if (found !== undefined) return found
  }
  throw new KeyProviderError(
    'CONFIG_INVALID',
    `${ref.logicalTable}/${ref.purpose}/v${ref.version} has no wrapping under a 'from' KEK (it is wrapped under ${wrappings.map((w) => w.kekId).join(', ')}); nothing was changed.`,
    { table: ref.logicalTable },
  )
}

function sameWrappings(a: readonly WrappedKey[], b: readonly WrappedKey[]): boolean {
  return a.length === b.length && a.every((w, i) => w.kekId === b[i]?.kekId && w.wrapped === b[i]?.wrapped)
}

/**
 * Wraps one key under `to`, then proves the new wrapping before it is stored: it must carry
 * `to`'s id and unwrap, through `to`, to the very key the `from` providers unwrap from their own
 * wrappings. Only then is it stored, and old wrappings removed (a bad wrapping stored alone would
 * lose the key for good).
 */
async function rewrapOne(
  stored: StoredKey,
  ref: KeyRef,
  from: readonly KeyProvider[],
  to: KeyProvider,
  audit: AuditSink | undefined,
): Promise<WrappedKey> {
  const source = pickSource(stored.wrappings, from, ref)
  // Only the `from` providers' own wrappings: never a failover onto a row's other kek ids.
  const owned = stored.wrappings.filter((w) => from.some((p) => p.id === w.kekId))
  const plaintexts: Buffer[] = []
  const original = () => unwrapWithFailover(owned, ref, { providers: from, audit })
  try {
    const target = await auditedCall(audit, 'rewrap', to.id, ref, () =>
      to.rewrap(
        {
          wrapped: source,
          plaintext: async () => {
            // The provider may zero what it is given: keep our own copy for the check below.
            const plaintext = await original()
            const copy = ownKeyBuffer(plaintext)
            plaintexts.push(plaintext, copy)
            return copy
          },
        },
        ref,
      ),
    )
    if (target.kekId !== to.id) {
      throw new KeyProviderError(
        'UNWRAP_FAILED',
        `${to.id} returned a wrapping labelled ${target.kekId}; nothing was changed.`,
        { table: ref.logicalTable, providerId: to.id },
      )
    }
    // Always prove the new wrapping holds the key `from` unwraps (not only before removing old
    // ones): a server-side ReEncrypt trusts the source blob, and a wrong key stored beside the
    // right one would be found only by the reader that picks it. When the keeper re-encrypted
    // server-side, the plaintext is fetched only for this check.
    const check = await auditedCall(audit, 'unwrap', to.id, ref, () => to.unwrap(target, ref))
    plaintexts.push(check)
    const expected = plaintexts[0] === check ? await original() : plaintexts[0]!
    if (expected !== plaintexts[0]) plaintexts.push(expected)
    if (check.length !== expected.length || !timingSafeEqual(check, expected)) {
      throw new KeyProviderError(
        'UNWRAP_FAILED',
        `The new wrapping of ${ref.logicalTable}/${ref.purpose}/v${ref.version} under ${to.id} does not unwrap to the same key; nothing was changed.`,
        { table: ref.logicalTable, providerId: to.id },
      )
    }
    return target
  } finally {
    for (const p of plaintexts) p.fill(0)
  }
}
