import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  KeyError,
  type KeyProvider,
  KeyProviderError,
  KeyStore,
  localKeyProvider,
  OperationError,
} from '../../src/index.js'
import { KeyMaterial } from '../../src/keys/key-material.js'
import type { KeyRef } from '../../src/keys/key-provider.js'
import { createOpsContext } from '../../src/ops/context.js'
import { newWrappedKey } from '../../src/ops/new-key.js'
import type { JobResult, RetireResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { type OpsTestDb, useOpsTestDb } from '../support/ops-db.js'

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Stages (and optionally activates; version 1 is created active) a key version the way another tool would: through the key store. */
async function stageElsewhere(t: OpsTestDb, ref: KeyRef, activate: boolean): Promise<void> {
  const ctx = createOpsContext({ db: t.raw, schema: t.schema, keyProvider: t.provider, keyTable: t.keyTable })
  const store = new KeyStore(t.raw, { tableName: t.keyTable })
  await store.ensureSchema()
  const { wrappings, checkValue } = await newWrappedKey(ctx, ref)
  if (ref.version === 1) {
    await store.createInitial(ref.logicalTable, ref.purpose, wrappings, checkValue) // created active
    return
  }
  await store.stage(ref.logicalTable, ref.purpose, wrappings, ref.version, checkValue)
  if (activate) await store.activate(ref.logicalTable, ref.purpose, ref.version)
  // ctx.ring is not closed: closing it would close the shared provider; it holds no key.
}

describe.each(backends())('ops fixes: key versions [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 10 })

    it('verify reports blind indexes computed with a retired index version (RETIRED_INDEX); reencrypt recomputes them', async () => {
      await t.ops.rotate(t.table, { purpose: 'index', reencrypt: false })
      const forced = await t.ops.retire(t.table, { purpose: 'index', version: 1, force: true })
      expect(forced).toMatchObject({ retired: true, forced: true, rows: 10 })
      const v = await t.ops.verify(t.table)
      expect(v).toMatchObject({ ok: false, failed: 10, indexVersions: { 1: 20 } })
      expect(v.failures[0]!.problems).toEqual(['email_bidx: RETIRED_INDEX', 'ssn_bidx: RETIRED_INDEX'])
      const job = (await t.ops.reencrypt(t.table)) as JobResult
      expect(job).toMatchObject({ failed: 0, rewritten: 10 })
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, indexVersions: { 2: 20 } })
    })
  })
})

// The backends run one after another: run at once, a loaded machine delayed one backend's
// re-encryption past the TTL the next step must still be within (RETIRE_TOO_EARLY not raised).
describe.each(backends())(
  'ops fixes: metadata-TTL waits by the database clock [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const ttlMs = 1500
      const t = useOpsTestDb(backend, { ttlMs, ttlMarginMs: 100, rows: 10 })

      it('retire refuses (RETIRE_TOO_EARLY, with the time left) until the TTL has passed since the successor was activated; force overrides', async ({
        expect,
      }) => {
        // The retires that must come too early ask an instance whose TTL no stall of this machine
        // outlasts (the wait is the asking instance's TTL from the activation).
        const longTtl = 600_000
        const slow = t.moreOps({ metadataTtlMs: longTtl })
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        expect(await t.ops.reencrypt(t.table)).toMatchObject({ rewritten: 10 })
        const error = await slow.retire(t.table, { purpose: 'data', version: 1 }).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(OperationError)
        expect(error).toMatchObject({ code: 'RETIRE_TOO_EARLY' })
        const waitMs = (error as OperationError).waitMs!
        expect(waitMs).toBeGreaterThan(longTtl - 60_000)
        expect(waitMs).toBeLessThanOrEqual(longTtl + 100)
        expect((error as Error).message).toMatch(/Retry in \d+ s, or force it/)
        const forced = await slow.retire(t.table, { purpose: 'data', version: 1, force: true })
        expect(forced).toMatchObject({ retired: true, forced: true, rows: 0 })
        expect(forced.waitMs).toBeGreaterThan(0)

        await t.ops.rotate(t.table, { purpose: 'index', reencrypt: false })
        await t.ops.reencrypt(t.table)
        const early = (await slow
          .retire(t.table, { purpose: 'index', version: 1 })
          .catch((e: unknown) => e)) as OperationError
        expect(early.code).toBe('RETIRE_TOO_EARLY')
        // Once the fixture's TTL has passed since the activation (by the database clock), the
        // fixture's instance retires without force.
        await pause(ttlMs + 150)
        const r: RetireResult = await t.ops.retire(t.table, { purpose: 'index', version: 1 })
        expect(r).toMatchObject({ retired: true, forced: false, waitMs: 0, rows: 0 })
      })

      it('a version staged by another machine whose clock is an hour behind is activated only after the TTL from when it was first seen', async ({
        expect,
      }) => {
        await stageElsewhere(t, { logicalTable: t.table, purpose: 'data', version: 3 }, false)
        // That machine wrote created_at by its own clock: an hour in the past.
        await t.raw
          .updateTable(t.keyTable)
          .set({ created_at: new Date(Date.now() - 3_600_000) })
          .where('logical_table', '=', t.table)
          .where('version', '=', 3)
          .where('purpose', '=', 'data')
          .execute()
        const waits: number[] = []
        const started = performance.now()
        const r = await t.ops.rotate(t.table, {
          purpose: 'data',
          reencrypt: false,
          onProgress: (p) => {
            if (p.phase === 'waiting for metadata TTL' && p.total !== undefined) waits.push(p.total)
          },
        })
        expect(r).toMatchObject({ version: 3, state: 'active', interrupted: false })
        // It waited (from created_at, an hour back, it would not have), and the TTL in all: the
        // wait itself is the TTL less the time between first seeing the version and waiting.
        expect(waits[0]).toBeGreaterThan(0)
        expect(performance.now() - started).toBeGreaterThanOrEqual(ttlMs)
      })

      it('activate-later tells when, by the database clock, and what is left', async () => {
        const before = Date.now()
        const staged = await t.ops.rotate(t.table, { purpose: 'data', activateLater: true })
        const after = Date.now()
        expect(staged).toMatchObject({ version: 4, state: 'staged', interrupted: false })
        expect(staged.left).toContain(`kfe rotate ${t.table} --data\` again to activate it`)
        // Staged between `before` and `after` (the database runs on this machine's clock), due the
        // TTL and its margin later.
        const at = staged.activateAfter!.getTime()
        expect(at).toBeGreaterThanOrEqual(before + ttlMs - 50)
        expect(at).toBeLessThanOrEqual(after + ttlMs + 100)
        // Stopped during the wait: interrupted, with what is left. The instance asked has a TTL no
        // stall outlasts, and the stop comes when the wait starts.
        const stop = new AbortController()
        const r = await t.moreOps({ metadataTtlMs: 600_000 }).rotate(t.table, {
          purpose: 'data',
          signal: stop.signal,
          onProgress: (p) => {
            if (p.phase === 'waiting for metadata TTL') stop.abort()
          },
        })
        expect(r).toMatchObject({ version: 4, state: 'staged', interrupted: true })
        expect(r.left).toContain('version 4 is staged, not active')
      })

      // PGlite: no second dialect on the fixture's instance to hook (and one process writes it).
      it.runIf(backend.name !== 'pglite')(
        'retire times its wait before it counts: a count started inside the TTL that ends past it is still refused (RETIRE_TOO_EARLY)',
        async () => {
          // An instance whose key metadata predates the activation may write a row with the former
          // version behind the count's cursor until the TTL has passed: only a count that starts
          // after it is sure to see every such row. Timed after the count, a count this long passed.
          let delayed = 0
          const db = new Kysely<TestDB>({
            dialect: hooked(t.backend.createDialect(), async (query) => {
              if (delayed > 0 || !/^select/i.test(query.sql) || !query.sql.includes(t.table)) return
              delayed++
              await pause(ttlMs + 400)
            }),
          })
          try {
            const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
            const activated = performance.now()
            expect(await t.ops.reencrypt(t.table)).toMatchObject({ failed: 0, remainingBatches: 0 })
            // The count starts inside the TTL (a machine this slow would make the test meaningless).
            expect(performance.now() - activated).toBeLessThan(ttlMs - 300)
            const error = await t
              .moreOps({ db })
              .retire(t.table, { purpose: 'data', version: version - 1 })
              .catch((e: unknown) => e)
            expect(delayed).toBe(1)
            expect(error).toMatchObject({ code: 'RETIRE_TOO_EARLY' })
            expect((error as OperationError).waitMs).toBeGreaterThan(0)
          } finally {
            await db.destroy()
          }
        },
      )
    })
  },
)

describe.each(backends())(
  'ops fixes: key copies are wiped on every error path [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOpsTestDb(backend, { init: false })
      afterEach(() => {
        vi.restoreAllMocks()
      })

      it('loadKeySet: a provider that fails on the second data version leaves no copy of the first', async () => {
        await t.ops.init()
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        // Data version 2 does not unwrap (its KEK revoked, say); version 1 does, and is copied first.
        const failing: KeyProvider = {
          id: t.provider.id,
          generateDataKey: (ref) => t.provider.generateDataKey(ref),
          unwrap: (wrapped, ref) =>
            ref.purpose === 'data' && ref.version === 2
              ? Promise.reject(
                  new KeyProviderError('PROVIDER_UNAVAILABLE', 'The KEK is down.', {
                    providerId: t.provider.id,
                  }),
                )
              : t.provider.unwrap(wrapped, ref),
          rewrap: (stored, ref) => t.provider.rewrap(stored, ref),
        }
        const ops = t.moreOps({ provider: failing })
        const destroyed: KeyRef[] = []
        const destroy = KeyMaterial.prototype.destroy
        vi.spyOn(KeyMaterial.prototype, 'destroy').mockImplementation(function (this: KeyMaterial) {
          destroyed.push(this.ref)
          destroy.call(this)
        })
        const error = await ops.verify(t.table).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(KeyError)
        expect(destroyed).toContainEqual({ logicalTable: t.table, purpose: 'data', version: 1 })
      })
    })
  },
)

/**
 * The error a provider of another copy of this library throws (a `kfe` bin and a config that
 * each load their own copy): its name and code, not our class.
 */
class ForeignProviderError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = 'KeyProviderError'
  }
}

describe.each(backends())('ops fixes: rotate under another KEK [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 3 })

    it('refuses with UNWRAP_FAILED before staging anything (dry run too) when the active keys do not unwrap under the configured KEK', async () => {
      // Another key behind the KEK id the keys were wrapped under (another environment's KEK).
      const other = localKeyProvider({ id: t.provider.id, key: randomBytes(32) })
      // Its unwrap failures as another copy of the library would throw them.
      const foreign: KeyProvider = {
        id: other.id,
        generateDataKey: (ref) => other.generateDataKey(ref),
        unwrap: (wrapped, ref) =>
          other.unwrap(wrapped, ref).catch((e: KeyProviderError) => {
            throw new ForeignProviderError(e.code, e.message)
          }),
        rewrap: (source, ref) => other.rewrap(source, ref),
      }
      for (const provider of [other, foreign]) {
        const ops = t.moreOps({ provider })
        for (const dryRun of [true, false]) {
          const error = await ops.rotate(t.table, { purpose: 'data', dryRun }).catch((e: unknown) => e)
          expect(error).toBeInstanceOf(KeyProviderError)
          expect(error).toMatchObject({ code: 'UNWRAP_FAILED' })
          expect((error as Error).message).toContain('Likely causes')
        }
      }
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      const keys = await store.list(t.table)
      expect(keys.map((k) => [k.purpose, k.version, k.state])).toEqual([
        ['data', 1, 'active'],
        ['index', 1, 'active'],
      ])
      // The application, under the right KEK, still writes and reads.
      await t.insert(1, 'after')
      expect(await t.app.selectFrom(t.table).select('email').execute()).toHaveLength(4)
    })
  })
})

describe.each(backends())('ops fixes: a provider error of a key-ring code [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 2 })

    it("a provider's KEY_NOT_FOUND or KEY_DESTROYED while the active keys are proven is the provider's failure, not the ring's 'no key': rotate stages nothing", async () => {
      for (const code of ['KEY_NOT_FOUND', 'KEY_DESTROYED'] as const) {
        // A provider of another author that reports its KEK gone with the ring's own codes.
        const gone: KeyProvider = {
          id: t.provider.id,
          generateDataKey: (ref) => t.provider.generateDataKey(ref),
          // Only the active version 1: a new key's wrapping still unwraps, so only the proof of
          // the active keys can stop the rotation.
          unwrap: (wrapped, ref) =>
            ref.version === 1
              ? Promise.reject(
                  new KeyProviderError(code, `${code} (injected)`, { providerId: t.provider.id }),
                )
              : t.provider.unwrap(wrapped, ref),
          rewrap: (source, ref) => t.provider.rewrap(source, ref),
        }
        const error = await t
          .moreOps({ provider: gone })
          .rotate(t.table, { purpose: 'data', reencrypt: false })
          .catch((e: unknown) => e)
        expect(error).toBeInstanceOf(KeyProviderError)
        expect(error).toMatchObject({ code })
      }
      const keys = await new KeyStore(t.raw, { tableName: t.keyTable }).list(t.table)
      expect(keys.map((k) => [k.purpose, k.version, k.state])).toEqual([
        ['data', 1, 'active'],
        ['index', 1, 'active'],
      ])
    })
  })
})

describe.each(backends())('ops fixes: rotate checks its job options first [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 2 })

    it('workers, batchSize or maxRowsPerSecond out of range: OPS_INVALID before a key is staged (found by the job, the new version was already active)', async () => {
      for (const options of [{ workers: 65 }, { batchSize: 0 }, { maxRowsPerSecond: -1 }]) {
        const error = await t.ops.rotate(t.table, { purpose: 'data', ...options }).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(OperationError)
        expect(error).toMatchObject({ code: 'OPS_INVALID' })
      }
      const keys = await new KeyStore(t.raw, { tableName: t.keyTable }).list(t.table)
      expect(keys.map((k) => [k.purpose, k.version, k.state])).toEqual([
        ['data', 1, 'active'],
        ['index', 1, 'active'],
      ])
      // Without a re-encryption, the options are not the rotation's.
      expect(await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false, workers: 65 })).toMatchObject({
        version: 2,
        state: 'active',
      })
    })
  })
})

describe.each(backends())('ops fixes: rotate proves the staged key [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend)
    /** The fixture's KEK, whose unwrap of data `version` fails with `code` the second time (rotate's proof of the staged key; the first is the proof of the new wrapping, before staging). */
    const failsProof = (version: number, code: 'PROVIDER_UNAVAILABLE' | 'UNWRAP_FAILED'): KeyProvider => {
      let calls = 0
      return {
        id: t.provider.id,
        generateDataKey: (ref) => t.provider.generateDataKey(ref),
        unwrap: (wrapped, ref) => {
          if (ref.purpose === 'data' && ref.version === version && ++calls === 2)
            return Promise.reject(
              new KeyProviderError(code, `${code} (injected)`, { providerId: t.provider.id }),
            )
          return t.provider.unwrap(wrapped, ref)
        },
        rewrap: (source, ref) => t.provider.rewrap(source, ref),
      }
    }
    const states = async () =>
      (await new KeyStore(t.raw, { tableName: t.keyTable }).list(t.table, 'data')).map(
        (k) => `v${k.version}:${k.state}`,
      )

    it('a provider outage while proving the staged key leaves it staged (PROVIDER_UNAVAILABLE, run again); a refusal retires it (ROTATION_REFUSED)', async () => {
      const outage = t.moreOps({ provider: failsProof(2, 'PROVIDER_UNAVAILABLE') })
      const error = await outage
        .rotate(t.table, { purpose: 'data', reencrypt: false })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(KeyProviderError)
      expect(error).toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
      expect((error as Error).message).toContain('it stays staged, nothing was activated')
      expect((error as Error).message).toContain(`Run \`kfe rotate ${t.table} --data\` again`)
      expect(await states()).toEqual(['v1:active', 'v2:staged'])
      // The next run proves the same version, and activates it.
      const r = await outage.rotate(t.table, { purpose: 'data', reencrypt: false })
      expect(r).toMatchObject({ version: 2, state: 'active' })
      expect(await states()).toEqual(['v1:decrypt-only', 'v2:active'])

      const refusing = t.moreOps({ provider: failsProof(3, 'UNWRAP_FAILED') })
      const refused = await refusing
        .rotate(t.table, { purpose: 'data', reencrypt: false })
        .catch((e: unknown) => e)
      expect(refused).toBeInstanceOf(OperationError)
      expect(refused).toMatchObject({ code: 'ROTATION_REFUSED' })
      expect((refused as Error).message).toContain('does not unwrap (UNWRAP_FAILED); it was retired')
      expect(await states()).toEqual(['v1:decrypt-only', 'v2:active', 'v3:retired'])
    })
  })
})
