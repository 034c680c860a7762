/**
 * The `kfe` bin built once per run from `src/`, and running it as a child process (plain, or as a
 * `--processes` worker). cli-runner.ts builds test databases and configs on it.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { oncePerRun } from './run-once.js'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** Result of one `kfe` run as a child process. */
export interface CliRun {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** The last stdout line parsed as JSON (the `--json` result). */
  readonly json: unknown
}

/**
 * The library and the `kfe` bin built from `src/` (tsup, as `npm run build` bundles them; no
 * declarations), once per `npm test` run (see {@link oncePerRun}) and shared by every file that runs
 * `kfe`: each child then starts as a user's `npx kfe` does, on plain JavaScript, instead of compiling
 * `src/` through a TypeScript loader at every start (~5× the CPU). The chunks are shared, so the
 * config's imports and the bin are one copy of the library.
 */
export function cliBuild(): Promise<string> {
  return oncePerRun('kfe-dist', async (outDir) => {
    const { build } = await import('tsup')
    await build({
      entry: { index: 'src/index.ts', ops: 'src/ops.ts', cli: 'src/cli/bin.ts' },
      format: ['esm'],
      outDir,
      splitting: true,
      dts: false,
      clean: true,
      sourcemap: false,
      target: 'node20',
      silent: true,
      config: false,
      skipNodeModulesBundle: true,
    })
  })
}

/** Runs `kfe` (the CLI's build) with a config file, as a child process. */
export interface KfeRunner {
  /** Runs `kfe <args> --config <file>` to completion. */
  kfe(...args: string[]): Promise<CliRun>
  /** Starts `kfe <args> --config <file>` and returns the child. */
  spawnKfe(...args: string[]): ChildProcess
  /**
   * Runs `kfe <args> --config <file>` to completion as a worker process of this one, as
   * `--processes` starts them (src/cli/worker-process.ts): marked so, with an IPC channel. With
   * `parentGone`, the channel is closed at once, as when the parent ended or stopped it before
   * the worker began.
   */
  kfeWorker(options: { readonly parentGone?: boolean }, ...args: string[]): Promise<CliRun>
}

/** A {@link KfeRunner} on `configPath`, the children's environment extended with `env`. */
export async function kfeRunner(configPath: string, env: NodeJS.ProcessEnv): Promise<KfeRunner> {
  const dist = await cliBuild()
  const childEnv = { ...process.env, NO_COLOR: '1', ...env }
  const argv = (args: string[]) => [join(dist, 'cli.js'), ...args, '--config', configPath]
  return {
    kfe: (...args) =>
      new Promise((done) => {
        execFile(
          process.execPath,
          argv(args),
          { env: childEnv, cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
          (error, stdout, stderr) => {
            const e = error as (Error & { code?: unknown; signal?: NodeJS.Signals }) | null
            const lines = stdout.trim().split('\n')
            let json: unknown
            try {
              json = JSON.parse(lines.at(-1) ?? '')
            } catch {
              json = undefined
            }
            done({
              code: e === null ? 0 : typeof e.code === 'number' ? e.code : null,
              signal: e?.signal ?? null,
              stdout,
              stderr,
              json,
            })
          },
        )
      }),
    spawnKfe: (...args) =>
      spawn(process.execPath, argv(args), { env: childEnv, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }),
    kfeWorker: (options, ...args) =>
      new Promise((done) => {
        const child = spawn(process.execPath, argv(args), {
          env: { ...childEnv, KFE_WORKER_OF: String(process.pid) },
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        })
        if (options.parentGone === true) child.disconnect()
        let stdout = ''
        let stderr = ''
        child.stdout?.on('data', (c: Buffer) => {
          stdout += c.toString()
        })
        child.stderr?.on('data', (c: Buffer) => {
          stderr += c.toString()
        })
        // On 'exit' and the end of its output: 'close' never comes for a child whose channel was
        // closed before it had started (Node.js 20). Listened to from the start: the streams may
        // end before 'exit'.
        const ended = (stream: NodeJS.ReadableStream | null) =>
          new Promise<void>((r) => (stream === null ? r() : stream.once('end', r).once('close', r)))
        const output = Promise.all([ended(child.stdout), ended(child.stderr)])
        child.once('exit', (code, signal) => {
          void output.then(() => {
            let json: unknown
            try {
              json = JSON.parse(stdout.trim().split('\n').at(-1) ?? '')
            } catch {
              json = undefined
            }
            done({ code, signal, stdout, stderr, json })
          })
        })
      }),
  }
}
