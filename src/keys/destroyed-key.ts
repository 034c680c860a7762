import { KeyError } from '../errors.js'
import { parseTenantKeyName } from '../schema/key-scope.js'

/** The error of a use of keys that were destroyed (crypto-shredded). */
export function keyDestroyed(logicalTable: string): KeyError {
  const tenant = parseTenantKeyName(logicalTable)
  const what =
    tenant === undefined
      ? `The keys of ${logicalTable}`
      : `The keys of tenant ${JSON.stringify(tenant.tenant.length > 64 ? `${tenant.tenant.slice(0, 64)}…` : tenant.tenant)} of ${tenant.logical} (${tenant.column})`
  return new KeyError(
    'KEY_DESTROYED',
    `${what} were destroyed (crypto-shredded): their data cannot be decrypted or searched, and no key is created in their place.`,
    { table: tenant?.logical ?? logicalTable },
  )
}
