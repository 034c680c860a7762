import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A throw-away SoftHSM2 token for tests.
 *
 * SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`, and a library is initialised once per process
 * at a time. So there is ONE token per test process at a time: every caller of
 * {@link createSoftHsmToken} in a file gets the same token, and the directory is removed when the
 * last caller has called `cleanup()`. A later file of the same worker process (vitest runs files
 * one after another in each worker) gets a new token: its providers closed, the library was
 * finalised (src/keys/providers/pkcs11-module.ts), so the next `C_Initialize` reads the new
 * configuration. Files never share a token, so they run in parallel.
 */

const MODULE_CANDIDATES = [
  process.env.SOFTHSM2_MODULE,
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
  '/opt/homebrew/lib/softhsm/libsofthsm2.so',
].filter((p): p is string => p !== undefined && p !== '')

function findUtil(): string | undefined {
  try {
    execFileSync('softhsm2-util', ['--version'], { stdio: 'ignore' })
    return 'softhsm2-util'
  } catch {
    return undefined
  }
}

/** Path of the SoftHSM2 PKCS#11 library, if installed. */
export const softHsmModule: string | undefined = MODULE_CANDIDATES.find((p) => existsSync(p))
const util = findUtil()

/** Why SoftHSM2 tests cannot run here, or undefined when they can. */
export const softHsmMissing: string | undefined =
  softHsmModule === undefined
    ? 'libsofthsm2.so not found (apt-get install softhsm2, or set SOFTHSM2_MODULE)'
    : util === undefined
      ? 'softhsm2-util not on PATH (apt-get install softhsm2)'
      : undefined

/** True when SoftHSM2 tests can run. Use with `describe.runIf(softHsmAvailable)`. */
export const softHsmAvailable = softHsmMissing === undefined

if (!softHsmAvailable) {
  if (process.env.CI) throw new Error(`SoftHSM2 is required in CI; .ci/run installs it (${softHsmMissing}).`)
  console.warn(`SoftHSM2: NOT RUN (${softHsmMissing})`)
}

/** A SoftHSM2 token initialised for this test process. */
export interface SoftHsmToken {
  /** Path of the PKCS#11 library. */
  readonly module: string
  readonly tokenLabel: string
  /** User PIN. */
  readonly pin: string
  readonly soPin: string
  /** Path of the softhsm2.conf written for this process. */
  readonly conf: string
  /** Removes the token directory once every caller has called it. */
  cleanup(): void
}

let shared: { token: SoftHsmToken; dir: string; users: number } | undefined

/**
 * Creates (once per process) a SoftHSM2 token in a temporary directory and points
 * `SOFTHSM2_CONF` at it. Call it before anything loads the module.
 * @throws Error when SoftHSM2 is not installed (check {@link softHsmAvailable} first), or when
 *   the module was already initialised with another configuration in this process.
 */
export async function createSoftHsmToken(): Promise<SoftHsmToken> {
  if (!softHsmAvailable || softHsmModule === undefined)
    throw new Error(`SoftHSM2 is not available: ${softHsmMissing}`)
  if (shared === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'kfe-softhsm-'))
    const conf = join(dir, 'softhsm2.conf')
    const tokens = join(dir, 'tokens')
    mkdirSync(tokens, { recursive: true })
    writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`)
    // Must be set before C_Initialize: SoftHSM2 reads it there, once.
    process.env.SOFTHSM2_CONF = conf
    const tokenLabel = `kfe-${process.pid}-${randomBytes(3).toString('hex')}`
    const pin = `user-${randomBytes(4).toString('hex')}`
    const soPin = `so-${randomBytes(4).toString('hex')}`
    execFileSync(
      util as string,
      ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', soPin],
      { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: 'ignore' },
    )
    const current = { dir, users: 0, token: undefined as unknown as SoftHsmToken }
    current.token = {
      module: softHsmModule,
      tokenLabel,
      pin,
      soPin,
      conf,
      cleanup: () => {
        current.users -= 1
        if (current.users > 0) return
        if (shared === current) shared = undefined
        rmSync(dir, { recursive: true, force: true })
      },
    }
    shared = current
  }
  shared.users += 1
  return shared.token
}
