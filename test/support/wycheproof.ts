import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * Where the Wycheproof vectors live: `WYCHEPROOF_DIR`, else `../shared/vectors/wycheproof` beside
 * the clone. They are not copied into this repository.
 */
export const wycheproofDir =
  process.env.WYCHEPROOF_DIR ?? join(repoRoot, '..', 'shared', 'vectors', 'wycheproof')

/** True when the vector files are present. In CI they are required (see `.ci/run`). */
export const wycheproofAvailable = existsSync(join(wycheproofDir, 'aes_gcm_test.json'))

if (!wycheproofAvailable) {
  if (process.env.CI) {
    throw new Error(`Wycheproof vectors are required in CI but were not found in ${wycheproofDir}`)
  }
  console.warn(
    `Wycheproof vectors not found in ${wycheproofDir} (set WYCHEPROOF_DIR): the Wycheproof tests did NOT run.`,
  )
}

/** Reads one Wycheproof file, e.g. `aes_gcm_test.json`. */
export function loadWycheproof<T = WycheproofFile>(file: string): T {
  return JSON.parse(readFileSync(join(wycheproofDir, file), 'utf8')) as T
}

export interface WycheproofFile {
  readonly algorithm: string
  readonly numberOfTests: number
  readonly testGroups: ReadonlyArray<{
    readonly [k: string]: unknown
    readonly tests: ReadonlyArray<{
      readonly tcId: number
      readonly result: 'valid' | 'invalid' | 'acceptable'
      readonly flags: string[]
      readonly [k: string]: unknown
    }>
  }>
}
