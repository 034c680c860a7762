/** A search whose value normalizes to nothing matches unrelated rows: refused (issue 13). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'

describe.each(backends())('a search that normalizes to empty on $name', (backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    beforeAll(async () => {
      t = await encryptedTestDb(backend)
      await t.db
        .insertInto(t.names.users)
        .values([
          { name: 'no digits', ssn: 'n/a' },
          { name: 'digits', ssn: '123-45-6789' },
        ])
        .execute()
    })
    afterAll(async () => {
      await t.destroy()
    })

    it("where ssn = 'abc' (digits-only index): QUERY_REFUSED naming the index, instead of the rows without digits", async () => {
      for (const value of ['abc', '', ' - ']) {
        await expect(
          t.db.selectFrom(t.names.users).select('name').where('ssn', '=', value).execute(),
        ).rejects.toMatchObject({
          code: 'QUERY_REFUSED',
          column: 'ssn',
          message: expect.stringContaining('ssn_bidx'),
        })
      }
      await expect(
        t.db.selectFrom(t.names.users).select('name').where('ssn', 'in', ['123456789', 'abc']).execute(),
      ).rejects.toMatchObject({ code: 'QUERY_REFUSED' })
      await expect(t.encryption.indexOf(t.names.users, 'ssn', 'abc')).rejects.toMatchObject({
        code: 'QUERY_REFUSED',
      })
    })

    it('a value with something left after normalizing is searched as before', async () => {
      expect(
        await t.db.selectFrom(t.names.users).select('name').where('ssn', '=', '123 45 6789').execute(),
      ).toEqual([{ name: 'digits' }])
    })
  })
})
