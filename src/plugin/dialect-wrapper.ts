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
import { isUniqueViolation, scrubDriverError } from '../driver-errors.js'
import { KeyError, QueryRefusedError } from '../errors.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { StoredKey } from '../keys/stored-key.js'
import { withCallerStack } from './caller-stack.js'
import { type DecryptStats, decryptRows, type RowKeys } from './decrypt-rows.js'
import { DelegatingDriver } from './delegating-driver.js'
import type { QueryPlan } from './plan.js'
import {
  type PrepareContext,
  type Prepared,
  prefetchDataKeys,
  prepareQuery,
  type SlowPath,
} from './prepare-query.js'
import {
  generation,
  inTransaction,
  nextGeneration,
  refuseIfEnded,
  trackRawTransaction,
  transactionEnded,
} from './transaction-state.js'
import { uniqueViolationOf } from './unique-violation.js'

export type { SlowPath } from './prepare-query.js'

export type Execute = (query: CompiledQuery) => Promise<QueryResult<unknown>>

/**
 * The connection a wrapped query is running on. The key store borrows it for its own (rare)
 * queries, because a single-connection driver (PGlite) would otherwise wait for itself.
 */
export const currentConnection = new AsyncLocalStorage<Execute>()

let slowPaths = 0

/**
 * The slow path on a connection: the AsyncLocalStorage is entered only here, and disabled when
 * no slow path is running: on Node 20 an enabled AsyncLocalStorage turns on promise hooks, which
 * every promise of the application would pay for.
 */
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
export interface WrapperContext extends PrepareContext {
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
  /**
   * {@link Originals.slow}, made when first called: what every query on this connection is
   * given, so that no function is made per query for a path the steady state never takes.
   */
  readonly lazySlow: SlowPath
}

type Patched = DatabaseConnection & { [ORIGINAL]?: Originals }

/** The connection an {@link Execute} of {@link originalExecute} runs on. */
const CONNECTION = Symbol('kysely-field-encryption.connection')

/** The connection's own `executeQuery`, bound to it (for the key store, which borrows it). */
function originalExecute(connection: Patched): Execute {
  const own = connection[ORIGINAL]
  const execute: Execute =
    own === undefined
      ? (query) => connection.executeQuery(query)
      : (query) => own.executeQuery.call(connection, query)
  return Object.assign(execute, { [CONNECTION]: connection })
}

/**
 * Whether the slow path running now (a key load of a wrapped query) is on a connection inside a
 * transaction: keys created there would vanish with a rollback after they encrypted data.
 */
export function insideTransaction(): boolean {
  const execute = currentConnection.getStore() as
    | (Execute & { [CONNECTION]?: DatabaseConnection })
    | undefined
  const connection = execute?.[CONNECTION]
  return connection !== undefined && inTransaction.has(connection)
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
    await this.inner.beginTransaction(connection, settings)
    inTransaction.add(connection)
    nextGeneration(connection)
  }

  override async commitTransaction(connection: DatabaseConnection): Promise<void> {
    transactionEnded(connection)
    return this.inner.commitTransaction(connection)
  }

  override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    transactionEnded(connection)
    return this.inner.rollbackTransaction(connection)
  }

  override releaseConnection(connection: DatabaseConnection): Promise<void> {
    nextGeneration(connection)
    return this.inner.releaseConnection(connection)
  }

  /** Patches the connection object in place (drivers pass it back to their own methods); returns it. */
  readonly #patch = (connection: DatabaseConnection): DatabaseConnection => {
    const c = connection as Patched
    if (c[ORIGINAL] !== undefined) return c
    c[ORIGINAL] = {
      executeQuery: c.executeQuery,
      streamQuery: c.streamQuery,
      lazySlow: (fn) => slowPathOf(c)(fn),
    }
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
      const p = prepareQuery(ctx, compiler, query, own.lazySlow)
      if (p instanceof Promise) {
        const before = generation.get(this)
        prepared = await p
        refuseIfEnded(this, before)
      } else prepared = p
    } catch (error) {
      // Errors of this library get the application's frames, as kysely's drivers do for theirs.
      throw withCallerStack(error, new Error())
    }
    const { plan, send } = prepared
    let result: QueryResult<unknown>
    try {
      result = await own.executeQuery.call(this, send)
      // A transaction begun or ended in raw SQL (db.connection() with sql`begin`) counts as one
      // begun through Kysely: no keys are created inside it, and what it reads is not cached.
      if (send.query.kind === 'RawNode') trackRawTransaction(this, send.sql)
    } catch (error) {
      const here = new Error()
      if (send.query.kind === 'RawNode') trackRawTransaction(this, send.sql, true)
      // Ciphertexts and blind indexes the driver copied into its error are blanked first; its
      // copy of the statement (mysql2's `sql`, every value written in) becomes the one sent.
      scrubDriverError(error, send.sql)
      // A duplicate refused by a blind index's UNIQUE index names table and column, never the value.
      const mapped = isUniqueViolation(error)
        ? ((await uniqueViolationOf(error, plan, originalExecute(this))) ?? error)
        : error
      // A driver that extends its errors' stacks (kysely's pg and mysql2 drivers) already ends
      // them at the caller: they are left as they are; others (PGlite's) get the caller's frames.
      throw withCallerStack(mapped, here)
    }
    if (plan.outputs.length === 0 || result.rows.length === 0) return result
    try {
      const decrypted = decryptRows(
        ctx.ring(),
        plan,
        result.rows as Record<string, unknown>[],
        ctx.stats,
        own.lazySlow,
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
    let prefetched: readonly StoredKey[] = []
    const before = generation.get(this)
    try {
      ;({ plan, send } = await prepareQuery(ctx, compiler, query, slow))
      // A table with per-tenant keys: its rows' tenants are known only as the rows arrive, and
      // their keys would be read on this connection, behind the open cursor (pg, mysql2: a wait
      // without end). Refused before anything is sent, on every engine alike.
      const scoped = plan.outputs.find((o) => o.column.table.keyScope !== undefined)
      if (scoped !== undefined) {
        const table = scoped.column.table
        throw new QueryRefusedError(
          'QUERY_REFUSED',
          `Refused stream() of encrypted column ${table.physical}.${scoped.column.physical}: ${table.physical} has a key per tenant, whose keys a stream cannot load while its cursor holds the connection. Nothing was sent.`,
          {
            table: table.logical,
            column: scoped.column.logical,
            operator: 'stream',
            hint: 'Read such a table in pages (keyset pagination with limit) instead of stream().',
          },
        )
      }
      // Fetch every data key version the rows may need before the cursor opens: a key-store
      // read on this connection would otherwise wait behind the cursor.
      if (plan.outputs.length > 0) prefetched = await slow(() => prefetchDataKeys(ctx.ring(), plan))
      refuseIfEnded(this, before)
    } catch (error) {
      throw withCallerStack(error, new Error())
    }
    const chunks = own.streamQuery.call(this, send, chunkSize)
    for await (const chunk of scrubbed(chunks)) {
      if (plan.outputs.length === 0 || chunk.rows.length === 0) {
        yield chunk
        continue
      }
      let rows: Record<string, unknown>[]
      try {
        // No key-store read while the cursor holds the connection (it would wait behind it for
        // ever): a key whose cache entry expired is unwrapped again from the versions read before
        // the cursor opened (a provider call only); a version not among them is not found.
        rows = await decryptRows(
          streamRing(ctx.ring(), prefetched),
          plan,
          chunk.rows as Record<string, unknown>[],
          ctx.stats,
          NO_STORE,
        )
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

/**
 * The keys of an open stream: cached ones as usual; an expired one unwrapped from the versions
 * read before the cursor opened (`prefetched`), never looked up in the key store.
 */
function streamRing(ring: KeyRing, prefetched: readonly StoredKey[]): RowKeys {
  return {
    peekKey: (ref) => ring.peekKey(ref),
    key: async (ref) => {
      const stored = prefetched.find(
        (k) => k.logicalTable === ref.logicalTable && k.purpose === ref.purpose && k.version === ref.version,
      )
      if (stored === undefined)
        throw new KeyError(
          'KEY_NOT_FOUND',
          'A row of the stream names a data key version that was not live when the stream began (a version activated since, or a damaged ciphertext): the key store cannot be read while the cursor holds the connection. Read the rows again.',
          { table: ref.logicalTable },
        )
      return ring.storedKey(stored)
    },
  }
}

/**
 * The slow path of an open stream: a key-store query there would wait behind the stream's own
 * cursor, so it fails at once instead (a provider's unwrap runs).
 */
const NO_STORE = slowPathOn(async () => {
  throw new KeyError(
    'KEY_NOT_FOUND',
    'The key store cannot be read while a stream holds the connection: read the rows again.',
  )
})

/** `chunks`, with an error of the driver's stream scrubbed (see {@link scrubDriverError}) as it passes. */
async function* scrubbed<T>(chunks: AsyncIterableIterator<T>): AsyncIterableIterator<T> {
  try {
    yield* chunks
  } catch (error) {
    scrubDriverError(error)
    throw error
  }
}
