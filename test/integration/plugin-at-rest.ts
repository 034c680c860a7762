/**
 * Shared assertions of the plugin suites (test/integration/plugin-*.test.ts): what the database
 * holds at rest, what `compile()` exposes, and how refusals look. No mocks: every check reads a
 * real database through the fixture's un-wrapped `raw` Kysely.
 */
import type { CompiledQuery } from 'kysely'
import { expect } from 'vitest'
import { type ErrorCode, QueryRefusedError } from '../../src/index.js'
import type { Backend } from '../support/backends.js'
import type { EncryptedTestDb } from '../support/encrypted-db.js'

/** A stored bytea / VARBINARY value as a Buffer (pg and mysql2 return Buffer, PGlite Uint8Array). */
export function storedBytes(value: unknown): Buffer {
  expect(value).toBeInstanceOf(Uint8Array)
  return Buffer.from(value as Uint8Array)
}

/** Byte strings whose presence in a ciphertext would mean plaintext leaked. */
function needles(plaintext: unknown): Buffer[] {
  const text =
    typeof plaintext === 'string'
      ? plaintext
      : plaintext instanceof Date
        ? plaintext.toISOString()
        : typeof plaintext === 'object' && plaintext !== null
          ? JSON.stringify(plaintext)
          : undefined
  // Shorter needles match random bytes too often to mean anything.
  return text !== undefined && text.length >= 4 ? [Buffer.from(text)] : []
}

/**
 * Asserts that `stored` (read through `t.raw`) is a ciphertext of `plaintext` for `table.column`:
 * bytes, no plaintext inside, and it decrypts back to `plaintext` with the table's keys.
 */
export async function expectCiphertextOf(
  t: EncryptedTestDb,
  table: string,
  column: string,
  stored: unknown,
  plaintext: unknown,
): Promise<void> {
  const bytes = storedBytes(stored)
  for (const needle of needles(plaintext)) expect(bytes.includes(needle)).toBe(false)
  expect(await t.encryption.decrypt(table, column, bytes)).toEqual(plaintext)
}

/** Asserts that `stored` is the blind index of `plaintext` under the active index key. */
export async function expectIndexOf(
  t: EncryptedTestDb,
  table: string,
  column: string,
  stored: unknown,
  plaintext: unknown,
  index?: string,
): Promise<void> {
  const bytes = storedBytes(stored)
  const [active] = await t.encryption.indexOf(table, column, plaintext, index)
  expect(active).toBeDefined()
  expect(bytes.equals(active as Buffer)).toBe(true)
}

/**
 * Asserts that a compiled query shows no plaintext of `secrets` anywhere (SQL, parameters, the
 * tree) and that it carries at least one redacted deferred value, e.g. `[kfe:probe users.email_bidx]`.
 */
export function expectRedacted(compiled: CompiledQuery, secrets: readonly string[]): void {
  const shown = [compiled.sql, JSON.stringify(compiled.parameters), JSON.stringify(compiled.query)]
  for (const p of compiled.parameters) shown.push(String(p))
  for (const secret of secrets) for (const text of shown) expect(text).not.toContain(secret)
  expect(compiled.parameters.some((p) => /^\[kfe:(encrypt|index|probe) [^\]]+\]$/.test(String(p)))).toBe(true)
}

/** The SQL of `postgresSql` in the backend's dialect: `"x"` → `` `x` ``, `$1` → `?` on MySQL. */
export function dialectSql(backend: Backend, postgresSql: string): string {
  if (backend.family === 'postgres') return postgresSql
  return postgresSql.replace(/"/g, '`').replace(/\$\d+/g, '?')
}

/** What `run` threw (`undefined` when it did not throw), for assertions. */
export async function failure(run: () => Promise<unknown>): Promise<unknown> {
  return Promise.resolve()
    .then(run)
    .then(
      () => undefined,
      (e: unknown) => e,
    )
}

/** Asserts that `run` is refused with a {@link QueryRefusedError} of the given code. */
export async function expectRefused(
  run: () => Promise<unknown>,
  code: ErrorCode,
): Promise<QueryRefusedError> {
  const error = await failure(run)
  expect(error).toBeInstanceOf(QueryRefusedError)
  expect((error as QueryRefusedError).code).toBe(code)
  return error as QueryRefusedError
}

/** Ids of result rows, sorted (drivers may return numbers or numeric strings). */
export function ids(rows: ReadonlyArray<{ id?: unknown }>): number[] {
  return rows.map((r) => Number(r.id)).sort((a, b) => a - b)
}
