import type { DatabaseConnection, Driver, QueryResult, TransactionSettings } from 'kysely'
import { ConfigError } from '../errors.js'
import { currentConnection, type EncryptingDriver, type Execute } from './dialect-wrapper.js'

/**
 * The key store's driver. It owns nothing: it uses the connections of the application's own
 * (wrapped) driver, and inside a wrapped query it borrows that query's connection, because a
 * single-connection driver such as PGlite's would otherwise wait for itself. Its `destroy` is a
 * no-op: the application's Kysely owns the pool.
 */
export class BorrowingDriver implements Driver {
  readonly #borrowed = new WeakSet<DatabaseConnection>()
  /** The last query queued on each borrowed connection: key loads may run in parallel. */
  readonly #tails = new WeakMap<Execute, Promise<unknown>>()

  constructor(private readonly driver: () => EncryptingDriver | undefined) {}

  #owner(): EncryptingDriver {
    const d = this.driver()
    if (d === undefined) {
      throw new ConfigError(
        'CONFIG_INVALID',
        'The key store has no connection yet: create your Kysely with encryption.wrap(dialect) first.',
      )
    }
    return d
  }

  async init(): Promise<void> {
    await this.#owner().init()
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const execute = currentConnection.getStore()
    if (execute !== undefined) {
      const connection: DatabaseConnection = {
        executeQuery: this.#serialized(execute) as DatabaseConnection['executeQuery'],
        streamQuery: () => {
          throw new ConfigError('CONFIG_INVALID', 'The key store does not stream.')
        },
      }
      this.#borrowed.add(connection)
      return connection
    }
    const owner = this.#owner()
    await owner.init()
    return owner.inner.acquireConnection()
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    this.#refuseBorrowed(connection)
    return this.#owner().inner.beginTransaction(connection, settings)
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    return this.#owner().inner.commitTransaction(connection)
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    return this.#owner().inner.rollbackTransaction(connection)
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    if (this.#borrowed.has(connection)) return
    return this.#owner().inner.releaseConnection(connection)
  }

  async destroy(): Promise<void> {}

  /**
   * The borrowed connection's `executeQuery`, one query at a time: concurrent key loads (several
   * tables, both purposes) share it, and a connection must never run two queries at once (pg
   * deprecates it and will refuse it; a MySQL connection would interleave its protocol).
   */
  #serialized(execute: Execute): Execute {
    return (query) => {
      const tail = this.#tails.get(execute) ?? Promise.resolve()
      const run = tail.then(
        () => execute(query),
        () => execute(query),
      )
      this.#tails.set(
        execute,
        run.catch(() => undefined),
      )
      return run
    }
  }

  /** A transaction on a borrowed connection would nest inside the application's own. */
  #refuseBorrowed(connection: DatabaseConnection): void {
    if (this.#borrowed.has(connection)) {
      throw new ConfigError(
        'CONFIG_INVALID',
        'Key-store transactions (rotation) cannot run inside a query; run them on their own.',
      )
    }
  }
}

export type { QueryResult }
