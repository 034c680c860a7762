import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { KeyError, localKeyProvider, OperationError } from '../../src/index.js'
import { fieldEncryptionOps, type JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import { retireWhenDue, useOpsTestDb } from '../support/ops-db.js'

describe.each(backends())('ops lifecycle [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { init: false })

    it('init creates version 1 of the data and index keys under every KEK, once', async () => {
      const first = await t.ops.init()
      expect(first.created).toBe(2)
      expect(first.keys.map((k) => [k.purpose, k.version, k.keks])).toEqual([
        ['data', 1, ['local:test']],
        ['index', 1, ['local:test']],
      ])
      const again = await t.ops.init()
      expect(again.created).toBe(0)
      expect(again.keys.every((k) => !k.created)).toBe(true)
    })

    it('init --dry-run creates nothing', async () => {
      const dry = await t.ops.init({ dryRun: true })
      expect(dry.dryRun).toBe(true)
      expect(dry.created).toBe(0)
    })

    it('status: every row on version 1, nothing to do', async () => {
      await t.insert(45)
      const s = await t.ops.status({ exact: true })
      const table = s.tables[0]!
      expect(table.rows).toBe(45)
      expect(table.rowsByDataVersion).toEqual({ 1: 45 })
      expect(table.rowsByIndexVersion).toEqual({ 1: 45 })
      expect(table.keys.map((k) => `${k.purpose}/${k.version}/${k.state}`)).toEqual([
        'data/1/active',
        'index/1/active',
      ])
      expect(s.needsAttention).toBe(false)
      expect(table.verdict).toMatch(/^ok/)
    })

    it('rotate --data: stages, activates, re-encrypts every row; verify and status agree', async () => {
      const progress: string[] = []
      const r = await t.ops.rotate(t.table, {
        purpose: 'data',
        batchSize: 10,
        onProgress: (p) => progress.push(p.phase),
      })
      expect(r).toMatchObject({ version: 2, previous: 1, state: 'active' })
      const job = r.reencrypt as JobResult
      expect(job.rows).toBe(45)
      expect(job.rewritten).toBe(45)
      expect(job.failed).toBe(0)
      expect(job.remainingBatches).toBe(0)
      expect(progress).toContain('staging')
      expect(progress).toContain('activated')
      expect(progress.filter((p) => p === 'batch').length).toBe(5)
      const v = await t.ops.verify(t.table)
      expect(v).toMatchObject({
        ok: true,
        rows: 45,
        failed: 0,
        dataVersions: { 2: 90 },
        indexVersions: { 1: 90 },
      })
      const s = await t.ops.status({ exact: true })
      expect(s.tables[0]!.rowsByDataVersion).toEqual({ 2: 45 })
      // Version 1 is now decrypt-only and unused: status says it can be retired.
      expect(s.needsAttention).toBe(true)
      expect(s.tables[0]!.attention.join('\n')).toContain(`kfe retire ${t.table} --data 1`)
      // The application still reads and searches.
      const row = await t.app
        .selectFrom(t.table)
        .selectAll()
        .where('email', '=', 'U7@X.IO ')
        .executeTakeFirst()
      expect(row?.name).toBe('u7')
    })

    it('retire refuses the active version with KEY_STATE_INVALID', async () => {
      const error = await t.ops.retire(t.table, { purpose: 'data', version: 2 }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(KeyError)
      expect((error as KeyError).code).toBe('KEY_STATE_INVALID')
    })

    it('retire of the unused former version succeeds', async () => {
      const r = await retireWhenDue(t.ops, t.table, { purpose: 'data', version: 1 })
      expect(r).toMatchObject({ rows: 0, retired: true, forced: false })
      const s = await t.ops.status({ exact: true })
      expect(s.needsAttention).toBe(false)
      expect(s.tables[0]!.keys.find((k) => k.purpose === 'data' && k.version === 1)?.state).toBe('retired')
    })

    it('rotate --index --no-reencrypt, then retire with rows left is refused with the count, typed', async () => {
      const r = await t.ops.rotate(t.table, { purpose: 'index', reencrypt: false })
      expect(r).toMatchObject({ version: 2, state: 'active', reencrypt: undefined })
      const error = await t.ops.retire(t.table, { purpose: 'index', version: 1 }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OperationError)
      expect(error).toMatchObject({ code: 'RETIRE_REFUSED', rows: 45 })
      const s = await t.ops.status({ exact: true })
      expect(s.tables[0]!.rowsByIndexVersion).toEqual({ 1: 45 })
      expect(s.tables[0]!.attention.join('\n')).toContain('45 rows still on index version 1')
      // Searches cover both live versions meanwhile.
      await t.insert(5, 'w')
      const both = await t.app
        .selectFrom(t.table)
        .select('name')
        .where('email', 'in', ['u3@x.io', 'w46@x.io'])
        .execute()
      expect(both.map((x) => x.name).sort()).toEqual(['u3', 'w46'])
    })

    it('reencrypt --dry-run counts without writing; reencrypt recomputes the indexes', async () => {
      const dry = await t.ops.reencrypt(t.table, { dryRun: true })
      expect(dry).toMatchObject({ dryRun: true, rows: 50, wouldRewrite: 45, failed: 0 })
      const job = (await t.ops.reencrypt(t.table, { batchSize: 7 })) as JobResult
      expect(job).toMatchObject({ rows: 50, rewritten: 45, failed: 0, remainingBatches: 0 })
      const v = await t.ops.verify(t.table)
      expect(v).toMatchObject({ ok: true, indexVersions: { 2: 100 }, dataVersions: { 2: 100 } })
      const r = await retireWhenDue(t.ops, t.table, { purpose: 'index', version: 1 })
      expect(r.retired).toBe(true)
      const found = await t.app.selectFrom(t.table).select('name').where('ssn', '=', '123450003').execute()
      expect(found.map((x) => x.name)).toEqual(['u3'])
    })

    it('a second reencrypt finds nothing to rewrite', async () => {
      const job = (await t.ops.reencrypt(t.table)) as JobResult
      expect(job).toMatchObject({ rows: 50, rewritten: 0, planned: true })
    })

    it('retire --force retires a version rows still use, and reports the count', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      const r = await t.ops.retire(t.table, { purpose: 'data', version: 2, force: true })
      expect(r).toMatchObject({ rows: 50, retired: true, forced: true })
      // Rows on a retired version still decrypt: nothing is lost, and reencrypt moves them on.
      const job = (await t.ops.reencrypt(t.table)) as JobResult
      expect(job.rewritten).toBe(50)
      expect((await t.ops.verify(t.table)).dataVersions).toEqual({ 3: 100 })
    })

    it('verify lists the primary keys of rows that fail, by code, without values', async () => {
      const [victim] = await t.raw
        .selectFrom(t.table)
        .select(['id', 'email'])
        .orderBy('id')
        .limit(1)
        .execute()
      // A flipped tag byte fails authentication.
      const flipped = Buffer.from(victim!.email as Buffer)
      flipped[flipped.length - 1]! ^= 1
      await t.raw.updateTable(t.table).set({ email: flipped }).where('id', '=', victim!.id).execute()
      const v = await t.ops.verify(t.table)
      expect(v.ok).toBe(false)
      expect(v.failed).toBe(1)
      expect(v.failures).toEqual([{ key: victim!.id, problems: ['email: DECRYPT_AUTH_FAILED'] }])
      await t.raw.updateTable(t.table).set({ email: victim!.email }).where('id', '=', victim!.id).execute()
      expect((await t.ops.verify(t.table)).ok).toBe(true)
    })

    it('reencrypt refuses an invalid batch size or worker count with OPS_INVALID', async () => {
      await expect(t.ops.reencrypt(t.table, { batchSize: 0 })).rejects.toMatchObject({ code: 'OPS_INVALID' })
      await expect(t.ops.reencrypt(t.table, { workers: 0 })).rejects.toBeInstanceOf(OperationError)
    })

    it('rewrap moves every key to another KEK, proven, and touches no row', async () => {
      const before = await t.raw.selectFrom(t.table).select(['id', 'email']).orderBy('id').execute()
      const other = localKeyProvider({ id: 'local:other', key: randomBytes(32) })
      const both = fieldEncryptionOps({
        db: t.raw,
        schema: t.schema,
        keyProvider: [t.provider, other],
        keyTable: t.keyTable,
        jobsTable: t.jobsTable,
        metadataTtlMs: t.ttlMs,
      })
      const keys = (await t.ops.status()).tables[0]!.keys.length
      const dry = await both.rewrap({ from: 'local:test', to: 'local:other', dryRun: true })
      expect(dry).toMatchObject({ keys, rewrapped: keys, dryRun: true })
      await expect(both.rewrap({ from: 'local:test', to: 'local:nope' })).rejects.toMatchObject({
        code: 'CONFIG_INVALID',
      })
      const r = await both.rewrap({ from: 'local:test', to: 'local:other' })
      expect(r).toMatchObject({ keys, rewrapped: keys, dryRun: false })
      const s = await both.status()
      expect(s.tables[0]!.keys.every((k) => k.keks.length === 1 && k.keks[0] === 'local:other')).toBe(true)
      // Only the new KEK is needed now; no ciphertext changed.
      const onlyNew = fieldEncryptionOps({
        db: t.raw,
        schema: t.schema,
        keyProvider: other,
        keyTable: t.keyTable,
        jobsTable: t.jobsTable,
      })
      expect((await onlyNew.verify(t.table)).ok).toBe(true)
      expect(await t.raw.selectFrom(t.table).select(['id', 'email']).orderBy('id').execute()).toEqual(before)
    })
  })
})
