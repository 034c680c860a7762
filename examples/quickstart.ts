/**
 * The quickstart: an embedded PGlite database, no setup, no network.
 * In a clone of the repository: `npm run demo`. In a project of your own:
 * `npm install kysely-field-encryption kysely @electric-sql/pglite kysely-pglite-dialect tsx`,
 * then `npx tsx quickstart.ts`.
 */
import { randomBytes } from 'node:crypto'
import { PGlite } from '@electric-sql/pglite'
import { type Generated, Kysely } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from 'kysely-field-encryption'
import { PGliteDialect } from 'kysely-pglite-dialect'

interface DB {
  people: { id: Generated<number>; name: string; email: string; ssn: string | null }
}

// 1. Declare what is sensitive.
const schema = encryptedSchema({
  people: {
    email: encrypted.text({ index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] } }),
    ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
  },
})

// 2. One factory, two lines of wiring. (A real app takes its KEK from KMS, an HSM or a secret store.)
const encryption = fieldEncryption({ schema, keyProvider: localKeyProvider({ key: randomBytes(32) }) })
const startingDatabase = performance.now()
const pglite = new PGlite()
const db = new Kysely<DB>({
  dialect: encryption.wrap(new PGliteDialect(pglite)),
  plugins: [encryption.plugin],
})

async function main(): Promise<void> {
  await pglite.waitReady
  const databaseStartMs = performance.now() - startingDatabase
  const started = performance.now()
  await db.schema
    .createTable('people')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, 'people', 'postgres'))
    .execute()
  await createBlindIndexes(db, schema, 'people')
  // Keys are created on purpose, once (what `kfe init` does): never silently on first use.
  const { created } = await encryption.init(db)
  console.log(
    `Created keys: ${created.map((k) => `${k.logicalTable}/${k.purpose}/v${k.version}`).join(', ')}`,
  )

  // 3. Use Kysely as before: plaintext in, plaintext out.
  await db
    .insertInto('people')
    .values([
      { name: 'Ada', email: 'Ada@Example.org', ssn: '078-05-1120' },
      { name: 'Grace', email: 'grace@example.org', ssn: '219-09-9999' },
      { name: 'Alan', email: 'alan@example.org', ssn: null },
    ])
    .execute()

  const found = await db.selectFrom('people').selectAll().where('email', '=', ' ada@example.ORG ').execute()
  const bySsn = await db.selectFrom('people').select(['name', 'ssn']).where('ssn', '=', '219099999').execute()

  console.log('\nThe application sees (search by email, normalized):')
  console.table(found.map(({ id, name, email, ssn }) => ({ id, name, email, ssn })))
  console.log('Search by SSN through a 16-bit search index (false positives removed):')
  console.table(bySsn)

  // 4. What the database holds: only ciphertext and HMACs.
  const raw = await pglite.query<{
    id: number
    name: string
    email: Uint8Array
    email_bidx: Uint8Array
    ssn: Uint8Array | null
    ssn_bidx: Uint8Array | null
  }>('select id, name, email, email_bidx, ssn, ssn_bidx from people order by id')
  const hex = (b: Uint8Array | null, n = 16) =>
    b === null ? 'NULL' : `${Buffer.from(b).subarray(0, n).toString('hex')}… (${b.length} B)`
  console.log('At rest (raw rows read straight from PGlite, ciphertext shown truncated):')
  console.table(
    raw.rows.map((r) => ({
      id: r.id,
      name: r.name,
      email: hex(r.email),
      email_bidx: hex(r.email_bidx, 8),
      ssn: hex(r.ssn),
      ssn_bidx: hex(r.ssn_bidx, 2),
    })),
  )

  const stats = encryption.stats()
  console.log(
    `Key-provider calls of the app: ${stats.keys?.providerCalls} (it unwrapped the data key and the index key of "people" once each; init, which generated and wrapped them, made its own calls before); ` +
      `key-cache hits since: ${stats.keys?.cache.hits}`,
  )
  console.log(`Values decrypted: ${stats.decrypted}, search false positives removed: ${stats.falsePositives}`)
  console.log(
    `Done: PGlite (the embedded database) took ${Math.round(databaseStartMs)} ms to start; ` +
      `everything above (create table, key creation, 3 inserts, 2 searches, the raw read) took ` +
      `${Math.round(performance.now() - started)} ms after that.`,
  )
  await encryption.close()
  await db.destroy()
}

main().catch(async (error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
