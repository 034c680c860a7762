import { ConfigError, QueryRefusedError } from '../errors.js'
import { isWellFormedString } from '../fields/codecs.js'
import { contextValue } from '../fields/context-values.js'
import type { EncryptedSchema, KeyScope, TableInfo } from './schema-types.js'

export type { KeyScope } from './schema-types.js'

/**
 * Per-tenant keys (the `keyScope` table option): each tenant of a table has its own data and
 * index keys, stored in the key table under a scoped logical name,
 * `<logical table>#<scope column>=<tenant>`, e.g. `orders#tenant_id=acme`. The key store, the
 * key ring, its cache, rotation, rewrap and shredding then work per tenant exactly as they work
 * per table. The tenant is the row's canonical context value (`contextValue`), percent-encoded
 * (`encodeURIComponent`: `%`, `#`, `=` and every non-ASCII byte are escaped), so two tenants
 * never share a name and a name never reads as another table's.
 *
 * The logical table name a ciphertext's AAD and a blind index bind to stays the table's own: the
 * scoped name chooses the key, nothing else.
 */

/** Separates a table's logical name from its scope in a scoped key name. */
export const SCOPE_SEPARATOR = '#'

/** The key table's `logical_table` column is a varchar(255). */
export const KEY_NAME_MAX = 255

/**
 * The key name of one tenant of a table with a key scope.
 *
 * @param table - A table with a `keyScope`.
 * @param tenant - The tenant's canonical context value.
 * @throws QueryRefusedError `TENANT_INVALID` when the name would be longer than 255 characters
 *   (the key table's column), the tenant is the empty string, or it holds a lone surrogate.
 * @example
 * ```ts
 * tenantKeyName(orders, 'acme') // 'orders#tenant_id=acme'
 * tenantKeyName(orders, 'a#b')  // 'orders#tenant_id=a%23b'
 * ```
 */
export function tenantKeyName(table: TableInfo, tenant: string): string {
  const scope = table.keyScope as KeyScope
  if (!isWellFormedString(tenant)) {
    // encodeURIComponent would throw an untyped URIError on it.
    throw new QueryRefusedError(
      'TENANT_INVALID',
      `A tenant of ${table.physical}.${scope.column} holds a lone surrogate (not well-formed Unicode): it cannot name its keys. Nothing was sent.`,
      { table: table.logical, operator: 'key scope', hint: 'Use tenant ids that are well-formed strings.' },
    )
  }
  const name = `${table.logical}${SCOPE_SEPARATOR}${scope.column}=${encodeURIComponent(tenant)}`
  if (tenant.length === 0 || name.length > KEY_NAME_MAX) {
    throw new QueryRefusedError(
      'TENANT_INVALID',
      `Tenant ${tenant.length === 0 ? '""' : `of ${tenant.length} characters`} of ${table.physical}.${scope.column} cannot name its keys: ${tenant.length === 0 ? 'it is empty' : `its key name would be ${name.length} characters, over the key table's ${KEY_NAME_MAX}`}. Nothing was sent.`,
      {
        table: table.logical,
        operator: 'key scope',
        hint: `Use tenant ids of at most ${KEY_NAME_MAX - table.logical.length - scope.column.length - 2} characters once percent-encoded (UUIDs or short slugs).`,
      },
    )
  }
  return name
}

/**
 * The logical key name a row's values are encrypted under: the table's logical name, or, for a
 * table with a key scope, its tenant's key name.
 *
 * @param table - The table.
 * @param context - The row's canonical context values (present whenever the table binds a context).
 * @returns `undefined` when the table has a key scope and no context values are given.
 */
export function rowKeyName(table: TableInfo, context: readonly string[] | undefined): string | undefined {
  const scope = table.keyScope
  if (scope === undefined) return table.logical
  const tenant = context?.[scope.at]
  return tenant === undefined ? undefined : tenantKeyName(table, tenant)
}

/**
 * Reads a scoped key name back: the logical table, scope column and tenant; `undefined` for a
 * plain table name.
 */
export function parseTenantKeyName(
  name: string,
): { readonly logical: string; readonly column: string; readonly tenant: string } | undefined {
  const hash = name.lastIndexOf(SCOPE_SEPARATOR)
  if (hash === -1) return undefined
  const rest = name.slice(hash + 1)
  const eq = rest.indexOf('=')
  if (eq <= 0) return undefined
  try {
    return {
      logical: name.slice(0, hash),
      column: rest.slice(0, eq),
      tenant: decodeURIComponent(rest.slice(eq + 1)),
    }
  } catch {
    return undefined
  }
}

/**
 * The error of a query that needs a tenant's keys without naming the tenant.
 *
 * @param table - The table with a key scope.
 * @param column - The encrypted column concerned (logical name), if any.
 * @param what - What the query does, e.g. `a search on orders.email`.
 * @param operator - The refused operator or construct.
 */
export function tenantRequired(
  table: TableInfo,
  column: string | undefined,
  what: string,
  operator: string,
): QueryRefusedError {
  const scope = table.keyScope as KeyScope
  return new QueryRefusedError(
    'TENANT_REQUIRED',
    `Refused ${what}: ${table.physical} has a key per tenant (keyScope ${scope.column}), so its blind indexes differ from tenant to tenant, and this query does not name one tenant. Nothing was sent.`,
    {
      table: table.logical,
      column,
      operator,
      hint: `Name the tenant by equality in the same WHERE, joined by AND: .where('${scope.column}', '=', tenant).`,
    },
  )
}

/**
 * The key name of one tenant of a table with per-tenant keys.
 * @throws ConfigError `CONFIG_INVALID` when the table is unknown or has no key scope
 * @throws QueryRefusedError `TENANT_INVALID` when the tenant cannot name keys
 */
export function tenantKeyNameOf(schema: EncryptedSchema, table: string, tenant: unknown): string {
  const info = schema.tableNamed(table)
  if (info?.keyScope === undefined)
    throw new ConfigError(
      'CONFIG_INVALID',
      `${table} ${info === undefined ? 'is not a table of the encrypted schema' : 'has no keyScope (per-tenant keys)'}.`,
      { table },
    )
  const value = contextValue(tenant)
  if (value === undefined)
    throw new ConfigError('CONFIG_INVALID', `A tenant of ${table} must be a string or an integer.`, {
      table: info.logical,
    })
  return tenantKeyName(info, value)
}
