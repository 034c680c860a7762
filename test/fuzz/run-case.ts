import { DeleteResult, InsertResult, type Kysely, UpdateResult } from 'kysely'
import { FieldEncryptionError } from '../../src/index.js'
import { build, type Chain, print, type Target } from './chain.js'
import type { FuzzDb } from './fuzz-db.js'
import type { FuzzCase } from './generate.js'
import { POOLS, TABLE_NAMES, TABLES } from './schema.js'

/** What one case came to. `wrong`, `leak` and a refusal of a plaintext-only case are bugs. */
export type Verdict =
  | { readonly kind: 'ok' }
  /** The plugin refused with a typed error before anything was sent. */
  | { readonly kind: 'refused'; readonly code: string; readonly plaintextOnly: boolean }
  /** Both copies failed at the same statement (invalid SQL on this engine, a key violation, …). */
  | { readonly kind: 'both-error' }
  | { readonly kind: 'wrong'; readonly detail: string }
  | { readonly kind: 'leak'; readonly detail: string }

export function isBug(v: Verdict): boolean {
  return v.kind === 'wrong' || v.kind === 'leak' || (v.kind === 'refused' && v.plaintextOnly)
}

interface SideOutcome {
  /** Normalised results of the statements that succeeded, in order. */
  readonly results: string[][]
  /** The failing statement's index and error, if one failed. */
  error?: { readonly at: number; readonly error: unknown; readonly sent: boolean }
  /** Every table (decrypted on the encrypted copy) after the writes, before the rollback. */
  tables?: string[][]
}

const ROLLBACK = Symbol('fuzz.rollback')

async function runSide(db: Kysely<unknown>, target: Target, c: FuzzCase, fuzz: FuzzDb): Promise<SideOutcome> {
  const out: SideOutcome = { results: [] }
  try {
    await db.transaction().execute(async (trx) => {
      for (const [i, s] of c.statements.entries()) {
        const before = fuzz.scanner.count()
        try {
          const result = await build(s.chain, trx, statementTarget(s.chain, target)).execute()
          out.results.push(normaliseRows(result, s.ordered, fuzz.family))
        } catch (error) {
          out.error = { at: i, error, sent: fuzz.scanner.count() > before }
          throw ROLLBACK
        }
      }
      if (c.statements.some((s) => s.writes)) {
        out.tables = []
        for (const t of TABLE_NAMES) {
          const rows = await (trx as Kysely<Record<string, Record<string, unknown>>>)
            .selectFrom(target.names[t]!)
            .select(TABLES[t].map((col) => col.name))
            .orderBy('id')
            .execute()
          out.tables.push(normaliseRows(rows, true, fuzz.family))
        }
      }
      throw ROLLBACK
    })
  } catch (error) {
    if (error !== ROLLBACK) out.error ??= { at: c.statements.length, error, sent: true }
  }
  return out
}

/**
 * The target a statement is built for. The plugin leaves a statement that names no table of its
 * schema as it is (src/plugin/analyzer.ts: `mentionsSchemaTable`), so there raw SQL goes out as
 * plain Kysely prints it, and the oracle sends it so too: every fuzz table has encrypted columns,
 * so this is a statement over the generator's raw relation of constants only.
 */
function statementTarget(chain: Chain, target: Target): Target {
  if (!target.meaning || TABLE_PLACEHOLDER.test(JSON.stringify(chain))) return target
  return { ...target, meaning: false }
}

const TABLE_PLACEHOLDER = new RegExp(`\\{(?:${TABLE_NAMES.join('|')})\\}`)

/**
 * Runs a case on the plaintext copy (the oracle) and on the encrypted copy, and judges the
 * plugin: refused before sending, or the same rows and the same tables; and no plaintext of an
 * encrypted column in anything the driver received.
 */
export async function runCase(fuzz: FuzzDb, c: FuzzCase): Promise<Verdict> {
  const oracle = await runSide(fuzz.plain as Kysely<unknown>, fuzz.plainTarget, c, fuzz)
  fuzz.scanner.reset()
  const enc = await runSide(fuzz.enc as Kysely<unknown>, fuzz.encTarget, c, fuzz)
  const leaks = leaksIn(fuzz)
  if (leaks.length > 0) return { kind: 'leak', detail: leaks.join('\n') }
  for (let i = 0; i < c.statements.length; i++) {
    const o = oracle.error?.at === i ? oracle.error : undefined
    const e = enc.error?.at === i ? enc.error : undefined
    if (e !== undefined && isRefusal(e)) {
      const err = e.error as FieldEncryptionError & { operator?: string }
      return {
        kind: 'refused',
        code: `${err.code}${err.operator === undefined ? '' : ` (${err.operator})`}`,
        // A statement the oracle also rejects (invalid SQL) may be refused instead.
        plaintextOnly: !c.touchesEncrypted && o === undefined,
      }
    }
    if (o !== undefined && e !== undefined) return { kind: 'both-error' }
    if (o !== undefined)
      return {
        kind: 'wrong',
        detail: `statement ${i}: the oracle failed (${describe(o.error)}), the plugin ran it`,
      }
    if (e !== undefined)
      return {
        kind: 'wrong',
        detail: `statement ${i}: the plugin failed${e.sent ? ' after sending' : ''} (${describe(e.error)}), the oracle ran it`,
      }
    const a = oracle.results[i]
    const b = enc.results[i]
    if (JSON.stringify(a) !== JSON.stringify(b))
      return {
        kind: 'wrong',
        detail: `statement ${i}: rows differ\n  oracle: ${show(a)}\n  plugin: ${show(b)}`,
      }
  }
  const after = c.statements.length
  if (oracle.error?.at === after || enc.error?.at === after) {
    if (oracle.error?.at === after && enc.error?.at === after) return { kind: 'both-error' }
    const side = oracle.error?.at === after ? oracle : enc
    return {
      kind: 'wrong',
      detail: `reading the tables back failed on one copy: ${describe(side.error?.error)}`,
    }
  }
  if (oracle.tables !== undefined) {
    for (const [n, t] of TABLE_NAMES.entries()) {
      const a = oracle.tables[n]
      const b = enc.tables?.[n]
      if (JSON.stringify(a) !== JSON.stringify(b))
        return {
          kind: 'wrong',
          detail: `table ${t} differs after the writes\n  oracle: ${show(a)}\n  plugin: ${show(b)}`,
        }
    }
  }
  return { kind: 'ok' }
}

function isRefusal(e: NonNullable<SideOutcome['error']>): boolean {
  return e.error instanceof FieldEncryptionError && typeof e.error.code === 'string' && !e.sent
}

function describe(error: unknown): string {
  if (error instanceof FieldEncryptionError) return `${error.name} ${error.code}: ${error.message}`
  if (error instanceof Error) return `${error.name}: ${error.message.slice(0, 300)}`
  return String(error)
}

function show(rows: readonly string[] | undefined): string {
  return rows === undefined ? '(none)' : `[${rows.join(', ')}]`
}

/** Plaintext of encrypted columns in what the driver received (the scanner, plus Date parameters). */
function leaksIn(fuzz: FuzzDb): string[] {
  const out = fuzz.scanner.hits().map((h) => `${JSON.stringify(h.secret)} in ${h.where} of: ${h.sql}`)
  // The scanner skips Date parameters; every Date in the fuzz schema is encrypted (dob).
  const dates = new Set(POOLS.date.map((d) => new Date(d).getTime()))
  for (const q of fuzz.scanner.queries) {
    for (const [n, p] of q.parameters.entries())
      if (p instanceof Date && dates.has(p.getTime()))
        out.push(`a dob plaintext in parameter ${n} of: ${q.sql}`)
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Normalising what the drivers return, so both copies compare by logical value.

function normaliseRows(result: unknown, ordered: boolean, family: string): string[] {
  const rows = Array.isArray(result) ? result : [result]
  const out = rows.map((r) => canonical(normaliseRow(r, family)))
  return ordered ? out : out.sort()
}

function normaliseRow(row: unknown, family: string): unknown {
  if (row instanceof InsertResult) {
    // MySQL's affected-rows count of an upsert says whether the row changed: re-encrypting an
    // equal plaintext changes the stored bytes, so that count may differ by design.
    return {
      insertId: norm(row.insertId),
      ...(family === 'mysql' ? {} : { n: norm(row.numInsertedOrUpdatedRows) }),
    }
  }
  if (row instanceof UpdateResult) return { n: norm(row.numUpdatedRows) } // numChangedRows: as above
  if (row instanceof DeleteResult) return { n: norm(row.numDeletedRows) }
  if (row === null || typeof row !== 'object') return norm(row)
  // `selectAll` of an encrypted table returns its blind-index columns too (by design: they are
  // physical columns); the plaintext copy has none.
  return Object.fromEntries(
    Object.entries(row)
      .filter(([k]) => !BLIND_INDEXES.has(k))
      .map(([k, v]) => [k, norm(v)]),
  )
}

const BLIND_INDEXES = new Set(['email_bidx', 'ssn_bidx', 'score_bidx', 'amount_bidx', 'iban_bidx'])

function norm(v: unknown): unknown {
  if (v === null || v === undefined) return null
  if (v instanceof Date) return `D:${Number.isNaN(v.getTime()) ? 'invalid' : v.toISOString()}`
  if (v instanceof Uint8Array) return `B:${Buffer.from(v).toString('hex')}`
  if (typeof v === 'bigint' || typeof v === 'number') return `N:${String(v)}`
  if (typeof v === 'string') {
    if (v.startsWith('{') || v.startsWith('[')) {
      try {
        return { json: JSON.parse(v) }
      } catch {
        return v
      }
    }
    return v
  }
  if (typeof v === 'object') return { json: v }
  return v
}

/** JSON with sorted object keys. */
function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v)
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  const keys = Object.keys(v).sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`
}

/** A case as Kysely code for a regression test: `db` is the plugin's Kysely, `N` the table names. */
export function printCase(c: FuzzCase): string {
  const lines = c.statements.map((s) => `await ${print(s.chain)}.execute()`)
  return lines.join('\n')
}
