import type { CompiledQuery, DatabaseConnection, Dialect, Driver, QueryResult } from 'kysely'
import { DelegatingDriver } from '../../src/plugin/delegating-driver.js'

/** One query exactly as it was handed to the database driver. */
export interface RecordedQuery {
  readonly sql: string
  readonly parameters: readonly unknown[]
}

/** A secret found in outgoing traffic: which query, where in it, and which secret. */
export interface LeakHit {
  /** Index of the query in {@link ScanningDialect.queries}. */
  readonly query: number
  /** `sql`, or `parameter N`. */
  readonly where: string
  readonly secret: string
  /** The SQL text of the query, for the failure message (the test's own plaintext, never real data). */
  readonly sql: string
}

/** A dialect that records everything its connections send to the driver. */
export interface ScanningDialect extends Dialect {
  /** Every query sent so far, in order. */
  readonly queries: readonly RecordedQuery[]
  /** Number of queries sent so far (including BEGIN/COMMIT the driver sends itself). */
  count(): number
  /** Every occurrence of a current secret in the SQL, a string parameter or the bytes of a binary parameter. */
  hits(): LeakHit[]
  /** Forgets the recorded queries. */
  reset(): void
}

const SCANNED = Symbol('leak-scanner.scanned')

/**
 * Wraps a dialect so every query its driver connections execute or stream is recorded, and can
 * be scanned for secrets. Wrap it INSIDE the encryption wrapper
 * (`encryption.wrap(scanningDialect(dialect, secrets))`): it then sees exactly what reaches the
 * driver, after deferred values were resolved into ciphertexts and blind indexes.
 *
 * Connections are patched in place (drivers pass their connection objects back to their own
 * methods, e.g. mysql2's release), once per connection.
 *
 * @param inner - the real dialect
 * @param secrets - the plaintexts that must never reach the driver; read at `hits()` time
 * @returns the wrapping dialect, with `queries`, `count()`, `hits()` and `reset()`
 */
export function scanningDialect(inner: Dialect, secrets: () => readonly string[]): ScanningDialect {
  const queries: RecordedQuery[] = []
  const record = (query: CompiledQuery) => {
    queries.push({ sql: query.sql, parameters: [...query.parameters] })
  }
  return {
    queries,
    count: () => queries.length,
    reset: () => {
      queries.length = 0
    },
    hits: () => scan(queries, secrets()),
    createAdapter: () => inner.createAdapter(),
    createDriver: () => new ScanningDriver(inner.createDriver(), record),
    createQueryCompiler: () => inner.createQueryCompiler(),
    createIntrospector: (db) => inner.createIntrospector(db),
  }
}

class ScanningDriver extends DelegatingDriver {
  constructor(
    inner: Driver,
    private readonly record: (query: CompiledQuery) => void,
  ) {
    super(inner)
  }

  override async acquireConnection(): Promise<DatabaseConnection> {
    const connection = await this.inner.acquireConnection()
    const c = connection as DatabaseConnection & { [SCANNED]?: true }
    if (c[SCANNED] === undefined) {
      c[SCANNED] = true
      const execute = connection.executeQuery.bind(connection)
      const stream = connection.streamQuery.bind(connection)
      const record = this.record
      c.executeQuery = (<R>(query: CompiledQuery): Promise<QueryResult<R>> => {
        record(query)
        return execute(query)
      }) as DatabaseConnection['executeQuery']
      c.streamQuery = ((query: CompiledQuery, chunkSize?: number) => {
        record(query)
        return stream(query, chunkSize)
      }) as DatabaseConnection['streamQuery']
    }
    return connection
  }
}

/** Every occurrence of a secret in the recorded traffic. */
function scan(queries: readonly RecordedQuery[], secrets: readonly string[]): LeakHit[] {
  const hits: LeakHit[] = []
  const needles = secrets.filter((s) => s.length > 0).map((s) => ({ s, bytes: Buffer.from(s, 'utf8') }))
  queries.forEach((q, i) => {
    for (const { s, bytes } of needles) {
      if (q.sql.includes(s)) hits.push({ query: i, where: 'sql', secret: s, sql: q.sql })
      q.parameters.forEach((p, n) => {
        if (containsSecret(p, s, bytes))
          hits.push({ query: i, where: `parameter ${n}`, secret: s, sql: q.sql })
      })
    }
  })
  return hits
}

function containsSecret(value: unknown, secret: string, bytes: Buffer, depth = 0): boolean {
  if (value === null || value === undefined || depth > 8) return false
  if (typeof value === 'string') return value.includes(secret)
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean')
    return String(value).includes(secret)
  if (value instanceof Uint8Array)
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).includes(bytes)
  if (value instanceof Date) return false
  if (Array.isArray(value)) return value.some((v) => containsSecret(v, secret, bytes, depth + 1))
  if (typeof value === 'object') {
    // A plain object parameter (JSON) is serialised by the driver: scan what it would send.
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch {
      text = undefined
    }
    if (text?.includes(secret)) return true
    return Object.values(value).some((v) => containsSecret(v, secret, bytes, depth + 1))
  }
  return false
}
