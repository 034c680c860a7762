import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, dropTables, onlyTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

/**
 * A column declared `migratingFromPlaintext` holds, in place, values written before it was
 * annotated. `kfe reencrypt` encrypts them under the active key with their blind index, under a
 * compare-and-set on the plaintext read; a value it cannot read as the codec's without guessing
 * (text that is not UTF-8) stays, counted as plaintext. Before, reencrypt finished with every such
 * row left in plaintext, and `status` named no command that would encrypt them.
 */
describe.each(backends())(
  'ops: plaintext in place in a migratingFromPlaintext column [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const table = uniqueName('legacy')
      const keyTable = `${table}_keys`
      const jobsTable = `${table}_jobs`
      const schema = encryptedSchema({
        [table]: {
          note: encrypted.text({ migratingFromPlaintext: true, index: { name: 'note_bidx' }, maxBytes: 100 }),
        },
      })
      const kek = randomBytes(32)
      const [appDialect, rawDialect] = backend.createDialectPair()
      let raw: Kysely<TestDB>
      let app: Kysely<TestDB>
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ id: 'local:legacy', key: Buffer.from(kek) }),
        keyTable,
        verifySchema: onlyTables(table),
      })
      let ops: ReturnType<typeof fieldEncryptionOps>
      // Left as they are, each a row problem: not UTF-8; a control character first (a damaged v1
      // ciphertext starts 0x11..0x18); longer than maxBytes (its ciphertext could not fit MySQL's
      // column: refused, or cut short without strict mode).
      const left = {
        3: ['LEGACY_NOT_TEXT', Buffer.from([0x73, 0xff, 0xfe, 0x65])],
        5: ['LEGACY_NOT_TEXT', Buffer.from([0x11, 0x01, 0x41, 0x42])],
        6: ['LEGACY_TOO_LONG', Buffer.from('x'.repeat(101))],
      } as const
      beforeAll(async () => {
        raw = new Kysely<TestDB>({ dialect: rawDialect })
        app = new Kysely<TestDB>({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] })
        await raw.schema
          .createTable(table)
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .$call(addEncryptedColumns(schema, table, backend.family))
          .execute()
        await createBlindIndexes(raw, schema, table)
        // Written before the column was annotated: UTF-8 bytes, and bytes that are not UTF-8.
        await raw
          .insertInto(table)
          .values([
            { id: 1, note: Buffer.from('légacy one') },
            // A leading U+FEFF stays, as the plugin reads it.
            { id: 2, note: Buffer.from('\uFEFFlegacy two') },
            ...Object.entries(left).map(([id, [, note]]) => ({ id: Number(id), note })),
          ])
          .execute()
        ops = fieldEncryptionOps({
          db: raw,
          schema,
          keyProvider: localKeyProvider({ id: 'local:legacy', key: Buffer.from(kek) }),
          keyTable,
          jobsTable,
        })
        await ops.init()
        await app.insertInto(table).values({ id: 4, note: 'written encrypted' }).execute()
      }, 120_000)
      afterAll(async () => {
        if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
        await ops?.close()
        await encryption.close()
        // One PGlite under both: destroying the application's Kysely closes it.
        await app?.destroy()
        if (backend.name !== 'pglite') await raw?.destroy()
      })

      it('status names kfe reencrypt; it encrypts the text values with their index and lists the others as failed', async () => {
        const before = await ops.status({ table, exact: true })
        expect(before.tables[0]?.attention.join('\n')).toContain(
          `5 rows hold plaintext values in columns declared migratingFromPlaintext: \`kfe reencrypt ${table}\` encrypts those that are text`,
        )
        expect(await ops.reencrypt(table, { dryRun: true })).toMatchObject({ wouldRewrite: 2, failed: 3 })
        const job = await ops.reencrypt(table)
        expect(job).toMatchObject({ rewritten: 2, failed: 3 })
        const stored = await raw.selectFrom(table).select(['id', 'note', 'note_bidx']).orderBy('id').execute()
        // The two text values are ciphertexts now, with a blind index; the others are as they were.
        for (const row of stored.filter((r) => r.id <= 2)) {
          expect(Buffer.from(row.note as Uint8Array).includes(Buffer.from('legacy'))).toBe(false)
          expect(row.note_bidx).not.toBeNull()
        }
        for (const [id, [, note]] of Object.entries(left))
          expect(Buffer.from(stored.find((r) => r.id === Number(id))?.note as Uint8Array)).toEqual(note)
        // The application reads them as they were written, and finds them by equality.
        expect(
          await app.selectFrom(table).select(['id', 'note']).where('id', '<=', 2).orderBy('id').execute(),
        ).toEqual([
          { id: 1, note: 'légacy one' },
          { id: 2, note: '\uFEFFlegacy two' },
        ])
        expect(await app.selectFrom(table).select('id').where('note', '=', 'légacy one').execute()).toEqual([
          { id: 1 },
        ])
        const verify = await ops.verify(table)
        expect(verify).toMatchObject({ ok: false, failed: 3, plaintext: 3 })
        expect(
          verify.failures.map((f) => [Number(f.key), f.problems]).sort((a, b) => Number(a[0]) - Number(b[0])),
        ).toEqual(Object.entries(left).map(([id, [problem]]) => [Number(id), [`note: ${problem}`]]))
      })

      it('a plaintext value equal to an encrypted row under the unique index: MIGRATION_REFUSED, not the driver error', async () => {
        // Invisible to the unique index while it is plaintext (it has no blind index yet).
        await raw
          .insertInto(table)
          .values({ id: 7, note: Buffer.from('written encrypted') })
          .execute()
        try {
          const error = await ops.reencrypt(table).catch((e: unknown) => e)
          expect(error).toMatchObject({ name: 'OperationError', code: 'MIGRATION_REFUSED' })
          expect(String((error as Error).message)).toContain(
            `A unique blind index of ${table}.note (migratingFromPlaintext) refused`,
          )
          expect(String((error as Error).message)).not.toContain('written encrypted')
        } finally {
          await raw.deleteFrom(table).where('id', '=', 7).execute()
        }
      })
    })
  },
)
