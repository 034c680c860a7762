import {
  DeleteQueryNode,
  InsertQueryNode,
  MergeQueryNode,
  type OperationNode,
  TableNode,
  UpdateQueryNode,
} from 'kysely'
import type { Catalog } from '../schema/catalog.js'
import type { QueryPlan } from './plan.js'
import type { TableColumns } from './table-columns.js'

/** Runs a function on the query's connection (the wrapper's slow path). */
type OnConnection = <T>(fn: () => Promise<T>) => Promise<T>

/**
 * Schema verification of one wrapped dialect, run once before the first query that writes or
 * needs keys. Concurrent first queries share one check; a failed check is not remembered, so
 * the next such query checks again (and nothing is sent until one passes). Open (no check, no
 * cost) once a check has passed, or from the start when verification is turned off.
 */
export class SchemaGate {
  #open: boolean
  #running: Promise<void> | undefined
  #catalog: Catalog | undefined

  /**
   * @param check - verifies the schema (and the migration phases' database state), returning the
   *   catalog it read (`undefined` when only the phases were checked); `undefined`: turned off.
   * @param keyTable - the key table, whose writes (`encryption.init(db)`) never wait for the check.
   * @param gated - queries that wait for the check even when they only read plain columns (those
   *   naming a table with a column under migration: an `added` process reading a row a `cut-over`
   *   process wrote would see NULL).
   */
  constructor(
    private readonly check: (() => Promise<Catalog | undefined>) | undefined,
    private readonly keyTable: string,
    private readonly gated?: (node: OperationNode) => boolean,
  ) {
    this.#open = check === undefined
  }

  /** True once verified (or when turned off): queries pass without a check. */
  get open(): boolean {
    return this.#open
  }

  /** The catalog the passed check read; `undefined` before, or when verification is off. */
  get catalog(): Catalog | undefined {
    return this.#catalog
  }

  /** What an analysis knows of the tables' columns: the catalog, or that it is still to be read. */
  get columns(): TableColumns {
    return this.#catalog ?? (this.check === undefined ? undefined : 'pending')
  }

  /**
   * Whether this query must wait for the check: it needs keys or the catalog (a `*` to resolve, a
   * misspelt column to check), or writes (but to the key table), or is `gated`.
   */
  needs(node: OperationNode | undefined, plan: QueryPlan): boolean {
    if (this.#open) return false
    if (
      plan.deferredValues.size > 0 ||
      plan.outputs.length > 0 ||
      plan.indexComparisons.size > 0 ||
      plan.needsCatalog === true ||
      plan.unlisted !== undefined
    )
      return true
    if (node === undefined) return false
    if (this.gated?.(node)) return true
    if (InsertQueryNode.is(node)) return !this.#isKeyTable(node.into)
    if (UpdateQueryNode.is(node)) return !this.#isKeyTable(node.table)
    if (DeleteQueryNode.is(node))
      return !this.#isKeyTable(node.from.froms.length === 1 ? node.from.froms[0] : undefined)
    return MergeQueryNode.is(node)
  }

  /**
   * Runs the check (or joins the one running) on the query's connection.
   * @throws SchemaMismatchError `SCHEMA_MISMATCH`; ConfigError `MIGRATION_PHASE_CONFLICT`; or the
   *   error that stopped the check.
   */
  pass(onConnection: OnConnection): Promise<void> {
    const check = this.check
    if (this.#open || check === undefined) return Promise.resolve()
    this.#running ??= onConnection(check).then(
      (catalog) => {
        this.#catalog = catalog
        this.#open = true
        this.#running = undefined
      },
      (error: unknown) => {
        this.#running = undefined
        throw error
      },
    )
    return this.#running
  }

  #isKeyTable(node: OperationNode | undefined): boolean {
    const bare = this.keyTable.slice(this.keyTable.lastIndexOf('.') + 1)
    return node !== undefined && TableNode.is(node) && node.table.identifier.name === bare
  }
}
