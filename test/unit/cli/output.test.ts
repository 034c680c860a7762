import { PassThrough } from 'node:stream'
import { describe, expect, it, vi } from 'vitest'
import { createOutput } from '../../../src/cli/output.js'
import type { Progress } from '../../../src/ops/progress.js'

/** A stream that says it is (or is not) a terminal, and everything written to it. */
function terminal(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY, columns: 120 })
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  return {
    stream: stream as unknown as NodeJS.WriteStream,
    text: () => Buffer.concat(chunks).toString('utf8'),
  }
}

const step = (done: number): Progress => ({
  op: 'reencrypt',
  table: 'users',
  phase: 'batch',
  done,
  total: 100,
  unit: 'rows',
})

/** Lets the stream deliver what was written. */
const flushed = () => new Promise((r) => setImmediate(r))

describe('kfe progress output', () => {
  it('on a TTY: a progress bar (cli-progress) with counts, rate and ETA; no JSON', async () => {
    const { stream, text } = terminal(true)
    const out = createOutput(false, stream)
    out.progress(step(0))
    await new Promise((r) => setTimeout(r, 120)) // past cli-progress's redraw throttle
    out.progress(step(50))
    out.close()
    await flushed()
    const shown = text()
    expect(shown).toContain('reencrypt users [')
    expect(shown).toMatch(/50% \| 50\/100 rows \| [\d.]+\/s \| ETA \S+/)
    expect(shown).not.toContain('{"type":"progress"')
  })

  it('on a TTY, a wait (a step in ms) draws no bar: it is announced as one consola line', async () => {
    const { stream, text } = terminal(true)
    const out = createOutput(false, stream)
    out.progress({
      op: 'rotate',
      table: 'users',
      phase: 'waiting for metadata TTL',
      done: 0,
      total: 30_000,
      unit: 'ms',
    })
    out.close()
    await flushed()
    expect(text()).toBe('')
  })

  it('not a TTY, or --json: one JSON line per step, with rate and ETA', async () => {
    for (const [tty, json] of [
      [false, false],
      [true, true],
    ] as const) {
      const { stream, text } = terminal(tty)
      const out = createOutput(json, stream)
      out.progress(step(0))
      out.progress(step(40))
      out.close()
      await flushed()
      const lines = text()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(lines).toHaveLength(2)
      expect(lines[1]).toMatchObject({
        type: 'progress',
        op: 'reencrypt',
        phase: 'batch',
        done: 40,
        total: 100,
      })
      expect(typeof lines[1]!.ratePerSecond).toBe('number')
      expect(lines[1]).toHaveProperty('etaMs')
    }
  })
})

describe('kfe error output', () => {
  /** The `--json` error document `createOutput(true).error(error)` prints on stdout. */
  function printed(error: unknown): { code: string; driverCode?: string } {
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
    try {
      createOutput(true).error(error)
      const line = String(write.mock.calls[0]?.[0])
      return (JSON.parse(line) as { error: { code: string; driverCode?: string } }).error
    } finally {
      write.mockRestore()
    }
  }

  it("DATABASE_ERROR only for the database's errors: a file system error or an abort is not one", () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), {
      code: 'ECONNREFUSED',
      syscall: 'connect',
      address: '127.0.0.1',
    })
    expect(printed(refused)).toMatchObject({ code: 'DATABASE_ERROR', driverCode: 'ECONNREFUSED' })
    expect(printed(Object.assign(new Error('role "x" does not exist'), { code: '28000' }))).toMatchObject({
      code: 'DATABASE_ERROR',
      driverCode: '28000',
    })
    const exists = Object.assign(new Error("EEXIST: file already exists, mkdir '/tmp/m'"), {
      code: 'EEXIST',
      syscall: 'mkdir',
      path: '/tmp/m',
    })
    expect(printed(exists)).toEqual({ code: 'ERROR', message: exists.message })
    const aborted = Object.assign(new Error('The operation was aborted'), {
      name: 'AbortError',
      code: 'ABORT_ERR',
    })
    expect(printed(aborted)).toMatchObject({ code: 'ERROR' })
  })

  it("a library error of another copy of the library (a kfe.config.cjs's CommonJS build) keeps its code, not DATABASE_ERROR", async () => {
    // A second instance of src/errors.ts: other classes, as the CommonJS build's are to the ESM one's.
    const path = '../../../src/errors.js?another-copy'
    const copy = (await import(/* @vite-ignore */ path)) as typeof import('../../../src/errors.js')
    const error = new copy.KeyProviderError('PROVIDER_UNAVAILABLE', 'KMS is down.', {
      providerId: 'aws-kms:k',
    })
    expect(error instanceof (await import('../../../src/errors.js')).FieldEncryptionError).toBe(false)
    expect(printed(error)).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', providerId: 'aws-kms:k' })
  })
})
