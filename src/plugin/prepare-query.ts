import { type CompiledQuery, InsertQueryNode, type QueryCompiler, type RootOperationNode } from 'kysely'
import { KeyError, QueryRefusedError } from '../errors.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { StoredKey } from '../keys/stored-key.js'
import type { EncryptedSchema } from '../schema/schema.js'
import { analyzeQuery } from './analyzer.js'
import { checkWrittenContext } from './context-types.js'
import { type DeferredValue, isDeferred } from './deferred-value.js'
import { refuseIgnoredNulls } from './ignored-nulls.js'
import type { MigratedColumns } from './migrated-columns.js'
import { EMPTY_PLAN, type PendingPlans, type QueryPlan } from './plan.js'
import { cachedKeys, loadKeys, type QueryKeys, resolveDeferred } from './resolve-values.js'
import type { SchemaGate } from './schema-gate.js'
import type { TableColumns } from './table-columns.js'
import { refuseUnlisted } from './unlisted-columns.js'
import type { UnwrappedReads } from './unwrapped-reads.js'

/**
 * Runs `fn` (a key load, a schema check: it may query the database) with the query's connection
 * exposed to the key store (see the dialect wrapper's slow path).
 */
export type SlowPath = <T>(fn: () => Promise<T>) => Promise<T>

/** What {@link prepareQuery} needs of the wrapper's context. */
export interface PrepareContext {
  readonly schema: EncryptedSchema
  readonly plans: PendingPlans
  /** Shared with the plugin: the wrapper forgets each query it runs (see {@link UnwrappedReads}). */
  readonly reads: UnwrappedReads
  readonly ring: () => KeyRing
  /** Schema verification before the first query that writes or needs keys (open when off). */
  readonly schemaGate: SchemaGate
  /** Columns stored under another name: a tree the plugin did not produce is checked by it too. */
  readonly migrated?: MigratedColumns
}

/** What the wrapper sends, and what it does with the results. */
export interface Prepared {
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
export function prepareQuery(
  ctx: PrepareContext,
  compiler: () => QueryCompiler,
  query: CompiledQuery,
  slow: SlowPath,
): Prepared | Promise<Prepared> {
  ctx.reads.seen(query.queryId)
  const node = query.query
  const deferred = deferredOf(query.parameters)
  let plan = node === undefined ? undefined : ctx.plans.take(node)
  // Reuse the plugin's plan only for the very parameters it produced: a compiled query whose
  // parameters were swapped (plaintext in a placeholder's slot) takes the verify pass instead.
  if (plan !== undefined && !sameDeferred(plan, deferred)) plan = undefined
  if (plan === undefined) {
    if (node !== undefined) ctx.migrated?.check(node)
    plan = node === undefined ? EMPTY_PLAN : verifiedPlan(ctx, node, deferred, ctx.schemaGate.columns)
  }
  const checked = plan
  if (ctx.schemaGate.needs(node, checked)) {
    // Once per wrapped dialect: nothing is sent (no plaintext reaches a misspelt table) until
    // the database is known to match the schema.
    return ctx.schemaGate
      .pass(slow)
      .then(() => withPlan(ctx, compiler, query, withCatalog(ctx, node, checked, deferred), deferred, slow))
  }
  return withPlan(ctx, compiler, query, withCatalog(ctx, node, checked, deferred), deferred, slow)
}

/**
 * The plan derived from the final tree (the verify pass).
 *
 * @throws QueryRefusedError `PLAINTEXT_WRITE` when the parameters are not the tree's deferred values
 */
function verifiedPlan(
  ctx: PrepareContext,
  node: RootOperationNode,
  deferred: readonly DeferredValue[],
  columns: TableColumns,
): QueryPlan {
  const plan = analyzeQuery(ctx.schema, 'verify', node, columns).plan
  if (!sameDeferred(plan, deferred)) {
    throw new QueryRefusedError(
      'PLAINTEXT_WRITE',
      'The parameters of this compiled query do not match its encrypted placeholders; nothing was sent.',
      {
        hint: 'Do not edit the parameters of a compiled query that touches encrypted columns.',
      },
    )
  }
  return plan
}

/**
 * The plan of a query analyzed before the catalog was read, in which an output may be shadowed
 * by a `*` (see {@link QueryPlan.needsCatalog}), derived again with the catalog the schema check
 * (just passed) read; any other plan as it is.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` for an output the catalog does not settle
 */
function withCatalog(
  ctx: PrepareContext,
  node: RootOperationNode | undefined,
  plan: QueryPlan,
  deferred: readonly DeferredValue[],
): QueryPlan {
  if (plan.needsCatalog !== true || node === undefined) return plan
  const columns = ctx.schemaGate.columns
  // Still pending only if the check did not run: then the columns are not known.
  return verifiedPlan(ctx, node, deferred, columns === 'pending' ? undefined : columns)
}

/** The rest of {@link prepareQuery}, once the plan is known and the schema verified. */
function withPlan(
  ctx: PrepareContext,
  compiler: () => QueryCompiler,
  query: CompiledQuery,
  checked: QueryPlan,
  deferred: readonly DeferredValue[],
  slow: SlowPath,
): Prepared | Promise<Prepared> {
  // A misspelt column of an encrypted table: its value would go out in plaintext.
  refuseUnlisted(ctx.schemaGate.catalog, checked)
  refuseIgnoredNulls(ctx.schema, ctx.schemaGate.catalog, query.query)
  if (checked.indexComparisons.size > 0) {
    return checkIndexComparisons(ctx.ring(), comparedKeyNames(ctx.schema, checked, deferred), slow).then(() =>
      resolveQuery(ctx, compiler, query, checked, deferred, slow),
    )
  }
  return resolveQuery(ctx, compiler, query, checked, deferred, slow)
}

/**
 * The key names whose index versions {@link checkIndexComparisons} looks at: a table's own, or,
 * for a table with per-tenant keys (`keyScope`), the tenants' whose rows the statement writes
 * (an upsert's conflict target compares their blind indexes, made under those tenants' keys).
 */
function comparedKeyNames(
  schema: EncryptedSchema,
  plan: QueryPlan,
  deferred: readonly DeferredValue[],
): Map<string, string> {
  const names = new Map<string, string>()
  for (const table of plan.indexComparisons) {
    if ([...schema.tables.values()].find((t) => t.logical === table)?.keyScope === undefined) {
      names.set(table, table)
      continue
    }
    // A table with per-tenant keys has no table-wide keys: the tenants whose index values the
    // statement writes (one that writes none cannot conflict on the index).
    for (const d of deferred) {
      if (d.column.table.logical === table && d.keyName !== undefined) names.set(d.keyName, table)
    }
  }
  return names
}

/**
 * Refuses a self-join on blind-index columns, or an upsert whose conflict target is one, while
 * several index versions are live. `names`: key name → its table.
 */
async function checkIndexComparisons(
  ring: KeyRing,
  names: ReadonlyMap<string, string>,
  slow: SlowPath,
): Promise<void> {
  for (const [name, table] of names) {
    let live: readonly unknown[]
    try {
      live = ring.peekSearchKeys(name, 'index') ?? (await slow(() => ring.searchKeys(name, 'index')))
    } catch (error) {
      // A tenant's first row: it has no index version yet, so none to compare across.
      if (name !== table && error instanceof KeyError && error.code === 'KEY_NOT_FOUND') continue
      throw error
    }
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
  ctx: PrepareContext,
  compiler: () => QueryCompiler,
  query: CompiledQuery,
  plan: QueryPlan,
  deferred: readonly DeferredValue[],
  slow: SlowPath,
): Prepared | Promise<Prepared> {
  if (deferred.length === 0) return { plan, send: query }
  // MySQL has no writable CTE: an INSERT's ciphertexts are all bound to the rows it inserts.
  const insert = query.query !== undefined && InsertQueryNode.is(query.query)
  checkWrittenContext(ctx.schemaGate.catalog, deferred, insert)
  const ring = ctx.ring()
  const cached = cachedKeys(ring, deferred)
  if (cached !== undefined) return withKeys(compiler, query, plan, cached)
  return slow(() => loadKeys(ring, deferred)).then((keys) => withKeys(compiler, query, plan, keys))
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

/**
 * Loads every data key version of the tables a plan decrypts (a stream's, before its cursor
 * opens). @returns those versions as the key store lists them: a stream unwraps one again from
 * them when its cache entry expires, with no key-store read behind its cursor.
 */
export async function prefetchDataKeys(ring: KeyRing, plan: QueryPlan): Promise<StoredKey[]> {
  // A table with per-tenant keys has no table-wide keys (and a stream of its encrypted columns is
  // refused before this: its tenants' keys could only load behind the cursor).
  const tables = new Set(
    plan.outputs.filter((o) => o.column.table.keyScope === undefined).map((o) => o.column.table.logical),
  )
  const stored: StoredKey[] = []
  await Promise.all(
    [...tables].map(async (table) => {
      const versions = await ring.versions(table, 'data')
      stored.push(...versions)
      await Promise.all(
        versions.map((v) => ring.key({ logicalTable: table, purpose: 'data', version: v.version })),
      )
    }),
  )
  return stored
}

/** The deferred values among a query's parameters; a shared empty list when there are none. */
function deferredOf(parameters: readonly unknown[]): readonly DeferredValue[] {
  let out: DeferredValue[] | undefined
  for (let i = 0; i < parameters.length; i++) {
    const p = parameters[i]
    if (!isDeferred(p)) continue
    out ??= []
    out.push(p)
  }
  return out ?? NONE
}

const NONE: readonly DeferredValue[] = Object.freeze([])

function sameDeferred(plan: QueryPlan, deferred: readonly DeferredValue[]): boolean {
  const values = plan.deferredValues
  if (values.size !== deferred.length) return false
  // A loop, not `every` with a closure: this runs once per query.
  for (let i = 0; i < deferred.length; i++) if (!values.has(deferred[i] as DeferredValue)) return false
  return true
}
