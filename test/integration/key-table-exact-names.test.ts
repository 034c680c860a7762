import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { KeyStore } from '../../src/keys/key-store.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { usePlainDb } from '../support/plain-db.js'

/**
 * Key names compare byte for byte in the key table, on every backend: tenants 'Acme' and 'acme'
 * (`orders#tenant_id=Acme`, `…=acme`) are two key rows. On MySQL/MariaDB the default collation
 * is case-insensitive: a key table made before this (or by hand) is altered by `init`.
 */
describe.each(backends())('key table: exact key names [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const { db: plain, track } = usePlainDb(backend)

    const row = (name: string) => ({
      logical_table: name,
      purpose: 'data',
      version: 1,
      state: 'active',
      wrappings: '[]',
      created_at: new Date(),
    })

    it.each([
      ['made by this version', false],
      ['made before (default collation), altered by ensureSchema', true],
    ])('a key table %s holds orders#tenant_id=Acme and …=acme as two rows', async (_, old) => {
      const name = track(uniqueName('kfe_keys'))
      if (old) {
        // The DDL of earlier versions: varchar(255) in the database's default collation.
        await plain()
          .schema.createTable(name)
          .addColumn('logical_table', 'varchar(255)', (c) => c.notNull())
          .addColumn('purpose', 'varchar(16)', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('state', 'varchar(16)', (c) => c.notNull())
          .addColumn('wrappings', backend.family === 'mysql' ? 'text' : 'text', (c) => c.notNull())
          .addColumn('created_at', backend.family === 'mysql' ? sql`datetime(3)` : sql`timestamptz`, (c) =>
            c.notNull(),
          )
          .addPrimaryKeyConstraint(`${name}_pkey`, ['logical_table', 'purpose', 'version'])
          .execute()
      }
      await new KeyStore(plain(), { tableName: name }).ensureSchema()
      await plain()
        .insertInto(name)
        .values([row('orders#tenant_id=Acme'), row('orders#tenant_id=acme')])
        .execute()
      const found = await plain()
        .selectFrom(name)
        .select('logical_table')
        .where('logical_table', '=', 'orders#tenant_id=acme')
        .execute()
      expect(found).toEqual([{ logical_table: 'orders#tenant_id=acme' }])
    })
  })
})
