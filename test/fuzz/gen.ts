import fc from 'fast-check'
import { type Arg, type Chain, lit } from './chain.js'
import { type FuzzColumn, type Kind, poolOf, TABLES, type TableName } from './schema.js'

/**
 * The state of generating one fuzz case, and the columns and relations it draws from
 * (test/fuzz/generate.ts).
 */

/** One statement of a case, as Kysely calls. */
export interface Statement {
  readonly chain: Chain
  /** True when the rows come back in a total order (compare as lists, not multisets). */
  readonly ordered: boolean
  readonly writes: boolean
}

export type Family = 'postgres' | 'mysql'

/** A column as a relation in scope exposes it. */
export interface ScopeColumn {
  readonly name: string
  readonly kind: Kind
  readonly encrypted: boolean
  /** Where its values come from (for value pools). */
  readonly origin: { readonly table: TableName; readonly column: FuzzColumn }
  /**
   * A plaintext column of a relation the plugin cannot look into (raw SQL), named like an
   * encrypted column: a value compared with it counts as touching encrypted data, since the
   * plugin may refuse it (src/plugin/unseen-references.ts).
   */
  readonly lookalike?: true
}

/** A relation in scope: a qualifier (alias, or `{users}` for an unaliased table) and its columns. */
export interface Relation {
  readonly q: string
  readonly cols: readonly ScopeColumn[]
  /** Its rows are identified by its `id` column (a base table, or a derived table keeping `id`). */
  readonly keyed: boolean
}

type GenFn = fc.GeneratorValue

/** The state of generating one case. */
export class Gen {
  touches = false
  /**
   * Generating the WHERE of an UPDATE of a table whose rows have a context (accounts): the plugin
   * adds a guard fixing the context of the rows it writes (src/plugin/context-guard.ts).
   */
  contextWrite = false
  private aliasN = 0
  constructor(
    private readonly g: GenFn,
    readonly family: Family,
  ) {}

  int(min: number, max: number): number {
    return this.g(fc.integer, { min, max })
  }
  chance(percent: number): boolean {
    return this.int(0, 99) < percent
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!
  }
  alias(prefix: string): string {
    this.aliasN += 1
    return `${prefix}${this.aliasN}`
  }
  readonly features = new Set<string>()
  feature(name: string): void {
    this.features.add(name)
  }
  use(col: ScopeColumn): void {
    if (col.encrypted) this.touches = true
  }
}

export function tableColumns(table: TableName): ScopeColumn[] {
  return TABLES[table].map((c) => ({
    name: c.name,
    kind: c.kind,
    encrypted: c.protection !== 'plain',
    origin: { table, column: c },
  }))
}

export function ref(r: Relation, c: ScopeColumn): string {
  return `${r.q}.${c.name}`
}

/**
 * A reference to `c` of `r`: qualified, or sometimes bare when no other relation in scope has the
 * name; rarely qualified by a name no relation has (a misspelt alias: the database rejects the
 * statement, so the plugin must refuse it or send it without a plaintext).
 */
export function refIn(g: Gen, scope: readonly Relation[], r: Relation, c: ScopeColumn): string {
  if (g.chance(1)) {
    g.feature('qualifier naming nothing')
    return `${UNKNOWN_QUALIFIER}.${c.name}`
  }
  const holders = scope.filter((x) => x.cols.some((y) => y.name === c.name)).length
  return holders === 1 && g.chance(20) ? c.name : ref(r, c)
}

/** A qualifier no relation of any generated query has. */
const UNKNOWN_QUALIFIER = 'nowhere'

/** Column names of the schema, used as aliases of other columns (an encrypted column named like a plaintext one, and back). */
export const ALIASES = ['email', 'name', 'ssn', 'item', 'label', 'secret', 'age', 'amount']

/** A value for comparing with (or writing to) a column. */
export function valueFor(g: Gen, col: ScopeColumn): Arg {
  const v = g.pick(poolOf(col.origin.table, col.origin.column))
  if (v instanceof Date) return { date: v.toISOString() }
  if (col.kind === 'json') return { json: v }
  return lit(v)
}

export function anyColumn(g: Gen, scope: readonly Relation[]): [Relation, ScopeColumn] {
  const r = g.pick(scope)
  return [r, g.pick(r.cols)]
}

/** Mostly a plaintext column (ORDER BY / GROUP BY on an encrypted one is refused by design). */
export function mostlyPlainColumn(g: Gen, scope: readonly Relation[]): [Relation, ScopeColumn] {
  const plain = scope.flatMap((r) =>
    r.cols.filter((c) => !c.encrypted).map((c) => [r, c] as [Relation, ScopeColumn]),
  )
  return plain.length > 0 && g.chance(85) ? g.pick(plain) : anyColumn(g, scope)
}
