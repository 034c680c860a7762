import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { beforeAll } from 'vitest'
import { oncePerRun } from './run-once.js'

const TEMPLATE = 'pgdata.tar.gz'

/** The template's bytes, once this file's hook below has loaded them. */
let template: Buffer | undefined

/**
 * A new PGlite (in memory, or in `dataDir`). Its database starts from a copy of one freshly
 * initialised data directory, made once per `npm test` run (PGlite's own `dumpDataDir` /
 * `loadDataDir`): `initdb` is most of a PGlite's start (~7 s of CPU of ~8.5 here), and the test
 * files start dozens of them. The copy is the same bytes `initdb` of this PGlite writes, so each
 * database is as new as `new PGlite()`'s.
 *
 * A directory that already holds a database is opened as it is. Before this file's `beforeAll`
 * hooks (at collection), a PGlite is started the plain way.
 */
export function newPGlite(dataDir?: string): PGlite {
  const empty = dataDir === undefined || !existsSync(join(dataDir, 'PG_VERSION'))
  if (template === undefined || !empty) return dataDir === undefined ? new PGlite() : new PGlite(dataDir)
  return new PGlite({ ...(dataDir === undefined ? {} : { dataDir }), loadDataDir: new Blob([template]) })
}

/**
 * The path of this run's template (see {@link newPGlite}): a gzip tarball for PGlite's
 * `loadDataDir`, made by the first file that asks. For a child process that starts a PGlite.
 */
export async function pgliteTemplate(): Promise<string> {
  const dir = await oncePerRun('pglite-template', async (out) => {
    const db = new PGlite()
    try {
      await db.waitReady
      const dump = await db.dumpDataDir('gzip')
      writeFileSync(join(out, TEMPLATE), Buffer.from(await dump.arrayBuffer()))
    } finally {
      await db.close()
    }
  })
  return join(dir, TEMPLATE)
}

// Registered as this module is imported, i.e. while the first test file of a worker process that
// uses PGlite is collected: the template is loaded (made, by the first file that asks) before the
// file's own hooks run, and stays loaded for the worker's later files (the module is not loaded again).
beforeAll(async () => {
  template = readFileSync(await pgliteTemplate())
}, 600_000)
