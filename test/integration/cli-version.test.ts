import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliBuild } from '../support/cli-runner.js'

/** Runs the built `kfe` (no config: these flags need none). */
async function kfe(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = join(await cliBuild(), 'cli.js')
  return new Promise((done) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...process.env, NO_COLOR: '1' } },
      (error, stdout, stderr) => {
        const code = (error as { code?: unknown } | null)?.code
        done({ code: typeof code === 'number' ? code : 0, stdout, stderr })
      },
    )
  })
}

describe('kfe --version', { timeout: 300_000 }, () => {
  it("--version and -v print the package's version and exit 0 (the build, away from package.json)", async () => {
    const { version } = JSON.parse(readFileSync(join(import.meta.dirname, '../../package.json'), 'utf8')) as {
      version: string
    }
    for (const flag of ['--version', '-v']) {
      const run = await kfe(flag)
      expect(run).toMatchObject({ code: 0, stdout: `${version}\n` })
    }
  })
})
