import type { ActiveVersions } from './active-versions.js'
import { keyDestroyed } from './destroyed-key.js'
import type { ForgetLog } from './forget-log.js'
import type { KeyCache } from './key-cache.js'
import type { KeyCreation } from './key-creation.js'
import type { KeyMaterial } from './key-material.js'
import { buildTableMeta, requireVersion, type TableMeta } from './key-metadata.js'
import type { KeyPurpose } from './key-provider.js'
import { KEY_PURPOSES as PURPOSES } from './key-row.js'
import type { KeyStore } from './key-store.js'
import { refOf } from './key-wrapping.js'
import type { StoredKey } from './stored-key.js'

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

/**
 * Unwraps `stored`, which the metadata read numbered `readAt` returned (see `ForgetLog.keep`).
 * A name forgotten (shredded) since that read is read again first: a version shredded before the
 * forget is refused without asking the provider (a retry of the key cache after a forget comes
 * here with the old read). In a transaction nothing proves a forgotten version alive.
 */
export async function unwrapUnforgotten(
  ring: {
    readonly forgets: ForgetLog
    readonly inTransaction: boolean
    unwrap(stored: StoredKey): Promise<KeyMaterial>
    reload(logicalTable: string): Promise<TableMeta>
  },
  stored: StoredKey,
  readAt: number,
): Promise<KeyMaterial> {
  const { forgets, inTransaction } = ring
  if (forgets.forgottenSince(stored.logicalTable, inTransaction ? 0 : readAt)) {
    if (inTransaction) throw keyDestroyed(stored.logicalTable)
    const fresh = requireVersion(await ring.reload(stored.logicalTable), refOf(stored))
    return unwrapUnforgotten(ring, fresh, forgets.readOf(fresh))
  }
  const key = await ring.unwrap(stored)
  return forgets.keep(
    key,
    stored,
    readAt,
    // A load of its own: one under way may be a transaction's, from an older snapshot.
    inTransaction ? undefined : () => ring.reload(stored.logicalTable),
  )
}
