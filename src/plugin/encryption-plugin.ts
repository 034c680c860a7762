import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from 'kysely'
import type { EncryptedSchema } from '../schema/schema.js'
import { analyzeQuery } from './analyzer.js'
import { withCallerStack } from './caller-stack.js'
import type { MigratedColumns } from './migrated-columns.js'
import { mentionsSchemaTable } from './nodes.js'
import type { PendingPlans } from './plan.js'
import { ShapeCache } from './shape-cache.js'
import type { TableColumns } from './table-columns.js'
import type { UnwrappedReads } from './unwrapped-reads.js'

/**
 * The synchronous half: rewrites each query tree so no plaintext of an annotated column is left
 * in it (values become deferred values, equality searches go to blind-index columns) and refuses
 * what it cannot run safely. No keys, no crypto: those happen in the dialect wrapper, which
 * derives its plan from the final tree, so the position of this plugin among others does not
 * matter.
 *
 * Rewriting is idempotent: a subquery built from `db` is transformed twice, and the second pass
 * finds nothing left to rewrite.
 */
export class EncryptionPlugin implements KyselyPlugin {
  readonly #schema: EncryptedSchema
  readonly #plans: PendingPlans
  readonly #reads: UnwrappedReads
  readonly #columns: TableColumns
  readonly #migrated: MigratedColumns
  /** Analyses of repeated query shapes (shape-cache.ts). */
  readonly #shapes = new ShapeCache()
  readonly #analyze = (root: RootOperationNode) => analyzeQuery(this.#schema, 'rewrite', root, this.#columns)

  /**
   * @param schema - the plugin's view of the schema (schema/plugin-view.ts)
   * @param plans - shared with the dialect wrapper: plans of the trees this plugin produced.
   * @param reads - shared with the dialect wrapper: reads of encrypted columns no wrapper ran yet.
   * @param columns - `'pending'` when schema verification is on (each wrapped dialect reads its
   *   own catalog, which this plugin, shared by all, does not pick from), else `undefined`.
   * @param migrated - the pass for columns stored under another name, over the same view
   */
  constructor(
    schema: EncryptedSchema,
    plans: PendingPlans,
    reads: UnwrappedReads,
    columns: TableColumns,
    migrated: MigratedColumns,
  ) {
    this.#schema = schema
    this.#plans = plans
    this.#reads = reads
    this.#columns = columns
    this.#migrated = migrated
  }

  /** @throws QueryRefusedError for what cannot run safely; its stack ends at the caller's query. */
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    let analyzed: ReturnType<typeof analyzeQuery>
    try {
      const root = this.#migrated.rewrite(args.node)
      // A query of no annotated table, or one the migration pass rewrote (a column under
      // migration), is analyzed as before: the first at once, the second in full.
      analyzed =
        root === args.node && mentionsSchemaTable(root, this.#schema)
          ? this.#shapes.analyze(root, this.#analyze)
          : this.#analyze(root)
    } catch (error) {
      // Made here, a few frames below the application's `execute()` or `compile()`.
      throw withCallerStack(error, new Error())
    }
    const { node, plan } = analyzed
    this.#plans.set(node, plan)
    const read = plan.outputs[0]
    if (read !== undefined) this.#reads.note(args.queryId, read.column)
    return node
  }

  /**
   * Results are decrypted in the dialect wrapper, before any plugin's result transform. Here only
   * a read that no wrapper ran is caught (the dialect was not wrapped): its rows hold ciphertexts.
   *
   * @throws QueryRefusedError `DIALECT_NOT_WRAPPED`
   */
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    try {
      this.#reads.check(args.queryId, args.result.rows)
    } catch (error) {
      throw withCallerStack(error, new Error())
    }
    return args.result
  }
}
