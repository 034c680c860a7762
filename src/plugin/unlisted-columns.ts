import { QueryRefusedError } from '../errors.js'
import type { Catalog } from '../schema/catalog.js'
import type { ColumnInfo, EncryptedSchema, TableInfo } from '../schema/schema.js'
import type { AnalysisContext } from './analysis-context.js'
import type { QueryPlan, UnlistedColumn } from './plan.js'
import { type Relation, Scope } from './scope.js'
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

/** Levels whose select list has an item without a name the plugin knows (raw SQL may name outputs). */
const unnamedOutputs = new WeakSet<Scope>()

/**
 * Records that the select list of `scope` has an item whose output name is not known (`sql\`x as
 * emial\``): MySQL lets a subquery read it, so no name in a subquery is noted (helper-126).
 */
export function markUnnamedOutput(scope: Scope): void {
  unnamedOutputs.add(scope)
}

/**
 * Records that a FROM or JOIN item of `scope` is raw SQL the scope does not list as a relation:
 * an unqualified name there is never noted, since that relation may have the column.
 */
export function markUnmodelled(scope: Scope): void {
  unmodelled.add(scope)
}

/**
 * A level of scope whose own relations are not known (raw SQL's: a query embedded in raw SQL may
 * sit under the raw text's own FROM), seeing `parent`'s relations and `ctes`' CTEs: a name there
 * or in a query below it is never noted (helper-126).
 */
export function unmodelledLevel(schema: EncryptedSchema, parent: Scope | undefined, ctes = parent): Scope {
  const level = new Scope(schema, parent, ctes)
  unmodelled.add(level)
  return level
}

/**
 * Notes `name`, qualified by or written to `relation`, when it is no annotated column or blind
 * index of the relation's table but is spelt near an encrypted column of it; or, for a derived
 * table or CTE whose every output name is known, when it is none of them but is spelt near an
 * output that passes an encrypted column on.
 */
export function noteNamed(a: AnalysisContext, relation: Relation | undefined, name: string): void {
  if (a.columns === undefined || relation === undefined) return
  const { table, base } = relation
  if (base === undefined) {
    if (relation.columns !== undefined && hasName(relation.columns, name)) return
    const near = nearOutput(relation, name)
    if (near === undefined) return
    // Output names not known yet (a `*` over a table, before the catalog is read): the query is
    // analyzed again with the catalog, which lists them (helper-127's F5).
    if (relation.columns === undefined) a.wantCatalog()
    else a.noteUnlisted({ name, tables: [], derived: [relation.name], ...near })
    return
  }
  if (table === undefined) return
  if (table.column(name) !== undefined || table.indexColumn(name) !== undefined) return
  const near = nearEncrypted(table, name)
  if (near !== undefined) a.noteUnlisted({ name, tables: [base], near, spelling: near.physical })
}

/**
 * Notes an unqualified `name` that resolved to no annotated column, in a WHERE, ON or HAVING
 * condition or as a written column, when a relation in scope has an encrypted column spelt near
 * it. In a subquery the name may be a column of an enclosing query's relation too, so the
 * relations of every level count. Only where every relation a level sees is known: no raw FROM
 * item, every derived table's and CTE's output names known (one that has the name ends it; a `*`
 * over a table is known once the catalog is read, see {@link AnalysisContext.wantCatalog}), and
 * no enclosing select list with an output of that name or an item of raw SQL (MySQL lets a
 * subquery read an alias), nor, in HAVING (`having`), the statement's own.
 */
export function noteUnqualified(a: AnalysisContext, scope: Scope, name: string, having = false): void {
  if (a.columns === undefined) return
  const lower = name.toLowerCase()
  let near: { near: ColumnInfo; spelling: string } | undefined
  let unknownOutputs = false
  for (let s: Scope | undefined = scope; s !== undefined; s = s.parent) {
    if (unmodelled.has(s)) return
    if ((s !== scope || having) && (unnamedOutputs.has(s) || s.hasOutputNamed(name))) return
    for (const relation of s.relations) {
      // A relation's own name: PostgreSQL reads it as the whole row (`where('o', 'is', null)`,
      // the anti-join), whatever columns it has (helper-125).
      if (relation.name.toLowerCase() === lower) return
      if (relation.qualifiedOnly) continue
      if (relation.base === undefined) {
        // Output names not known yet (a `*` over a table): it may have the name.
        if (relation.columns === undefined) unknownOutputs = true
        else if (hasName(relation.columns, name)) return
        near ??= nearOutput(relation, name)
      } else if (relation.table !== undefined && near === undefined) {
        const info = nearEncrypted(relation.table, name)
        if (info !== undefined) near = { near: info, spelling: info.physical }
      }
    }
  }
  // The relations, listed only for a near name (most unresolved names are plain columns: `id`).
  if (near === undefined) return
  if (unknownOutputs) {
    // As in noteNamed: analyzed again with the catalog, which may list them.
    a.wantCatalog()
    return
  }
  const tables: Base[] = []
  const derived: string[] = []
  for (let s: Scope | undefined = scope; s !== undefined; s = s.parent) {
    for (const relation of s.relations) {
      if (relation.qualifiedOnly) continue
      if (relation.base !== undefined) tables.push(relation.base)
      else derived.push(relation.name)
    }
  }
  a.noteUnlisted({ name, tables, derived, ...near })
}

/** Whether `names` has `name`, ignoring case (MySQL's rule for column names). */
function hasName(names: readonly string[], name: string): boolean {
  const folded = name.toLowerCase()
  return names.some((n) => n.toLowerCase() === folded)
}

/**
 * The encrypted column a derived table or CTE passes on under an output name `name` is near
 * (see {@link nearEncrypted}), with that output name, if any.
 */
function nearOutput(relation: Relation, name: string): { near: ColumnInfo; spelling: string } | undefined {
  for (const [output, source] of relation.derived ?? []) {
    if (source.kind === 'column' && isNear(output, name)) return { near: source.info, spelling: output }
  }
  return undefined
}

/**
 * The encrypted column of `table` whose name (as queries use it, logical, or stored) `name` is
 * near, if any: equal once surrounding whitespace and case are dropped, or within one edit of a
 * name of up to 4 characters, two of a longer one (an insertion, deletion, substitution or swap
 * of neighbours: `emial`, `emails`, `e_mail`, `ssm`).
 */
export function nearEncrypted(table: TableInfo, name: string): ColumnInfo | undefined {
  const near = (spelling: string | undefined) => spelling !== undefined && isNear(spelling, name)
  for (const info of table.columns.values()) {
    if (near(info.physical) || near(info.logical) || near(info.stored) || near(info.mapped?.name)) return info
  }
  return undefined
}

/** Whether `name` is spelt near `spelling` (see {@link nearEncrypted}). */
function isNear(spelling: string, name: string): boolean {
  const trimmed = name.trim()
  const limit = spelling.length <= 4 ? 1 : 2
  // Most names of a table (`id`) differ in length by more than the limit: nothing to compare.
  if (Math.abs(spelling.length - trimmed.length) > limit) return false
  return withinEdits(trimmed.toLowerCase(), spelling.toLowerCase(), limit)
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
    // Each once: a self-join or a subquery over the same table lists it twice.
    const tables = [
      ...new Set(u.tables.map((t) => (t.schema === undefined ? t.name : `${t.schema}.${t.name}`))),
    ]
    const derived = [...new Set(u.derived)]
    const why = [
      ...(tables.length > 0 ? ['the catalog read by schema verification has none of that name'] : []),
      ...(derived.length > 0 ? [`the query of ${derived.join(' or ')} selects none`] : []),
    ]
    const column = `encrypted column ${info.table.physical}.${info.physical}`
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${u.name}" is no column of ${[...tables, ...derived].join(' or ')} (${why.join('; ')}) but is spelt like ${u.spelling === info.physical ? column : `"${u.spelling}", ${column}`}: a value beside it would reach the database unencrypted. Nothing was sent.`,
      {
        table: info.table.logical,
        column: info.logical,
        hint:
          tables.length === 0
            ? `Spell it exactly "${u.spelling}", or select it in the query of ${derived.join(' or ')}.`
            : `Spell it exactly "${u.spelling}". If the column was added after this process read the catalog (once, before its first write or encrypted read), restart the process.`,
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
