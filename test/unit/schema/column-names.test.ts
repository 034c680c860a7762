import { describe, expect, it } from 'vitest'
import { ConfigError, encrypted, encryptedSchema } from '../../../src/index.js'

/**
 * Kysely reads a column name holding "." as `table.column`: `where('a.b', '=', v)` names column b
 * of a table a, which the plugin cannot tell is the encrypted column a.b (the value would reach
 * the database unencrypted). Such names are refused where the schema is declared.
 */
describe('encryptedSchema: physical column names', () => {
  const refused = (define: () => unknown, name: string) => {
    let error: unknown
    try {
      define()
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' })
    expect((error as Error).message).toContain(`t.${name}: a column name containing "."`)
  }

  it('refuses an encrypted column, a blind index, a rotation slot, a storedAs name, a context column or a primary-key column holding "."', () => {
    refused(() => encryptedSchema({ t: { 'a.b': encrypted.text() } }), 'a.b')
    refused(() => encryptedSchema({ t: { a: encrypted.text({ index: { name: 'a.bidx' } }) } }), 'a.bidx')
    refused(
      () =>
        encryptedSchema({ t: { a: encrypted.text({ index: { name: 'a_bidx', rotationSlot: 'a.next' } }) } }),
      'a.next',
    )
    refused(() => encryptedSchema({ t: { a: encrypted.text({ storedAs: 'a.enc' }) } }), 'a.enc')
    refused(
      () => encryptedSchema({ t: { a: encrypted.text() } }, { tables: { t: { context: ['tenant.id'] } } }),
      'tenant.id',
    )
    refused(
      () => encryptedSchema({ t: { a: encrypted.text() } }, { tables: { t: { primaryKey: 'row.id' } } }),
      'row.id',
    )
    refused(
      () => encryptedSchema({ t: { a: encrypted.text() } }, { tables: { t: { primaryKey: ['id', 'x.y'] } } }),
      'x.y',
    )
  })

  it('accepts a schema-qualified table and a logical name holding "."', () => {
    const schema = encryptedSchema({
      'app.t': { a: encrypted.text({ logicalName: 'a.old', index: { name: 'a_bidx' } }) },
    })
    expect(schema.table('t', 'app')?.column('a')?.logical).toBe('a.old')
  })

  it('refuses a primary key that is an encrypted column, its stored column or a blind index', () => {
    for (const primaryKey of ['email', 'email_enc', 'email_bidx', ['id', 'email_bidx']]) {
      let error: unknown
      try {
        encryptedSchema(
          { t: { email: encrypted.text({ storedAs: 'email_enc', index: { name: 'email_bidx' } }) } },
          { tables: { t: { primaryKey } } },
        )
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(ConfigError)
      expect(error).toMatchObject({ code: 'CONFIG_INVALID', column: 'email' })
      expect((error as Error).message).toContain('Set primaryKey to a plain column')
    }
  })

  const refusal = (define: () => unknown): Error & { code?: string; column?: string } => {
    try {
      define()
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError)
      return e as Error
    }
    throw new Error('accepted')
  }

  it('refuses a column under migration stored as its own plaintext column, also but for case', () => {
    for (const storedAs of ['email', 'Email']) {
      const error = refusal(() =>
        encryptedSchema({
          t: {
            email: encrypted.text({ storedAs, migration: 'dual-writing', index: { name: 'email_bidx' } }),
          },
        }),
      )
      expect(error).toMatchObject({ code: 'CONFIG_INVALID', column: 'email' })
      expect(error.message).toContain(`t.email is stored as ${storedAs}, which names`)
      expect(error.message).toContain('its own plaintext column')
    }
    // Without a migration there is no plaintext column: storedAs naming the column is the default.
    expect(
      encryptedSchema({ t: { email: encrypted.text({ storedAs: 'email' }) } })
        .table('t')
        ?.column('email')?.stored,
    ).toBe('email')
  })

  it('refuses a stored column naming a primary-key or context column but for case', () => {
    const key = refusal(() =>
      encryptedSchema({ t: { email: encrypted.text({ storedAs: 'ID', migration: 'dual-writing' }) } }),
    )
    expect(key).toMatchObject({ code: 'CONFIG_INVALID', column: 'email' })
    expect(key.message).toContain('primary-key column id')
    const context = refusal(() =>
      encryptedSchema(
        { t: { email: encrypted.text({ storedAs: 'Org_Id' }) } },
        { tables: { t: { context: ['org_id', 'id'] } } },
      ),
    )
    expect(context).toMatchObject({ code: 'CONFIG_INVALID', column: 'email' })
    expect(context.message).toContain('context column org_id')
  })

  it('refuses two columns stored in one column (each write would replace the other), also but for case', () => {
    for (const other of ['secret', 'SECRET']) {
      const error = refusal(() =>
        encryptedSchema({
          t: {
            email: encrypted.text({ storedAs: 'secret' }),
            phone: encrypted.text({ storedAs: other }),
          },
        }),
      )
      expect(error).toMatchObject({ code: 'CONFIG_INVALID', column: 'phone' })
      expect(error.message).toContain(`t.phone and t.email are both stored as ${other}`)
    }
    expect(() =>
      encryptedSchema({
        t: { email: encrypted.text({ storedAs: 'a' }), phone: encrypted.text({ storedAs: 'b' }) },
      }),
    ).not.toThrow()
  })
})
