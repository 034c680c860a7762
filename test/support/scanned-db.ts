import { afterAll, beforeEach, expect } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import type { Backend } from './backends.js'
import { type EncryptedTestDb, type EncryptedTestDbOptions, useEncryptedTestDb } from './encrypted-db.js'
import { type ScanningDialect, scanningDialect } from './leak-scanner.js'

/** What {@link useScannedTestDb} gives a suite. */
export interface ScannedSuite {
  /** The fixture; usable from the suite's first hook or test on (`names` at once). */
  readonly t: EncryptedTestDb
  /** The leak scanner between the encryption wrapper and the driver (reset before each test). */
  readonly scanner: ScanningDialect
  /** Expects `query` refused with `code` before anything reached the driver; returns the error. */
  refused(query: { execute(): Promise<unknown> }, code: string): Promise<QueryRefusedError>
}

/**
 * The preamble of the regression suites that pin a query shape on every backend with a leak
 * scanner: {@link useEncryptedTestDb} with the scanner inside the encryption wrapper, `seed` run
 * once, the scanner reset before each test, and after the suite no `secrets` seen by the driver.
 */
export function useScannedTestDb(
  backend: Backend,
  secrets: readonly string[],
  seed: (t: EncryptedTestDb) => Promise<void>,
  options: Pick<EncryptedTestDbOptions, 'verifySchema'> = {},
): ScannedSuite {
  let live: ScanningDialect | undefined
  const t = useEncryptedTestDb(backend, {
    ...options,
    wrapInner: (d) => {
      live = scanningDialect(d, () => [...secrets])
      return live
    },
    seed,
  })
  const scanner = new Proxy({} as ScanningDialect, {
    get(_, prop) {
      if (live === undefined)
        throw new Error(`useScannedTestDb: scanner.${String(prop)} before the suite started`)
      const value = Reflect.get(live, prop) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(live) : value
    },
  })
  beforeEach(() => {
    scanner.reset()
  })
  afterAll(() => {
    expect(scanner.hits()).toEqual([])
  })
  return {
    t,
    scanner,
    async refused(query, code) {
      const before = scanner.count()
      const error = await query.execute().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(QueryRefusedError)
      expect((error as QueryRefusedError).code).toBe(code)
      expect(scanner.count()).toBe(before)
      return error as QueryRefusedError
    },
  }
}

/** Ada (id 1) and Bob (id 2) with their addresses: the users the regression suites start from. */
export async function insertAdaAndBob(t: EncryptedTestDb): Promise<void> {
  await t.db
    .insertInto(t.names.users)
    .values([
      { id: 1, name: 'Ada', email: 'ada@x.io' },
      { id: 2, name: 'Bob', email: 'bob@x.io' },
    ])
    .execute()
}
