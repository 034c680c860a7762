import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { dialectSql, expectRedacted, ids } from './plugin-at-rest.js'

describe.each(backends())('plugin delete [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend, {
      seed: async (t) => {
        await t.db
          .insertInto(u)
          .values([
            { id: 1, name: 'del-1', email: 'del1@x.io', ssn: '300-00-0001' },
            { id: 2, name: 'del-2', email: 'del2@x.io', ssn: '300-00-0002' },
            { id: 3, name: 'del-3', email: 'del3@x.io', ssn: '300-00-0003' },
          ])
          .execute()
      },
    })
    const u = t.names.users

    const remaining = async () => ids(await t.raw.selectFrom(u).select('id').execute())

    it('where on a unique-indexed column deletes exactly the matching row', async () => {
      const query = t.db.deleteFrom(u).where('email', '=', ' DEL2@x.io')
      const compiled = query.compile()
      expect(compiled.sql).toBe(dialectSql(backend, `delete from "${u}" where "email_bidx" in ($1)`))
      expectRedacted(compiled, ['DEL2@x.io', 'del2@x.io'])
      const result = await query.executeTakeFirst()
      expect(result.numDeletedRows).toBe(1n)
      expect(await remaining()).toEqual([1, 3])
    })

    it('where on a value that matches nothing deletes nothing', async () => {
      const result = await t.db.deleteFrom(u).where('email', '=', 'nobody@x.io').executeTakeFirst()
      expect(result.numDeletedRows).toBe(0n)
      expect(await remaining()).toEqual([1, 3])
    })

    it.runIf(backend.family === 'postgres')('returning decrypts the deleted row (PostgreSQL)', async () => {
      const back = await t.db
        .deleteFrom(u)
        .where('email', 'in', ['del3@x.io'])
        .returning(['id', 'email', 'ssn'])
        .execute()
      expect(back).toEqual([{ id: 3, email: 'del3@x.io', ssn: '300-00-0003' }])
      expect(await remaining()).toEqual([1])
    })
  })
})
