import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OperationError } from '../../src/index.js'
import type { JobResult, ReencryptDryRun } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import { retireWhenDue } from '../support/ops-db.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'
import { failure } from './plugin-at-rest.js'

/**
 * Rotation of per-tenant keys, then the re-encryption of the tenant's rows (one tenant, or every
 * tenant in one pass), verify, status and retire over them; shredded tenants in a whole-table job.
 */
describe.each(backends())('per-tenant rotation and re-encryption [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    beforeAll(async () => {
      t = await tenantFixture(backend)
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it("kfe rotate --tenant re-encrypts that tenant's rows onto its new version, and no other tenant's; verify, status and retire see it", async () => {
      const a = [await t.order('ra', 'a1@x.io'), await t.order('ra', 'a2@x.io')]
      const b = await t.order('rb', 'b1@x.io')
      const r = await t.ops.rotate(t.table, { purpose: 'data', tenant: 'ra', batchSize: 1 })
      expect(r).toMatchObject({ version: 2, state: 'active', interrupted: false })
      expect(r.reencrypt).toMatchObject({
        rows: 2,
        rewritten: 2,
        failed: 0,
        shredded: 0,
        remainingBatches: 0,
      })
      expect(r.reencrypt?.targets).toEqual({ data: 2, index: 1 })
      for (const id of a) expect(await t.dataVersion(id)).toBe(2)
      expect(await t.dataVersion(b)).toBe(1)
      // Its own job, under the tenant's key name.
      expect(r.reencrypt?.jobId).toBe(`reencrypt:${t.keyName('ra')}`)
      // The application still reads and searches both tenants.
      const rows = await t.db
        .selectFrom(t.table)
        .select(['id', 'email'])
        .where('tenant_id', '=', 'ra')
        .execute()
      expect(rows.map((x) => x.email).sort()).toEqual(['a1@x.io', 'a2@x.io'])
      expect(await t.byEmail('ra', 'A2@x.io')).toEqual([{ id: a[1] }])
      const verified = await t.ops.verify(t.table, { tenant: 'ra' })
      expect(verified).toMatchObject({ ok: true, rows: 2, failed: 0, shredded: 0, dataVersions: { 2: 4 } })
      const st = (await t.ops.status({ table: t.table, tenant: 'ra', exact: true })).tables[0]!
      expect(st.rowsByDataVersion).toEqual({ 2: 2 })
      expect(st.keys.filter((k) => k.purpose === 'data').map((k) => `v${k.version}/${k.state}`)).toEqual([
        'v1/decrypt-only',
        'v2/active',
      ])
      expect(st.attention).toEqual([
        `data version 1 is unused: \`kfe retire ${t.table} --tenant ra --data 1\``,
      ])
      // A per-tenant table's version is retired per tenant; the other tenant's v1 stays active.
      const noTenant = await failure(() => t.ops.retire(t.table, { purpose: 'data', version: 1 }))
      expect(noTenant).toMatchObject({ code: 'OPS_INVALID' })
      expect(
        await retireWhenDue(t.ops, t.table, { purpose: 'data', version: 1, tenant: 'ra' }),
      ).toMatchObject({
        retired: true,
        rows: 0,
      })
      expect((await t.ops.verify(t.table, { tenant: 'rb' })).dataVersions).toEqual({ 1: 2 })
    })

    it("an upsert on the unique email checks its tenant's index versions: it runs (no table-wide keys needed or made), and is refused during that tenant's index rotation", async () => {
      await t.order('up', 'up@x.io')
      const upsert = () => {
        const insert = t.db
          .insertInto(t.table)
          .values({ id: randomUUID(), tenant_id: 'up', name: 'dup', email: 'up@x.io', ssn: '1' })
        return (
          backend.family === 'postgres'
            ? insert.onConflict((oc) => oc.column('email').doUpdateSet({ name: 'updated' }))
            : insert.onDuplicateKeyUpdate({ name: 'updated' })
        ).execute()
      }
      await upsert()
      const rows = await t.db
        .selectFrom(t.table)
        .select(['name', 'email'])
        .where('tenant_id', '=', 'up')
        .execute()
      expect(rows).toEqual([{ name: 'updated', email: 'up@x.io' }])
      // Only the tenant's keys: the check read no table-wide key (it said KEYS_MISSING, or made one).
      const tableWide = await t.raw
        .selectFrom(t.keyTable)
        .select('purpose')
        .where('logical_table', '=', t.table)
        .execute()
      expect(tableWide).toEqual([])
      await t.ops.rotate(t.table, { purpose: 'index', tenant: 'up', reencrypt: false })
      await t.settle()
      await expect(upsert()).rejects.toMatchObject({ code: 'QUERY_REFUSED', operator: '= another column' })
      expect(
        await t.db.selectFrom(t.table).select('id').where('tenant_id', '=', 'up').execute(),
      ).toHaveLength(1)
      if (backend.family === 'mysql') {
        // An upsert that writes no encrypted value cannot conflict on the index: it runs (it read
        // the table-wide keys, which a per-tenant table never has: KEYS_MISSING).
        const id = randomUUID()
        await t.db
          .insertInto(t.table)
          .values({ id, tenant_id: 'up', name: 'plain' })
          .onDuplicateKeyUpdate({ name: 'again' })
          .execute()
        await t.db
          .insertInto(t.table)
          .values({ id, tenant_id: 'up', name: 'plain' })
          .onDuplicateKeyUpdate({ name: 'again' })
          .execute()
        expect(await t.db.selectFrom(t.table).select('name').where('id', '=', id).execute()).toEqual([
          { name: 'again' },
        ])
      }
    })

    it('retire --tenant is refused while a row of that tenant still uses the version, and allowed once re-encrypted', async () => {
      const id = await t.order('rc', 'c1@x.io')
      await t.ops.rotate(t.table, { purpose: 'index', tenant: 'rc', reencrypt: false })
      await t.settle()
      const refused = await failure(() =>
        t.ops.retire(t.table, { purpose: 'index', version: 1, tenant: 'rc' }),
      )
      expect(refused).toBeInstanceOf(OperationError)
      expect(refused).toMatchObject({ code: 'RETIRE_REFUSED', rows: 1 })
      expect((refused as Error).message).toContain(`kfe reencrypt ${t.table} --tenant rc`)
      const dry = (await t.ops.reencrypt(t.table, { tenant: 'rc', dryRun: true })) as ReencryptDryRun
      expect(dry).toMatchObject({ rows: 1, wouldRewrite: 1, failed: 0, shredded: 0 })
      const job = (await t.ops.reencrypt(t.table, { tenant: 'rc' })) as JobResult
      expect(job).toMatchObject({ rows: 1, rewritten: 1, failed: 0 })
      expect((await t.ops.verify(t.table, { tenant: 'rc' })).indexVersions).toEqual({ 2: 2 })
      expect(
        await retireWhenDue(t.ops, t.table, { purpose: 'index', version: 1, tenant: 'rc' }),
      ).toMatchObject({
        retired: true,
      })
      expect(await t.byEmail('rc', 'c1@x.io')).toEqual([{ id }])
    })

    it("every tenant in one pass: rotateTenants re-encrypts each row onto its own tenant's new version; a shredded tenant's rows are counted apart and fail nothing", async () => {
      const ids = new Map<string, string>()
      for (const tenant of ['wa', 'wb', 'wc', 'wd']) ids.set(tenant, await t.order(tenant, `${tenant}@x.io`))
      await t.ops.shred(t.table, { tenant: 'wd' })
      const all = await t.ops.rotateTenants(t.table, { purpose: 'data', batchSize: 2, workers: 2 })
      expect(all.interrupted).toBe(false)
      expect(all.reencrypt?.jobId).toBe(`reencrypt:${t.table}`)
      expect(all.reencrypt?.targets).toEqual({ data: 0, index: 0 }) // each row onto its own tenant's
      expect(all.reencrypt).toMatchObject({ failed: 0, jobFailed: 0, shredded: 1, remainingBatches: 0 })
      for (const tenant of ['wa', 'wb', 'wc']) {
        const own = all.tenants.find((x) => x.tenant === tenant)!
        expect(await t.dataVersion(ids.get(tenant)!)).toBe(own.version)
      }
      expect(all.tenants.some((x) => x.tenant === 'wd')).toBe(false)
      // Verify: every readable row ok; the shredded tenant's rows counted apart, not failures.
      const v = await t.ops.verify(t.table)
      expect(v).toMatchObject({ ok: true, failed: 0, shredded: 1 })
      const st = (await t.ops.status({ table: t.table, exact: true })).tables[0]!
      expect(st.tenants).toMatchObject({ destroyed: 1, shreddedRows: 1, rowsNotOnActive: 0 })
      expect(st.failedRows).toBe(0)
      // A second run finds nothing to do (a job done before it started is planned again).
      const again = (await t.ops.reencrypt(t.table)) as JobResult
      expect(again).toMatchObject({ rewritten: 0, failed: 0, shredded: 1, remainingBatches: 0 })
      const shredded = await failure(() => t.ops.reencrypt(t.table, { tenant: 'wd' }))
      expect(shredded).toMatchObject({ code: 'KEY_DESTROYED' })
    })

    it('rotateTenants stopped while staging resumes (each tenant rotated once); stopped at its first activation it activates every tenant and says to run kfe reencrypt', async () => {
      /** Active data version per tenant key name, from the key table. */
      const active = async () => {
        const { rows } = await sql<{
          logical_table: string
          version: number | string
        }>`select logical_table, version from ${sql.table(t.keyTable)} where purpose = 'data' and state = 'active'`.execute(
          t.raw,
        )
        return new Map(rows.map((r) => [r.logical_table, Number(r.version)]))
      }
      const before = await active()
      expect(before.size).toBeGreaterThan(2)

      const whileStaging = new AbortController()
      const first = await t.ops.rotateTenants(t.table, {
        purpose: 'data',
        signal: whileStaging.signal,
        onProgress: (p) => {
          if (p.phase === 'staging') whileStaging.abort()
        },
      })
      expect(first).toMatchObject({ interrupted: true, reencrypt: undefined })
      expect(first.left).toMatch(
        new RegExp(
          `^versions are staged for 1 of ${before.size} tenants: run \`kfe rotate ${t.table} --all-tenants --data\` again`,
        ),
      )
      const resumed = await t.ops.rotateTenants(t.table, { purpose: 'data' })
      expect(resumed).toMatchObject({
        interrupted: false,
        left: undefined,
        reencrypt: { failed: 0, remainingBatches: 0 },
      })
      const once = await active()
      for (const [name, version] of before) expect(once.get(name)).toBe(version + 1)

      const atActivation = new AbortController()
      const stopped = await t.ops.rotateTenants(t.table, {
        purpose: 'data',
        signal: atActivation.signal,
        onProgress: (p) => {
          if (p.phase === 'activated') atActivation.abort()
        },
      })
      // The stop came with the first activation: the others were activated all the same.
      expect(stopped).toMatchObject({ interrupted: true, reencrypt: undefined })
      expect(stopped.tenants.map((r) => r.state)).toEqual([...before.keys()].map(() => 'active'))
      expect(stopped.left).toBe(
        `every tenant's new version is active; the re-encryption has not begun: run \`kfe reencrypt ${t.table}\` to finish (rotating again would rotate every tenant once more)`,
      )
      const twice = await active()
      for (const [name, version] of before) expect(twice.get(name)).toBe(version + 2)
      expect(await t.ops.reencrypt(t.table)).toMatchObject({ failed: 0, remainingBatches: 0 })
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, failed: 0 })
    })
  })
})
