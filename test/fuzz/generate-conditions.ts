import { type Arg, arr, type Call, type Chain, call, chainArg, fnArg, lit, nm, onParam } from './chain.js'
import { anyColumn, type Gen, type Relation, refIn, type ScopeColumn, tableColumns, valueFor } from './gen.js'
import { rawCondition, rawValueComparison } from './generate-raw.js'
import { TABLE_NAMES, TENANTS } from './schema.js'

/** WHERE trees of the fuzz generator (test/fuzz/generate.ts). */

/**
 * A condition; `operand`: it will be an operand of AND, OR or NOT (beside another where() call, or
 * in and()/or()/not()), where the plugin sends raw SQL in parentheses ending in a line break.
 */
export function condition(g: Gen, scope: readonly Relation[], depth: number, operand = false): Chain {
  const roll = g.int(0, 99)
  if (depth < 2 && roll < 12) {
    const n = g.int(2, 3)
    const items: Arg[] = []
    for (let i = 0; i < n; i++) items.push(chainArg(condition(g, scope, depth + 1, true)))
    return onParam(call(g.chance(50) ? 'and' : 'or', arr(items)))
  }
  if (depth < 2 && roll < 17) return onParam(call('not', chainArg(condition(g, scope, depth + 1, true))))
  if (depth < 2 && roll < 25) return existsCondition(g, scope)
  if (depth < 2 && roll < 31) return inSubquery(g, scope)
  if (roll < 40) return columnComparison(g, scope)
  if (roll >= 93) return rawCondition(g, scope, operand)
  if (roll >= 89) return rawValueComparison(g, scope) ?? valueComparison(g, scope)
  return valueComparison(g, scope)
}

/**
 * One where() call, sometimes two (joined by AND, the raw SQL among them an operand); a where()
 * call is sometimes raw SQL itself: `where(sql\`…\`)`.
 */
export function wheres(g: Gen, scope: readonly Relation[], calls: Call[], depth: number): void {
  // A relation with per-tenant keys: mostly a where() fixing its tenant too (a search needs it).
  const tenant = scope.find((r) => r.cols.some((c) => c.name === 'tenant_id' && !c.encrypted))
  const fix = tenant !== undefined && g.chance(60)
  const n = g.chance(25) ? 2 : 1
  const operand = n > 1 || fix
  for (let i = 0; i < n; i++) {
    if (g.chance(12)) calls.push(call('where', chainArg(rawCondition(g, scope, operand))))
    else calls.push(call('where', fnArg(condition(g, scope, depth, operand))))
  }
  if (fix) calls.push(call('where', nm(`${tenant.q}.tenant_id`), lit('='), lit(g.pick(TENANTS))))
}

function valueComparison(g: Gen, scope: readonly Relation[]): Chain {
  const [r, c] = anyColumn(g, scope)
  g.use(c)
  // A raw relation's column named like an encrypted one: the plugin may refuse a value beside it.
  if (c.lookalike) g.touches = true
  const ops = c.encrypted
    ? g.chance(85)
      ? ['=', '=', '<>', 'in', 'not in', 'is', 'is not']
      : ['<', 'like', '>=']
    : ['=', '<>', '<', '>=', 'in', 'not in', 'is', 'is not', ...(c.kind === 'text' ? ['like'] : [])]
  const op = g.pick(ops)
  if (op === 'is' || op === 'is not') return onParam(call('', nm(refIn(g, scope, r, c)), lit(op), lit(null)))
  if (op === 'in' || op === 'not in') {
    const n = g.int(1, 3)
    const vs: Arg[] = []
    for (let i = 0; i < n; i++) vs.push(valueFor(g, c))
    return onParam(call('', nm(refIn(g, scope, r, c)), lit(op), arr(vs)))
  }
  if (op === 'like')
    return onParam(call('', nm(refIn(g, scope, r, c)), lit(op), lit(`${g.pick(['a', 'kq', 'b'])}%`)))
  return onParam(call('', nm(refIn(g, scope, r, c)), lit(op), valueFor(g, c)))
}

function columnComparison(g: Gen, scope: readonly Relation[]): Chain {
  const [r1, c1] = anyColumn(g, scope)
  // Mostly columns of the same kind (a join-like condition); sometimes an encrypted one.
  const candidates: [Relation, ScopeColumn][] = []
  for (const r of scope) for (const c of r.cols) if (c.kind === c1.kind && c !== c1) candidates.push([r, c])
  if (candidates.length === 0) return valueComparison(g, scope)
  const [r2, c2] = g.pick(candidates)
  g.use(c1)
  g.use(c2)
  return onParam(
    call('', nm(refIn(g, scope, r1, c1)), lit(g.pick(['=', '<>', '<'])), onParamRef(refIn(g, scope, r2, c2))),
  )
}

function onParamRef(name: string): Arg {
  return chainArg(onParam(call('ref', nm(name))))
}

/** `(e) => e.ref(name)`: a column as a value in `set({...})`. */
export function refFactory(name: string): Arg {
  return fnArg(onParam(call('ref', nm(name))))
}

export function plusOne(name: string): Arg {
  return chainArg(onParam(call('', nm(name), lit('+'), lit(1))))
}

/** `exists (select … from t where t.user_id = outer.id …)`. */
function existsCondition(g: Gen, scope: readonly Relation[]): Chain {
  g.feature('exists')
  const inner = g.pick(['orders', 'tags'] as const)
  const a = g.alias('x')
  const rel: Relation = { q: a, cols: tableColumns(inner), keyed: true }
  const outer = scope.find((r) => r.cols.some((c) => c.name === 'id'))
  const calls: Call[] = [call('selectFrom', nm(`{${inner}} as ${a}`)), call('select', nm(`${a}.id`))]
  const linked = outer !== undefined && g.chance(80)
  if (linked) calls.push(call('whereRef', nm(`${a}.user_id`), lit('='), nm(`${outer!.q}.id`)))
  if (g.chance(60)) calls.push(call('where', fnArg(condition(g, [rel, ...scope], 2, linked))))
  const exists = onParam(call('exists', chainArg(onParam(...calls))))
  return g.chance(75) ? exists : onParam(call('not', chainArg(exists)))
}

/** `col in (select col2 from t …)`. */
function inSubquery(g: Gen, scope: readonly Relation[]): Chain {
  const [r, c] = anyColumn(g, scope)
  const table = g.pick(TABLE_NAMES)
  const sameKind = tableColumns(table).filter((x) => x.kind === c.kind)
  if (sameKind.length === 0) return valueComparison(g, scope)
  const c2 = g.pick(sameKind)
  const a = g.alias('s')
  g.feature('in (subquery)')
  g.use(c)
  g.use(c2)
  const calls: Call[] = [call('selectFrom', nm(`{${table}} as ${a}`)), call('select', nm(`${a}.${c2.name}`))]
  if (g.chance(50))
    calls.push(
      call('where', fnArg(condition(g, [{ q: a, cols: tableColumns(table), keyed: true }, ...scope], 2))),
    )
  return onParam(
    call('', nm(refIn(g, scope, r, c)), lit(g.chance(75) ? 'in' : 'not in'), chainArg(onParam(...calls))),
  )
}
