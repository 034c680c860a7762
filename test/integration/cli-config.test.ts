import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { PGlite } from '@electric-sql/pglite'
import { Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openOps } from '../../src/cli/load-config.js'
import { ConfigError, encrypted, encryptedSchema, localKeyProvider } from '../../src/index.js'
import { opsSchema } from '../support/ops-schema.js'
import { newPGlite } from '../support/pglite.js'

/**
 * How `kfe` finds and loads its config (c12, as kysely-ctl loads `kysely.config.ts`): a
 * `kfe.config.mjs` in the working directory, a file named by `--config`, a Kysely instance instead
 * of a dialect, and the refusals. In this process, on PGlite: the configs hand over objects the test
 * made (through `globalThis`), so what is tested is the loading, not a second copy of the library.
 */

const DIR = join(import.meta.dirname, '../.tmp-cli-config', `${process.pid}`)
const HANDOFF = '__kfeConfigTest'

describe('kfe config loading', () => {
  const schema = opsSchema('cfg_users', { encrypted, encryptedSchema })
  const kek = randomBytes(32)
  // One provider per opened config: closing the operations closes their providers.
  const keyProvider = () => localKeyProvider({ id: 'local:cfg', key: kek })
  let pglite: PGlite
  // biome-ignore lint/suspicious/noExplicitAny: the table is made at run time.
  let kysely: Kysely<any>
  // Configs' own Kysely instances that kfe destroys, each on a PGlite of its own (destroying a
  // Kysely closes its PGlite): one that opens, one that is refused.
  // biome-ignore lint/suspicious/noExplicitAny: no tables.
  const own: Record<'opens' | 'refused', Kysely<any>> = {} as never

  beforeAll(async () => {
    pglite = newPGlite()
    kysely = new Kysely({ dialect: new PGliteDialect(pglite) })
    await sql`create table cfg_users (id serial primary key, name text, email bytea, email_bidx bytea unique, ssn bytea, ssn_bidx bytea)`.execute(
      kysely,
    )
    for (const name of ['opens', 'refused'] as const) {
      own[name] = new Kysely({ dialect: new PGliteDialect(newPGlite()) })
      await sql`select 1`.execute(own[name])
    }
    ;(globalThis as Record<string, unknown>)[HANDOFF] = {
      schema,
      keyProvider,
      own,
      // A Kysely on the shared PGlite that has not connected: destroying it closes nothing.
      kysely: () => new Kysely({ dialect: new PGliteDialect(pglite) }),
      dialect: new PGliteDialect(pglite),
    }
    for (const [dir, file, body] of [
      [
        'cwd',
        'kfe.config.mjs',
        `const h = globalThis.${HANDOFF}\nexport default { kysely: h.own.opens, schema: h.schema, keyProvider: h.keyProvider() }\n`,
      ],
      [
        'named',
        'ops.kfe.js',
        `const h = globalThis.${HANDOFF}\nexport default { dialect: h.dialect, schema: h.schema, keyProvider: [h.keyProvider()] }\n`,
      ],
      [
        'noschema',
        'kfe.config.mjs',
        `export default { dialect: globalThis.${HANDOFF}.dialect, keyProvider: globalThis.${HANDOFF}.keyProvider() }\n`,
      ],
      ['empty', 'README', 'no config here\n'],
      // Its own Kysely, and a key provider of the wrong shape.
      [
        'refusedkysely',
        'kfe.config.mjs',
        `const h = globalThis.${HANDOFF}\nexport default { kysely: h.own.refused, schema: h.schema, keyProvider: 'local:cfg' }\n`,
      ],
      // A config without a default export, and one that does not parse (its line quoted nowhere).
      ['nodefault', 'kfe.config.mjs', `export const config = { schema: {} }\n`],
      ['broken', 'kfe.config.mjs', `export default { keyProvider: 'KEK-LITERAL-7741' \n`],
      // Shapes a config file in JavaScript can get wrong without a compiler to say so.
      [
        'badschema',
        'kfe.config.mjs',
        `export default { dialect: globalThis.${HANDOFF}.dialect, schema: 'cfg_users', keyProvider: globalThis.${HANDOFF}.keyProvider() }\n`,
      ],
      [
        'baddialect',
        'kfe.config.mjs',
        `export default { dialect: 'postgres', schema: globalThis.${HANDOFF}.schema, keyProvider: globalThis.${HANDOFF}.keyProvider() }\n`,
      ],
      [
        'badprovider',
        'kfe.config.mjs',
        `export default { kysely: globalThis.${HANDOFF}.kysely(), schema: globalThis.${HANDOFF}.schema, keyProvider: 'local:cfg' }\n`,
      ],
      // c12's per-environment overrides, and a misspelt option beside them.
      [
        'envkeys',
        'kfe.config.mjs',
        `const h = globalThis.${HANDOFF}\nexport default { kysely: h.kysely(), schema: h.schema, keyProvider: h.keyProvider(), $production: { metadataTtlMs: 60000 }, $development: { metadataTtlMs: 1000 } }\n`,
      ],
      [
        'typo',
        'kfe.config.mjs',
        `const h = globalThis.${HANDOFF}\nexport default { kysely: h.kysely(), schema: h.schema, keyProvider: h.keyProvider(), jobTable: 'x_jobs' }\n`,
      ],
      // Two configs of one name: --config names the .ts; the .js (say, a stale build) must not load.
      ['twins', 'kfe.config.ts', `throw new Error('loaded the .ts')\nexport default {}\n`],
      ['twins', 'kfe.config.js', `throw new Error('loaded the .js')\nexport default {}\n`],
    ] as const) {
      mkdirSync(join(DIR, dir), { recursive: true })
      writeFileSync(join(DIR, dir, file), body)
    }
  })
  afterAll(async () => {
    // The last test's kfe closed the PGlite instance with its own Kysely.
    await kysely?.destroy().catch(() => undefined)
    for (const k of Object.values(own)) await k.destroy().catch(() => undefined)
    delete (globalThis as Record<string, unknown>)[HANDOFF]
    rmSync(DIR, { recursive: true, force: true })
  })

  it("finds kfe.config.mjs in the working directory; a config's Kysely instance is used as it is, and destroyed when kfe closes", async () => {
    const opened = await openOps(undefined, join(DIR, 'cwd'))
    expect(opened.config.kysely).toBe(own.opens)
    const init = await opened.ops.init()
    expect(init.created).toBe(2)
    await opened.close()
    // Its pool would keep kfe's process alive after the command.
    await expect(sql`select 1`.execute(own.opens)).rejects.toThrow('driver has already been destroyed')
  })

  it("destroys the config's own Kysely when it refuses the config", async () => {
    const e = await openOps(undefined, join(DIR, 'refusedkysely')).catch((x: unknown) => x)
    expect(e).toMatchObject({ code: 'CONFIG_INVALID' })
    await expect(sql`select 1`.execute(own.refused)).rejects.toThrow('driver has already been destroyed')
  })

  it("takes c12's $env overrides (not passed on as options) and refuses a misspelt option, naming the nearest", async () => {
    const opened = await openOps(undefined, join(DIR, 'envkeys'))
    await opened.close()
    const typo = await openOps(undefined, join(DIR, 'typo')).catch((e: unknown) => e)
    expect(typo).toMatchObject({ code: 'CONFIG_INVALID' })
    expect((typo as Error).message).toContain('unknown option jobTable (did you mean jobsTable?)')
  })

  it('refuses a directory without a config, and a config without a schema (CONFIG_INVALID)', async () => {
    const none = await openOps(undefined, join(DIR, 'empty')).catch((e: unknown) => e)
    expect(none).toBeInstanceOf(ConfigError)
    expect((none as ConfigError).code).toBe('CONFIG_INVALID')
    expect((none as Error).message).toContain('No kfe config found')
    const missing = await openOps(undefined, join(DIR, 'noschema')).catch((e: unknown) => e)
    expect((missing as ConfigError).code).toBe('CONFIG_INVALID')
    expect((missing as Error).message).toContain('no `schema`')
    const nodefault = await openOps(undefined, join(DIR, 'nodefault')).catch((e: unknown) => e)
    expect((nodefault as ConfigError).code).toBe('CONFIG_INVALID')
    expect((nodefault as Error).message).toMatch(/kfe\.config\.mjs has no default export/)
    const broken = await openOps(undefined, join(DIR, 'broken')).catch((e: unknown) => e)
    expect(broken).toBeInstanceOf(ConfigError)
    expect((broken as ConfigError).code).toBe('CONFIG_INVALID')
    expect((broken as Error).message).toContain('could not be loaded')
    // Where: the file, line and column of the syntax error, and no line of the file.
    expect((broken as Error).message).toMatch(/\(at \S*broken\/kfe\.config\.mjs:\d+:\d+\)$/)
    expect(JSON.stringify(broken) + String((broken as Error).stack)).not.toContain('KEK-LITERAL-7741')
  })
  it('refuses a config whose schema, dialect or key provider has the wrong shape (CONFIG_INVALID, not a TypeError)', async () => {
    for (const [dir, says] of [
      ['badschema', 'option schema must be the result of encryptedSchema'],
      ['baddialect', '`dialect` must be a Kysely dialect'],
      ['badprovider', 'option keyProvider must be a key provider'],
    ] as const) {
      const e = await openOps(undefined, join(DIR, dir)).catch((x: unknown) => x)
      expect(e, dir).toBeInstanceOf(ConfigError)
      expect((e as ConfigError).code).toBe('CONFIG_INVALID')
      expect((e as Error).message).toContain(says)
    }
  })

  it('--config loads exactly the file it names (not a sibling of another extension), and refuses one that does not exist', async () => {
    const named = await openOps(join(DIR, 'twins', 'kfe.config.ts')).catch((e: unknown) => e)
    expect(String((named as Error).message)).toContain('loaded the .ts')
    const absent = await openOps(join(DIR, 'twins', 'kfe.config.mjs')).catch((e: unknown) => e)
    expect(absent).toBeInstanceOf(ConfigError)
    expect((absent as ConfigError).code).toBe('CONFIG_INVALID')
    expect((absent as Error).message).toContain('does not exist')
  })

  it('without --config, takes the first documented name in the working directory (the .ts before a stale .js), and no other file', async () => {
    const twins = await openOps(undefined, join(DIR, 'twins')).catch((e: unknown) => e)
    expect(String((twins as Error).message)).toContain('loaded the .ts')
    expect(String((twins as Error).message)).toContain(join(DIR, 'twins', 'kfe.config.ts'))
    // c12 alone would also read .config/kfe.config.mjs, or a kfe.config.json: not documented names.
    mkdirSync(join(DIR, 'undocumented', '.config'), { recursive: true })
    writeFileSync(
      join(DIR, 'undocumented', '.config', 'kfe.config.mjs'),
      `throw new Error('loaded .config')\n`,
    )
    writeFileSync(join(DIR, 'undocumented', 'kfe.config.json'), '{"schema": {}}\n')
    const undocumented = await openOps(undefined, join(DIR, 'undocumented')).catch((e: unknown) => e)
    expect(undocumented).toMatchObject({ code: 'CONFIG_INVALID' })
    expect(String((undocumented as Error).message)).toContain('No kfe config found')
  })
  it('--config names any file (here a .js beside others); its dialect gets a Kysely kfe opens and closes (last: it closes the shared PGlite)', async () => {
    const opened = await openOps(join(DIR, 'named', 'ops.kfe.js'))
    expect((await opened.ops.init()).created).toBe(2)
    const status = await opened.ops.status({ exact: true })
    expect(status.tables.map((t) => [t.table, t.keys.length])).toEqual([['cfg_users', 2]])
    await opened.close()
  })
})
