import { type Kysely, type RawBuilder, sql } from 'kysely'
import { SchemaMismatchError, type SchemaProblem } from '../errors.js'
import type { SqlFamily } from './sql-family.js'
import { engineProblem, sqlModeProblem } from './sql-mode.js'

/**
 * The settings of one database session under which this library's values could be stored,
 * compared or read as others, as the session reports them. Read by the schema check (with the
 * catalog), by the jobs before they read a table, and by the key store before it writes.
 */
export interface SessionSettings {
  /** The default schema (PostgreSQL) or database (MySQL), which a problem names. */
  readonly database: string
  /** MySQL: `sql_mode`. */
  readonly sqlMode?: string
  /** MySQL: `character_set_client`, `_connection` and `_results`, by name. */
  readonly charsets?: Readonly<Record<string, string>>
  /** MySQL: `sql_select_limit`, as text. */
  readonly selectLimit?: string
  /** PostgreSQL: `client_encoding`. */
  readonly clientEncoding?: string
  /** PostgreSQL: `bytea_output`. */
  readonly byteaOutput?: string
  /** PostgreSQL: whether this driver read a known bytea value back as its bytes in this session. */
  readonly byteaReadsBack?: boolean
  /** PostgreSQL: `DateStyle`. */
  readonly dateStyle?: string
  /** MySQL: `time_zone`, and `system_time_zone` (what `SYSTEM` means). */
  readonly timeZone?: { readonly session: string; readonly system: string | undefined }
}

/** The query that reads {@link SessionSettings} (one row), with `database()`/`current_schema()` as `s`. */
export function sessionQuery(family: SqlFamily): RawBuilder<Record<string, unknown>> {
  return family === 'mysql'
    ? sql`select database() as s, @@session.sql_mode as m, @@session.character_set_client as cc,
        @@session.character_set_connection as cn, @@session.character_set_results as cr,
        @@session.sql_select_limit as sl, @@session.time_zone as tz, @@global.system_time_zone as stz`
    : // bp: bytes that bytea_output = 'escape' prints as escapes (NUL, a backslash, a quote, 0xff),
      // which node-postgres reads back in either output and PGlite in hex only.
      sql`select current_schema() as s, current_setting('client_encoding') as ce,
        current_setting('bytea_output') as bo, current_setting('DateStyle') as ds,
        decode(${BYTEA_PROBE.toString('hex')}, 'hex') as bp`
}

/** The bytes of the bytea probe of {@link sessionQuery}. */
const BYTEA_PROBE = Buffer.from([0x00, 0x01, 0x5c, 0x27, 0xff, 0x41])

/** The settings of a row of {@link sessionQuery}. */
export function sessionSettings(
  family: SqlFamily,
  row: Record<string, unknown> | undefined,
): SessionSettings {
  const text = (v: unknown) =>
    v === null || v === undefined ? undefined : Buffer.isBuffer(v) ? v.toString('utf8') : String(v)
  const database = text(row?.s) ?? ''
  if (family === 'postgres')
    return {
      database,
      clientEncoding: text(row?.ce),
      byteaOutput: text(row?.bo),
      byteaReadsBack: row?.bp instanceof Uint8Array && Buffer.from(row.bp).equals(BYTEA_PROBE),
      dateStyle: text(row?.ds),
    }
  const charsets: Record<string, string> = {}
  for (const [key, name] of [
    ['cc', 'character_set_client'],
    ['cn', 'character_set_connection'],
    ['cr', 'character_set_results'],
  ] as const) {
    const value = text(row?.[key])
    if (value !== undefined) charsets[name] = value
  }
  const zone = text(row?.tz)
  return {
    database,
    sqlMode: text(row?.m) ?? '',
    charsets,
    selectLimit: text(row?.sl),
    ...(zone === undefined ? {} : { timeZone: { session: zone, system: text(row?.stz) } }),
  }
}

/** `sql_select_limit`'s default: no limit (2^64 - 1). */
const NO_SELECT_LIMIT = 18446744073709551615n

/**
 * The problems of a session's settings: its `sql_mode` ({@link sqlModeProblem}); on MySQL a
 * connection character set other than utf8mb4 (context values outside it are stored as other
 * text, or compared in another encoding than the plugin's byte-exact guards), or a
 * `sql_select_limit` (a job would see part of a table, and think it done); on PostgreSQL a
 * `client_encoding` other than UTF8 (node-postgres sends and reads UTF-8: a context value with a
 * character outside ASCII would be stored as other text), or a `bytea_output` under which the
 * driver reads a bytea back as other bytes (PGlite reads only hex; node-postgres reads both);
 * and, for a job paging by a date or timestamp key, a `DateStyle` other than ISO (its batch
 * bounds are text in that style, read back by other sessions).
 *
 * @param settings - The session's settings.
 * @param dateKey - Whether the check is a job's that pages by a date or timestamp key.
 * @param zonedKey - Whether that key is a MySQL `TIMESTAMP` (read and compared in the session's
 *   `time_zone`): its batch bounds are text in that zone, which a session in another zone reads
 *   as other instants, as does a zone with daylight saving in the hour its clocks go back. So
 *   the session's zone must be UTC.
 */
export function sessionProblems(
  settings: SessionSettings,
  dateKey = false,
  zonedKey = false,
): SchemaProblem[] {
  const problems: SchemaProblem[] = []
  const mode =
    settings.sqlMode === undefined ? undefined : sqlModeProblem(settings.sqlMode, settings.database)
  if (mode !== undefined) problems.push(mode)
  const setting = (found: string, why: string, fix: string) =>
    problems.push({
      kind: 'session-setting',
      table: settings.database,
      columns: [],
      found,
      message: `The session's ${found} is wrong for encrypted columns: ${why}.`,
      fix: `${fix}${fix.includes(' -- ') ? '' : ' --'} on every connection of the pool (or in the server's configuration)`,
    })
  const wrongCharsets = Object.entries(settings.charsets ?? {}).filter(
    ([, v]) => v.toLowerCase() !== 'utf8mb4',
  )
  if (wrongCharsets.length > 0)
    setting(
      wrongCharsets.map(([k, v]) => `${k}=${v}`).join(', '),
      'the driver sends and reads UTF-8, so a context value with a character outside ASCII would be stored or compared as other text, and its rows would not decrypt or be found',
      "SET NAMES utf8mb4 -- mysql2: leave the pool's charset option at its default;",
    )
  if (settings.selectLimit !== undefined && /^\d+$/.test(settings.selectLimit))
    if (BigInt(settings.selectLimit) < NO_SELECT_LIMIT)
      setting(
        `sql_select_limit=${settings.selectLimit}`,
        'a SELECT returns at most that many rows, so a job would rewrite, count or verify part of a table and report it done',
        'SET SESSION sql_select_limit = DEFAULT',
      )
  // UNICODE is PostgreSQL's alias of UTF8; SQL_ASCII passes the driver's UTF-8 bytes through as they are.
  if (
    settings.clientEncoding !== undefined &&
    !['UTF8', 'UNICODE', 'SQL_ASCII'].includes(settings.clientEncoding.toUpperCase())
  )
    setting(
      `client_encoding=${settings.clientEncoding}`,
      'the driver sends and reads UTF-8, so a context value with a character outside ASCII would be stored as other text, and its rows would not decrypt in any other session',
      "SET client_encoding = 'UTF8'",
    )
  if (settings.byteaReadsBack === false)
    setting(
      `bytea_output=${settings.byteaOutput ?? '?'}`,
      'this driver reads a bytea value in it as other bytes (PGlite reads hex only), so ciphertexts (and plaintext under migration) would read back as other bytes',
      "SET bytea_output = 'hex'",
    )
  if (dateKey && settings.dateStyle !== undefined && !/^\s*ISO\b/i.test(settings.dateStyle))
    setting(
      `DateStyle=${settings.dateStyle}`,
      "a job's batch bounds on a date or timestamp key are stored as text in this style, which a session with another reads as other instants",
      "SET DateStyle = 'ISO, MDY'",
    )
  const zone = settings.timeZone
  if (zonedKey && zone !== undefined && !isUtc(zone.session === 'SYSTEM' ? zone.system : zone.session))
    setting(
      `time_zone=${zone.session}${zone.session === 'SYSTEM' ? ` (${zone.system ?? '?'})` : ''}`,
      "a job's batch bounds on a TIMESTAMP key are stored as text in the session's time zone, which a session in another zone reads as other instants (rows skipped), as does a zone with daylight saving in the hour its clocks go back",
      "SET time_zone = '+00:00' -- or page the job by another key (primaryKeys);",
    )
  return problems
}

/** Whether a MySQL time zone name is UTC: no offset, no daylight saving. */
function isUtc(zone: string | undefined): boolean {
  return zone !== undefined && /^([+-]0?0:00|UTC|Etc\/UTC|GMT|Etc\/GMT|Z)$/i.test(zone.trim())
}

/**
 * Refuses a session whose settings {@link sessionProblems} refuses: run by the jobs before they
 * read a row (a job rewrites every row, and under such a setting would leave them unreadable or
 * skip some), with the table they write (MySQL: also refused on a non-transactional engine under
 * `STRICT_TRANS_TABLES` alone, see {@link engineProblem}), and by the key store before each of its
 * writes on MySQL, on the write's connection (its wrappings are JSON text: under
 * `NO_BACKSLASH_ESCAPES` every quote in them would be stored with a backslash before it). Reads
 * the settings of the connection the query runs on.
 *
 * @param db - The database (or transaction, or held connection) to ask.
 * @param family - Its SQL family.
 * @param table - A table the caller writes (a job's), when it writes one; `dateKey` when the job
 *   pages it by a date or timestamp key (its `DateStyle` then matters), `zonedKey` when that key
 *   is a MySQL `TIMESTAMP` (its `time_zone` then matters).
 * @throws SchemaMismatchError `SCHEMA_MISMATCH` with a `sql-mode` or `session-setting` problem for
 *   each wrong setting
 */
export async function requireSession(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  family: SqlFamily,
  table?: { schema: string | undefined; name: string; dateKey?: boolean; zonedKey?: boolean },
): Promise<void> {
  const { rows } = await sessionQuery(family).execute(db)
  const settings = sessionSettings(family, rows[0])
  const problems = sessionProblems(settings, table?.dateKey === true, table?.zonedKey === true)
  if (family === 'mysql' && table !== undefined && problems.length === 0) {
    const engines = await sql<{ e: unknown }>`select engine as e from information_schema.tables
      where table_schema = coalesce(${table.schema ?? null}, database()) and table_name = ${table.name}`.execute(
      db,
    )
    const engine = engines.rows[0]?.e
    const problem =
      engine === null || engine === undefined
        ? undefined
        : engineProblem(
            settings.sqlMode,
            String(engine).toLowerCase(),
            table.schema === undefined ? table.name : `${table.schema}.${table.name}`,
          )
    if (problem !== undefined) problems.push(problem)
  }
  if (problems.length > 0) throw new SchemaMismatchError(problems)
}
