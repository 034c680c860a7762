import { type SelectQueryNode, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import { identifierName } from '../../src/plugin/table-names.js'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'

/**
 * Issue 12: reads through a unique blind index check the decrypted value (item 6), upserts on an
 * encrypted column target its unique index (item 5), refusal hints fit the refused shape, and raw
 * SQL that names only plain columns still runs (item 3's other side).
 */

function refusal(run: () => unknown): QueryRefusedError {
  try {
    run()
  } catch (error) {
    expect(error).toBeInstanceOf(QueryRefusedError)
    return error as QueryRefusedError
  }
  throw new Error('not refused')
}

describe.each(backends())('plugin unique-index checks, upserts and hints [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend, {
      seed: async (t) => {
        // Before the first write, so the catalog the schema check reads lists it.
        await sql`create table ${sql.table(twin)} (id integer, email varchar(100))`.execute(t.raw)
        await sql`insert into ${sql.table(twin)} values (1, 'twin-1@x.io'), (2, 'twin-2@x.io')`.execute(t.raw)
        await t.db
          .insertInto(u)
          .values([
            { id: 1, name: 'ada', email: 'ada@x.io', ssn: '111-11-1111' },
            { id: 2, name: 'bob', email: 'bob@x.io', ssn: '222-22-2222' },
          ])
          .execute()
        await t.db
          .insertInto(o)
          .values([
            { id: 1, user_id: 1, item: 'book', email: 'first@x.io' },
            { id: 2, user_id: 2, item: 'pen', email: 'second@x.io' },
          ])
          .execute()
      },
    })
    const { users: u, orders: o } = t.names
    /** A plain table with a plaintext `email`, as users has an encrypted one. */
    const twin = `${u}_twin`
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(twin)}`.execute(t.raw)
    })

    describe('a unique-index hit whose value does not match is dropped (item 6)', () => {
      beforeAll(async () => {
        // Copy ada's email_bidx onto bob's row: the UNIQUE index would refuse it, so drop it first
        // (as a database that lost the constraint, or a tampered row, would have).
        const index = `${u}_email_bidx_idx`
        if (backend.family === 'mysql')
          await sql`drop index ${sql.id(index)} on ${sql.table(u)}`.execute(t.raw)
        else await sql`drop index ${sql.id(index)}`.execute(t.raw)
        await sql`update ${sql.table(u)} set email_bidx = (select email_bidx from (select email_bidx from ${sql.table(u)} where id = 1) as a) where id = 2`.execute(
          t.raw,
        )
        const stored = await t.raw.selectFrom(u).select(['id', 'email_bidx']).orderBy('id').execute()
        expect(Buffer.from(stored[1]?.email_bidx as Uint8Array)).toEqual(
          Buffer.from(stored[0]?.email_bidx as Uint8Array),
        )
      })

      it('selectAll by the first email returns only the true row, and counts the dropped one', async () => {
        const before = t.encryption.stats().falsePositives
        const query = t.db.selectFrom(u).selectAll().where('email', '=', 'ada@x.io')
        // The selected email column is checked itself: no hidden column is added.
        expect(query.compile().sql).not.toContain('__kfe_fp_')
        const rows = await query.execute()
        expect(rows.map((r) => [r.id, r.email])).toEqual([[1, 'ada@x.io']])
        expect(t.encryption.stats().falsePositives).toBe(before + 1)
      })

      it('a select that does not show the column checks it through a hidden one', async () => {
        const query = t.db.selectFrom(u).select(['id', 'name']).where('email', 'in', ['ADA@x.io'])
        expect(query.compile().sql).toContain('__kfe_fp_0')
        expect(await query.execute()).toEqual([{ id: 1, name: 'ada' }])
      })

      it('two conditions on one column share one hidden column (helper-124)', async () => {
        const query = t.db
          .selectFrom(u)
          .select(['id', 'name'])
          .where('email', '=', 'ada@x.io')
          .where('email', 'in', ['ADA@x.io'])
        const { sql } = query.compile()
        expect(sql).toContain('__kfe_fp_0')
        expect(sql).not.toContain('__kfe_fp_1')
        expect(await query.execute()).toEqual([{ id: 1, name: 'ada' }])
      })

      it('with limit, through a join, and as a subquery built from db', async () => {
        expect(
          await t.db.selectFrom(u).select('id').where('email', '=', 'ada@x.io').limit(5).execute(),
        ).toEqual([{ id: 1 }])
        const joined = await t.db
          .selectFrom(`${o} as o`)
          .innerJoin(`${u} as u`, 'u.id', 'o.user_id')
          .select(['o.item', 'u.name'])
          .where('u.email', '=', 'ada@x.io')
          .orderBy('o.id')
          .execute()
        expect(joined).toEqual([{ item: 'book', name: 'ada' }])
        // The subquery was transformed once on its own (adding a hidden column): not as a subquery.
        const sub = t.db.selectFrom(u).select('id').where('email', '=', 'ada@x.io')
        const viaSub = await t.db
          .selectFrom(o)
          .select('item')
          .where('user_id', 'in', sub)
          .orderBy('id')
          .execute()
        // As a subquery the unique index is trusted (documented): bob's order comes back too.
        expect(viaSub.map((r) => r.item)).toEqual(['book', 'pen'])
      })

      it('selectAll() over a join with a plain table that has a column of the searched name still checks the rows (helper-119)', async () => {
        // The plugin's pass, before the catalog is read, took the `email` output for users'; the
        // wrapper's pass, with the catalog, found it to be the twin's plaintext `email`, and no
        // column left to check: bob's row, with ada's index, came back too.
        const query = t.db
          .selectFrom(`${u} as u`)
          .innerJoin(`${twin} as p`, 'p.id', 'u.id')
          .selectAll()
          .where('u.email', '=', 'ada@x.io')
        const rows = await query.execute()
        // The driver keeps the last column of a name: `email` is the twin's.
        expect(rows).toEqual([expect.objectContaining({ id: 1, name: 'ada', email: 'twin-1@x.io' })])
        expect(Object.keys(rows[0] ?? {})).not.toContain('__kfe_fp_0')
        // Through a hidden column: users' `email` output is not the one the rows carry.
        expect(query.compile().sql).toContain('__kfe_fp_0')
        // Run again from its compiled form: the wrapper analyzes it anew, with the catalog.
        const compiled = query.compile()
        await t.db.executeQuery(compiled)
        const again = await t.db.executeQuery(compiled)
        expect(again.rows.map((r) => r.name)).toEqual(['ada'])
      })

      it('a compiled query whose hidden check column was removed is refused, not run unchecked', async () => {
        const compiled = t.db.selectFrom(u).select(['id', 'name']).where('email', '=', 'ada@x.io').compile()
        const node = compiled.query as SelectQueryNode
        const hidden = node.selections?.at(-1)?.selection
        expect(hidden?.kind === 'AliasNode' && identifierName(hidden.alias)).toBe('__kfe_fp_0')
        // As another plugin after ours, or code editing the compiled query, could leave it.
        const edited = { ...compiled, query: { ...node, selections: node.selections?.slice(0, -1) } }
        const error = await t.db.executeQuery(edited as typeof compiled).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(error).toBeInstanceOf(QueryRefusedError)
        expect(error).toMatchObject({ code: 'QUERY_REFUSED', operator: 'unique index', column: 'email' })
      })
    })

    describe('upserts on an encrypted column (item 5)', () => {
      it.runIf(backend.family === 'postgres')(
        'on conflict (email) targets email_bidx and updates the conflicting row',
        async () => {
          const upsert = t.db
            .insertInto(o)
            .values({ id: 3, user_id: 1, item: 'lamp', email: ' FIRST@x.io' })
            .onConflict((oc) => oc.column('email').doUpdateSet({ item: 'lamp' }))
          expect(upsert.compile().sql).toContain('on conflict ("email_bidx") do update')
          await upsert.execute()
          const rows = await t.db.selectFrom(o).select(['id', 'item', 'email']).orderBy('id').execute()
          expect(rows).toEqual([
            { id: 1, item: 'lamp', email: 'first@x.io' },
            { id: 2, item: 'pen', email: 'second@x.io' },
          ])
          await t.db
            .insertInto(o)
            .values({ id: 4, user_id: 2, item: 'cup', email: 'second@x.io' })
            .onConflict((oc) => oc.column('email').doNothing())
            .execute()
          expect(await t.raw.selectFrom(o).select('id').orderBy('id').execute()).toEqual([
            { id: 1 },
            { id: 2 },
          ])
        },
      )

      it.runIf(backend.family === 'postgres')(
        'on conflict on a column without a unique index is refused, naming the index',
        () => {
          const search = refusal(() =>
            t.db
              .insertInto(u)
              .values({ name: 'x', ssn: '333-33-3333' })
              .onConflict((oc) => oc.column('ssn').doNothing())
              .compile(),
          )
          expect(search.operator).toBe('on conflict')
          expect(search.column).toBe('ssn')
          expect(search.hint).toContain('ssn_bidx')
          const none = refusal(() =>
            t.db
              .insertInto(u)
              .values({ name: 'x', dob: new Date(0) })
              .onConflict((oc) => oc.column('dob').doNothing())
              .compile(),
          )
          expect(none.hint).toMatch(/unique index on dob/)
        },
      )
    })

    describe('search-index refusals say why the shape is refused and what to write (errors section)', () => {
      const cases: Array<[string, () => { compile(): unknown }, RegExp, RegExp]> = [
        [
          'or',
          () =>
            t.db
              .selectFrom(u)
              .selectAll()
              .where((eb) => eb.or([eb('ssn', '=', '111111111'), eb('name', '=', 'x')])),
          /under OR/,
          /one query per branch/,
        ],
        [
          'not',
          () =>
            t.db
              .selectFrom(u)
              .selectAll()
              .where((eb) => eb.not(eb('ssn', '=', '111111111'))),
          /under NOT/,
          /filter them in the application/,
        ],
        [
          'limit',
          () => t.db.selectFrom(u).selectAll().where('ssn', '=', '111111111').limit(1),
          /LIMIT and OFFSET count the false positives/,
          /page in the application/,
        ],
        [
          'update',
          () => t.db.updateTable(u).set({ name: 'x' }).where('ssn', '=', '111111111'),
          /an update would change the false positives too/,
          /then update by id/,
        ],
        [
          'delete',
          () => t.db.deleteFrom(u).where('ssn', '=', '111111111'),
          /a delete would remove the false positives too/,
          /then delete by id/,
        ],
        [
          'subquery',
          () =>
            t.db
              .selectFrom(o)
              .select('id')
              .where((eb) =>
                eb('user_id', 'in', eb.selectFrom(u).select('id').where('ssn', '=', '111111111')),
              ),
          /in a subquery/,
          /top-level select/,
        ],
        [
          'group by',
          () => t.db.selectFrom(u).select('name').where('ssn', '=', '111111111').groupBy('name'),
          /GROUP BY combines/,
          /group them in the application/,
        ],
        [
          '<>',
          () => t.db.selectFrom(u).selectAll().where('ssn', '<>', '111111111'),
          /truncated/,
          /unique index/,
        ],
      ]
      for (const [shape, build, message, hint] of cases) {
        it(`${shape}`, () => {
          const e = refusal(() => build().compile())
          expect(e.column).toBe('ssn')
          expect(e.message).toMatch(message)
          expect(e.hint).toMatch(hint)
          expect(e.hint).not.toMatch(/support only =, <>, in/)
        })
      }
    })

    it('raw SQL naming only plain columns of an encrypted table, or plain tables, still runs (item 3)', async () => {
      const byName = await t.db.selectFrom(u).select('id').where(sql`name`, '=', 'ada').execute()
      expect(byName).toEqual([{ id: 1 }])
      const literal = await t.db
        .selectFrom(u)
        .select('id')
        .where(sql<boolean>`name <> 'email' and ${sql.ref(`${u}.name`)} in (${sql.join(['ada', 'bob'])})`)
        .orderBy('id')
        .execute()
      expect(literal).toEqual([{ id: 1 }, { id: 2 }])
      const p = t.names.plain
      await t.db.insertInto(p).values({ label: 'email' }).execute()
      expect(await t.db.selectFrom(p).select('label').where(sql`label`, '=', 'email').execute()).toEqual([
        { label: 'email' },
      ])
    })
  })
})
