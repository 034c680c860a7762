import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { type Connection, createConnection } from 'mysql2/promise'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { backends, uniqueName } from '../support/backends.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const postgres = backends().find((b) => b.name === 'postgres')!

/**
 * Runs an example app as a reader runs it (`npx tsx`, a fresh KEK, DATABASE_URL), checks what it
 * printed, and checks the one row it stored (`stored`) holds only ciphertext and a 32-byte index.
 */
async function runExample(
  file: string,
  databaseUrl: URL,
  stored: () => Promise<Array<Record<string, Buffer>>>,
): Promise<void> {
  const { stdout } = await promisify(execFile)('npx', ['tsx', file], {
    cwd: root,
    env: { ...process.env, KFE_KEK: randomBytes(32).toString('hex'), DATABASE_URL: databaseUrl.toString() },
  })
  expect(stdout).toContain("email: 'Ada@Example.org'")
  expect(stdout).toContain("dob: '1815-12-10'")
  expect(stdout).not.toContain('email_bidx')
  const rows = await stored()
  expect(rows).toHaveLength(1)
  const row = rows[0] as Record<string, Buffer>
  for (const column of ['email', 'ssn', 'dob']) {
    expect(row[column]).toBeInstanceOf(Buffer)
    expect(row[column]!.toString('latin1')).not.toMatch(/Ada|078-05|1815/)
  }
  expect(row.email_bidx).toHaveLength(32)
}

// The README's PostgreSQL app (examples/postgres.ts), run as a reader runs it: `npx tsx`, a fresh
// KEK from the environment, DATABASE_URL. In a schema of its own, so its `users` and `kfe_keys`
// tables meet no other test's.
describe.each([postgres])('the README example (examples/postgres.ts) [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const schemaName = uniqueName('readme')
    // The database the suite runs on (PG_URL, or the testcontainers one), parsed only when the
    // backend is there: a collection without PostgreSQL must report NOT RUN, not fail.
    let url: URL
    let admin: pg.Client

    beforeAll(async () => {
      url = new URL(String(inject('pgUrl')))
      admin = new pg.Client({ connectionString: url.toString() })
      await admin.connect()
      await admin.query(`create schema "${schemaName}"`)
    })
    afterAll(async () => {
      await admin?.query(`drop schema if exists "${schemaName}" cascade`)
      await admin?.end()
    })

    it('creates the table, writes Ada and finds her by email; the database holds only ciphertext', async () => {
      const databaseUrl = new URL(url)
      databaseUrl.searchParams.set('options', `-c search_path=${schemaName}`)
      await runExample('examples/postgres.ts', databaseUrl, async () => {
        const stored = await admin.query(`select email, email_bidx, ssn, dob from "${schemaName}".users`)
        return stored.rows as Array<Record<string, Buffer>>
      })
      const keys = await admin.query(`select purpose from "${schemaName}".kfe_keys order by purpose`)
      expect(keys.rows.map((r: { purpose: string }) => r.purpose)).toEqual(['data', 'index'])
    })
  })
})

// The same app on MySQL/MariaDB (examples/mysql.ts), in a database of its own.
const mysql = backends().find((b) => b.name === 'mysql')!
describe.each([mysql])('the MySQL example (examples/mysql.ts) [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const database = uniqueName('readme')
    let url: URL
    let admin: Connection

    beforeAll(async () => {
      url = new URL(String(inject('mysqlUrl')))
      admin = await createConnection({ uri: url.toString() })
      await admin.query(`create database \`${database}\``)
    })
    afterAll(async () => {
      await admin?.query(`drop database if exists \`${database}\``)
      await admin?.end()
    })

    it('creates the table, writes Ada and finds her by email; the database holds only ciphertext', async () => {
      const databaseUrl = new URL(url)
      databaseUrl.pathname = `/${database}`
      await runExample('examples/mysql.ts', databaseUrl, async () => {
        const [rows] = await admin.query(`select email, email_bidx, ssn, dob from \`${database}\`.users`)
        return rows as Array<Record<string, Buffer>>
      })
    })
  })
})
