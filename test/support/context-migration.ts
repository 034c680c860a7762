import { Kysely } from 'kysely'
import { expect } from 'vitest'
import type { MigrationPhase } from '../../src/index.js'
import type { FieldEncryptionOps, InitOptions, JobResult } from '../../src/ops.js'
import type { Backend } from './backends.js'
import { hooked } from './hooked-dialect.js'
import { type MigrationDb, migrationDb } from './migration-db.js'
import { useSuiteFixture } from './suite-fixture.js'

/**
 * The move of a plaintext column to an encrypted one on a table with a row context (`org_id`,
 * `id`), with or without per-tenant keys: the steps the context and per-tenant migration suites share.
 */

/** id → [org, email]: what the application wrote to a {@link migrationDb} with a row context. */
export type ContextModel = Map<number, [string, string]>

/**
 * A {@link migrationDb} of `rows` rows with the row context `['org_id', 'id']` (and `keyScope` if
 * given), `model` filled with them, the encrypted column added (phase `added`) and its keys made
 * by `init` (with `init` as options: the tenants of a per-tenant table).
 */
export async function contextMigration(
  backend: Backend,
  rows: number,
  model: ContextModel,
  { keyScope, init = {} }: { readonly keyScope?: 'org_id'; readonly init?: InitOptions } = {},
): Promise<MigrationDb> {
  const t = await migrationDb(backend, rows, {
    context: ['org_id', 'id'],
    ...(keyScope === undefined ? {} : { keyScope }),
  })
  for (const r of await t.raw.selectFrom(t.table).select(['id', 'org_id', 'email']).execute())
    model.set(Number(r.id), [String(r.org_id), String(r.email)])
  await t.migrate('add', 'added')
  await t.ops('added').init(init)
  return t
}

/**
 * The usual preamble of a suite over a {@link contextMigration}: made before the suite's tests and
 * destroyed after them; `t` is read inside tests and hooks only.
 */
export function useContextMigration(
  backend: Backend,
  rows: number,
  options?: Parameters<typeof contextMigration>[3],
): { t: MigrationDb; model: ContextModel } {
  const model: ContextModel = new Map()
  const t = useSuiteFixture(
    'useContextMigration',
    () => contextMigration(backend, rows, model, options),
    (made) => made.destroy(),
  )
  return { t, model }
}

/** Inserts a row with its context (`org_id`, `id`) through the application of `phase`, and into `model`. */
export async function insertWithContext(
  t: MigrationDb,
  phase: MigrationPhase,
  model: ContextModel,
  [id, org, email]: [number, string, string],
): Promise<void> {
  await t.app(phase).insertInto(t.table).values({ id, org_id: org, name: 'n', email }).execute()
  model.set(id, [org, email])
}

/** Updates the `email` of row `id` with its whole context through the application of `phase`, and in `model`. */
export async function updateWithContext(
  t: MigrationDb,
  phase: MigrationPhase,
  model: ContextModel,
  [id, org, email]: [number, string, string],
): Promise<void> {
  await t
    .app(phase)
    .updateTable(t.table)
    .set({ email })
    .where('org_id', '=', org)
    .where('id', '=', id)
    .execute()
  model.set(id, [org, email])
}

/**
 * The backfill of `dual-writing` (one worker, one batch) on a dialect that, just before the job's
 * first write to the table (after the batch read its rows), moves row `id` to `org` as a writer
 * outside the plugin would (a data fix): its plaintext and its NULL encrypted value stay as they
 * were. Expects the move to have run, and records it in `model`.
 * @returns the job's result
 */
export async function backfillMovingRow(
  t: MigrationDb,
  model: ContextModel,
  { id, org }: { id: number; org: string },
): Promise<JobResult> {
  let fired = false
  // biome-ignore lint/suspicious/noExplicitAny: the table changes shape through the phases.
  const db = new Kysely<any>({
    dialect: hooked(t.backend.createDialect(), async (query) => {
      if (!fired && /^(with w as \()?update/i.test(query.sql) && query.sql.includes(t.table)) {
        fired = true
        await t.raw.updateTable(t.table).set({ org_id: org }).where('id', '=', id).execute()
      }
    }),
  })
  try {
    const job = (await t
      .ops('dual-writing', db)
      .encryptColumn(t.table, 'email', { batchSize: 1000, workers: 1 })) as JobResult
    expect(fired).toBe(true)
    model.set(id, [org, model.get(id)![1]])
    return job
  } finally {
    await db.destroy()
  }
}

/** Copies row `from`'s stored ciphertext into row `to` (a database writer's tamper). */
export async function copyCiphertext(t: MigrationDb, from: number, to: number): Promise<void> {
  const { email_encrypted } = await t.raw
    .selectFrom(t.table)
    .select('email_encrypted')
    .where('id', '=', from)
    .executeTakeFirstOrThrow()
  await t.raw.updateTable(t.table).set({ email_encrypted }).where('id', '=', to).execute()
}

/**
 * Copies row `from`'s ciphertext into row `to` (of another context, or tenant): `ops.verifyColumn`
 * flags that row alone, DECRYPT_AUTH_FAILED; the plaintext being authoritative until cut-over, the
 * backfill run again repairs it, and verify passes.
 */
export async function expectCopiedCiphertextRepaired(
  t: MigrationDb,
  ops: FieldEncryptionOps,
  { from, to }: { from: number; to: number },
): Promise<void> {
  await copyCiphertext(t, from, to)
  const tampered = await ops.verifyColumn(t.table, 'email')
  expect(tampered).toMatchObject({ ok: false, failed: 1 })
  expect(tampered.failures).toEqual([{ key: to, problems: ['email_encrypted: DECRYPT_AUTH_FAILED'] }])
  expect(await ops.encryptColumn(t.table, 'email')).toMatchObject({ rewritten: 1, failed: 0 })
  expect(await ops.verifyColumn(t.table, 'email')).toMatchObject({ ok: true, failed: 0 })
}
