import { describe, expect, it } from 'vitest'
import { ConfigError, encrypted, encryptedSchema, QueryRefusedError } from '../../../src/index.js'
import {
  parseTenantKeyName,
  rowKeyName,
  tenantKeyName,
  tenantKeyNameOf,
} from '../../../src/schema/key-scope.js'

const schema = encryptedSchema(
  { orders: { email: encrypted.text() }, notes: { body: encrypted.text() } },
  { tables: { orders: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' }, notes: { context: ['id'] } } },
)
const orders = schema.table('orders')!

describe('per-tenant key names (keyScope)', () => {
  it('names a tenant key <table>#<column>=<percent-encoded tenant>, and reads it back', () => {
    expect(tenantKeyName(orders, 'acme')).toBe('orders#tenant_id=acme')
    for (const tenant of ['a#b=c', '50%', 'ünï', 'x/y z', '#', '=']) {
      const name = tenantKeyName(orders, tenant)
      expect(name.indexOf('#')).toBe(name.lastIndexOf('#'))
      expect(parseTenantKeyName(name)).toEqual({ logical: 'orders', column: 'tenant_id', tenant })
    }
    // Two tenants never share a name (percent-encoding is injective).
    expect(tenantKeyName(orders, 'a%23b')).not.toBe(tenantKeyName(orders, 'a#b'))
    expect(parseTenantKeyName('orders')).toBeUndefined()
  })

  it('refuses an empty tenant, one whose key name passes 255 characters, or one with a lone surrogate (TENANT_INVALID)', () => {
    const long = 'x'.repeat(255 - 'orders#tenant_id='.length)
    expect(tenantKeyName(orders, long)).toHaveLength(255)
    // The lone surrogate made encodeURIComponent throw an untyped URIError.
    for (const bad of ['', `${long}x`, 'é'.repeat(50), 'a\uD800', '\uDC00b']) {
      const e = (() => {
        try {
          tenantKeyName(orders, bad)
        } catch (error) {
          return error
        }
      })()
      expect(e).toBeInstanceOf(QueryRefusedError)
      expect((e as QueryRefusedError).code).toBe('TENANT_INVALID')
    }
  })

  it("a row's key name comes from its context values; a table without keyScope keeps its own", () => {
    expect(rowKeyName(orders, ['acme', '42'])).toBe('orders#tenant_id=acme')
    expect(rowKeyName(orders, undefined)).toBeUndefined()
    expect(rowKeyName(schema.table('notes')!, ['7'])).toBe('notes')
    expect(tenantKeyNameOf(schema, 'orders', 42)).toBe('orders#tenant_id=42')
    expect(() => tenantKeyNameOf(schema, 'notes', 'acme')).toThrow(ConfigError)
    expect(() => tenantKeyNameOf(schema, 'orders', 1.5)).toThrow(ConfigError)
  })

  it('keyScope must be one of the context columns, and reserves "#" in logical table names', () => {
    const build =
      (tables: Record<string, object>, defs: Record<string, object> = { t: { x: encrypted.text() } }) =>
      () =>
        encryptedSchema(defs as never, { tables } as never)
    expect(build({ t: { keyScope: 'tenant_id' } })).toThrow(/one of its context columns/)
    expect(build({ t: { context: ['id'], keyScope: 'tenant_id' } })).toThrow(ConfigError)
    expect(build({ t: { context: ['tenant_id'], keyScope: 'tenant_id', logicalName: 'a#b' } })).toThrow(/"#"/)
    expect(
      build(
        { t: { context: ['tenant_id'], keyScope: 'tenant_id' }, u: { logicalName: 't#tenant_id=acme' } },
        { t: { x: encrypted.text() }, u: { y: encrypted.text() } },
      ),
    ).toThrow(/reserves for tenant key names/)
    expect(build({ t: { context: ['tenant_id'], keyScope: 'tenant_id' } })().table('t')?.keyScope).toEqual({
      column: 'tenant_id',
      at: 0,
    })
  })
})

describe('the plugin view of a schema with a column under migration', () => {
  it('keeps every table option of the other tables: keyScope and context', async () => {
    const { pluginView } = await import('../../../src/schema/plugin-view.js')
    const mixed = encryptedSchema(
      {
        orders: { email: encrypted.text() },
        users: { email: encrypted.text({ storedAs: 'email_encrypted', migration: 'dual-writing' }) },
      },
      { tables: { orders: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
    )
    const view = pluginView(mixed)
    expect(view).not.toBe(mixed)
    expect(view.table('orders')?.keyScope).toEqual(mixed.table('orders')?.keyScope)
    expect(view.table('orders')?.context).toEqual(['tenant_id', 'id'])
  })
})
