import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, type KeyProvider, localKeyProvider } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type TenantTable, tenantTable } from '../support/tenant-table.js'

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * A query of a transaction that waits for its keys (a tenant's keys, loaded on first use through
 * a slow KMS) while the transaction ends: a sibling failed in `Promise.all`, so Kysely rolled back
 * and released the connection. The query used to be sent afterwards, outside the transaction (in
 * autocommit, or inside the next borrower's work): a row of a rolled-back transaction committed.
 * It is refused now, and nothing is sent.
 */
describe.each(backends())(
  'a query whose transaction ended while it waited for keys [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const kek = randomBytes(32)
      const local = () => localKeyProvider({ id: 'local:ended', key: Buffer.from(kek) })
      /** A KMS-like provider: 300 ms per unwrap. */
      const slow = (): KeyProvider => {
        const base = local()
        return {
          id: base.id,
          generateDataKey: (ref) => base.generateDataKey(ref),
          rewrap: (source, ref) => base.rewrap(source, ref),
          unwrap: async (wrapped, ref) => {
            await pause(300)
            return base.unwrap(wrapped, ref)
          },
        }
      }
      let t: TenantTable
      beforeAll(async () => {
        t = await tenantTable(backend, {
          prefix: 'tx_ended',
          columns: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
          idType: 'integer',
          tenantType: 'varchar(64)',
          provider: local,
        })
        await t.process().encryption.initTenant(t.raw, t.table, 'acme')
      }, 120_000)
      afterAll(async () => {
        await t?.destroy()
      })

      it('is refused (QUERY_REFUSED, transaction ended): the rollback leaves no row', async () => {
        const { db } = t.process({ keyProvider: slow() })
        let insert: unknown = 'pending'
        const failed = await db
          .transaction()
          .execute((trx) =>
            Promise.all([
              pause(20).then(() => Promise.reject(new Error('validation failed'))),
              trx
                .insertInto(t.table)
                .values({ id: 1, tenant_id: 'acme', email: 'ghost@x.io' })
                .execute()
                .then(
                  () => {
                    insert = 'sent'
                  },
                  (error: unknown) => {
                    insert = error
                  },
                ),
            ]),
          )
          .catch((e: unknown) => e)
        expect(failed).toMatchObject({ message: 'validation failed' })
        // The insert's key load ends after the rollback.
        for (let i = 0; i < 50 && insert === 'pending'; i++) await pause(50)
        expect(insert).toMatchObject({ code: 'QUERY_REFUSED', operator: 'transaction ended' })
        expect(await t.raw.selectFrom(t.table).select('id').execute()).toEqual([])
        // The connection is sound: the same write in its own transaction commits.
        await db
          .transaction()
          .execute((trx) =>
            trx.insertInto(t.table).values({ id: 2, tenant_id: 'acme', email: 'real@x.io' }).execute(),
          )
        expect(await t.raw.selectFrom(t.table).select('id').execute()).toEqual([{ id: 2 }])
      })
    })
  },
)
