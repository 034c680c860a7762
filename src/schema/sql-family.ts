import type { DialectAdapter, Kysely, QueryCompiler } from 'kysely'
import { IdentifierNode, RawNode, ValueNode } from 'kysely'
import { ConfigError } from '../errors.js'

/** SQL family of a database: PostgreSQL (and PGlite) or MySQL/MariaDB. */
export type SqlFamily = 'postgres' | 'mysql'

const BY_CLASS: Readonly<Record<string, SqlFamily>> = {
  PostgresAdapter: 'postgres',
  MysqlAdapter: 'mysql',
}

/**
 * The SQL family of a dialect, without relying on object identity (the application's kysely may
 * be another copy than the library's, ESM beside CJS, or a bundled one): first the class names
 * along the adapter's prototype chain (a dialect may subclass kysely's adapters, as PGlite's
 * does), then the compiler's behaviour (how it quotes an identifier and writes a parameter).
 *
 * @param adapter - the dialect's adapter.
 * @param compiler - the dialect's query compiler, asked when the adapter's class says nothing.
 * @returns the family, or `undefined` when neither tells.
 */
export function detectSqlFamily(adapter: DialectAdapter, compiler?: QueryCompiler): SqlFamily | undefined {
  for (let proto = Object.getPrototypeOf(adapter); proto !== null; proto = Object.getPrototypeOf(proto)) {
    const name = (proto as { constructor?: { name?: unknown } }).constructor?.name
    if (typeof name === 'string' && name in BY_CLASS) return BY_CLASS[name]
  }
  if (compiler !== undefined) {
    try {
      // An identifier and a parameter: MySQL writes `t` ?, PostgreSQL "t" $1 (SQLite and
      // MSSQL, which this library does not support, write "t" ? and "t" @1).
      const node = RawNode.create(['', ' ', ''], [IdentifierNode.create('t'), ValueNode.create(1)])
      const text = compiler.compileQuery(node, { queryId: 'kfe-family' } as never).sql
      if (text === '`t` ?') return 'mysql'
      if (text === '"t" $1') return 'postgres'
    } catch {
      // A compiler that cannot compile this probe tells nothing.
    }
  }
  return undefined
}

/**
 * The SQL family of a Kysely instance: from its adapter's class, else from how its compiler
 * quotes identifiers. Works when the application's kysely is another copy than this library's.
 *
 * @throws ConfigError `CONFIG_INVALID` when the family cannot be told (neither PostgreSQL nor MySQL).
 */
// biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type.
export function sqlFamily(db: Kysely<any>): SqlFamily {
  const executor = db.getExecutor()
  const compiler: QueryCompiler = { compileQuery: (node, queryId) => executor.compileQuery(node, queryId) }
  const family = detectSqlFamily(executor.adapter, compiler)
  if (family !== undefined) return family
  throw new ConfigError(
    'CONFIG_INVALID',
    `Cannot tell the SQL family of this database from its adapter (${executor.adapter.constructor.name}); this library supports PostgreSQL, PGlite and MySQL/MariaDB.`,
  )
}
