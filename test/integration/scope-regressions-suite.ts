import type { ExpressionBuilder, Kysely } from 'kysely'
import { describe } from 'vitest'
import { backends } from '../support/backends.js'
import { insertAdaAndBob, type ScannedSuite, useScannedTestDb } from '../support/scanned-db.js'

// biome-ignore lint/suspicious/noExplicitAny: see `db` below.
export type AnyEb = ExpressionBuilder<any, any>

/** Every plaintext these tests use: none may ever reach the driver. */
const SECRETS = ['ada@x.io', 'bob@x.io', 'zed@x.io', 'secret-value']

/** What a scope regression suite's tests use. */
export interface ScopeSuite {
  /** The plugin's Kysely; usable from the suite's first hook or test on. */
  // biome-ignore lint/suspicious/noExplicitAny: several shapes here are ones Kysely's types reject on purpose.
  readonly db: Kysely<any>
  readonly refused: ScannedSuite['refused']
  readonly u: string
  readonly o: string
  readonly p: string
  readonly pgFamily: boolean
}

/**
 * Query shapes a second reader of the plugin's scope model found mishandled (plaintext sent,
 * ciphertext returned undecrypted, wrong rows), each pinned on every backend with a leak scanner
 * between the wrapper and the driver. The preamble of plugin-scope-regressions.test.ts and
 * plugin-scope-readings-*.test.ts: Ada and Bob in users, one row in plain.
 */
export function describeScopeRegressions(title: string, body: (s: ScopeSuite) => void): void {
  describe.each(backends())(`plugin scope regressions: ${title} [$name]`, (backend) => {
    describe.runIf(backend.available)('', () => {
      const { t, refused } = useScannedTestDb(backend, SECRETS, async (t) => {
        await insertAdaAndBob(t)
        await t.db.insertInto(p).values({ id: 1, label: 'one' }).execute()
      })
      // The fixture is made in the suite's first hook: `db` reads it then.
      const db = new Proxy({} as ScopeSuite['db'], {
        get(_, prop) {
          const value = Reflect.get(t.db, prop) as unknown
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(t.db) : value
        },
      })
      const { users: u, orders: o, plain: p } = t.names
      body({ db, refused, u, o, p, pgFamily: backend.family === 'postgres' })
    })
  })
}
