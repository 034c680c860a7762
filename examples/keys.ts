// examples/keys.ts: a new version of a table's data key, generated, wrapped under two KEKs,
// staged, then activated, with the library's key API (docs/keys.md).
import type { Kysely } from 'kysely'
import {
  type KeyProvider,
  type KeyRef,
  KeyStore,
  keyCheckValue,
  localKeyProvider,
  type StoredKey,
} from 'kysely-field-encryption'

/**
 * The whole rotation, as an operator runs it: once, from one place. The application keeps
 * running throughout; its rows stay readable and searchable in every step.
 *
 * @param db - a Kysely on the plain (not wrapped) dialect of the application's database
 */
export async function rotateDataKey(db: Kysely<unknown>, logicalTable: string): Promise<void> {
  const store = new KeyStore(db) // the `kfe_keys` table
  // The application's KEK, under the id its `fieldEncryption({ keyProvider })` uses, and a
  // disaster-recovery KEK kept offline (`openssl rand -hex 32` each).
  const kek = localKeyProvider({ id: 'local:2026', env: 'KFE_KEK' })
  const dr = localKeyProvider({ id: 'local:dr', env: 'KFE_DR_KEK' })
  try {
    const staged = await stageDataKey(store, [kek, dr], logicalTable)
    await checkEveryKekUnwraps([kek, dr], staged)
    // Wait at least the key ring's metadataTtlMs (30 s by default): every process now reads v N+1.
    await new Promise((resolve) => setTimeout(resolve, 35_000))
    await activateDataKey(store, logicalTable, staged.version)
  } finally {
    await kek.close?.()
    await dr.close?.()
  }
}

/**
 * Generates the next data key version of `logicalTable` under `keks[0]`, wraps it under every
 * other KEK too (e.g. a disaster-recovery key), zeroes the plaintext, and stores it as `staged`:
 * readable and searchable, not yet written with.
 *
 * @param store - the key store: `new KeyStore(db)`, db a Kysely on the plain (not wrapped)
 *   dialect of the application's database; the table is `kfe_keys` unless `{ tableName }` says
 * @param keks - the KEKs, the one that generates first (as in `fieldEncryption({ keyProvider })`)
 */
export async function stageDataKey(
  store: KeyStore,
  keks: readonly [KeyProvider, ...KeyProvider[]],
  logicalTable: string,
): Promise<StoredKey> {
  const versions = await store.list(logicalTable, 'data')
  const last = versions.at(-1)
  if (last === undefined) throw new Error(`${logicalTable} has no data key yet: nothing to rotate`)
  // Every wrapping is bound to (table, purpose, version): it unwraps only for this row.
  const ref: KeyRef = { logicalTable, purpose: 'data', version: last.version + 1 }
  const [first, ...others] = keks
  const generated = await first.generateDataKey(ref) // 32 random bytes, plaintext + wrapped
  try {
    const wrappings = [generated.wrapped]
    for (const kek of others) {
      wrappings.push(
        await kek.rewrap(
          { wrapped: generated.wrapped, plaintext: async () => Buffer.from(generated.plaintext) },
          ref,
        ),
      )
    }
    // The version the wrappings are bound to, and the key's check value (proven after every
    // unwrap). Another rotation that staged version N+1 first makes this a KEY_VERSION_MISMATCH,
    // and nothing is stored: run again.
    return await store.stage(
      logicalTable,
      'data',
      wrappings,
      ref.version,
      keyCheckValue(generated.plaintext, ref),
    )
  } finally {
    generated.plaintext.fill(0) // the store only ever holds the wrapped key
  }
}

/**
 * Makes the staged version the write key, once every process has seen it: wait at least the
 * key ring's `metadataTtlMs` (default 30 s) after staging. The previous version becomes
 * `decrypt-only`: rows written with it keep decrypting.
 */
export async function activateDataKey(store: KeyStore, logicalTable: string, version: number): Promise<void> {
  await store.activate(logicalTable, 'data', version)
}

/** Checks that each KEK alone unwraps the stored key (the disaster-recovery KEK included). */
export async function checkEveryKekUnwraps(keks: readonly KeyProvider[], stored: StoredKey): Promise<void> {
  const ref: KeyRef = { logicalTable: stored.logicalTable, purpose: stored.purpose, version: stored.version }
  for (const kek of keks) {
    const wrapping = stored.wrappings.find((w) => w.kekId === kek.id)
    if (wrapping === undefined) throw new Error(`no wrapping under ${kek.id}`)
    const plaintext = await kek.unwrap(wrapping, ref) // a KeyProviderError if it cannot
    plaintext.fill(0)
  }
}
