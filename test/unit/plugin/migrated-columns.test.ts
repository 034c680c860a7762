import { randomBytes } from 'node:crypto'
import { CamelCasePlugin, Kysely, PostgresQueryCompiler, type RootOperationNode } from 'kysely'
import { describe, expect, it } from 'vitest'
import {
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
  type MigrationPhase,
} from '../../../src/index.js'
import { MigratedColumns } from '../../../src/plugin/migrated-columns.js'
import { pluginView } from '../../../src/schema/plugin-view.js'
import { compileOnlyDialect } from '../../support/compile-only.js'
import { migrationSchema } from '../../support/migration-schema.js'

// Only to compile query trees through the plugin (nothing runs): kysely's compile-only setup.
function appOf(phase: MigrationPhase, family: 'postgres' | 'mysql' = 'postgres') {
  const encryption = fieldEncryption({
    schema: migrationSchema('users', phase, { encrypted, encryptedSchema }),
    keyProvider: localKeyProvider({ id: 'local:unit', key: randomBytes(32) }),
  })
  // biome-ignore lint/suspicious/noExplicitAny: table names of the fixture.
  return new Kysely<any>({
    dialect: compileOnlyDialect(family),
    plugins: [encryption.plugin],
  })
}

describe('a column under migration, as the plugin rewrites its queries in each phase', () => {
  it('added: the plugin leaves the plaintext column alone', () => {
    const db = appOf('added')
    expect(db.selectFrom('users').select(['id', 'email']).where('email', '=', 'a@x.io').compile().sql).toBe(
      'select "id", "email" from "users" where "email" = $1',
    )
    expect(db.insertInto('users').values({ name: 'n', email: 'a@x.io' }).compile().parameters).toEqual([
      'n',
      'a@x.io',
    ])
  })

  it('dual-writing and backfilled: both forms written; read and searched as the plaintext, else the encrypted value', () => {
    for (const phase of ['dual-writing', 'backfilled'] as const) {
      const db = appOf(phase)
      expect(db.selectFrom('users').select(['id', 'email']).where('email', '=', 'a@x.io').compile().sql).toBe(
        'select "id", "email", "email_encrypted" as "__kfe_mig_email" from "users" where (("email" is not null and "email" = $1) or ("email" is null and "email_bidx" in ($2)))',
      )
      // HAVING searches by either form too (it searched the plaintext only: a row written before
      // the backfill was missed).
      expect(
        db.selectFrom('users').select('id').groupBy('id').having('email', '=', 'a@x.io').compile().sql,
      ).toBe(
        'select "id" from "users" group by "id" having (("email" is not null and "email" = $1) or ("email" is null and "email_bidx" in ($2)))',
      )
      expect(
        db
          .selectFrom('users as u')
          .selectAll()
          .where('u.email', 'in', ['a', 'b'])
          .where('email', 'is not', null)
          .compile().sql,
      ).toBe(
        'select * from "users" as "u" where (("u"."email" is not null and "u"."email" in ($1, $2)) or ("u"."email" is null and "u"."email_bidx" in ($3, $4))) and ("email" is not null or "email_encrypted" is not null)',
      )
      const insert = db
        .insertInto('users')
        .values({ name: 'n', email: 'a@x.io' })
        .onConflict((oc) => oc.column('email').doUpdateSet((eb) => ({ email: eb.ref('excluded.email') })))
        .returning(['id', 'email as e'])
        .compile()
      expect(insert.sql).toBe(
        'insert into "users" ("name", "email", "email_encrypted", "email_bidx") values ($1, $2, $3, $4) on conflict ("email") do update set "email" = "excluded"."email", "email_encrypted" = "excluded"."email_encrypted", "email_bidx" = "excluded"."email_bidx" returning "id", "email" as "e", "email_encrypted" as "__kfe_mig_e"',
      )
      // The plaintext goes to its own column by design; the encrypted column gets a deferred value.
      expect(insert.parameters[1]).toBe('a@x.io')
      expect(String(insert.parameters[2])).toBe('[kfe:encrypt users.email_encrypted]')
      expect(db.updateTable('users').set({ email: 'b' }).where('email', '<>', 'c').compile().sql).toBe(
        'update "users" set "email" = $1, "email_encrypted" = $2, "email_bidx" = $3 where (("email" is not null and "email" <> $4) or ("email" is null and "email_bidx" not in ($5)))',
      )
    }
  })

  it('cut-over: only the encrypted columns are read and searched; a write sets the plaintext to NULL', () => {
    const db = appOf('cut-over')
    const select = db.selectFrom('users').select(['id', 'email']).where('email', '=', 'a@x.io').compile()
    expect(select.sql).toBe(
      'select "id", "email_encrypted" as "email" from "users" where "email_bidx" in ($1)',
    )
    expect(select.parameters.map(String)).toEqual(['[kfe:probe users.email_bidx]'])
    const insert = db
      .insertInto('users')
      .values({ name: 'n', email: 'a@x.io' })
      .onConflict((oc) => oc.column('email').doUpdateSet({ name: 'm' }))
      .compile()
    expect(insert.sql).toBe(
      'insert into "users" ("name", "email_encrypted", "email", "email_bidx") values ($1, $2, $3, $4) on conflict ("email_bidx") do update set "name" = $5',
    )
    expect(insert.parameters[2]).toBe(null)
    const update = db.updateTable('users').set({ email: 'b' }).where('id', '=', 1).compile()
    expect(update.sql).toBe(
      'update "users" set "email_encrypted" = $1, "email_bidx" = $2, "email" = $3 where "id" = $4',
    )
    expect(update.parameters[2]).toBe(null)
    expect(db.selectFrom('users').select('id').where('email', 'is', null).compile().sql).toBe(
      'select "id" from "users" where "email_encrypted" is null',
    )
  })

  it('dropped: the annotated name is the encrypted column everywhere (MySQL too)', () => {
    const db = appOf('dropped', 'mysql')
    expect(db.selectFrom('users').select('email as e').where('email', '=', 'a').compile().sql).toBe(
      'select `email_encrypted` as `e` from `users` where `email_bidx` in (?)',
    )
    expect(
      db.insertInto('users').values({ name: 'n', email: 'a' }).onDuplicateKeyUpdate({ name: 'm' }).compile()
        .sql,
    ).toBe(
      'insert into `users` (`name`, `email_encrypted`, `email_bidx`) values (?, ?, ?) on duplicate key update `name` = ?',
    )
    expect(db.deleteFrom('users').where('email', 'in', ['a']).compile().sql).toBe(
      'delete from `users` where `email_bidx` in (?)',
    )
  })

  it('a builder compiled again, or extended, is rewritten again (its nodes are not taken for the pass own)', () => {
    const db = appOf('dual-writing')
    const q = db.selectFrom('users').select('id').where('email', '=', 'a@x.io')
    const search = '(("email" is not null and "email" = $1) or ("email" is null and "email_bidx" in ($2)))'
    expect(q.compile().sql).toBe(`select "id" from "users" where ${search}`)
    expect(q.compile().sql).toBe(`select "id" from "users" where ${search}`)
    expect(q.where('id', '>', 0).compile().sql).toContain(search)
    // NOT of the search keeps a row that has only its encrypted value (see the NULL tests).
    expect(
      db
        .selectFrom('users')
        .select('id')
        .where((eb) => eb.not(eb('email', '=', 'a')))
        .compile().sql,
    ).toContain(`not ${search}`)
  })

  it('rewriting is idempotent: a tree that comes back is left as it is', () => {
    for (const phase of ['dual-writing', 'cut-over'] as const) {
      const view = pluginView(migrationSchema('users', phase, { encrypted, encryptedSchema }))
      const pass = new MigratedColumns(view)
      const db = appOf('added')
      for (const q of [
        db
          .selectFrom('users')
          .select(['id', 'email', 'email as e'])
          .where('email', '=', 'a')
          .where('email', 'is', null),
        db.insertInto('users').values({ name: 'n', email: 'a' }),
        db.updateTable('users').set({ email: 'b' }).where('email', '<>', 'c'),
      ]) {
        const once = pass.rewrite(q.toOperationNode() as RootOperationNode)
        const sql = (n: RootOperationNode) =>
          new PostgresQueryCompiler().compileQuery(n, { queryId: 'q' }).sql
        expect(sql(pass.rewrite(once))).toBe(sql(once))
      }
    }
  })

  it('every refusal rule stays in force, in every phase that reads the encrypted column', () => {
    for (const phase of ['dual-writing', 'cut-over', 'dropped'] as const) {
      const db = appOf(phase)
      for (const q of [
        db.selectFrom('users').select('id').where('email', 'like', '%@x.io'),
        db.selectFrom('users').select('id').orderBy('email'),
        db.selectFrom('users').select('id').where('email', '>', 'a'),
      ])
        expect(() => q.compile()).toThrowError(expect.objectContaining({ code: 'QUERY_REFUSED' }))
    }
  })

  it('a join, or a subquery naming the table or the column, is refused (its scope is not modelled)', () => {
    for (const phase of ['dual-writing', 'cut-over', 'dropped'] as const) {
      const db = appOf(phase)
      for (const q of [
        db.selectFrom('users').innerJoin('orders', 'orders.user_id', 'users.id').select('users.email'),
        db.selectFrom('orders').select('id').where('user_id', 'in', db.selectFrom('users').select('id')),
        db
          .selectFrom('users')
          .select('id')
          .where('id', 'in', db.selectFrom('logins').select('user_id').where('email', '=', 'a')),
      ])
        expect(() => q.compile()).toThrowError(
          expect.objectContaining({ code: 'QUERY_REFUSED', table: 'users', column: 'email' }),
        )
      // A subquery that names neither passes through.
      expect(() =>
        db
          .selectFrom('users')
          .select('id')
          .where('id', 'in', db.selectFrom('logins').select('user_id'))
          .compile(),
      ).not.toThrow()
    }
  })

  it('a name that differs only in case from the migrating column is refused (MySQL would take it for that column)', () => {
    for (const phase of ['dual-writing', 'cut-over'] as const) {
      const db = appOf(phase, 'mysql')
      for (const q of [
        db.updateTable('users').set({ Email: 'a@x.io' } as never),
        db.insertInto('users').values({ name: 'n', EMAIL: 'a@x.io' } as never),
        db.selectFrom('users').select('id').where(db.dynamic.ref('Email'), '=', 'a@x.io'),
      ]) {
        expect(() => q.compile()).toThrowError(expect.objectContaining({ code: 'AMBIGUOUS_COLUMN' }))
      }
    }
  })

  it('after cut-over, a tree the plugin did not write may not send a plaintext to the plaintext column', () => {
    const pass = new MigratedColumns(
      pluginView(migrationSchema('users', 'cut-over', { encrypted, encryptedSchema })),
    )
    const db = appOf('added')
    const node = (q: { toOperationNode(): unknown }) => q.toOperationNode() as RootOperationNode
    expect(() =>
      pass.check(
        node(db.insertInto('users').values({ name: 'n', email: 'a@x.io', email_encrypted: 'a@x.io' })),
      ),
    ).toThrowError(expect.objectContaining({ code: 'PLAINTEXT_WRITE' }))
    expect(() => pass.check(node(db.updateTable('users').set({ email: 'a@x.io' })))).toThrowError(
      expect.objectContaining({ code: 'PLAINTEXT_WRITE' }),
    )
    expect(() => pass.check(node(db.updateTable('users').set({ email: null })))).not.toThrow()
  })
})

describe('cut-over: a * after the column', () => {
  it('is refused before sending (the plaintext column would come back under its name); * first compiles', () => {
    const db = appOf('cut-over')
    expect(() => db.selectFrom('users').select('email').selectAll().compile()).toThrow(
      expect.objectContaining({ code: 'QUERY_REFUSED', operator: 'select all' }),
    )
    expect(() => db.selectFrom('users as u').select('u.email').selectAll('u').compile()).toThrow(
      expect.objectContaining({ code: 'QUERY_REFUSED', operator: 'select all' }),
    )
    expect(() => db.selectFrom('users').selectAll().select('email').compile()).not.toThrow()
    expect(() =>
      appOf('dual-writing').selectFrom('users').select('email').selectAll().compile(),
    ).not.toThrow()
  })
})

describe('a multi-word column under migration spelt in camelCase (CamelCasePlugin after encryption.plugin)', () => {
  function camelAfter(phase: MigrationPhase) {
    const encryption = fieldEncryption({
      schema: encryptedSchema({
        users: {
          contact_email: encrypted.text({
            storedAs: 'contact_email_enc',
            migration: phase,
            index: { name: 'contact_email_bidx' },
          }),
        },
      }),
      keyProvider: localKeyProvider({ id: 'local:unit', key: randomBytes(32) }),
    })
    // biome-ignore lint/suspicious/noExplicitAny: table names of the fixture.
    return new Kysely<any>({
      dialect: compileOnlyDialect(),
      plugins: [encryption.plugin, new CamelCasePlugin()],
    })
  }

  it('is refused in every phase that maps it (the pass matches the declared spelling only): no plaintext sent', () => {
    for (const phase of ['dual-writing', 'backfilled', 'cut-over', 'dropped'] as const) {
      const db = camelAfter(phase)
      for (const query of [
        db.selectFrom('users').select('id').where('contactEmail', '=', 'c@x.io'),
        db.updateTable('users').set({ contactEmail: 'c@x.io' }),
        db.insertInto('users').values({ name: 'n', contactEmail: 'c@x.io' }),
      ]) {
        expect(() => query.compile()).toThrow(expect.objectContaining({ code: 'AMBIGUOUS_COLUMN' }))
      }
      // The declared spelling still works.
      expect(() =>
        db.selectFrom('users').select('id').where('contact_email', '=', 'c@x.io').compile(),
      ).not.toThrow()
    }
  })
})
