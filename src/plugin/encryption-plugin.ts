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
import type { PendingPlans } from './plan.js'

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

  /** @param plans - shared with the dialect wrapper: plans of the trees this plugin produced. */
  constructor(schema: EncryptedSchema, plans: PendingPlans) {
    this.#schema = schema
    this.#plans = plans
  }

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    const { node, plan } = analyzeQuery(this.#schema, 'rewrite', args.node)
    this.#plans.set(node, plan)
    return node
  }

  /** Results are decrypted in the dialect wrapper, before any plugin's result transform. */
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}
