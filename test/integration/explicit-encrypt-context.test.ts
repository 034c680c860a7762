import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type TenantPair, tenantPair } from '../support/tenant-pair.js'
import { expectRefused, failure } from './plugin-at-rest.js'

/**
 * `encryption.encrypt` binds the ciphertext to the row context given in `row`. It checks that
 * context as the plugin checks the one an INSERT writes (`checkWrittenContext`): a value its column
 * stores as another value (`'07'`, `'-0'` in an integer column) would bind the ciphertext to a
 * context the row never has, and it would never decrypt.
 */
describe.each(backends())('explicit encrypt checks the written row context [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let p: TenantPair
    beforeAll(async () => {
      p = await tenantPair(backend, { prefix: 'xc_orders', tenantType: 'varchar(64)' })
    })
    afterAll(async () => {
      await p?.teardown()
    })

    it('a context value its integer column stores as another value is CONTEXT_MISSING, as for an INSERT', async () => {
      for (const id of ['07', '-0', '+7', ' 7']) {
        // The plugin's write path.
        const insert = await expectRefused(
          () => p.writerDb.insertInto(p.table).values({ id, tenant_id: 'acme', email: 'a@x.io' }).execute(),
          'CONTEXT_MISSING',
        )
        expect(insert.message).toContain('context column id')
        // The explicit path: before the fix it returned a ciphertext bound to id "07", which the
        // row stored with id 7 never decrypts (DECRYPT_AUTH_FAILED on every read).
        const explicit = await failure(() =>
          p.writer.encrypt(p.table, 'email', 'a@x.io', { tenant_id: 'acme', id }),
        )
        expect(explicit).toBeInstanceOf(QueryRefusedError)
        expect((explicit as QueryRefusedError).code).toBe('CONTEXT_MISSING')
        expect((explicit as QueryRefusedError).message).toContain('context column id')
        expect((explicit as QueryRefusedError).message).not.toContain('a@x.io')
      }
      expect(await p.raw.selectFrom(p.table).select('id').execute()).toEqual([])
    })

    it('a canonical context encrypts; the row stored with it decrypts', async () => {
      const ciphertext = await p.writer.encrypt(p.table, 'email', 'ok@x.io', { tenant_id: 'acme', id: '7' })
      await p.raw.insertInto(p.table).values({ id: 7, tenant_id: 'acme', email: ciphertext }).execute()
      expect(
        await p.writerDb.selectFrom(p.table).select(['id', 'email']).where('id', '=', 7).execute(),
      ).toEqual([{ id: 7, email: 'ok@x.io' }])
      await p.raw.deleteFrom(p.table).execute()
    })

    it('a missing context value or an invalid tenant is refused as on the write path', async () => {
      const missing = await failure(() => p.writer.encrypt(p.table, 'email', 'a@x.io', { tenant_id: 'acme' }))
      expect((missing as QueryRefusedError).code).toBe('CONTEXT_MISSING')
      const empty = await failure(() =>
        p.writer.encrypt(p.table, 'email', 'a@x.io', { tenant_id: '', id: 1 }),
      )
      expect((empty as QueryRefusedError).code).toBe('TENANT_INVALID')
      const surrogate = await failure(() =>
        p.writer.encrypt(p.table, 'email', 'a@x.io', { tenant_id: 'a\uD800', id: 1 }),
      )
      expect((surrogate as QueryRefusedError).code).toBe('TENANT_INVALID')
    })
  })
})
