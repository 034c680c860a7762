import { describe, expect, it } from 'vitest'
import type { JobResult } from '../../src/ops.js'
import { encryptColumn, indexValue } from '../../src/plugin/resolve-values.js'
import { type Backend, backends } from '../support/backends.js'
import { useOpsTestDb } from '../support/ops-db.js'

/**
 * `maxBytes` refuses a longer value where the application writes one; a value already stored (before
 * `maxBytes` was enforced, or lowered) is still moved to the active key by a re-encryption, which
 * would otherwise leave it on the version a rotation is retiring.
 */
describe.each(backends())('ops: maxBytes and values already stored [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 3 })

    it('a stored value longer than maxBytes (200) is re-encrypted by a rotation, not failed', async () => {
      const table = t.schema.table(t.table)!
      const email = table.columns.get('email')!
      // 201 bytes: past maxBytes, and its ciphertext (233 bytes) still fits MySQL's varbinary(236).
      const long = `${'a'.repeat(196)}@x.io`
      // The application refuses it now …
      await expect(
        t.app.insertInto(t.table).values({ name: 'long', email: long, ssn: '1' }).execute(),
      ).rejects.toMatchObject({ code: 'CODEC_INVALID_VALUE' })
      // … so it is written as an earlier version would have, under the active keys.
      const ring = t.encryption.keyRing()
      const data = await ring.activeKey(t.table, 'data')
      const index = await ring.activeKey(t.table, 'index')
      await t.raw
        .insertInto(t.table)
        .values({
          name: 'long',
          email: encryptColumn(data, email, long, undefined, false),
          email_bidx: indexValue(index, table.indexColumn('email_bidx')!, long),
        })
        .execute()
      const rotated = await t.ops.rotate(t.table, { purpose: 'data' })
      const job = rotated.reencrypt as JobResult
      expect(job).toMatchObject({ failed: 0, rewritten: 4 })
      const verify = await t.ops.verify(t.table)
      expect(verify).toMatchObject({ ok: true, failed: 0 })
      expect(Object.keys(verify.dataVersions)).toEqual([String(data.ref.version + 1)])
      expect(await t.app.selectFrom(t.table).select('email').where('name', '=', 'long').execute()).toEqual([
        { email: long },
      ])
    })
  })
})
