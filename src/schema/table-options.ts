import { ConfigError } from '../errors.js'
import { SCOPE_SEPARATOR } from './key-scope.js'
import type { KeyScope, SchemaDefinition } from './schema-types.js'

/** The row-binding options of a table (`context`, `keyScope`), checked when the schema is built. */

/**
 * The `context` option of a table, checked: non-empty, distinct names of plain columns (an
 * encrypted or blind-index column cannot bind its own row).
 * @throws ConfigError `CONFIG_INVALID`
 */
export function contextColumns(
  physical: string,
  logical: string,
  columns: SchemaDefinition[string],
  context: readonly string[] | undefined,
): readonly string[] {
  if (context === undefined) return Object.freeze([])
  const invalid = (why: string) =>
    new ConfigError('CONFIG_INVALID', `The context of table ${physical} ${why}.`, { table: logical })
  if (!Array.isArray(context) || context.length === 0)
    throw invalid('must be a non-empty list of column names')
  const indexNames = new Set(
    Object.values(columns ?? {}).flatMap((c) => [
      ...c.indexes.flatMap((i) => (i.rotationSlot === undefined ? [i.name] : [i.name, i.rotationSlot])),
      ...(c.storedAs === undefined ? [] : [c.storedAs]),
    ]),
  )
  const seen = new Set<string>()
  for (const name of context) {
    if (typeof name !== 'string' || name === '') throw invalid('names an empty or non-string column')
    if (seen.has(name)) throw invalid(`names ${name} twice`)
    if (columns?.[name] !== undefined || indexNames.has(name)) {
      throw invalid(`names ${name}, an encrypted or blind-index column: context columns are plaintext`)
    }
    seen.add(name)
  }
  return Object.freeze([...context])
}

/**
 * The `keyScope` option of a table, checked: one of its context columns (its value is then bound
 * into every ciphertext's AAD and always known on write and read), on a table whose logical name
 * has no `#` (the separator of scoped key names).
 * @throws ConfigError `CONFIG_INVALID`
 */
export function keyScopeOf(
  physical: string,
  logical: string,
  context: readonly string[],
  keyScope: string | undefined,
): KeyScope | undefined {
  if (keyScope === undefined) return undefined
  const at = context.indexOf(keyScope)
  if (typeof keyScope !== 'string' || at === -1) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `The keyScope of table ${physical} must be one of its context columns (${context.join(', ') || 'none declared'}), got ${JSON.stringify(keyScope)}.`,
      { table: logical },
    )
  }
  if (logical.includes(SCOPE_SEPARATOR)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `Table ${physical} has a keyScope, so its logical name may not contain "${SCOPE_SEPARATOR}" (the separator of per-tenant key names).`,
      { table: logical },
    )
  }
  return Object.freeze({ column: keyScope, at })
}
