import { type Arg, arr, type Call, call, fnArg, lit, nm, obj, onDb, onParam } from './chain.js'
import {
  type Gen,
  type Relation,
  ref,
  type ScopeColumn,
  type Statement,
  tableColumns,
  valueFor,
} from './gen.js'
import { refFactory, wheres } from './generate-conditions.js'
import { rawSetValue } from './generate-raw.js'
import { rawInsertValue } from './generate-raw-clauses.js'
import { joinColumns } from './generate-select.js'
import { TABLE_NAMES, TABLES, type TableName } from './schema.js'

/** INSERT, UPDATE and DELETE statements of the fuzz generator (test/fuzz/generate.ts). */

/**
 * `c` is written by an UPDATE (SET, ON CONFLICT DO UPDATE, ON DUPLICATE KEY UPDATE): a context
 * column counts as encrypted data, since the row's ciphertexts are bound to it (the plugin refuses
 * a write of it that does not rewrite them).
 */
function written(g: Gen, c: ScopeColumn): void {
  g.use(c)
  if (TENANT_CONTEXT.has(`${c.origin.table}.${c.name}`)) g.touches = true
}

const TENANT_CONTEXT = new Set(['accounts.tenant_id'])

function rowValues(g: Gen, table: TableName, id: number, keys: readonly string[]): Arg {
  const o: Record<string, Arg> = {}
  for (const c of tableColumns(table)) {
    if (!keys.includes(c.name)) continue
    g.use(c)
    if (c.name === 'id') o.id = lit(id)
    else if (!c.origin.column.notNull && g.chance(12)) o[c.name] = lit(null)
    else if (g.chance(6)) o[c.name] = rawInsertValue(g, c) ?? valueFor(g, c)
    else o[c.name] = valueFor(g, c)
  }
  return obj(o)
}

function writableKeys(g: Gen, table: TableName): string[] {
  return TABLES[table].filter((c) => c.name === 'id' || c.notNull === true || g.chance(50)).map((c) => c.name)
}

function freshId(g: Gen): number {
  // Mostly new ids; sometimes an existing one (a primary-key violation both copies must report).
  return g.chance(85) ? g.int(100, 104) : g.int(1, 5)
}

/**
 * A RETURNING list, on PostgreSQL. `ownOnly`: a DELETE … USING or UPDATE … FROM, whose target row
 * may join several rows of the other relation, of which PostgreSQL returns an unspecified one
 * (the plaintext and the encrypted copy may be joined by other plans): `returningAll()` (every
 * relation's columns) becomes the target's own columns, so oracle and plugin may differ only by a
 * bug. Same draws either way, so other statements of a seed stay as they were.
 */
function returning(g: Gen, calls: Call[], table: TableName, q: string, ownOnly = false): void {
  if (g.family !== 'postgres' || !g.chance(40)) return
  if (g.chance(30)) {
    const all = tableColumns(table)
    for (const c of all) g.use(c)
    calls.push(ownOnly ? call('returning', arr(all.map((c) => nm(`${q}.${c.name}`)))) : call('returningAll'))
    return
  }
  const cols = tableColumns(table).filter((c) => c.name === 'id' || g.chance(40))
  for (const c of cols) g.use(c)
  calls.push(call('returning', arr(cols.map((c) => nm(`${q}.${c.name}`)))))
}

export function insertStatement(g: Gen): { stmt: Statement; shape: string } {
  const table = g.pick(TABLE_NAMES)
  const calls: Call[] = [call('insertInto', nm(`{${table}}`))]
  const roll = g.int(0, 99)
  let shape: string
  if (roll < 20) {
    shape = 'insert … select'
    const from = g.pick(TABLE_NAMES)
    const a = g.alias('s')
    const fromCols = tableColumns(from)
    const targets = tableColumns(table).filter(
      (c) => c.name === 'id' || c.origin.column.notNull === true || g.chance(40),
    )
    const sel: Arg[] = []
    const names: Arg[] = []
    for (const t of targets) {
      g.use(t)
      names.push(lit(t.name))
      if (t.name === 'id') {
        sel.push(fnArg(onParam(call('', nm(`${a}.id`), lit('+'), lit(100)), call('as', lit('id')))))
        continue
      }
      const same = fromCols.filter(
        (c) => c.kind === t.kind && (c.origin.column.notNull || !t.origin.column.notNull),
      )
      const c = same.length > 0 ? g.pick(same) : undefined
      if (c === undefined) sel.push(fnArg(onParam(call('val', valueFor(g, t)), call('as', lit(t.name)))))
      else {
        g.use(c)
        sel.push(nm(`${a}.${c.name}`))
      }
    }
    const sub: Call[] = [call('selectFrom', nm(`{${from}} as ${a}`)), call('select', arr(sel))]
    if (g.chance(50)) wheres(g, [{ q: a, cols: fromCols, keyed: true }], sub, 1)
    calls.push(call('columns', arr(names)), call('expression', fnArg(onParam(...sub))))
  } else {
    const keys = writableKeys(g, table)
    const multi = roll < 50
    shape = multi ? 'insert multi-row' : 'insert'
    if (multi) {
      const rows: Arg[] = []
      const n = g.int(2, 3)
      const base = freshId(g)
      for (let i = 0; i < n; i++) rows.push(rowValues(g, table, base + i, keys))
      calls.push(call('values', arr(rows)))
    } else calls.push(call('values', rowValues(g, table, freshId(g), keys)))
    if (g.chance(30)) {
      shape = 'upsert'
      upsert(g, calls, table)
    }
  }
  returning(g, calls, table, `{${table}}`)
  return { stmt: { chain: onDb(...calls), ordered: false, writes: true }, shape }
}

// Conflict targets are the primary key only: ON CONFLICT (encrypted column) is a known hole
// helper a1 is fixing (plugin review: "onConflict on encrypted columns"); add it here once fixed.
function upsert(g: Gen, calls: Call[], table: TableName): void {
  const cols = tableColumns(table).filter((c) => c.name !== 'id' && g.chance(50))
  if (g.family === 'mysql') {
    const set: Record<string, Arg> = {}
    for (const c of cols.length > 0 ? cols : tableColumns(table).slice(1, 2)) {
      written(g, c)
      set[c.name] = valueFor(g, c)
    }
    calls.push(call('onDuplicateKeyUpdate', obj(set)))
    return
  }
  if (cols.length === 0 || g.chance(20)) {
    calls.push(call('onConflict', fnArg(onParam(call('column', lit('id')), call('doNothing')))))
    return
  }
  const set: Record<string, Arg> = {}
  for (const c of cols) {
    written(g, c)
    set[c.name] = g.chance(50) ? valueFor(g, c) : refFactory(`excluded.${c.name}`)
  }
  calls.push(call('onConflict', fnArg(onParam(call('column', lit('id')), call('doUpdateSet', obj(set))))))
}

function setValues(
  g: Gen,
  table: TableName,
  own: Relation,
  others: readonly Relation[],
  qualify: boolean,
): Arg {
  const o: Record<string, Arg> = {}
  const cols = tableColumns(table).filter((c) => c.name !== 'id')
  const chosen = cols.filter(() => g.chance(35))
  if (chosen.length === 0) chosen.push(g.pick(cols))
  for (const c of chosen) {
    written(g, c)
    const key = qualify ? `${own.q}.${c.name}` : c.name
    const sources = [own, ...others].flatMap((r) =>
      r.cols.filter((x) => x.kind === c.kind).map((x) => [r, x] as const),
    )
    if (sources.length > 0 && g.chance(20)) {
      const [r, x] = g.pick(sources)
      g.use(x)
      o[key] = refFactory(ref(r, x))
    } else if (g.chance(c.encrypted ? 3 : 8)) o[key] = rawSetValue(g, own, c)
    else if (!c.origin.column.notNull && g.chance(15)) o[key] = lit(null)
    else o[key] = valueFor(g, c)
  }
  return obj(o)
}

export function updateStatement(g: Gen): { stmt: Statement; shape: string } {
  const table = g.pick(TABLE_NAMES)
  const aliased = g.chance(60)
  const q = aliased ? g.alias('w') : `{${table}}`
  const own: Relation = { q, cols: tableColumns(table), keyed: true }
  const calls: Call[] = [call('updateTable', nm(aliased ? `{${table}} as ${q}` : q))]
  let shape = 'update'
  const scope: Relation[] = [own]
  if (g.chance(30)) {
    const other = g.pick(TABLE_NAMES)
    const a = g.alias('f')
    const rel: Relation = { q: a, cols: tableColumns(other), keyed: true }
    const [l, r] = joinColumns(g, [own], rel)
    // A target row that several rows of the other relation join takes its SET values from an
    // unspecified one of them (PostgreSQL and MySQL alike; seed 20261215 on PostgreSQL, case
    // 13696): only a join on that relation's key may feed SET.
    const sources = l === `${a}.id` ? [rel] : []
    if (g.family === 'postgres') {
      shape = 'update … from'
      calls.push(call('from', nm(`{${other}} as ${a}`)))
      calls.push(call('set', setValues(g, table, own, sources, false)))
      calls.push(call('whereRef', nm(l), lit('='), nm(r)))
    } else {
      // MySQL's UPDATE t1, t2 SET … WHERE (Kysely: updateTable([...])).
      shape = 'update multi-table'
      calls[0] = call('updateTable', arr([nm(aliased ? `{${table}} as ${q}` : q), nm(`{${other}} as ${a}`)]))
      // Qualified targets go through set(column, value): set({...}) takes its keys as bare names.
      const set = setValues(g, table, own, sources, true) as { obj: Record<string, Arg> }
      for (const [k, v] of Object.entries(set.obj)) calls.push(call('set', nm(k), v))
      calls.push(call('whereRef', nm(l), lit('='), nm(r)))
    }
    scope.push(rel)
  } else calls.push(call('set', setValues(g, table, own, [], false)))
  g.contextWrite = table === 'accounts'
  if (g.chance(80)) wheres(g, scope, calls, 0)
  g.contextWrite = false
  returning(g, calls, table, q, shape === 'update … from')
  return { stmt: { chain: onDb(...calls), ordered: false, writes: true }, shape }
}

export function deleteStatement(g: Gen): { stmt: Statement; shape: string } {
  const table = g.pick(TABLE_NAMES)
  const a = g.alias('z')
  const own: { q: string; cols: ScopeColumn[]; keyed: boolean } = {
    q: a,
    cols: tableColumns(table),
    keyed: true,
  }
  const scope: Relation[] = [own]
  let calls: Call[]
  let shape = 'delete'
  if (g.chance(30)) {
    shape = 'delete … using'
    const other = g.pick(TABLE_NAMES)
    const b = g.alias('y')
    const rel: Relation = { q: b, cols: tableColumns(other), keyed: true }
    const [l, r] = joinColumns(g, [own], rel)
    if (g.family === 'postgres') {
      calls = [
        call('deleteFrom', nm(`{${table}} as ${a}`)),
        call('using', nm(`{${other}} as ${b}`)),
        call('whereRef', nm(l), lit('='), nm(r)),
      ]
    } else {
      calls = [
        call('deleteFrom', nm(a)),
        call('using', nm(`{${table}} as ${a}`)),
        call('innerJoin', nm(`{${other}} as ${b}`), nm(l), nm(r)),
      ]
    }
    scope.push(rel)
  } else if (g.family === 'mysql' || g.chance(30)) {
    // MariaDB (before 11.6) takes no alias on a single-table DELETE.
    own.q = `{${table}}`
    calls = [call('deleteFrom', nm(own.q))]
  } else calls = [call('deleteFrom', nm(`{${table}} as ${a}`))]
  if (g.chance(85)) wheres(g, scope, calls, 0)
  returning(g, calls, table, own.q, shape === 'delete … using')
  return { stmt: { chain: onDb(...calls), ordered: false, writes: true }, shape }
}
