import { mkdirSync, rmSync } from 'node:fs'
import { dirname, join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'
import { type NotRunBackend, notRunBox, recordNotRun } from './not-run-reporter.js'

/**
 * Resolves the databases the integration suite runs against, once per `npm test`:
 * `PG_URL` / `MYSQL_URL` first; else, where a Docker engine answers, testcontainers; else the
 * backend is reported as NOT RUN (never as passed): the teardown prints what did not run, and why,
 * as the last thing of the output (`not-run-reporter.ts` counts the skipped tests). Under `CI=true` both URLs are required and
 * must answer, so a missing backend fails the run.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string | null
    mysqlUrl: string | null
    notRun: string[]
    /** This run's directory for what the test files make once and share (see run-once.ts). */
    runDir: string
  }
}

/** Inside the repository: the CLI build there resolves its dependencies from node_modules. */
const RUN_DIR = join(
  resolvePath(dirname(fileURLToPath(import.meta.url)), '../..'),
  'test/.tmp-run',
  String(process.pid),
)

const stops: Array<() => Promise<unknown>> = []

async function checkPg(url: string): Promise<void> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  await client.query('select 1')
  await client.end()
}

async function checkMysql(url: string): Promise<void> {
  const mysql = await import('mysql2/promise')
  const conn = await mysql.createConnection(url)
  await conn.query('select 1')
  await conn.end()
}

async function dockerAvailable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers')
    await getContainerRuntimeClient()
    return true
  } catch {
    return false
  }
}

async function resolve(
  name: string,
  envVar: string,
  check: (url: string) => Promise<void>,
  container: () => Promise<string>,
  notRun: NotRunBackend[],
  missing: Omit<NotRunBackend, 'label' | 'reason'>,
): Promise<string | null> {
  const fromEnv = process.env[envVar]
  if (fromEnv) {
    try {
      await check(fromEnv)
    } catch (error) {
      throw new Error(`${name}: ${envVar} is set but the server does not answer: ${(error as Error).message}`)
    }
    return fromEnv
  }
  if (process.env.CI)
    throw new Error(`${name}: ${envVar} is required in CI (see .ci/run); refusing to skip it.`)
  if (await dockerAvailable()) {
    const url = await container()
    await check(url)
    return url
  }
  notRun.push({ label: name, reason: `no ${envVar} and no Docker engine for testcontainers`, ...missing })
  return null
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const notRun: NotRunBackend[] = []
  const pgUrl = await resolve(
    'PostgreSQL',
    'PG_URL',
    checkPg,
    async () => {
      const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
      const c = await new PostgreSqlContainer('postgres:16-alpine').start()
      stops.push(() => c.stop())
      return c.getConnectionUri()
    },
    notRun,
    {
      suiteTag: "'postgres'",
      fix: 'PG_URL=postgres://postgres@127.0.0.1:5432/<an empty database> npm test',
    },
  )
  const mysqlUrl = await resolve(
    'MariaDB/MySQL',
    'MYSQL_URL',
    checkMysql,
    async () => {
      const { MariaDbContainer } = await import('@testcontainers/mariadb')
      const c = await new MariaDbContainer('mariadb:11').start()
      stops.push(() => c.stop())
      return c.getConnectionUri()
    },
    notRun,
    { suiteTag: "'mysql'", fix: 'MYSQL_URL=mysql://root@127.0.0.1:3306/<an empty database> npm test' },
  )
  project.provide('pgUrl', pgUrl)
  project.provide('mysqlUrl', mysqlUrl)
  project.provide(
    'notRun',
    notRun.map((b) => `${b.label}: NOT RUN (${b.reason})`),
  )
  recordNotRun(notRun)
  mkdirSync(RUN_DIR, { recursive: true })
  project.provide('runDir', RUN_DIR)
  // Watch mode: a rerun makes them again (src/ may have changed under the CLI build).
  project.onTestsRerun(() => {
    rmSync(RUN_DIR, { recursive: true, force: true })
    mkdirSync(RUN_DIR, { recursive: true })
  })
  for (const b of notRun) console.warn(`${b.label}: NOT RUN (${b.reason}); a summary follows the results.`)
  return async () => {
    const summary = notRunBox()
    if (summary !== undefined) console.warn(`\n${summary}\n`)
    for (const stop of stops) await stop()
    rmSync(RUN_DIR, { recursive: true, force: true })
  }
}
