/**
 * A key version's lifecycle in the key store (DESIGN.md §5): staging the next version, activating
 * one (the previous active version becomes `decrypt-only`), and the other state changes. Each
 * change of state runs under row locks on every version of the (table, purpose), so exactly one
 * version stays active when changes race.
 */
import { ConfigError, KeyError } from '../errors.js'
import { keyDestroyed } from './destroyed-key.js'
import type { KeyPurpose, KeyRef, WrappedKey } from './key-provider.js'
import { checkKeyRef, encodeWrappings, KEY_STATES, NO_WRAPPINGS, toStoredKey } from './key-row.js'
import { insertIfAbsent, type KeyTable, keyStoreError, listKeys, withLockedVersions } from './key-table.js'
import type { KeyState, StoredKey } from './stored-key.js'

/**
 * Adds the next version as `staged` (see `KeyStore.stage`). With `skipAfterRetired`, `version` may
 * also be the one after the next when the last version is retired.
 * @throws KeyError `KEY_VERSION_MISMATCH` when `version` is given and is not the next version
 *   (nor, with `skipAfterRetired`, the one after it following a retired version).
 * @throws KeyError `KEY_NOT_FOUND` when the (table, purpose) has no version yet.
 * @throws KeyError `KEY_DESTROYED` when its versions were destroyed (crypto-shredded), also by a
 *   shred that ran while it staged (the new version is then destroyed too).
 * @throws KeyError `KEY_STORE_ERROR` on a database error or too much contention.
 */
export async function stageVersion(
  t: KeyTable,
  logicalTable: string,
  purpose: KeyPurpose,
  wrappings: readonly WrappedKey[],
  version?: number,
  checkValue?: Uint8Array,
  skipAfterRetired = false,
): Promise<StoredKey> {
  checkKeyRef({ logicalTable, purpose, version: version ?? 1 })
  const encoded = encodeWrappings(wrappings)
  try {
    // Two stagers may pick the same next version; the primary key lets one win, the other retries.
    for (let attempt = 0; attempt < 20; attempt++) {
      const existing = await listKeys(t, logicalTable, purpose)
      const last = existing.at(-1)
      if (last === undefined) {
        throw new KeyError(
          'KEY_NOT_FOUND',
          `No ${purpose} key exists for ${logicalTable}; nothing to stage after.`,
          {
            table: logicalTable,
          },
        )
      }
      // A shredded name stays shredded: no version is staged after its tombstones.
      if (existing.some((k) => k.state === 'destroyed')) throw keyDestroyed(logicalTable)
      const next = last.version + 1
      // An index with a rotation slot keeps odd versions in one column and even ones in the other:
      // after a staged version was retired unused, the next number's column is the active
      // version's, and the rotation skips to the one after (a number no key was ever stored under).
      const skipping = skipAfterRetired && last.state === 'retired' && version === next + 1
      // Providers bind a wrapping to its version: stored under another one, it never unwraps.
      if (version !== undefined && version !== next && !skipping) {
        throw new KeyError(
          'KEY_VERSION_MISMATCH',
          `The ${purpose} key was wrapped for version ${version} of ${logicalTable}, but the next version is ${next}; nothing was staged. Generate and wrap the key for version ${next}.`,
          { table: logicalTable },
        )
      }
      const stored = await insertIfAbsent(t, {
        logicalTable,
        purpose,
        version: skipping ? next + 1 : next,
        state: 'staged',
        wrappings: encoded,
        checkValue,
      })
      if (stored.wrappings === encoded) {
        // A shred may have run between the read above and the insert (it missed the new row, or
        // destroyed the others before it was there): read again, after the insert, and shred the
        // new version too. Either the stager sees the tombstones here, or the shred's own check
        // after its update sees the new row (destroyVersions).
        const after = await listKeys(t, logicalTable, purpose)
        if (after.some((k) => k.state === 'destroyed')) {
          await destroyVersions(t, logicalTable)
          throw keyDestroyed(logicalTable)
        }
        return toStoredKey(stored)
      }
    }
    throw new KeyError(
      'KEY_STORE_ERROR',
      `Could not stage a new ${purpose} key for ${logicalTable}: too much contention.`,
      {
        table: logicalTable,
      },
    )
  } catch (error) {
    throw keyStoreError(`stage a ${purpose} key of ${logicalTable}`, error, logicalTable)
  }
}

/**
 * Makes `version` the write key; the previous active version becomes `decrypt-only` (see
 * `KeyStore.activate`).
 * @throws KeyError `KEY_NOT_FOUND` when the version does not exist.
 * @throws KeyError `KEY_STATE_INVALID` when the version is retired.
 * @throws KeyError `KEY_DESTROYED` when a version of the (table, purpose) was destroyed.
 * @throws KeyError `KEY_STORE_ERROR` on a database error.
 */
export async function activateVersion(
  t: KeyTable,
  logicalTable: string,
  purpose: KeyPurpose,
  version: number,
): Promise<void> {
  checkKeyRef({ logicalTable, purpose, version })
  const ref: KeyRef = { logicalTable, purpose, version }
  await withLockedVersions(t, ref, 'activate', async (trx, target) => {
    if (target.state === 'active') return
    // A version staged while the name was being shredded (after the stager read the versions,
    // before it inserted) is never activated: the tombstones beside it win.
    const destroyed = await trx
      .selectFrom(t.tableName)
      .select('version')
      .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose, state: 'destroyed' }))
      .executeTakeFirst()
    if (destroyed !== undefined) throw keyDestroyed(logicalTable)
    if (target.state === 'retired' || target.state === 'destroyed') {
      throw new KeyError(
        'KEY_STATE_INVALID',
        `Version ${version} of the ${purpose} key of ${logicalTable} is ${target.state} and cannot be activated; stage a new version.`,
        { table: logicalTable },
      )
    }
    await trx
      .updateTable(t.tableName)
      .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
      .set({ state: 'decrypt-only' })
      .where('state', '=', 'active')
      .execute()
    await trx
      .updateTable(t.tableName)
      .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
      .set({ state: 'active' })
      .where('version', '=', version)
      .execute()
  })
}

/**
 * Changes the state of a version (see `KeyStore.setState`); `active` is {@link activateVersion}.
 * @throws KeyError `KEY_NOT_FOUND` when the version does not exist.
 * @throws KeyError `KEY_STATE_INVALID` for a refused transition.
 * @throws KeyError `KEY_STORE_ERROR` on a database error.
 */
export async function setVersionState(
  t: KeyTable,
  logicalTable: string,
  purpose: KeyPurpose,
  version: number,
  state: KeyState,
): Promise<void> {
  checkKeyRef({ logicalTable, purpose, version })
  if (!KEY_STATES.includes(state)) {
    throw new ConfigError('CONFIG_INVALID', `Unknown key state '${String(state)}'.`, {
      table: logicalTable,
    })
  }
  if (state === 'active') return activateVersion(t, logicalTable, purpose, version)
  if (state === 'destroyed') {
    throw new ConfigError(
      'CONFIG_INVALID',
      `A key is destroyed with its wrappings, by KeyStore.destroy (crypto-shredding), not by a state change.`,
      { table: logicalTable },
    )
  }
  const ref: KeyRef = { logicalTable, purpose, version }
  await withLockedVersions(t, ref, `set to ${state}`, async (trx, target) => {
    if (target.state === state) return
    if (target.state === 'destroyed') {
      throw new KeyError(
        'KEY_DESTROYED',
        `Version ${version} of the ${purpose} key of ${logicalTable} was destroyed; its state cannot change.`,
        { table: logicalTable },
      )
    }
    if (target.state === 'active') {
      throw new KeyError(
        'KEY_STATE_INVALID',
        `Version ${version} of the ${purpose} key of ${logicalTable} is the active one; activate another version instead of leaving none.`,
        { table: logicalTable },
      )
    }
    if (state === 'staged') {
      throw new KeyError(
        'KEY_STATE_INVALID',
        `Version ${version} of the ${purpose} key of ${logicalTable} is ${target.state}; a version cannot return to staged.`,
        { table: logicalTable },
      )
    }
    await trx
      .updateTable(t.tableName)
      .where((eb) => eb.and({ logical_table: logicalTable, purpose: purpose }))
      .set({ state })
      .where('version', '=', version)
      .execute()
  })
}

/**
 * Destroys every version of both purposes of a logical key name (crypto-shredding): each row keeps
 * its primary key and becomes a `destroyed` tombstone with no wrapping and no check value, in one
 * statement. The tombstones stop any process from ever creating keys under the name again; a
 * version staged while this ran is destroyed too.
 * @returns the versions destroyed by this call (those already destroyed are not counted).
 * @throws KeyError `KEY_STORE_ERROR` on a database error, or when live versions keep appearing.
 */
export async function destroyVersions(t: KeyTable, logicalTable: string): Promise<number> {
  checkKeyRef({ logicalTable, purpose: 'data', version: 1 })
  const live = t.db
    .selectFrom(t.tableName)
    .select('version')
    .where('logical_table', '=', logicalTable)
    .where('state', '<>', 'destroyed')
  try {
    let destroyed = 0
    // A version a stager inserted while the update ran (after the update's snapshot) escapes it:
    // read again once it is done, and destroy what is still live. The stager checks for
    // tombstones after its insert too (stageVersion), so one of the two sees the other.
    for (let attempt = 0; attempt < 5; attempt++) {
      const result = await t.db
        .updateTable(t.tableName)
        .set({ state: 'destroyed', wrappings: NO_WRAPPINGS, check_value: null })
        .where('logical_table', '=', logicalTable)
        .where('state', '<>', 'destroyed')
        .executeTakeFirst()
      destroyed += Number(result.numUpdatedRows)
      if ((await live.executeTakeFirst()) === undefined) return destroyed
    }
    throw new KeyError(
      'KEY_STORE_ERROR',
      `Could not destroy the keys of ${logicalTable}: versions keep appearing.`,
      {
        table: logicalTable,
      },
    )
  } catch (error) {
    throw keyStoreError(`destroy the keys of ${logicalTable}`, error, logicalTable)
  }
}
