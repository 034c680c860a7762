import { OperationError } from '../errors.js'
import { contextValue } from '../fields/context-values.js'
import type { KeyPurpose } from '../keys/key-provider.js'
import { refuseOverCiphertext } from '../keys/key-ring-init.js'
import { tenantKeyNameOf } from '../schema/key-scope.js'
import { holdsCiphertext } from '../schema/sample-ciphertext.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { JobStore } from './job-store.js'
import { tableExists } from './primary-key.js'
import { type RunOptions, report } from './progress.js'

/** Options of `init`. */
export interface InitOptions extends RunOptions {
  /** Only these tables (physical or logical names). @default every table of the schema */
  readonly tables?: readonly string[]
  /** Report what would be created; create nothing. @default false */
  readonly dryRun?: boolean
  /**
   * Tables with per-tenant keys (`keyScope`): the tenants whose keys to create (`kfe init
   * --tenant`). Such tables have no table-wide keys: without tenants, `init` creates nothing for
   * them. Never over a tenant whose rows hold ciphertext (`KEYS_MISSING`), never again for a
   * tenant whose keys were destroyed.
   * @default none
   */
  readonly tenants?: readonly (string | number | bigint)[]
}

/** One key `init` found or created. */
export interface InitKey {
  readonly table: string
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  readonly version: number
  /** The tenant, for a table with per-tenant keys (then `logicalTable` is the tenant's key name). */
  readonly tenant?: string
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
  /**
   * Tables of the schema (physical names) that `init` was asked about and that do not exist in
   * the database: a name misspelt in `encryptedSchema`, or migrations not run yet. Their keys are
   * created all the same (`init` may run before the migrations); `kfe init` warns of them.
   */
  readonly missingTables: readonly string[]
  /**
   * True when the signal stopped `init` before every key was looked at: `keys` lists only the keys
   * it reached; the same call again creates the rest (`kfe init` exits 2).
   */
  readonly stopped: boolean
}

const PURPOSES: readonly KeyPurpose[] = ['data', 'index']

/**
 * Creates the key table, the job tables, and version 1 of the data and index keys of every
 * annotated table that has none, wrapped under every configured KEK (each wrapping proven to
 * unwrap to the key through its own KEK before anything is stored), each with its key check
 * value (through the key ring's `init`, which never creates keys over existing ciphertext). Idempotent: existing keys are reported, never replaced; concurrent
 * runs create each key once (the key table's primary key settles the race).
 * @throws KeyProviderError when a KEK fails, `UNWRAP_FAILED` naming the KEK whose wrapping of a new
 *   key does not unwrap to it (nothing is stored for that table); KeyError `KEY_STORE_ERROR` on a
 *   database error
 * @throws OperationError `OPS_INVALID` when `tenants` are given for a table named in `tables`
 *   without per-tenant keys, or when no table asked about has any
 */
export async function init(ctx: OpsContext, options: InitOptions = {}): Promise<InitResult> {
  const dryRun = options.dryRun === true
  const tables =
    options.tables === undefined ? [...ctx.schema.tables.values()] : options.tables.map((t) => ctx.table(t))
  refuseTenantsWithoutScope(tables, options)
  if (!dryRun) {
    await ctx.store.ensureSchema()
    await new JobStore(ctx).ensureSchema()
  }
  // Each table's key name; a table with per-tenant keys has one per tenant given, and no other.
  const names = tables.flatMap((table) =>
    table.keyScope === undefined
      ? [{ table, name: table.logical, tenant: undefined }]
      : (options.tenants ?? []).map((t) => ({
          table,
          name: tenantKeyNameOf(ctx.schema, table.physical, t),
          tenant: contextValue(t),
        })),
  )
  const keys: InitKey[] = []
  let stopped = false
  for (const [i, { table, name, tenant }] of names.entries()) {
    if (options.signal?.aborted) {
      stopped = true
      break
    }
    // [] when the key table does not exist yet; any other error (a corrupt row, the database
    // unreachable) is the init's, dry run or not.
    const before = await ctx.store.list(name)
    // The key ring's init creates what is missing and refuses (KEYS_MISSING) for a table whose
    // other keys are stored or whose rows hold ciphertext: fresh keys over data would lose it.
    if (!dryRun) await ctx.ring.init([name])
    else {
      // The same refusal as the real run's, so that a dry run never promises keys it would not make.
      const missing = PURPOSES.filter((p) => !before.some((k) => k.purpose === p))
      if (missing.length > 0)
        await refuseOverCiphertext(
          (t) => holdsCiphertext(ctx.db, ctx.schema, t),
          name,
          missing,
          // As the key ring's init here, which has the probe: the rows decide, not the other purpose.
          false,
          () => ctx.store.list(name),
        )
    }
    const after = dryRun ? before : await ctx.store.list(name)
    for (const purpose of PURPOSES) {
      const had = before.find((k) => k.purpose === purpose)
      const now = after.find((k) => k.purpose === purpose)
      keys.push({
        table: table.physical,
        logicalTable: name,
        ...(tenant === undefined ? {} : { tenant }),
        purpose,
        version: (had ?? now)?.version ?? 1,
        created: had === undefined,
        keks: (had ?? now)?.wrappings.map((w) => w.kekId) ?? ctx.providers.map((p) => p.id),
      })
    }
    report(options, {
      op: 'init',
      table: table.physical,
      phase: 'keys',
      done: (i + 1) * PURPOSES.length,
      total: names.length * PURPOSES.length,
      unit: 'keys',
    })
  }
  ctx.ring.refresh()
  const missingTables: string[] = []
  for (const table of tables)
    if (!(await tableExists(ctx, table.physical))) missingTables.push(table.physical)
  return { keys, created: keys.filter((k) => k.created).length, dryRun, missingTables, stopped }
}

/**
 * Tenants given where no table takes them would be ignored, and the operator told nothing: a
 * table named without per-tenant keys (`kfe init users --tenant acme`), or every table without.
 */
function refuseTenantsWithoutScope(tables: readonly TableInfo[], options: InitOptions): void {
  if (options.tenants === undefined || options.tenants.length === 0) return
  const unscoped = tables.filter((t) => t.keyScope === undefined)
  const named = options.tables !== undefined
  if (unscoped.length === 0 || (!named && unscoped.length < tables.length)) return
  const which = named ? unscoped.map((t) => t.physical).join(', ') : 'no table of the schema'
  throw new OperationError(
    'OPS_INVALID',
    `Tenants were given, but ${which} ${named ? `has no per-tenant keys (keyScope)` : 'has per-tenant keys (keyScope)'}: nothing was created (run \`kfe init\` without --tenant for such a table).`,
    named && unscoped.length === 1 ? { table: unscoped[0]!.logical } : {},
  )
}
