import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { addEncryptedColumns, encrypted, encryptedSchema } from '../../src/index.js'
import { findSchemaProblems } from '../../src/schema/verify-schema.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { usePlainDb } from '../support/plain-db.js'

/**
 * Schema verification (the startup check) refuses a context column whose values do not read back
 * as they were written: ciphertexts bound to the written value would not decrypt.
 */
describe.each(backends())('context column types [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const { db: plain, track } = usePlainDb(backend)

    /** The context problems of a table with columns of these types, `context` its context. */
    async function problemsFor(types: Record<string, string>, context = Object.keys(types)) {
      const table = track(uniqueName('ctx_types'))
      const schema = encryptedSchema(
        { [table]: { email: encrypted.text() } },
        { tables: { [table]: { context } } },
      )
      let create = plain()
        .schema.createTable(table)
        .addColumn('pk', 'integer', (c) => c.primaryKey())
      // biome-ignore lint/suspicious/noExplicitAny: column types chosen per case.
      for (const [name, type] of Object.entries(types)) create = create.addColumn(name, sql.raw(type) as any)
      await create.$call(addEncryptedColumns(schema, table, backend.family)).execute()
      const { problems } = await findSchemaProblems(plain(), schema, { unannotatedTables: false })
      return problems.map((p) => `${p.kind} ${p.columns.join(',')}`)
    }

    it('integer, uuid and varchar context columns pass', async () => {
      expect(await problemsFor({ tenant_id: 'varchar(64)', id: 'bigint', ref: 'uuid' })).toEqual([])
      expect(await problemsFor({ a: 'smallint', b: 'integer', c: 'text', d: 'char(36)' })).toEqual(
        backend.family === 'postgres' ? ['context-column-type d'] : [],
      )
    })

    it('a padded, fractional, time or JSON context column is refused (context-column-type)', async () => {
      // (MariaDB's json is longtext: its text reads back as written.)
      const bad: Record<string, string> =
        backend.family === 'postgres'
          ? { tenant_id: 'char(10)', amount: 'numeric(10,2)', at: 'timestamptz' }
          : { amount: 'decimal(10,2)', at: 'datetime', ratio: 'double' }
      const found = await problemsFor(bad)
      expect(found.sort()).toEqual(
        Object.keys(bad)
          .map((c) => `context-column-type ${c}`)
          .sort(),
      )
    })

    // USER-DEFINED in information_schema: read by its own name (helper-88 found it refused).
    it.runIf(backend.name === 'postgres')('a citext context column passes', async () => {
      await sql`create extension if not exists citext`.execute(plain())
      expect(await problemsFor({ tenant_id: 'citext' })).toEqual([])
    })

    // An allowlist since helper-87 found types the old list of refused ones missed: each stores
    // some value in another form ("char" 'ab' as 'a', inet '10.0.0.1/32' as '10.0.0.1', a range
    // '[1,3]' as '[1,4)', MariaDB's inet6 '0:0:0:0:0:0:0:1' as '::1').
    it('any other type is refused too: only integer, uuid and text types read back as written', async () => {
      const bad: Record<string, string> =
        backend.family === 'postgres'
          ? { tenant_id: '"char"', n: 'name', ip: 'inet', r: 'int4range', m: 'macaddr' }
          : { ip: 'inet6', f: 'float', b: 'bit(8)' }
      const found = await problemsFor({ ...bad, ok: 'text' })
      expect(found.sort()).toEqual(
        Object.keys(bad)
          .map((c) => `context-column-type ${c}`)
          .sort(),
      )
    })

    // MariaDB stores an enum or set value in its member's case ('ACME' as 'acme'), strict mode or
    // not: the row's tenant became acme while its ciphertexts were bound to, and keyed by, ACME.
    it.runIf(backend.family === 'mysql')(
      'a MySQL enum, set or year context column is refused (context-column-type)',
      async () => {
        const found = await problemsFor({
          tenant_id: "enum('acme','globex')",
          tags: "set('a','b')",
          y: 'year',
        })
        expect(found.sort()).toEqual([
          'context-column-type tags',
          'context-column-type tenant_id',
          'context-column-type y',
        ])
      },
    )

    // The exact guard compares md5(concat(id)), '00007' in a ZEROFILL column, with md5('7'): an
    // update where id = 7 updated no row, and a tenant's search found none.
    it.runIf(backend.family === 'mysql')(
      'a MySQL zerofill integer context column is refused (context-column-type)',
      async () => {
        expect(await problemsFor({ id: 'int(5) zerofill', tenant_id: 'bigint unsigned' })).toEqual([
          'context-column-type id',
        ])
      },
    )

    it('a context column beside a column named by its camelCase spelling is refused (context-column-spelling)', async () => {
      // A statement naming tenantId was read as naming tenant_id: the row was bound to the value
      // written into tenantId, and its tenant_id held another (helper-82).
      const problems = await problemsFor({ tenant_id: 'varchar(64)', tenantId: 'varchar(64)' }, ['tenant_id'])
      expect(problems).toEqual(['context-column-spelling tenant_id,tenantId'])
    })

    it('a context column that does not exist is refused (context-column-missing)', async () => {
      expect(await problemsFor({}, ['tenant_id'])).toEqual(['context-column-missing tenant_id'])
    })
  })
})
