/**
 * The process variants of `npm run bench:ops`: one job shared by N processes (one worker each) on
 * the machine's cores, as `kfe reencrypt --processes N` runs it, against the floor run the same
 * way. The processes (bench/ops-process-child.ts) are started once, before any clock runs: a
 * timed job starts at their first message (a `kfe` process's own start, ~0.5 s, is not in it).
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { FloorBatch, FloorSecrets } from './ops-floor.js'

/** What a worker process is started with (as JSON, its one argument). */
export interface ChildInit {
  readonly family: 'postgres' | 'mysql'
  readonly ours: string
  readonly floorTable: string
  readonly keyTable: string
  readonly jobsTable: string
  /** The KEK of ours' keys, hex. */
  readonly kek: string
  readonly floorSecrets: FloorSecrets
}

/** A job share: ours (`join`: only join a planned job, as `--processes` workers do), the floor's batches, or the end. */
export type ChildTask =
  | { readonly kind: 'ours'; readonly batchSize: number; readonly join: boolean }
  | { readonly kind: 'floor'; readonly batches: readonly FloorBatch[]; readonly from: number }
  | { readonly kind: 'close' }

export type ChildReply =
  | { readonly kind: 'ready' }
  | { readonly kind: 'planned' }
  | { readonly kind: 'done'; readonly written: number; readonly failed: number }
  | { readonly kind: 'error'; readonly message: string }

/** Started worker processes of one engine. */
export interface ProcessPool {
  /**
   * Ours on `n` processes: the first plans the job; once it has, the others join it (as
   * `--processes` starts them). @returns rows written, summed
   */
  ours(n: number, batchSize: number): Promise<number>
  /** The floor's `batches` on `n` processes, batch i to process i mod n. @returns rows written */
  floor(n: number, batches: readonly FloorBatch[], from: number): Promise<number>
  close(): Promise<void>
}

/** Starts `size` worker processes on the tables of `init`; each has opened them when this resolves. */
export async function startProcessPool(init: ChildInit, size: number): Promise<ProcessPool> {
  const entry = fileURLToPath(new URL('./ops-process-child.ts', import.meta.url))
  const children: ChildProcess[] = []
  const next = (child: ChildProcess, kinds: readonly ChildReply['kind'][]) =>
    new Promise<ChildReply>((resolve, reject) => {
      const on = (m: ChildReply) => {
        if (m.kind === 'error') {
          child.off('message', on)
          reject(new Error(`bench worker process: ${m.message}`))
        } else if (kinds.includes(m.kind)) {
          child.off('message', on)
          resolve(m)
        }
      }
      child.on('message', on)
    })
  for (let i = 0; i < size; i++) {
    const child = fork(entry, [JSON.stringify(init)], { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
    children.push(child)
  }
  await Promise.all(children.map((c) => next(c, ['ready'])))
  const written = (m: ChildReply) => (m.kind === 'done' ? m.written : 0)
  return {
    async ours(n, batchSize) {
      const [first, ...rest] = children.slice(0, n) as [ChildProcess, ...ChildProcess[]]
      const planned = next(first, ['planned'])
      const firstDone = next(first, ['done'])
      // Awaited below; an error rejects both, and `planned` reports it first.
      firstDone.catch(() => undefined)
      first.send({ kind: 'ours', batchSize, join: false } satisfies ChildTask)
      await planned
      const others = rest.map((c) => {
        const done = next(c, ['done'])
        c.send({ kind: 'ours', batchSize, join: true } satisfies ChildTask)
        return done
      })
      const all = await Promise.all([firstDone, ...others])
      return all.reduce((n, m) => n + written(m), 0)
    },
    async floor(n, batches, from) {
      const all = await Promise.all(
        children.slice(0, n).map((c, i) => {
          const done = next(c, ['done'])
          const share = batches.filter((_, b) => b % n === i)
          c.send({ kind: 'floor', batches: share, from } satisfies ChildTask)
          return done
        }),
      )
      return all.reduce((sum, m) => sum + written(m), 0)
    },
    async close() {
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve) => {
              c.once('exit', () => resolve())
              c.send({ kind: 'close' } satisfies ChildTask)
              // One that does not leave once it has closed its pools (a handle left open) is stopped.
              setTimeout(() => c.kill(), 10_000).unref()
            }),
        ),
      )
    },
  }
}
