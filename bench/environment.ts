/** What a result was measured on: runtime, crypto library, package versions, CPU, date. */
import { readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { fileURLToPath } from 'node:url'

/** The packages whose versions a result depends on. */
const PACKAGES = [
  'kysely',
  'pg',
  'mysql2',
  '@electric-sql/pglite',
  'kysely-pglite-dialect',
  'tinybench',
  '@47ng/cloak',
  'ciphersweet-js',
  'sodium-plus',
  'sodium-native',
  '@aws-crypto/client-node',
] as const

export interface Environment {
  readonly date: string
  readonly node: string
  readonly openssl: string
  readonly v8: string
  readonly platform: string
  readonly cpu: string
  readonly cores: number
  readonly memoryGiB: number
  /** This library's version (package.json). */
  readonly library: string
  /** name → version read from node_modules/<name>/package.json, or 'not installed'. */
  readonly packages: Readonly<Record<string, string>>
  /** Database server versions, filled by the database suite (engine → version string). */
  readonly servers: Record<string, string>
}

const root = fileURLToPath(new URL('..', import.meta.url))

function versionOf(dir: string): string {
  try {
    const json = JSON.parse(readFileSync(`${dir}/package.json`, 'utf8')) as { version?: string }
    return json.version ?? 'unknown'
  } catch {
    return 'not installed'
  }
}

/** Reads the environment of this process. */
export function environment(): Environment {
  const cpu = cpus()
  return {
    date: new Date().toISOString(),
    node: process.version,
    openssl: process.versions.openssl ?? 'unknown',
    v8: process.versions.v8,
    platform: `${process.platform} ${process.arch}`,
    cpu: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    library: versionOf(root),
    packages: Object.fromEntries(PACKAGES.map((p) => [p, versionOf(`${root}node_modules/${p}`)])),
    servers: {},
  }
}
