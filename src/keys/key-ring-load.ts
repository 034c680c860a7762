import type { ActiveVersions } from './active-versions.js'
import type { ForgetLog } from './forget-log.js'
import type { KeyCache } from './key-cache.js'
import type { KeyCreation } from './key-creation.js'
import { buildTableMeta, type TableMeta } from './key-metadata.js'
import type { KeyPurpose } from './key-provider.js'
import { KEY_PURPOSES as PURPOSES } from './key-row.js'
import type { KeyStore } from './key-store.js'
import { refOf } from './key-wrapping.js'

/** What a key ring's metadata load reads and updates (the ring's own parts). */
export interface MetadataLoadContext {
  readonly store: KeyStore
  readonly cache: KeyCache
  readonly creation: KeyCreation
  readonly forgets: ForgetLog
  readonly activeVersions: ActiveVersions
  readonly now: () => number
  readonly readsInTransaction: (() => boolean) | undefined
  /** Counts one read of the key store. */
  readonly onRead: () => void
}

/**
 * Reads a key name's versions from the key store and builds its metadata. Creates a table's
 * first keys when the ring's creation rules allow it (never a tenant's), zeroes cached keys of
 * versions shredded since, and says whether the result may be cached.
 * @returns the metadata, and `cacheable`: false for a read in a transaction, a name without its
 *   keys, or a name forgotten (shredded) while the read ran.
 */
export async function loadTableMeta(
  ctx: MetadataLoadContext,
  logicalTable: string,
): Promise<{ meta: TableMeta; cacheable: boolean }> {
  ctx.onRead()
  // Read inside a transaction: its snapshot may be older than the TTL (see readsInTransaction),
  // or than a forget (shred): its keys count as read at an unknown time (0) for every caller,
  // those outside the transaction that joined this load included.
  const snapshot = ctx.readsInTransaction?.() === true
  const seq = snapshot ? 0 : ctx.forgets.read()
  let { keys, corrupt } = await ctx.store.read(logicalTable)
  // A purpose with only corrupt rows is not missing: it must never get fresh keys.
  const present = (p: KeyPurpose) =>
    keys.some((k) => k.purpose === p) || corrupt.some((c) => (c.purpose ?? p) === p)
  const missing = PURPOSES.filter((p) => !present(p))
  // A tenant's keys are created on purpose or on its first write (writeKey), never by a read.
  // One after the other: this may run on the application's connection (one query at a time).
  if (missing.length > 0 && (await ctx.creation.onMissing(logicalTable, missing, keys.length > 0))) {
    ctx.onRead()
    ;({ keys, corrupt } = await ctx.store.read(logicalTable))
  }
  // A version shredded since it was cached (by another process, or another ring of this one):
  // zeroed now, so this ring stops decrypting with it. (An unwrap of it already under way, with
  // the wrapping read before the shred, still caches its result unless the shred was this
  // ring's (forget): elsewhere that narrow race is bounded by the key cache TTL, as for a
  // process that has not reloaded.)
  for (const k of keys) if (k.state === 'destroyed') ctx.cache.delete(refOf(k))
  ctx.forgets.stamp(keys, seq)
  const meta = buildTableMeta(
    keys,
    corrupt,
    (purpose, version) => ctx.activeVersions.accept(logicalTable, purpose, version),
    ctx.now,
  )
  // A table without keys is not cached: keys created by `kfe init` in another process are seen
  // at the next query (each such query costs one key-store read until then).
  const complete = PURPOSES.every((p) => present(p))
  // Forgotten (shredded) while this read ran: what it read may be from before the shred.
  const forgotten = ctx.forgets.forgottenSince(logicalTable, seq)
  return { meta, cacheable: complete && !snapshot && !forgotten }
}
