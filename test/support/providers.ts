/**
 * One fixture per key provider (local, AWS KMS through the in-repo endpoint, PKCS#11 on SoftHSM2),
 * with the same handle on each: the provider, fault injection, and a count of calls as the keeper
 * sees them. The conformance suite (test/integration/provider-conformance.test.ts) runs the same
 * cases over every factory; the multi-KEK suite combines them.
 *
 * Also a database fixture ({@link providerTestDb}) whose "processes" are separate
 * `fieldEncryption` instances with their own cache options, clock and audit sink, on one database.
 */
import { randomBytes } from 'node:crypto'
import { KMSClient } from '@aws-sdk/client-kms'
import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import {
  type AuditSink,
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  type GeneratedKey,
  type KeyCacheOptions,
  type KeyProvider,
  KeyProviderError,
  type KeyRef,
  KeyStore,
  localKeyProvider,
  type RewrapSource,
  type WrappedKey,
} from '../../src/index.js'
import { awsKmsKeyProvider } from '../../src/keys/providers/aws-kms-provider.js'
import { generatePkcs11Kek, pkcs11KeyProvider } from '../../src/keys/providers/pkcs11-provider.js'
import { type Backend, onlyTables, uniqueName } from './backends.js'
import { type KmsEndpoint, startKmsEndpoint } from './kms-endpoint.js'
import { newPGlite } from './pglite.js'
import { createSoftHsmToken, type SoftHsmToken, softHsmAvailable } from './softhsm.js'

export type ProviderName = 'local' | 'aws-kms' | 'pkcs11'

/** Faults a test can switch on and off at the keeper. */
export interface ProviderFaults {
  /** The keeper stops answering: every call fails with `PROVIDER_UNAVAILABLE`. */
  down(): void
  up(): void
  /** The KEK is disabled: every call fails with `PROVIDER_KEY_DISABLED`. */
  disable(): void
  enable(): void
}

/** One provider under test. */
export interface ProviderFixture {
  readonly name: ProviderName
  /** The provider; its `close()` is a no-op, so several `fieldEncryption` "processes" can share it. */
  readonly provider: KeyProvider
  readonly fault: ProviderFaults
  /** Calls received by the keeper so far (failed ones included), counted at the keeper. */
  calls(): number
  /** A provider for another KEK of the same kind (same keeper). Closed by {@link cleanup}. */
  otherKek(): Promise<KeyProvider>
  /** Clears faults. */
  reset(): void
  cleanup(): Promise<void>
}

/** Builds a {@link ProviderFixture}; `available` is false when the keeper cannot run here. */
export interface ProviderFactory {
  readonly name: ProviderName
  readonly available: boolean
  create(): Promise<ProviderFixture>
}

const KMS_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' }

/**
 * Wraps a provider: counts every call that reaches it, throws the injected fault instead of
 * calling it, and ignores `close()` (the fixture closes the real provider in `cleanup`). Used as
 * the keeper for local and PKCS#11, whose keepers have no fault switch of their own.
 */
export class FaultInjectingProvider implements KeyProvider {
  readonly id: string
  /** Calls received, including those answered with an injected fault. */
  calls = 0
  isDown = false
  isDisabled = false
  readonly #inner: KeyProvider

  constructor(inner: KeyProvider) {
    this.#inner = inner
    this.id = inner.id
  }

  async generateDataKey(ref: KeyRef): Promise<GeneratedKey> {
    this.#enter(ref)
    return this.#inner.generateDataKey(ref)
  }

  async unwrap(wrapped: WrappedKey, ref: KeyRef): Promise<Buffer> {
    this.#enter(ref)
    return this.#inner.unwrap(wrapped, ref)
  }

  async rewrap(source: RewrapSource, ref: KeyRef): Promise<WrappedKey> {
    this.#enter(ref)
    return this.#inner.rewrap(source, ref)
  }

  async close(): Promise<void> {
    // Shared between "processes": the fixture closes the real provider.
  }

  #enter(ref: KeyRef): void {
    this.calls++
    if (this.isDown) {
      throw new KeyProviderError(
        'PROVIDER_UNAVAILABLE',
        `Key provider ${this.id} is not answering (test fault).`,
        {
          providerId: this.id,
          table: ref.logicalTable,
        },
      )
    }
    if (this.isDisabled) {
      throw new KeyProviderError(
        'PROVIDER_KEY_DISABLED',
        `The KEK ${this.id} is disabled (test fault); enable it in the key manager.`,
        { providerId: this.id, table: ref.logicalTable },
      )
    }
  }
}

/** Forwards everything except `close()`, so a provider can outlive one `fieldEncryption`. */
export function unclosable(inner: KeyProvider): KeyProvider {
  return {
    id: inner.id,
    generateDataKey: (ref) => inner.generateDataKey(ref),
    unwrap: (wrapped, ref) => inner.unwrap(wrapped, ref),
    rewrap: (source, ref) => inner.rewrap(source, ref),
    close: async () => {},
  }
}

function faultFixture(
  name: ProviderName,
  inner: KeyProvider,
  otherKek: () => Promise<KeyProvider>,
  cleanup: () => Promise<void>,
): ProviderFixture {
  const wrapper = new FaultInjectingProvider(inner)
  return {
    name,
    provider: wrapper,
    fault: {
      down: () => {
        wrapper.isDown = true
      },
      up: () => {
        wrapper.isDown = false
      },
      disable: () => {
        wrapper.isDisabled = true
      },
      enable: () => {
        wrapper.isDisabled = false
      },
    },
    calls: () => wrapper.calls,
    otherKek,
    reset: () => {
      wrapper.isDown = false
      wrapper.isDisabled = false
    },
    cleanup,
  }
}

/** A local KEK (model A). */
export async function localFixture(): Promise<ProviderFixture> {
  const opened: KeyProvider[] = []
  const make = (id: string) => {
    const p = localKeyProvider({ id, key: randomBytes(32) })
    opened.push(p)
    return p
  }
  const inner = make(`local:${uniqueName('kek')}`)
  return faultFixture(
    'local',
    inner,
    async () => unclosable(make(`local:${uniqueName('other')}`)),
    async () => {
      for (const p of opened) await p.close?.()
    },
  )
}

/**
 * A KMS client for the loopback endpoint. One attempt, so every request the endpoint counts is
 * one provider call (and one audit event). The SDK's own pooled (keep-alive) connections, as in
 * production: the endpoint never closes an idle connection, so a single attempt meets no
 * spurious ECONNRESET (see `keepAliveTimeout` in kms-endpoint.ts).
 */
export function kmsClient(kms: KmsEndpoint): KMSClient {
  return new KMSClient({
    endpoint: kms.url,
    region: 'local-1',
    credentials: KMS_CREDENTIALS,
    maxAttempts: 1,
  })
}

/** An AWS KMS key behind the in-repo endpoint (model C), with the endpoint's own faults. */
export async function kmsFixture(): Promise<
  ProviderFixture & { readonly kms: KmsEndpoint; readonly keyArn: string }
> {
  const kms = await startKmsEndpoint()
  const client = kmsClient(kms)
  const keyArn = kms.createKey()
  const provider = awsKmsKeyProvider({ keyId: keyArn, client })
  let base = 0
  const count = () => Object.values(kms.calls).reduce((a, b) => a + b, 0)
  return {
    name: 'aws-kms',
    kms,
    keyArn,
    provider: unclosable(provider),
    fault: {
      // KMSInternalException, HTTP 500, on every request until `up`: what a regional outage looks like.
      down: () => kms.failNext(Number.MAX_SAFE_INTEGER),
      up: () => kms.failNext(0),
      disable: () => kms.disableKey(keyArn),
      enable: () => kms.enableKey(keyArn),
    },
    calls: () => base + count(),
    otherKek: async () => unclosable(awsKmsKeyProvider({ keyId: kms.createKey(), client })),
    reset: () => {
      // reset() also zeroes the endpoint's counters: keep the running total.
      base += count()
      kms.reset()
    },
    async cleanup() {
      await provider.close?.()
      client.destroy()
      await kms.close()
    },
  }
}

/** An AES-256 KEK on a SoftHSM2 token (model B). One token per test process, one new key label per fixture. */
export async function pkcs11Fixture(): Promise<ProviderFixture & { readonly token: SoftHsmToken }> {
  const token = await createSoftHsmToken()
  const opened: KeyProvider[] = []
  const make = async (keyLabel: string) => {
    await generatePkcs11Kek({ module: token.module, tokenLabel: token.tokenLabel, pin: token.pin, keyLabel })
    const p = pkcs11KeyProvider({
      module: token.module,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
      keyLabel,
    })
    opened.push(p)
    return p
  }
  const inner = await make(uniqueName('kek'))
  const fixture = faultFixture(
    'pkcs11',
    inner,
    async () => unclosable(await make(uniqueName('other'))),
    async () => {
      for (const p of opened) await p.close?.()
      token.cleanup()
    },
  )
  return { ...fixture, token }
}

/** The three providers, in a stable order. Use with `describe.each(providerFactories())` + `describe.runIf(f.available)`. */
export function providerFactories(): ProviderFactory[] {
  return [
    { name: 'local', available: true, create: localFixture },
    { name: 'aws-kms', available: true, create: kmsFixture },
    { name: 'pkcs11', available: softHsmAvailable, create: pkcs11Fixture },
  ]
}

export { manualClock } from './manual-clock.js'

/** Physical names of the tables one {@link providerTestDb} uses. */
export interface ProviderTableNames {
  readonly users: string
  readonly orders: string
  readonly keys: string
}

/** Options of one application "process" on a {@link ProviderTestDb}. */
export interface ProcessOptions {
  readonly keyProvider: KeyProvider | readonly KeyProvider[]
  readonly cache?: KeyCacheOptions
  readonly audit?: AuditSink
  readonly metadataTtlMs?: number
  /**
   * Keys created on first use (development mode). On by default here: these suites count the
   * provider calls of a table's first use; the explicit `init` path has its own tests.
   */
  readonly autoCreateKeys?: boolean
}

/** One application process: its own `fieldEncryption` (own key cache), its own connection pool. */
export interface TestProcess {
  // biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
  readonly db: Kysely<any>
  readonly encryption: FieldEncryption
  close(): Promise<void>
}

export interface ProviderTestDb {
  readonly backend: Backend
  readonly names: ProviderTableNames
  readonly schema: EncryptedSchema
  /** A plain Kysely on the same database: what is at rest. */
  // biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
  readonly raw: Kysely<any>
  /** The key store, read through `raw`. */
  readonly store: KeyStore
  /** Starts a new "process" on the same database and key table. */
  open(options: ProcessOptions): Promise<TestProcess>
  destroy(): Promise<void>
}

/**
 * The database fixture of the provider suites: `users` (email with a unique, normalized blind
 * index; ssn with a 16-bit search index; score, a number with a unique index) and `orders` (email,
 * unique index), created with a plain Kysely so no key exists until a process uses a table.
 * Several processes (`open`) share the database and the key table, each with its own cache.
 */
export async function providerTestDb(backend: Backend): Promise<ProviderTestDb> {
  const names: ProviderTableNames = {
    users: uniqueName('pusers'),
    orders: uniqueName('porders'),
    keys: uniqueName('pkeys'),
  }
  const schema = encryptedSchema({
    [names.users]: {
      email: encrypted.text({
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        maxBytes: 320,
      }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
      score: encrypted.number({ index: { name: 'score_bidx' } }),
    },
    [names.orders]: {
      email: encrypted.text({
        index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
        maxBytes: 320,
      }),
    },
  })
  // PGlite: one in-memory instance shared by every dialect (destroying any Kysely on it closes it).
  const pglite = backend.name === 'pglite' ? newPGlite() : undefined
  const dialect = (): Dialect => (pglite === undefined ? backend.createDialect() : new PGliteDialect(pglite))
  // biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
  const raw = new Kysely<any>({ dialect: dialect() })
  const family = backend.family
  const idType = family === 'postgres' ? 'serial' : 'integer'
  // biome-ignore lint/suspicious/noExplicitAny: the column builder type differs per call site.
  const idCol = (c: any) => (family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement())
  await raw.schema
    .createTable(names.users)
    .addColumn('id', idType, idCol)
    .addColumn('name', 'varchar(100)', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, names.users, family))
    .execute()
  await raw.schema
    .createTable(names.orders)
    .addColumn('id', idType, idCol)
    .addColumn('item', 'varchar(100)', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, names.orders, family))
    .execute()
  await createBlindIndexes(raw, schema, names.users)
  await createBlindIndexes(raw, schema, names.orders)
  const store = new KeyStore(raw, { tableName: names.keys })
  await store.ensureSchema()

  const processes: TestProcess[] = []
  return {
    backend,
    names,
    schema,
    raw,
    store,
    async open(options) {
      const encryption = fieldEncryption({
        schema,
        keyTable: names.keys,
        keyProvider: options.keyProvider,
        ...(options.cache === undefined ? {} : { cache: options.cache }),
        ...(options.audit === undefined ? {} : { audit: options.audit }),
        ...(options.metadataTtlMs === undefined ? {} : { metadataTtlMs: options.metadataTtlMs }),
        autoCreateKeys: options.autoCreateKeys ?? true,
        verifySchema: onlyTables(),
      })
      // biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
      const db = new Kysely<any>({ dialect: encryption.wrap(dialect()), plugins: [encryption.plugin] })
      let closed = false
      const proc: TestProcess = {
        db,
        encryption,
        async close() {
          if (closed) return
          closed = true
          await encryption.close()
          if (pglite === undefined) await db.destroy()
        },
      }
      processes.push(proc)
      return proc
    },
    async destroy() {
      for (const p of processes) await p.close()
      for (const t of [names.users, names.orders, names.keys]) {
        await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      }
      await raw.destroy()
    },
  }
}

/** Every stored wrapping, by key, as `table/purpose/vN → [kekId, …]` (no bytes). */
export async function wrappingsByKey(store: KeyStore, table?: string): Promise<Record<string, string[]>> {
  const keys = table === undefined ? await store.listAll() : await store.list(table)
  return Object.fromEntries(
    keys.map((k) => [`${k.logicalTable}/${k.purpose}/v${k.version}`, k.wrappings.map((w) => w.kekId)]),
  )
}
