import { existsSync } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { loadConfig } from 'c12'
import { Kysely } from 'kysely'
import { ConfigError } from '../errors.js'
import { type FieldEncryptionOps, fieldEncryptionOps, type KfeConfig } from '../ops/field-encryption-ops.js'

/** The operations opened from a `kfe.config.*`, and how to close what the CLI opened. */
export interface OpenedOps {
  readonly ops: FieldEncryptionOps
  readonly config: KfeConfig
  /** The database the operations run on (the config's Kysely, or one on its dialect). */
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  readonly db: Kysely<any>
  /** Closes the operations and destroys `db`, the config's own Kysely as well. */
  close(): Promise<void>
}

/** The config files looked for in the working directory without `--config`, in this order. */
const CONFIG_NAMES = ['kfe.config.ts', 'kfe.config.mts', 'kfe.config.mjs', 'kfe.config.js', 'kfe.config.cjs']

/**
 * Loads `kfe.config.ts|mts|mjs|js|cjs` from the working directory (the first of them, in that
 * order), or the file `--config` names, with c12 (as kysely-ctl loads `kysely.config.ts`), and
 * opens the operations on it.
 * @throws ConfigError `CONFIG_INVALID` when no config is found or it lacks a dialect, schema or key provider
 */
export async function openOps(configPath: string | undefined, cwd = process.cwd()): Promise<OpenedOps> {
  // Without --config, the first documented name that exists, and nothing else: c12's own search
  // puts `.js` before `.ts` (a stale build beside the source won) and also reads `.config/` and
  // yaml, json or toml files the docs do not name.
  const found = CONFIG_NAMES.map((name) => resolve(cwd, name)).find((path) => existsSync(path))
  if (configPath === undefined && found === undefined)
    throw new ConfigError(
      'CONFIG_INVALID',
      `No kfe config found (looked for kfe.config.{ts,mts,mjs,js,cjs} in ${cwd}).`,
    )
  const file = configPath === undefined ? found : resolve(cwd, configPath)
  // The file named, and no other: c12 given a name without its extension picks by its own order
  // of extensions (a stale `kfe.config.js` beside the `kfe.config.ts` named), and one that does
  // not exist falls back to a sibling.
  if (file !== undefined && !existsSync(file))
    throw new ConfigError(
      'CONFIG_INVALID',
      `No kfe config at ${file} (--config names a file that does not exist).`,
    )
  const { config, configFile } = await loadConfig<KfeConfig>({
    name: 'kfe',
    cwd: dirname(file!),
    configFile: basename(file!),
    rcFile: false,
    globalRc: false,
    packageJson: false,
    dotenv: false,
    // Its `$production` / `$env` overrides merged, and not passed on as options.
    omit$Keys: true,
  }).catch((error: unknown) => {
    // A syntax error or a throw while the file runs. Its first line, and the line that says where
    // (`path:line:column`, a syntax error's), and not as the cause: a code frame may quote a line
    // of the file, which may hold a development KEK.
    const lines = String(error instanceof Error ? error.message : error).split('\n')
    const at = lines.slice(1).find((line) => /^\s*\S+:\d+:\d+\s*$/.test(line))
    throw new ConfigError(
      'CONFIG_INVALID',
      `The kfe config ${file} could not be loaded: ${lines[0]?.trim()}${at === undefined ? '' : ` (at ${at.trim()})`}`,
    )
  })
  try {
    return opened(config, configFile, file)
  } catch (error) {
    // Nobody else holds the config's own Kysely (`kysely:`), and its pool would keep this process
    // alive after the error.
    await destroyKysely(config)
    throw error
  }
}

/** Destroys the config's own Kysely (`kysely:`), if it has one; a failure to is not reported. */
async function destroyKysely(config: KfeConfig | null | undefined): Promise<void> {
  const kysely = config?.kysely as { destroy?: unknown } | undefined
  if (typeof kysely?.destroy === 'function')
    await (kysely as Kysely<unknown>).destroy().catch(() => undefined)
}

/** The checks of a loaded config, and the operations on it. */
function opened(
  config: KfeConfig | null | undefined,
  configFile: string | undefined,
  file: string | undefined,
): OpenedOps {
  if (
    config === null ||
    config === undefined ||
    (config.schema === undefined && config.keyProvider === undefined)
  ) {
    const loaded = configFile !== undefined && existsSync(configFile) ? configFile : undefined
    throw new ConfigError(
      'CONFIG_INVALID',
      loaded === undefined
        ? `No kfe config found (looked for ${file}).`
        : `${loaded} has no default export with a schema and a key provider: \`export default defineConfig({ dialect, schema, keyProvider })\`.`,
    )
  }
  if (config.schema === undefined) throw new ConfigError('CONFIG_INVALID', `${configFile}: no \`schema\`.`)
  if (config.keyProvider === undefined)
    throw new ConfigError('CONFIG_INVALID', `${configFile}: no \`keyProvider\`.`)
  if (config.kysely === undefined && config.dialect === undefined)
    throw new ConfigError('CONFIG_INVALID', `${configFile}: needs \`dialect\` or \`kysely\`.`)
  if (
    config.kysely === undefined &&
    typeof (config.dialect as { createDriver?: unknown }).createDriver !== 'function'
  )
    throw new ConfigError(
      'CONFIG_INVALID',
      `${configFile}: \`dialect\` must be a Kysely dialect (new PostgresDialect(…), …).`,
    )
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  const db: Kysely<any> = config.kysely ?? new Kysely({ dialect: config.dialect! })
  // A Kysely made here on the config's dialect has not connected if this throws: nothing to close.
  const ops = fieldEncryptionOps({ ...config, db })
  return {
    ops,
    config,
    db,
    // The config's own Kysely too: the CLI's process ends with its command, and an open pool
    // would keep it (and each worker of --processes) alive until the forced exit 5 s later.
    async close() {
      try {
        await ops.close()
      } finally {
        await db.destroy()
      }
    },
  }
}
