import type { CompiledQuery, DatabaseConnection, Dialect, Driver, QueryResult } from 'kysely'

/**
 * A dialect whose connections run `before(sql, run)` ahead of each query and report each
 * failing query to `onError` (a real driver, observed). `run` in `before` runs a statement on the same
 * session without the hook.
 */
export function hooked(
  dialect: Dialect,
  before: (query: CompiledQuery, run: (q: CompiledQuery) => Promise<QueryResult<unknown>>) => Promise<void>,
  onError?: (error: unknown, query: CompiledQuery) => void,
): Dialect {
  return {
    createAdapter: () => dialect.createAdapter(),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createIntrospector: (db) => dialect.createIntrospector(db),
    createDriver: () => {
      const inner = dialect.createDriver()
      const seen = new WeakSet<DatabaseConnection>()
      return new Proxy(inner, {
        get(target, prop) {
          if (prop === 'acquireConnection') {
            return async () => {
              const connection = await target.acquireConnection()
              if (!seen.has(connection)) {
                seen.add(connection)
                const execute = connection.executeQuery.bind(connection)
                connection.executeQuery = (async (query: CompiledQuery) => {
                  await before(query, execute)
                  try {
                    return await execute(query)
                  } catch (error) {
                    onError?.(error, query)
                    throw error
                  }
                }) as DatabaseConnection['executeQuery']
              }
              return connection
            }
          }
          const value = Reflect.get(target, prop, target) as unknown
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
        },
      }) as Driver
    },
  }
}
