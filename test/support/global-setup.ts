import type { TestProject } from 'vitest/node'

/**
 * Resolves the databases the integration suite runs against, once per `npm test`:
 * `PG_URL` / `MYSQL_URL` first; else, where a Docker engine answers, testcontainers; else the
 * backend is reported as NOT RUN (never as passed). Under `CI=true` both URLs are required and
 * must answer, so a missing backend fails the run.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string | null
    mysqlUrl: string | null
    notRun: string[]
  }
}

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
  notRun: string[],
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
  notRun.push(`${name}: NOT RUN (no ${envVar} and no Docker engine for testcontainers)`)
  return null
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const notRun: string[] = []
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
  )
  project.provide('pgUrl', pgUrl)
  project.provide('mysqlUrl', mysqlUrl)
  project.provide('notRun', notRun)
  for (const line of notRun) console.warn(line)
  return async () => {
    for (const line of notRun) console.warn(line)
    for (const stop of stops) await stop()
  }
}
