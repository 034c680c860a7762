import { AsyncLocalStorage } from 'node:async_hooks'
import type {
  CompiledQuery,
  DatabaseConnection,
  Dialect,
  Driver,
  QueryCompiler,
  QueryResult,
  TransactionSettings,
} from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { EncryptedSchema } from '../schema/schema.js'
import { analyzeQuery } from './analyzer.js'
import { withCallerStack } from './caller-stack.js'
import { type DecryptStats, decryptRows } from './decrypt-rows.js'
import { type DeferredValue, isDeferred } from './deferred-value.js'
import { DelegatingDriver } from './delegating-driver.js'
import { EMPTY_PLAN, type PendingPlans, type QueryPlan } from './plan.js'
import { cachedKeys, loadKeys, type QueryKeys, resolveDeferred } from './resolve-values.js'
import type { UnwrappedReads } from './unwrapped-reads.js'

export type Execute = (query: CompiledQuery) => Promise<QueryResult<unknown>>

/**
 * The connection a wrapped query is running on. The key store borrows it for its own (rare)
 * queries, because a single-connection driver (PGlite) would otherwise wait for itself.
 */
export const currentConnection = new AsyncLocalStorage<Execute>()

let slowPaths = 0

/**
 * Runs `fn` (a key load: it may read the key store) with the query's connection exposed to the
 * key store. The AsyncLocalStorage is entered only here, on the rare slow path, and disabled when
 * no slow path is running: on Node 20 an enabled AsyncLocalStorage turns on promise hooks, which
 * every promise of the application would pay for.
 */
export type SlowPath = <T>(fn: () => Promise<T>) => Promise<T>

function slowPathOn(execute: Execute): SlowPath {
  return async (fn) => {
    slowPaths++
    try {
      return await currentConnection.run(execute, fn)
    } finally {
      slowPaths--
      if (slowPaths === 0) currentConnection.disable()
    }
  }
}

/** What the wrapper needs; built once by `fieldEncryption`. */
export interface WrapperContext {
  readonly schema: EncryptedSchema
  readonly plans: PendingPlans
  /** Shared with the plugin: the wrapper forgets each query it runs (see {@link UnwrappedReads}). */
  readonly reads: UnwrappedReads
  readonly ring: () => KeyRing
  readonly stats: DecryptStats
  /** Loads keys of every annotated table, on the given connection, before a transaction starts. */
  readonly prepare: (execute: Execute) => Promise<void>
  /** Told of each driver the wrapped dialect creates, so the key store can use its connections. */
  readonly onDriver: (driver: EncryptingDriver) => void
}

/** The connection's own methods, kept on it when the wrapper patches it. */
const ORIGINAL = Symbol('kysely-field-encryption.original')

interface Originals {
  readonly executeQuery: DatabaseConnection['executeQuery']
  readonly streamQuery: DatabaseConnection['streamQuery']
  /** The slow path on this connection, made the first time a key must be loaded. */
  slow?: SlowPath
}

type Patched = DatabaseConnection & { [ORIGINAL]?: Originals }

/** The connection's own `executeQuery`, bound to it (for the key store, which borrows it). */
function originalExecute(connection: Patched): Execute {
  const own = connection[ORIGINAL]
  if (own === undefined) return (query) => connection.executeQuery(query)
  return (query) => own.executeQuery.call(connection, query)
}

/**
 * Wraps a dialect so that every query, whatever path it took (execute, stream, transactions,
 * `db.connection()`, `withoutPlugins()`, another plugin's renaming), passes the fail-closed check
 * and has its deferred values resolved and its results decrypted right at the driver.
 */
export function wrapDialect(dialect: Dialect, ctx: WrapperContext): Dialect {
  let compiler: QueryCompiler | undefined
  const getCompiler = () => {
    compiler ??= dialect.createQueryCompiler()
    return compiler
  }
  return {
    createAdapter: () => dialect.createAdapter(),
    createDriver: () => {
      const driver = new EncryptingDriver(dialect.createDriver(), ctx, getCompiler)
      ctx.onDriver(driver)
      return driver
    },
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createIntrospector: (db) => dialect.createIntrospector(db),
  }
}

/** The driver of a wrapped dialect. */
export class EncryptingDriver extends DelegatingDriver {
  #init: Promise<void> | undefined
  /**
   * The patched methods, made once per driver: a connection is patched by assigning them, with
   * no function made per connection (some drivers, PGlite's, hand out a new connection object
   * for every query). They find their connection as `this`, as every caller of a connection
   * method (kysely, the drivers) calls them.
   */
  readonly #executeQuery: DatabaseConnection['executeQuery']
  readonly #streamQuery: DatabaseConnection['streamQuery']

  constructor(
    inner: Driver,
    private readonly ctx: WrapperContext,
    compiler: () => QueryCompiler,
  ) {
    super(inner)
    this.#executeQuery = patchedExecute(ctx, compiler)
    this.#streamQuery = patchedStream(ctx, compiler)
  }

  /** Idempotent: Kysely and the key store may both ask. */
  override init(): Promise<void> {
    this.#init ??= this.inner.init()
    return this.#init
  }

  override acquireConnection(): Promise<DatabaseConnection> {
    return this.inner.acquireConnection().then(this.#patch)
  }

  override async beginTransaction(
    connection: DatabaseConnection,
    settings: TransactionSettings,
  ): Promise<void> {
    // Keys are created outside the transaction, so a rollback can never remove a key that
    // already encrypted data (PGlite has one session: this is its only chance).
    if ((connection as Patched)[ORIGINAL] !== undefined) {
      const execute = originalExecute(connection)
      try {
        await slowPathOn(execute)(() => this.ctx.prepare(execute))
      } catch (error) {
        throw withCallerStack(error, new Error())
      }
    }
    return this.inner.beginTransaction(connection, settings)
  }

  /** Patches the connection object in place (drivers pass it back to their own methods); returns it. */
  readonly #patch = (connection: DatabaseConnection): DatabaseConnection => {
    const c = connection as Patched
    if (c[ORIGINAL] !== undefined) return c
    c[ORIGINAL] = { executeQuery: c.executeQuery, streamQuery: c.streamQuery }
    c.executeQuery = this.#executeQuery
    c.streamQuery = this.#streamQuery
    return c
  }
}

/** The wrapped `executeQuery` of one driver's connections; `this` is the connection. */
function patchedExecute(
  ctx: WrapperContext,
  compiler: () => QueryCompiler,
): DatabaseConnection['executeQuery'] {
  return async function executeQuery(this: Patched, query: CompiledQuery) {
    const own = ownMethods(this)
    let prepared: Prepared
    try {
      // Steady state: no promise but the query's own (prepare and decrypt return plain values).
      const p = prepareQuery(ctx, compiler, query, this)
      prepared = p instanceof Promise ? await p : p
    } catch (error) {
      // Errors of this library get the application's frames, as kysely's drivers do for theirs.
      throw withCallerStack(error, new Error())
    }
    const { plan, send } = prepared
    let result: QueryResult<unknown>
    try {
      result = await own.executeQuery.call(this, send)
    } catch (error) {
      // A driver that extends its errors' stacks (kysely's pg and mysql2 drivers) already ends
      // them at the caller: they are left as they are; others (PGlite's) get the caller's frames.
      throw withCallerStack(error, new Error())
    }
    if (plan.outputs.length === 0 || result.rows.length === 0) return result
    try {
      const decrypted = decryptRows(
        ctx.ring(),
        plan,
        result.rows as Record<string, unknown>[],
        ctx.stats,
        slowPathOf(this),
      )
      const rows = decrypted instanceof Promise ? await decrypted : decrypted
      return rows === result.rows ? result : { ...result, rows }
    } catch (error) {
      throw withCallerStack(error, new Error())
    }
  } as DatabaseConnection['executeQuery']
}

/** The wrapped `streamQuery` of one driver's connections; `this` is the connection. */
function patchedStream(
  ctx: WrapperContext,
  compiler: () => QueryCompiler,
): DatabaseConnection['streamQuery'] {
  return async function* streamQuery(this: Patched, query: CompiledQuery, chunkSize?: number) {
    const own = ownMethods(this)
    const slow = slowPathOf(this)
    let plan: QueryPlan
    let send: CompiledQuery
    try {
      ;({ plan, send } = await prepareQuery(ctx, compiler, query, this))
      // Fetch every data key version the rows may need before the cursor opens: a key-store
      // read on this connection would otherwise wait behind the cursor.
      if (plan.outputs.length > 0) await slow(() => prefetchDataKeys(ctx.ring(), plan))
    } catch (error) {
      throw withCallerStack(error, new Error())
    }
    for await (const chunk of own.streamQuery.call(this, send, chunkSize)) {
      if (plan.outputs.length === 0 || chunk.rows.length === 0) {
        yield chunk
        continue
      }
      let rows: Record<string, unknown>[]
      try {
        rows = await decryptRows(ctx.ring(), plan, chunk.rows as Record<string, unknown>[], ctx.stats, slow)
      } catch (error) {
        throw withCallerStack(error, new Error())
      }
      yield { ...chunk, rows }
    }
  } as DatabaseConnection['streamQuery']
}

function ownMethods(connection: Patched | undefined): Originals {
  const own = connection?.[ORIGINAL]
  if (own === undefined) {
    // Only a detached call (`const f = connection.executeQuery; f(q)`) gets here.
    throw new TypeError('A wrapped connection method must be called on its connection.')
  }
  return own
}

/** The slow path (a key load) on this connection: made once per connection, when first needed. */
function slowPathOf(connection: Patched): SlowPath {
  const own = connection[ORIGINAL]
  if (own === undefined) return slowPathOn(originalExecute(connection))
  own.slow ??= slowPathOn(originalExecute(connection))
  return own.slow
}

/** What the wrapper sends, and what it does with the results. */
interface Prepared {
  readonly plan: QueryPlan
  readonly send: CompiledQuery
}

/**
 * The fail-closed check and the resolution of deferred values. The plan comes from the final
 * tree: reused when it is exactly the tree the plugin produced, else derived again in `verify`
 * mode, which throws if any plaintext still needs rewriting (the plugin was bypassed).
 *
 * Synchronous when every key is cached (the steady state); a promise only when a key must load.
 */
function prepareQuery(
  ctx: WrapperContext,
  compiler: () => QueryCompiler,
  query: CompiledQuery,
  connection: Patched,
): Prepared | Promise<Prepared> {
  ctx.reads.seen(query.queryId)
  const node = query.query
  const deferred = deferredOf(query.parameters)
  let plan = node === undefined ? undefined : ctx.plans.take(node)
  // Reuse the plugin's plan only for the very parameters it produced: a compiled query whose
  // parameters were swapped (plaintext in a placeholder's slot) takes the verify pass instead.
  if (plan !== undefined && !sameDeferred(plan, deferred)) plan = undefined
  if (plan === undefined) {
    plan = node === undefined ? EMPTY_PLAN : analyzeQuery(ctx.schema, 'verify', node).plan
    if (!sameDeferred(plan, deferred)) {
      throw new QueryRefusedError(
        'PLAINTEXT_WRITE',
        'The parameters of this compiled query do not match its encrypted placeholders; nothing was sent.',
        {
          hint: 'Do not edit the parameters of a compiled query that touches encrypted columns.',
        },
      )
    }
  }
  const checked = plan
  if (checked.indexComparisons.size > 0) {
    return checkIndexComparisons(ctx.ring(), checked, slowPathOf(connection)).then(() =>
      resolveQuery(ctx, compiler, query, checked, deferred, connection),
    )
  }
  return resolveQuery(ctx, compiler, query, checked, deferred, connection)
}

/** Refuses a self-join on blind-index columns while several index versions are live. */
async function checkIndexComparisons(ring: KeyRing, plan: QueryPlan, slow: SlowPath): Promise<void> {
  for (const table of plan.indexComparisons) {
    const live = ring.peekSearchKeys(table, 'index') ?? (await slow(() => ring.searchKeys(table, 'index')))
    if (live.length > 1) {
      throw new QueryRefusedError(
        'QUERY_REFUSED',
        `Blind-index columns of ${table} are compared with each other (a self-join, or an upsert's conflict target) while several index versions are live (a rotation); the result would miss matches.`,
        {
          table,
          operator: '= another column',
          hint: 'Finish the index-key rotation (backfill, then retire the old version) first.',
        },
      )
    }
  }
}

/** The query with its deferred values replaced: keys from the cache, or loaded through `slow`. */
function resolveQuery(
  ctx: WrapperContext,
  compiler: () => QueryCompiler,
  query: CompiledQuery,
  plan: QueryPlan,
  deferred: readonly DeferredValue[],
  connection: Patched,
): Prepared | Promise<Prepared> {
  if (deferred.length === 0) return { plan, send: query }
  const ring = ctx.ring()
  const cached = cachedKeys(ring, deferred)
  if (cached !== undefined) return withKeys(compiler, query, plan, cached)
  return slowPathOf(connection)(() => loadKeys(ring, deferred)).then((keys) =>
    withKeys(compiler, query, plan, keys),
  )
}

/** The query to send: its deferred values resolved with `keys`. */
function withKeys(
  compiler: () => QueryCompiler,
  query: CompiledQuery,
  plan: QueryPlan,
  keys: QueryKeys,
): Prepared {
  const resolved = resolveDeferred(keys, query.query, query.parameters, compiler, query as never)
  const send = Object.freeze({
    ...query,
    sql: resolved.sql ?? query.sql,
    parameters: Object.freeze(resolved.parameters),
  })
  return { plan, send: send as CompiledQuery }
}

async function prefetchDataKeys(ring: KeyRing, plan: QueryPlan): Promise<void> {
  const tables = new Set(plan.outputs.map((o) => o.column.table.logical))
  await Promise.all(
    [...tables].map(async (table) => {
      const versions = await ring.versions(table, 'data')
      await Promise.all(
        versions.map((v) => ring.key({ logicalTable: table, purpose: 'data', version: v.version })),
      )
    }),
  )
}

/** The deferred values among a query's parameters; a shared empty list when there are none. */
function deferredOf(parameters: readonly unknown[]): readonly DeferredValue[] {
  let out: DeferredValue[] | undefined
  for (const p of parameters) {
    if (!isDeferred(p)) continue
    out ??= []
    out.push(p)
  }
  return out ?? NONE
}

const NONE: readonly DeferredValue[] = Object.freeze([])

function sameDeferred(plan: QueryPlan, deferred: readonly DeferredValue[]): boolean {
  if (plan.deferredValues.size !== deferred.length) return false
  return deferred.every((d) => plan.deferredValues.has(d))
}
