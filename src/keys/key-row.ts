/**
 * The key table's rows: their shape, how a key version is checked and its wrappings encoded
 * before it is written, and how a row read back is parsed (one by one, so a corrupt row is
 * named and never hides the others).
 */
import { ConfigError, KeyError } from '../errors.js'
import { isKekId, KEK_ID_RULE, printableText } from './kek-id.js'
import type { KeyPurpose, KeyRef, WrappedKey } from './key-provider.js'
import type { CorruptKey, KeyState, StoredKey } from './stored-key.js'

/** Every key state, in lifecycle order. */
export const KEY_STATES: readonly KeyState[] = ['staged', 'active', 'decrypt-only', 'retired', 'destroyed']

/** The `wrappings` of a destroyed key: none. */
export const NO_WRAPPINGS = '[]'
/** Every key purpose. */
export const KEY_PURPOSES: readonly KeyPurpose[] = ['data', 'index']

/** A row of the key table as the driver returns it. */
export interface KeyRow {
  logical_table: string
  purpose: string
  version: number
  state: string
  wrappings: string
  created_at: Date
  check_value?: string | null
}

/** The key table, under whatever name it is given. */
export type KeysDb = Record<string, KeyRow>

/** `table/purpose/vN`, as messages name a key version. */
export function describeKeyRef(ref: KeyRef): string {
  return `${ref.logicalTable}/${ref.purpose}/v${ref.version}`
}

/**
 * Checks a key version before it is written or looked up.
 * @throws ConfigError `CONFIG_INVALID` for an empty or too long table name, an unknown purpose, or
 *   a version that is not a positive 32-bit integer.
 */
export function checkKeyRef(ref: KeyRef): void {
  if (
    typeof ref.logicalTable !== 'string' ||
    ref.logicalTable.length === 0 ||
    ref.logicalTable.length > 255
  ) {
    throw new ConfigError('CONFIG_INVALID', 'A logical table name must be 1 to 255 characters.')
  }
  if (!KEY_PURPOSES.includes(ref.purpose)) {
    throw new ConfigError('CONFIG_INVALID', `Unknown key purpose '${String(ref.purpose)}'.`, {
      table: ref.logicalTable,
    })
  }
  if (!Number.isSafeInteger(ref.version) || ref.version < 1 || ref.version > 2_147_483_647) {
    throw new ConfigError('CONFIG_INVALID', `A key version must be a positive 32-bit integer.`, {
      table: ref.logicalTable,
    })
  }
}

/**
 * The `wrappings` column's text: JSON `[{"kekId": "...", "wrapped": "<base64>"}]`.
 * @throws ConfigError `CONFIG_INVALID` when the list is empty, repeats a kek id or holds one that
 *   is no KEK id (kek-id.ts).
 */
export function encodeWrappings(wrappings: readonly WrappedKey[]): string {
  if (wrappings.length === 0)
    throw new ConfigError('CONFIG_INVALID', 'A stored key needs at least one wrapping.')
  // A row the library writes must read back (parseKeyRow), and be fit to name in errors.
  if (wrappings.some((w) => !isKekId(w.kekId)))
    throw new ConfigError('CONFIG_INVALID', `A wrapping's KEK id is not ${KEK_ID_RULE}.`)
  const ids = new Set(wrappings.map((w) => w.kekId))
  if (ids.size !== wrappings.length)
    throw new ConfigError('CONFIG_INVALID', 'A stored key lists a kek id twice.')
  return JSON.stringify(
    wrappings.map((w) => ({ kekId: w.kekId, wrapped: Buffer.from(w.wrapped).toString('base64') })),
  )
}

/** The `check_value` column's text (hex), or no column at all when there is none. */
export function checkValueColumn(checkValue: Uint8Array | undefined): { check_value?: string } {
  return checkValue === undefined ? {} : { check_value: Buffer.from(checkValue).toString('hex') }
}

/** A row as a stored key; throws `KEY_STORE_CORRUPT` when it cannot be parsed. */
export function toStoredKey(row: KeyRow): StoredKey {
  const parsed = parseKeyRow(row)
  if ('error' in parsed) throw parsed.error
  return parsed
}

/**
 * Parses one row. Whatever cannot be parsed (an unknown state or purpose, a version that is not a
 * positive integer, wrappings that are not a non-empty JSON list of `{ kekId, wrapped }`) makes it
 * a {@link CorruptKey}: an edited or damaged row, not an outage, so no grace period applies.
 */
export function parseKeyRow(row: KeyRow): StoredKey | CorruptKey {
  // Named in every error about the row (helper-128): quoted when an edit put a line break in it.
  const rawTable = String(row.logical_table)
  const table = printableText(rawTable)
  const state = KEY_STATES.includes(row.state as KeyState) ? (row.state as KeyState) : undefined
  const purpose = KEY_PURPOSES.includes(row.purpose as KeyPurpose) ? (row.purpose as KeyPurpose) : undefined
  const n = Number(row.version)
  const version = Number.isSafeInteger(n) && n >= 1 ? n : undefined
  const corrupt = (why: string, cause?: unknown): CorruptKey => ({
    logicalTable: table,
    purpose,
    version,
    state,
    error: new KeyError(
      'KEY_STORE_CORRUPT',
      `Corrupt key-store row ${table}/${purpose ?? '?'}/v${version ?? '?'}: ${why}. The key table was edited or damaged; restore the row from the key table's backup (docs/keys.md).`,
      { table, ...(cause === undefined ? {} : { cause }) },
    ),
  })
  if (table !== rawTable) return corrupt('its logical table name holds control characters or line separators')
  if (state === undefined) return corrupt('unknown state')
  if (purpose === undefined) return corrupt('unknown purpose')
  if (version === undefined) return corrupt('the version is not a positive integer')
  let wrappings: WrappedKey[]
  try {
    const parsed = JSON.parse(row.wrappings) as unknown
    // A destroyed key has no wrapping left, and only a destroyed key may have none.
    if (!Array.isArray(parsed) || (parsed.length === 0) !== (state === 'destroyed'))
      throw new Error(state === 'destroyed' ? 'a destroyed key keeps a wrapping' : 'not a non-empty array')
    wrappings = parsed.map((w: unknown) => {
      const { kekId, wrapped } = (w ?? {}) as { kekId?: unknown; wrapped?: unknown }
      if (typeof wrapped !== 'string') throw new Error('bad wrapping entry')
      // Named in errors: one that could write lines of its own into a log is not echoed.
      if (!isKekId(kekId)) throw new Error(`a kekId is not ${KEK_ID_RULE}`)
      return Object.freeze({ kekId, wrapped: new Uint8Array(Buffer.from(wrapped, 'base64')) })
    })
  } catch (error) {
    // The cause says only what was wrong with the shape: JSON.parse's own message would echo the text.
    const what = error instanceof SyntaxError ? 'not JSON' : (error as Error).message
    return corrupt('its wrappings are not a list of { kekId, wrapped }', new Error(what))
  }
  const check = row.check_value
  if (check !== undefined && check !== null && !/^[0-9a-f]{32}$/.test(check)) {
    return corrupt('its check value is not 32 hex digits')
  }
  return Object.freeze({
    logicalTable: table,
    purpose,
    version,
    state,
    wrappings: Object.freeze(wrappings),
    createdAt: row.created_at instanceof Date ? row.created_at : new Date(row.created_at),
    ...(typeof check === 'string' ? { checkValue: new Uint8Array(Buffer.from(check, 'hex')) } : {}),
  })
}
