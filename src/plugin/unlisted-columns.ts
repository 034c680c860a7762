import { QueryRefusedError } from '../errors.js'
import type { Catalog } from '../schema/catalog.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import type { AnalysisContext } from './analysis-context.js'
import type { QueryPlan, UnlistedColumn } from './plan.js'
import type { Relation, Scope } from './scope.js'
import { columnsOf } from './table-columns.js'

/**
 * Misspelt column names of tables with encrypted columns (`where('emial', '=', v)`,
 * `values({ 'email ': v })`): the plugin resolves no encrypted column, so `v` goes out as a plain
 * parameter (inlined in the statement text on mysql2), and the database rejects the name only
 * after it has received it. The analysis notes each name of such a table that the schema does
 * not annotate but that is spelt near an encrypted column's name (see {@link nearEncrypted}); the
 * wrapper refuses the query when the catalog read by schema verification shows that no table the
 * name may belong to has it ({@link refuseUnlisted}).
 *
 * Why only names near an encrypted one, not every name the catalog lacks: a typo that sends an
 * encrypted column's plaintext is spelt near that column's name, while a plain column's typo sends
 * only a plain value. And the catalog is read once per wrapped dialect: a column added while the
 * application runs is missing from it, and refusing every such name would refuse real columns
 * (`last_login` added by a migration) until a restart. Only one spelt within a letter or two of an
 * encrypted column of its table can be refused falsely, a stale catalog's cost this rule accepts.
 * Noting only those also leaves the plans of all other queries as they were: no second analysis,
 * no catalog lookup per query.
 *
 * Nothing is noted with schema verification off (`columns` undefined): there is no catalog to
 * tell a typo from a column the schema does not list.
 */

/** A base table a name may belong to, as {@link Relation.base} names it. */
type Base = UnlistedColumn['tables'][number]

/** FROM and JOIN items the scope does not model (raw SQL): an unqualified name may be theirs. */
const unmodelled = new WeakSet<Scope>()

/**
 * Records that a FROM or JOIN item of `scope` is raw SQL the scope does not list as a relation:
 * an unqualified name there is never noted, since that relation may have the column.
 */
export function markUnmodelled(scope: Scope): void {
  unmodelled.add(scope)
}

/**
 * Notes `name`, qualified by or written to `relation`, when it is no annotated column or blind
 * index of the relation's table but is spelt near an encrypted column of it.
 */
export function noteNamed(a: AnalysisContext, relation: Relation | undefined, name: string): void {
  const table = relation?.table
  const base = relation?.base
  if (a.columns === undefined || table === undefined || base === undefined) return
  if (table.column(name) !== undefined || table.indexColumn(name) !== undefined) return
  const near = nearEncrypted(table, name)
  if (near !== undefined) a.noteUnlisted({ name, tables: [base], near })
}

/**
 * Notes an unqualified `name` that resolved to no annotated column, in a WHERE or ON condition or
 * as a written column, when a table in scope has an encrypted column spelt near it. Only where
 * every relation in scope is known: at a level no query encloses (a subquery may read an
 * enclosing query's select-list alias on MySQL, and an enclosing query's columns), without raw
 * FROM items, and with every derived table's output names known (one that has the name ends it).
 */
export function noteUnqualified(a: AnalysisContext, scope: Scope, name: string): void {
  if (a.columns === undefined || scope.parent !== undefined || unmodelled.has(scope)) return
  // A relation's own name: PostgreSQL reads it as the whole row (`where('o', 'is', null)`, the
  // anti-join), whatever columns it has (helper-125).
  const lower = name.toLowerCase()
  if (scope.relations.some((r) => r.name.toLowerCase() === lower)) return
  let near: ColumnInfo | undefined
  let folded: string | undefined
  for (const relation of scope.relations) {
    if (relation.qualifiedOnly) continue
    if (relation.base !== undefined) {
      if (relation.table !== undefined) near ??= nearEncrypted(relation.table, name)
      continue
    }
    folded ??= name.toLowerCase()
    if (relation.columns === undefined || relation.columns.some((c) => c.toLowerCase() === folded)) return
  }
  // The base tables, made only for a near name (most unresolved names are plain columns: `id`).
  if (near === undefined) return
  const tables: Base[] = []
  for (const relation of scope.relations) {
    if (!relation.qualifiedOnly && relation.base !== undefined) tables.push(relation.base)
  }
  a.noteUnlisted({ name, tables, near })
}

/**
 * The encrypted column of `table` whose name (as queries use it, logical, or stored) `name` is
 * near, if any: equal once surrounding whitespace and case are dropped, or within one edit of a
 * name of up to 4 characters, two of a longer one (an insertion, deletion, substitution or swap
 * of neighbours: `emial`, `emails`, `e_mail`, `ssm`).
 */
export function nearEncrypted(table: TableInfo, name: string): ColumnInfo | undefined {
  const trimmed = name.trim()
  let folded: string | undefined
  // Most names of a table (`id`) differ in length by more than the limit: nothing to compare.
  const near = (spelling: string | undefined): boolean => {
    if (spelling === undefined) return false
    const limit = spelling.length <= 4 ? 1 : 2
    if (Math.abs(spelling.length - trimmed.length) > limit) return false
    folded ??= trimmed.toLowerCase()
    return withinEdits(folded, spelling.toLowerCase(), limit)
  }
  for (const info of table.columns.values()) {
    if (near(info.physical) || near(info.logical) || near(info.stored) || near(info.mapped?.name)) return info
  }
  return undefined
}

/** Whether `a` becomes `b` in at most `limit` single-character edits (optimal string alignment). */
function withinEdits(a: string, b: string, limit: number): boolean {
  if (Math.abs(a.length - b.length) > limit) return false
  let before: number[] = []
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    let best = i
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let d = Math.min(
        (previous[j] as number) + 1,
        (current[j - 1] as number) + 1,
        (previous[j - 1] as number) + cost,
      )
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d = Math.min(d, (before[j - 2] as number) + 1)
      current.push(d)
      best = Math.min(best, d)
    }
    if (best > limit) return false
    before = previous
    previous = current
  }
  return (previous[b.length] as number) <= limit
}

/**
 * Columns every PostgreSQL table has that its catalog does not list (system columns), and MySQL's
 * `_rowid`: never refused.
 */
const SYSTEM_COLUMNS = new Set(['tableoid', 'xmin', 'cmin', 'xmax', 'cmax', 'ctid', 'oid', '_rowid'])

/**
 * Refuses a query whose plan notes a column name ({@link UnlistedColumn}) that none of its
 * tables has in `catalog`, compared ignoring case (MySQL's rule; on PostgreSQL a name that
 * differs only in case is left to the database, as before). Nothing without a catalog
 * (verification off), nor for a table the catalog does not list (another schema, a temporary
 * table): its columns are not known.
 *
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refuseUnlisted(catalog: Catalog | undefined, plan: QueryPlan): void {
  const unlisted = plan.unlisted
  if (unlisted === undefined || catalog === undefined) return
  for (const u of unlisted) {
    if (!absent(catalog, u)) continue
    const info = u.near
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${u.name}" is no column of ${u.tables.map((t) => (t.schema === undefined ? t.name : `${t.schema}.${t.name}`)).join(' or ')} (the catalog read by schema verification has none of that name) but is spelt like encrypted column ${info.table.physical}.${info.physical}: a value beside it would reach the database unencrypted. Nothing was sent.`,
      {
        table: info.table.logical,
        column: info.logical,
        hint: `Spell it exactly "${info.physical}". If the column was added after this process read the catalog (once, before its first write or encrypted read), restart the process.`,
      },
    )
  }
}

/** True when every table `u` may belong to is in the catalog and none has a column of its name. */
function absent(catalog: Catalog, u: UnlistedColumn): boolean {
  const folded = u.name.toLowerCase()
  if (SYSTEM_COLUMNS.has(folded)) return false
  for (const t of u.tables) {
    const columns = columnsOf(catalog, t.schema, t.name)
    // A real column (`emails` beside `email`) is found as spelt, without folding each name.
    if (columns === undefined || columns.includes(u.name)) return false
    if (columns.some((c) => c.toLowerCase() === folded)) return false
  }
  return true
}
