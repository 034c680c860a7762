import { timingSafeEqual } from 'node:crypto'
import { FieldEncryptionError, KeyError, OperationError } from '../errors.js'
import { decryptValue } from '../fields/field-cipher.js'
import { headerKeyVersion, looksLikeCiphertext } from '../fields/format.js'
import { KeyMaterial } from '../keys/key-material.js'
import { SEARCHABLE } from '../keys/key-metadata.js'
import type { KeyPurpose } from '../keys/key-provider.js'
import type { StoredKey } from '../keys/stored-key.js'
import { encryptColumn, indexValue } from '../plugin/resolve-values.js'
import { readContext, rowAad } from '../schema/row-context.js'
import { type IndexInfo, indexColumnNames, type TableInfo } from '../schema/schema.js'
import type { SqlFamily } from '../schema/sql-family.js'
import type { OpsContext } from './context.js'
import type { KeySet, StoredRow } from './key-set.js'
import { encryptLegacy, legacyPlan } from './legacy-plaintext.js'
import type { KeyColumn } from './primary-key.js'
import { checkSlots, type SlotState } from './slot-check.js'

export type { KeySet, RowKeySets, RowKeys, StoredRow } from './key-set.js'

/** What one row holds and needs. @internal */
export interface RowCheck {
  /** Data key version per encrypted column holding a ciphertext. */
  readonly dataVersions: ReadonlyMap<string, number>
  /**
   * Index version that produced each non-null blind index (null: matches no version), by index
   * name. For an index with a rotation slot: the version in the active version's column, the one
   * searches probe.
   */
  readonly indexVersions: ReadonlyMap<string, number | null>
  /**
   * For indexes with a rotation slot: the version in each *other* column (the staged version's
   * slot during a rotation, the former version's after cut-over), by physical column; null when
   * that column still lacks its live version's value (not backfilled yet).
   */
  readonly slotVersions: ReadonlyMap<string, number | null>
  /** True when a rotation-slot column differs from what the live versions make it (the job rewrites it). */
  readonly slotsPending: boolean
  /** Columns holding a value that is not a ciphertext (migration from plaintext). */
  readonly plaintext: readonly string[]
  /** Columns that failed (`column: CODE`); no code carries plaintext. */
  readonly failures: readonly string[]
  /** The writes that bring the row onto the active versions (empty: nothing to do). */
  readonly updates: Readonly<Record<string, Buffer | null>>
  /** The encrypted columns whose stored bytes the write must still find (compare-and-set). */
  readonly expect: readonly string[]
}

/**
 * Unwraps every version of the table's data and index keys (through the ring's cache: one provider
 * call per version per cache TTL) and returns copies the caller owns: wipe them with
 * {@link destroyKeySet} when done. Done before a batch's transaction opens, so an unavailable key
 * provider stops the job before it touches a row. A table with per-tenant keys has no key set of
 * its own: its jobs pick each row's tenant's set (tenant-key-sets.ts).
 * @throws KeyError `KEY_NOT_FOUND` when the table has no active key (run `kfe init`).
 * @throws KeyProviderError when a version cannot be unwrapped.
 * @throws OperationError `OPS_INVALID` for a table with per-tenant keys.
 */
export async function loadKeySet(ctx: OpsContext, table: TableInfo): Promise<KeySet> {
  if (table.keyScope !== undefined) {
    throw new OperationError(
      'OPS_INVALID',
      `${table.physical} has a key per tenant (keyScope ${table.keyScope.column}): this operation does not run over per-tenant keys.`,
      { table: table.logical },
    )
  }
  const versions = [
    ...(await ctx.ring.versions(table.logical, 'data')),
    ...(await ctx.ring.versions(table.logical, 'index')),
  ]
  return buildKeySet(ctx, table.logical, versions)
}

/**
 * The key set of one key name (a table's, or a tenant's) from its stored versions: each version
 * unwrapped through the ring's cache and copied, or taken from `reuse` (a set this caller holds,
 * whose copies of the same versions it hands over instead of unwrapping them again). Destroyed
 * versions are skipped; a retired one that does not unwrap too.
 * @throws KeyError `KEY_NOT_FOUND` when a purpose has no active version.
 * @throws KeyProviderError when a live version cannot be unwrapped.
 * @internal
 */
export async function buildKeySet(
  ctx: OpsContext,
  name: string,
  versions: readonly StoredKey[],
  reuse?: KeySet,
): Promise<KeySet> {
  // Every copy made is wiped here unless the whole set is handed to the caller: a provider that
  // fails on the third version, or a table without an active index key, must not leave the copies
  // of the versions already unwrapped in memory.
  const copies: KeyMaterial[] = []
  let handedOver = false
  const load = async (purpose: KeyPurpose) => {
    const own = versions.filter((v) => v.purpose === purpose && v.state !== 'destroyed')
    const keys = new Map<number, KeyMaterial>()
    for (const v of own) {
      const held = (purpose === 'data' ? reuse?.data : reuse?.index)?.get(v.version)
      if (held !== undefined && !held.destroyed) {
        keys.set(v.version, held)
        continue
      }
      const ref = { logicalTable: name, purpose, version: v.version }
      // A retired version is expected unused (and may be one `rotate` refused, which never
      // unwraps): rows still on it are reported as failing with KEY_NOT_FOUND instead.
      const cached =
        v.state === 'retired'
          ? await ctx.ring.storedKey(v).catch(() => undefined)
          : await ctx.ring.storedKey(v)
      if (cached === undefined) continue
      // Our own copy: the cache may expire and wipe its instance while a batch or a scan uses it.
      const copy = new KeyMaterial(ref, Buffer.from(cached.bytes))
      copies.push(copy)
      keys.set(v.version, copy)
    }
    const active = own.find((v) => v.state === 'active')
    const retired = new Set(own.filter((v) => v.state === 'retired').map((v) => v.version))
    const live = own.filter((v) => SEARCHABLE.has(v.state)).map((v) => v.version)
    return { keys, active: active?.version ?? 0, retired, live }
  }
  try {
    const data = await load('data')
    const index = await load('index')
    if (data.active === 0 || index.active === 0) {
      throw new KeyError(
        'KEY_NOT_FOUND',
        `${name} has no active ${data.active === 0 ? 'data' : 'index'} key.`,
        { table: name },
      )
    }
    handedOver = true
    return {
      data: data.keys,
      index: index.keys,
      activeData: data.active,
      activeIndex: index.active,
      retiredIndex: index.retired,
      liveIndex: index.live,
    }
  } finally {
    if (!handedOver) for (const copy of copies) copy.destroy()
  }
}

/**
 * What {@link checkRow} says of a row whose tenant's keys are unusable: every ciphertext fails
 * with `code` (`KEY_DESTROYED` for a shredded tenant).
 */
export function checkWithoutKeys(table: TableInfo, row: StoredRow, code: string): RowCheck {
  const check = checkRow(table, NO_KEYS, row, false)
  return { ...check, failures: check.failures.map((f) => f.replace(/: KEY_NOT_FOUND$/, `: ${code}`)) }
}

const NO_KEYS: KeySet = {
  data: new Map(),
  index: new Map(),
  activeData: 0,
  activeIndex: 0,
  retiredIndex: new Set(),
  liveIndex: [],
}

/**
 * Whether a row cannot be read (a ciphertext that does not decrypt, a value that is not one): not
 * a blind index to recompute (mismatching, stale, or of a retired version), which a job rewrites.
 */
export function unreadable(check: RowCheck): boolean {
  return check.failures.some(
    (f) => !f.endsWith(': INDEX_MISMATCH') && !f.endsWith(': STALE_INDEX') && !f.endsWith(': RETIRED_INDEX'),
  )
}

/** Zeroes the keys of a {@link loadKeySet}. */
export function destroyKeySet(keys: KeySet): void {
  for (const k of keys.data.values()) k.destroy()
  for (const k of keys.index.values()) k.destroy()
}

/**
 * The physical columns a job reads: primary key (exact, see {@link KeyColumn}), row-context
 * columns (the AAD of every ciphertext of the row), every encrypted column, every blind index.
 */
export function storedColumns(table: TableInfo, key: KeyColumn): Array<KeyColumn['selection']> {
  const out: Array<KeyColumn['selection']> = [key.selection, ...table.context.filter((c) => c !== key.name)]
  for (const column of table.columns.values()) {
    out.push(column.stored, ...column.spec.indexes.flatMap((s) => indexColumnNames(s)))
  }
  return out
}

/**
 * Reads one row: decrypts each ciphertext with the version in its header, tells which index
 * version produced each blind index (by recomputing it: active version first), and computes the
 * writes that move it onto the active versions (`rewrite`). Never throws for a bad row: failures
 * are listed by column and code.
 */
export function checkRow(
  table: TableInfo,
  keys: KeySet,
  row: StoredRow,
  rewrite: boolean,
  family?: SqlFamily,
): RowCheck {
  const dataVersions = new Map<string, number>()
  const indexVersions = new Map<string, number | null>()
  const slots: SlotState = { versions: new Map(), pending: false }
  const plaintext: string[] = []
  const failures: string[] = []
  const updates: Record<string, Buffer | null> = {}
  const expect: string[] = []
  // The row's context values (its AAD after the names): read once, from the stored row. A row
  // whose context is unusable fails every ciphertext, and is never rewritten.
  let context: readonly string[] | undefined
  let contextFailure = false
  if (table.context.length > 0) {
    try {
      const first = table.columns.values().next().value
      if (first !== undefined) context = readContext(table, first, (i) => row[table.context[i] as string])
    } catch {
      contextFailure = true
    }
  }
  for (const column of table.columns.values()) {
    const stored = row[column.stored]
    if (stored === null || stored === undefined) {
      // NULL is never encrypted and always clears its blind indexes.
      for (const name of column.spec.indexes.flatMap((s) => indexColumnNames(s))) {
        if (row[name] !== null && row[name] !== undefined) {
          failures.push(`${name}: STALE_INDEX`)
          if (rewrite) {
            updates[name] = null
            expect.push(column.stored)
          }
        }
      }
      continue
    }
    if (!(stored instanceof Uint8Array) || !looksLikeCiphertext(stored)) {
      if (!column.spec.migratingFromPlaintext) {
        failures.push(`${column.stored}: NOT_CIPHERTEXT`)
        continue
      }
      plaintext.push(column.stored)
      // A value written before the column was annotated: encrypted in place by a rewrite, under
      // a compare-and-set on the plaintext read (as the plugin rewrites it on an update); one it
      // cannot encrypt as it is fails, in a check and a rewrite alike.
      const legacy = legacyPlan(column, stored, family)
      if ('problem' in legacy) failures.push(`${column.stored}: ${legacy.problem}`)
      else if (rewrite && !contextFailure) {
        const before = failures.length
        encryptLegacy(table, keys, column, legacy.value, context, row, updates, failures)
        if (failures.length === before) expect.push(column.stored)
      }
      continue
    }
    const version = headerKeyVersion(stored)
    dataVersions.set(column.stored, version)
    if (contextFailure) {
      failures.push(`${column.stored}: CONTEXT_MISSING`)
      continue
    }
    let value: unknown
    try {
      const key = keys.data.get(version)
      if (key === undefined) {
        failures.push(`${column.stored}: KEY_NOT_FOUND`)
        continue
      }
      value = decryptValue(column.spec.codec, stored, key, rowAad(column, context))
    } catch (error) {
      failures.push(
        `${column.stored}: ${error instanceof FieldEncryptionError ? error.code : 'DECRYPT_FAILED'}`,
      )
      continue
    }
    let changed = false
    if (rewrite && version !== keys.activeData) {
      // A value already stored, moved to another key: not refused by a maxBytes declared (or
      // lowered) after it was written.
      updates[column.stored] = encryptColumn(keys.data.get(keys.activeData)!, column, value, context, false)
      changed = true
    }
    for (const spec of column.spec.indexes) {
      if (spec.rotationSlot !== undefined) {
        const out = { indexVersions, slots, failures, updates: rewrite ? updates : undefined }
        if (checkSlots(table, spec, keys, value, row, out)) changed = true
        continue
      }
      const index = table.indexColumn(spec.name)!
      const found = indexVersionOf(index, keys, value, row[spec.name])
      const version = typeof found === 'number' ? found : found.version
      indexVersions.set(spec.name, version)
      if (version === null) failures.push(`${spec.name}: INDEX_MISMATCH`)
      // Computed with a retired version: searches no longer probe it, so the row cannot be found.
      else if (keys.retiredIndex.has(version)) failures.push(`${spec.name}: RETIRED_INDEX`)
      if (rewrite && version !== keys.activeIndex) {
        // The active version's value, computed by the search (when the active key is loaded).
        updates[spec.name] =
          (typeof found === 'number' ? undefined : found.active) ??
          indexValue(keys.index.get(keys.activeIndex)!, index, value)
        changed = true
      }
    }
    if (changed) expect.push(column.stored)
  }
  return {
    dataVersions,
    indexVersions,
    slotVersions: slots.versions,
    slotsPending: slots.pending,
    plaintext,
    failures,
    updates,
    expect,
  }
}

/**
 * Which index version's recomputation equals the stored blind index: the active one first (no
 * allocation but its value when it matches, the common case), then the others, newest first.
 * @returns the active version when it matches; otherwise the matching version (null: none) and
 *   the active version's value computed on the way (for the rewrite), when that key is loaded
 */
function indexVersionOf(
  index: IndexInfo,
  keys: KeySet,
  value: unknown,
  stored: unknown,
): number | { readonly version: number | null; readonly active: Buffer | undefined } {
  if (!(stored instanceof Uint8Array)) return { version: null, active: undefined }
  const activeKey = keys.index.get(keys.activeIndex)
  const active = activeKey === undefined ? undefined : indexValue(activeKey, index, value)
  if (active !== undefined && sameBytes(active, stored)) return keys.activeIndex
  const versions = [...keys.index.keys()]
  for (let i = versions.length - 1; i >= 0; i--) {
    const version = versions[i] as number
    if (version === keys.activeIndex) continue
    if (sameBytes(indexValue(keys.index.get(version)!, index, value), stored)) return { version, active }
  }
  return { version: null, active }
}

function sameBytes(a: Buffer, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}
