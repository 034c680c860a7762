import { Kysely, type RootOperationNode, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema } from '../../../src/index.js'
import { analyzeQuery } from '../../../src/plugin/analyzer.js'
import { EMPTY_PLAN, type QueryPlan } from '../../../src/plugin/plan.js'
import { nearEncrypted, refuseUnlisted } from '../../../src/plugin/unlisted-columns.js'
import type { Catalog, CatalogTable } from '../../../src/schema/catalog.js'
import { pluginView } from '../../../src/schema/plugin-view.js'
import { compileOnlyDialect } from '../../support/compile-only.js'

// biome-ignore lint/suspicious/noExplicitAny: table names of the fixture.
const db = new Kysely<any>({ dialect: compileOnlyDialect() })

const schema = pluginView(
  encryptedSchema({
    users: {
      email: encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 40 }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 8 } }),
    },
  }),
)
const users = schema.table('users')!

/** A catalog that lists `tables` (name → columns) and nothing else: all `columnsOf` reads. */
function catalog(tables: Record<string, readonly string[]>): Catalog {
  const table = (name: string): CatalogTable | undefined => {
    const columns = tables[name]
    if (columns === undefined) return undefined
    return { name, columns: new Map(columns.map((c) => [c, 'text'])) } as unknown as CatalogTable
  }
  return { table } as unknown as Catalog
}

const LIVE = catalog({
  users: ['id', 'name', 'emails', 'email', 'email_bidx', 'ssn', 'ssn_bidx'],
  plain: ['id', 'emial'],
})

/** The plan of `query` analyzed as the plugin does with verification on (`'pending'`) or off. */
const planOf = (query: { toOperationNode(): unknown }, columns: 'pending' | undefined): QueryPlan =>
  analyzeQuery(schema, 'rewrite', query.toOperationNode() as RootOperationNode, columns).plan
const plan = (query: { toOperationNode(): unknown }): QueryPlan => planOf(query, 'pending')

describe('nearEncrypted', () => {
  it.each(['emial', 'email ', ' Email\t', 'emails', 'e_mail', 'emai', 'EMIAL', 'ssm', 'sn', 'ssn '])(
    'takes %j for a spelling of an encrypted column',
    (name) => {
      expect(nearEncrypted(users, name)).toBeDefined()
    },
  )

  it.each(['id', 'name', 'email_address', 'sex', 'mail_to', 'tenant'])('leaves %j alone', (name) => {
    expect(nearEncrypted(users, name)).toBeUndefined()
  })
})

describe('the analysis notes misspelt names for the catalog check', () => {
  it('leaves the plan of a query with no such name empty (the common path)', () => {
    expect(plan(db.selectFrom('users').select(['id', 'name']).where('id', '=', 1))).toBe(EMPTY_PLAN)
    expect(plan(db.updateTable('users').set({ name: 'x' }).where('name', '=', 'y'))).toBe(EMPTY_PLAN)
  })

  it('notes nothing with schema verification off (no catalog to tell a typo)', () => {
    expect(planOf(db.selectFrom('users').select('id').where('emial', '=', 'v'), undefined)).toBe(EMPTY_PLAN)
  })

  it('notes qualified, unqualified and written names', () => {
    const names = (p: QueryPlan) =>
      p.unlisted?.map((u) => [u.name, u.near.physical, u.tables.map((t) => t.name)])
    expect(names(plan(db.selectFrom('users').select('id').where('emial', '=', 'v')))).toEqual([
      ['emial', 'email', ['users']],
    ])
    expect(names(plan(db.selectFrom('users as u').select('u.id').where('u.ssm', '=', 'v')))).toEqual([
      ['ssm', 'ssn', ['users']],
    ])
    expect(names(plan(db.insertInto('users').values({ emial: 'v' })))).toEqual([
      ['emial', 'email', ['users']],
    ])
    expect(names(plan(db.updateTable('users').set({ 'email ': 'v' })))).toEqual([
      ['email ', 'email', ['users']],
    ])
    // Unqualified beside another table: it may be that table's column.
    expect(
      names(plan(db.selectFrom(['users', 'plain']).select('users.id').where('emial', '=', 'v'))),
    ).toEqual([['emial', 'email', ['users', 'plain']]])
  })

  it('does not note an unqualified name where it may be an alias or a relation it cannot list', () => {
    // HAVING may read a select-list alias (MySQL), one given in raw SQL too.
    expect(
      plan(db.selectFrom('users').select('name as emial').groupBy('name').having('emial', '=', 'v')),
    ).toBe(EMPTY_PLAN)
    expect(
      plan(
        db
          .selectFrom('users')
          // biome-ignore lint/suspicious/noExplicitAny: a raw select item names its own output.
          .select([sql`upper(name) as emial` as any])
          .groupBy('name')
          .having('emial', '=', 'v'),
      ),
    ).toBe(EMPTY_PLAN)
    // A subquery of the select list may read an alias before it (MySQL).
    expect(
      plan(
        db
          .selectFrom('users')
          .select([
            'name as emial',
            (eb) => eb.selectFrom('users as u2').select('u2.id').where('emial', '=', 'v').as('x'),
          ]),
      ),
    ).toBe(EMPTY_PLAN)
    // A query level of raw SQL: its relations are not known.
    expect(
      plan(
        db
          .selectFrom('users')
          .select('id')
          .where('id', 'in', db.selectFrom(sql`plain`.as('p')).select('p.id').where('emial', '=', 'v')),
      ),
    ).toBe(EMPTY_PLAN)
  })

  it('notes names in subqueries and CTE queries, with every table the name may belong to', () => {
    const names = (p: QueryPlan) => p.unlisted?.map((u) => [u.name, u.tables.map((t) => t.name)])
    // A subquery may read an enclosing query's columns: its tables count too.
    const correlated = plan(
      db
        .selectFrom('plain')
        .select('id')
        .where((eb) => eb.exists(eb.selectFrom('users').select('id').where('emial', '=', 'v'))),
    )
    expect(names(correlated)).toEqual([['emial', ['users', 'plain']]])
    expect(() => refuseUnlisted(LIVE, correlated)).not.toThrow()
    const inner = plan(
      db
        .selectFrom('users')
        .select('id')
        .where('id', 'in', db.selectFrom('users as u2').select('u2.id').where('ssm', '=', 'v')),
    )
    expect(names(inner)).toEqual([['ssm', ['users', 'users']]])
    // Each table once in the message.
    expect(() => refuseUnlisted(LIVE, inner)).toThrow(/"ssm" is no column of users \(/)
    // HAVING, where the name is no output of the select list.
    const having = plan(db.selectFrom('users').select('name').groupBy('name').having('emial', '=', 'v'))
    expect(names(having)).toEqual([['emial', ['users']]])
    expect(() => refuseUnlisted(LIVE, having)).toThrow(/"emial" is no column of users/)
    // A CTE's query sees no relation of the statement's own FROM.
    const cte = plan(
      db
        .with('c', (q) => q.selectFrom('users').select('id').where('emial', '=', 'v'))
        .selectFrom(['c', 'plain'])
        .select('c.id'),
    )
    expect(names(cte)).toEqual([['emial', ['users']]])
    expect(() => refuseUnlisted(LIVE, cte)).toThrow(/"emial" is no column of users/)
    // A CTE whose output list has the name ends it.
    expect(
      plan(
        db
          .with('c', (q) => q.selectFrom('plain').select(['id', 'emial']))
          .with('d', (q) => q.selectFrom(['c', 'users']).select('users.id').where('emial', '=', 'v'))
          .selectFrom('d')
          .select('d.id'),
      ),
    ).toBe(EMPTY_PLAN)
  })
})

describe("a derived table's or CTE's outputs", () => {
  const derived = db.selectFrom('users').select(['id', 'email', 'ssn as tax_id']).as('d')
  const refusal = (p: QueryPlan): string => {
    try {
      refuseUnlisted(LIVE, p)
    } catch (e) {
      return (e as Error).message
    }
    return 'not refused'
  }

  it('refuses a name none of its known outputs has, spelt near one that carries an encrypted column', () => {
    const qualified = plan(db.selectFrom(derived).select('d.id').where('d.emial', '=', 'secret-value'))
    expect(qualified.unlisted).toMatchObject([
      { name: 'emial', tables: [], derived: ['d'], spelling: 'email' },
    ])
    expect(refusal(qualified)).toContain(
      '"emial" is no column of d (the query of d selects none) but is spelt like encrypted column users.email',
    )
    expect(refusal(qualified)).not.toContain('secret-value')
    // Spelt like an alias: the hint names the alias.
    const aliased = plan(db.selectFrom(derived).select('d.id').where('d.tax_di', '=', 'v'))
    expect(refusal(aliased)).toContain('spelt like "tax_id", encrypted column users.ssn')
    const unqualified = plan(db.selectFrom(derived).select('d.id').where('emial', '=', 'v'))
    expect(refusal(unqualified)).toContain('"emial" is no column of d')
    const cte = plan(
      db
        .with('c', (q) => q.selectFrom('users').select(['id', 'email']))
        .selectFrom(['c', 'plain'])
        .select('c.id')
        .where('c.emial', '=', 'v'),
    )
    expect(refusal(cte)).toContain('"emial" is no column of c')
  })

  it('lets through an output it has, a name beside a table that has it, and outputs it cannot list', () => {
    expect(
      plan(db.selectFrom(derived).select('d.id').where('d.tax_id', 'is not', null)).unlisted,
    ).toBeUndefined()
    const beside = plan(db.selectFrom([derived, 'plain']).select('d.id').where('emial', '=', 'v'))
    expect(beside.unlisted).toMatchObject([{ tables: [{ name: 'plain' }], derived: ['d'] }])
    expect(refusal(beside)).toBe('not refused')
  })

  it('a `*` over a table: the query is analyzed again with the catalog, which lists its outputs (F5)', () => {
    const withCatalog = (query: { toOperationNode(): unknown }): QueryPlan =>
      analyzeQuery(schema, 'rewrite', query.toOperationNode() as RootOperationNode, LIVE).plan
    const all = db.selectFrom('users').selectAll().as('d')
    const misspelt = db.selectFrom(all).select('d.id').where('d.emial', '=', 'v')
    // Before the catalog is read: nothing to compare with, so the wrapper must look again.
    expect(plan(misspelt).unlisted).toBeUndefined()
    expect(plan(misspelt).needsCatalog).toBe(true)
    expect(refusal(withCatalog(misspelt))).toContain(
      '"emial" is no column of d (the query of d selects none)',
    )
    // A real column of the table, qualified by the derived table.
    const real = db.selectFrom(all).select('d.id').where('d.emails', 'is not', null)
    expect(plan(real).needsCatalog).toBe(true)
    expect(refusal(withCatalog(real))).toBe('not refused')
    // Unqualified, beside a `*` over a plain table that has the name, or does not.
    const plainAll = db.selectFrom('plain').selectAll().as('p')
    const beside = db.selectFrom(['users as u', plainAll]).select('u.id').where('emial', '=', 'v')
    expect(plan(beside).needsCatalog).toBe(true)
    expect(refusal(withCatalog(beside))).toBe('not refused')
    const missing = db.selectFrom(['users as u', plainAll]).select('u.id').where('emal', '=', 'v')
    expect(refusal(withCatalog(missing))).toContain('"emal" is no column of users or p')
    // A name near no encrypted column leaves the plan as it was: no second analysis.
    expect(plan(db.selectFrom(all).select('d.id').where('d.name', '=', 'v')).needsCatalog).toBeUndefined()
  })
})

describe('an output aliased by raw SQL (helper-127)', () => {
  it('claims and replaces no output, though its name reads as "undefined"', () => {
    const p = plan(db.selectFrom('users').select(['email as undefined', sql`'x'`.as(sql`y` as never)]))
    expect(p.outputs.map((o) => o.name)).toEqual(['undefined'])
  })
})

describe('output names raw SQL gives or a CTE column list leaves (helper-127)', () => {
  const passes = (query: { toOperationNode(): unknown }) => () => refuseUnlisted(LIVE, plan(query))

  it('a CTE column list shorter than its query (PostgreSQL): the other outputs keep their names', () => {
    const query = db
      .with('c(a)', (q) => q.selectFrom('plain').select(['id', 'emial']) as never)
      .selectFrom(['users', 'c'])
      .select('users.id')
      .where('emial', '=', 'v')
    expect(passes(query)).not.toThrow()
  })

  it('an output aliased by raw SQL, read from a derived table, a later subquery or HAVING', () => {
    const rawAlias = sql`'x'`.as(sql`emial` as never)
    expect(
      passes(
        db
          .selectFrom(db.selectFrom('users').select(['id', 'email', rawAlias]).as('d'))
          .select('d.id')
          .where('d.emial', '=', 'x'),
      ),
    ).not.toThrow()
    expect(
      passes(
        db
          .selectFrom('users')
          .select([rawAlias, db.selectFrom('users as u2').select('u2.id').where('emial', '=', 'x').as('s')]),
      ),
    ).not.toThrow()
    expect(
      passes(
        db
          .selectFrom('users')
          .select(sql`max(name)`.as(sql`emial` as never))
          .groupBy('id')
          .having('emial', '=', 'ada'),
      ),
    ).not.toThrow()
  })

  it("a derived table's refusal says where the name is missing and how to mend it", () => {
    let error: { message: string; hint?: string } | undefined
    try {
      refuseUnlisted(
        LIVE,
        plan(
          db
            .selectFrom(db.selectFrom('users').select(['id', 'email']).as('d'))
            .select('d.id')
            .where('d.emial', '=', 'v'),
        ),
      )
    } catch (e) {
      error = e as { message: string; hint?: string }
    }
    expect(error?.hint).toBe('Spell it exactly "email", or select it in the query of d.')
  })
})

describe('refuseUnlisted', () => {
  const query = db.selectFrom('users').select('id').where('emial', '=', 'secret-value')

  it('refuses a noted name no table has, naming columns and never the value', () => {
    let error: unknown
    try {
      refuseUnlisted(LIVE, plan(query))
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ code: 'AMBIGUOUS_COLUMN', table: 'users', column: 'email' })
    expect((error as Error).message).toContain('"emial"')
    expect((error as Error).message).not.toContain('secret-value')
  })

  it('lets through a real column, in any case, and a system column', () => {
    expect(() =>
      refuseUnlisted(LIVE, plan(db.selectFrom('users').select('id').where('emails', '=', 'v'))),
    ).not.toThrow()
    expect(() =>
      refuseUnlisted(LIVE, plan(db.selectFrom('users').select('id').where('EMAILS', '=', 'v'))),
    ).not.toThrow()
    expect(() =>
      refuseUnlisted(
        catalog({ users: ['id'] }),
        Object.freeze({
          ...EMPTY_PLAN,
          unlisted: [
            {
              name: 'ctid',
              tables: [{ schema: undefined, name: 'users' }],
              near: users.column('ssn')!,
              spelling: 'ssn',
            },
          ],
        }),
      ),
    ).not.toThrow()
  })

  it('lets through a name of another table in scope, and any name of a table the catalog lacks', () => {
    const joined = plan(db.selectFrom(['users', 'plain']).select('users.id').where('emial', '=', 'v'))
    expect(() => refuseUnlisted(LIVE, joined)).not.toThrow()
    const elsewhere = plan(db.selectFrom(['users', 'other']).select('users.id').where('emial', '=', 'v'))
    expect(() => refuseUnlisted(LIVE, elsewhere)).not.toThrow()
  })

  it('does nothing without a catalog', () => {
    expect(() => refuseUnlisted(undefined, plan(query))).not.toThrow()
  })
})
