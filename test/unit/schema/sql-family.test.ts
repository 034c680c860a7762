import {
  type DialectAdapter,
  DummyDriver,
  Kysely,
  MssqlQueryCompiler,
  MysqlAdapter,
  MysqlIntrospector,
  MysqlQueryCompiler,
  PostgresAdapter,
  PostgresQueryCompiler,
  type QueryCompiler,
} from 'kysely'
import { describe, expect, it } from 'vitest'
import { sqlFamily } from '../../../src/index.js'

/** A Kysely over `adapter` and `compiler`, with no database behind it. */
function dbOf(adapter: DialectAdapter, compiler: QueryCompiler): Kysely<unknown> {
  return new Kysely<unknown>({
    dialect: {
      createAdapter: () => adapter,
      createDriver: () => new DummyDriver(),
      createQueryCompiler: () => compiler,
      createIntrospector: (db) => new MysqlIntrospector(db),
    },
  })
}

/** An adapter of another copy of kysely: same behaviour, another class object. */
function foreignAdapter(name: string, base: DialectAdapter): DialectAdapter {
  const cls = { [name]: class {} }[name] as new () => object
  return Object.assign(Object.create(cls.prototype), {
    supportsCreateIfNotExists: base.supportsCreateIfNotExists,
    supportsTransactionalDdl: base.supportsTransactionalDdl,
    supportsReturning: base.supportsReturning,
    acquireMigrationLock: base.acquireMigrationLock.bind(base),
    releaseMigrationLock: base.releaseMigrationLock.bind(base),
  }) as DialectAdapter
}

describe('sqlFamily', () => {
  it("kysely's own adapters", () => {
    expect(sqlFamily(dbOf(new MysqlAdapter(), new MysqlQueryCompiler()))).toBe('mysql')
    expect(sqlFamily(dbOf(new PostgresAdapter(), new PostgresQueryCompiler()))).toBe('postgres')
  })

  it('an adapter from another copy of kysely (no object identity): MySQL by its class name', () => {
    const adapter = foreignAdapter('MysqlAdapter', new MysqlAdapter())
    expect(adapter instanceof MysqlAdapter).toBe(false)
    // The compiler says postgres here: the class name decides first.
    expect(sqlFamily(dbOf(adapter, new PostgresQueryCompiler()))).toBe('mysql')
  })

  it('a subclass of an adapter keeps its family (a dialect package extending kysely)', () => {
    class CustomMysqlAdapter extends MysqlAdapter {}
    expect(sqlFamily(dbOf(new CustomMysqlAdapter(), new PostgresQueryCompiler()))).toBe('mysql')
  })

  it("an adapter whose class says nothing: the compiler's identifier quoting tells", () => {
    const mysqlish = foreignAdapter('SomeAdapter', new MysqlAdapter())
    expect(sqlFamily(dbOf(mysqlish, new MysqlQueryCompiler()))).toBe('mysql')
    const pgish = foreignAdapter('SomeAdapter', new PostgresAdapter())
    expect(sqlFamily(dbOf(pgish, new PostgresQueryCompiler()))).toBe('postgres')
  })

  it('neither: CONFIG_INVALID instead of a guess', () => {
    const other = foreignAdapter('SomeAdapter', new PostgresAdapter())
    expect(() => sqlFamily(dbOf(other, new MssqlQueryCompiler()))).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    )
  })
})
