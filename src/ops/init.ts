import type { KeyPurpose } from '../keys/key-provider.js'
import type { OpsContext } from './context.js'
import { JobStore } from './job-store.js'
import { newWrappedKey } from './new-key.js'
import { type RunOptions, report } from './progress.js'

/** Options of `init`. */
export interface InitOptions extends RunOptions {
  /** Only these tables (physical or logical names). @default every table of the schema */
  readonly tables?: readonly string[]
  /** Report what would be created; create nothing. @default false */
  readonly dryRun?: boolean
}

/** One key `init` found or created. */
export interface InitKey {
  readonly table: string
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  readonly version: number
  /** True when this call created it (or, with `dryRun`, would). */
  readonly created: boolean
  /** KEKs wrapping it. */
  readonly keks: readonly string[]
}

/** Outcome of `init`. */
export interface InitResult {
  readonly keys: readonly InitKey[]
  /** Keys created by this call. */
  readonly created: number
  readonly dryRun: boolean
}

const PURPOSES: readonly KeyPurpose[] = ['data', 'index']

/**
 * Creates the key table, the job tables, and version 1 of the data and index keys of every
 * annotated table that has none, wrapped under every configured KEK (each wrapping proven to
 * unwrap before it is stored). Idempotent: existing keys are reported, never replaced; concurrent
 * runs create each key once (the key table's primary key settles the race).
 * @throws KeyProviderError when a KEK fails; KeyError `KEY_STORE_ERROR` on a database error
 */
export async function init(ctx: OpsContext, options: InitOptions = {}): Promise<InitResult> {
  const dryRun = options.dryRun === true
  if (!dryRun) {
    await ctx.store.ensureSchema()
    await new JobStore(ctx).ensureSchema()
  }
  const tables =
    options.tables === undefined ? [...ctx.schema.tables.values()] : options.tables.map((t) => ctx.table(t))
  const keys: InitKey[] = []
  for (const table of tables) {
    for (const purpose of PURPOSES) {
      if (options.signal?.aborted) break
      const existing = await ctx.store.list(table.logical, purpose).catch((error: unknown) => {
        if (dryRun) return [] // no key table yet
        throw error
      })
      const first = existing[0]
      if (first !== undefined) {
        keys.push({
          table: table.physical,
          logicalTable: table.logical,
          purpose,
          version: first.version,
          created: false,
          keks: first.wrappings.map((w) => w.kekId),
        })
      } else if (dryRun) {
        keys.push({
          table: table.physical,
          logicalTable: table.logical,
          purpose,
          version: 1,
          created: true,
          keks: ctx.providers.map((p) => p.id),
        })
      } else {
        const wrappings = await newWrappedKey(ctx, { logicalTable: table.logical, purpose, version: 1 })
        const { key, created } = await ctx.store.createInitial(table.logical, purpose, wrappings)
        keys.push({
          table: table.physical,
          logicalTable: table.logical,
          purpose,
          version: key.version,
          created,
          keks: key.wrappings.map((w) => w.kekId),
        })
      }
      report(options, {
        op: 'init',
        table: table.physical,
        phase: purpose,
        done: keys.length,
        total: tables.length * 2,
        unit: 'keys',
      })
    }
  }
  ctx.ring.refresh()
  return { keys, created: keys.filter((k) => k.created).length, dryRun }
}
