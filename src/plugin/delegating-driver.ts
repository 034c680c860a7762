import type { DatabaseConnection, Driver, TransactionSettings } from 'kysely'

/**
 * A driver that forwards everything to another one; subclasses override what they change (the
 * encrypting driver patches connections and prepares keys before a transaction). Savepoint
 * methods are forwarded only when the inner driver has them, so kysely sees the same abilities.
 */
export class DelegatingDriver implements Driver {
  constructor(readonly inner: Driver) {
    for (const name of ['savepoint', 'rollbackToSavepoint', 'releaseSavepoint'] as const) {
      const fn = inner[name]
      if (fn !== undefined) (this as unknown as Record<string, unknown>)[name] = fn.bind(inner)
    }
  }

  init(): Promise<void> {
    return this.inner.init()
  }

  acquireConnection(): Promise<DatabaseConnection> {
    return this.inner.acquireConnection()
  }

  beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    return this.inner.beginTransaction(connection, settings)
  }

  commitTransaction(connection: DatabaseConnection): Promise<void> {
    return this.inner.commitTransaction(connection)
  }

  rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    return this.inner.rollbackTransaction(connection)
  }

  releaseConnection(connection: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(connection)
  }

  destroy(): Promise<void> {
    return this.inner.destroy()
  }
}
