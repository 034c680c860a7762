import { ConfigError, DecryptionError } from './errors.js'
import type { FieldEncryption } from './field-encryption.js'
import { contextValue } from './fields/context-values.js'
import { decryptValue } from './fields/field-cipher.js'
import { readHeader } from './fields/format.js'
import type { KeyRing } from './keys/key-ring.js'
import { checkContextValues } from './plugin/context-types.js'
import { encryptColumn, indexValue, refuseEmptySearch } from './plugin/resolve-values.js'
import type { SchemaGate } from './plugin/schema-gate.js'
import { rowKeyName, tenantKeyName, tenantRequired } from './schema/key-scope.js'
import { contextMissing, readContext, rowAad } from './schema/row-context.js'
import type { ColumnInfo, EncryptedSchema, IndexInfo } from './schema/schema.js'

/**
 * The explicit helpers for raw `sql` of {@link FieldEncryption}: encrypt, decrypt, indexOf.
 *
 * @param getGate - The schema check of the wrapped dialect whose key ring `getRing` returns: its
 *   catalog says how each context column stores the values `encrypt` binds (see {@link checkContextValues}).
 */
export function explicitHelpers(
  schema: EncryptedSchema,
  getRing: () => KeyRing,
  getGate: () => SchemaGate | undefined,
): Pick<FieldEncryption, 'encrypt' | 'decrypt' | 'indexOf'> {
  const options = { schema }
  const column = (table: string, name: string): ColumnInfo => {
    const info = options.schema.table(table)?.column(name)
    if (info === undefined)
      throw new ConfigError('CONFIG_INVALID', `${table}.${name} is not an encrypted column of the schema.`)
    return info
  }

  return {
    async encrypt(table, name, value, row) {
      const info = column(table, name)
      const context = info.table.context
      const values = context.map((c) => contextValue(row?.[c]))
      const missing = values.indexOf(undefined)
      if (missing !== -1) {
        throw contextMissing(
          info.table,
          context[missing] as string,
          'has no string or integer value in `row`',
          'encrypt',
        )
      }
      const bound = context.length === 0 ? undefined : (values as string[])
      const ring = getRing()
      const gate = getGate()
      if (bound !== undefined && gate !== undefined) {
        // As before a write through the plugin: the schema check (once), then the context values
        // against the types it read ('07' in an integer column would bind a context no row has).
        await gate.pass((run) => run())
        checkContextValues(gate.catalog, info.table, bound, 'encrypt')
      }
      const key = await ring.writeKey(rowKeyName(info.table, bound) as string, 'data')
      return encryptColumn(key, info, value, bound)
    },
    async decrypt(table, name, ciphertext, row) {
      const info = column(table, name)
      const where = { table: info.table.logical, column: info.logical }
      if (!(ciphertext instanceof Uint8Array)) {
        // The value is not echoed: it may be a plaintext read from a column not yet encrypted.
        throw new DecryptionError(
          'NOT_CIPHERTEXT',
          `encryption.decrypt(${table}, ${name}) was given ${ciphertext === null ? 'null' : `a ${typeof ciphertext}`}, not the bytes of a ciphertext.`,
          where,
        )
      }
      const { keyVersion } = readHeader(ciphertext, where)
      const context = readContext(info.table, info, (i) => row?.[info.table.context[i] as string])
      const key = await getRing().key({
        logicalTable: rowKeyName(info.table, context) as string,
        purpose: 'data',
        version: keyVersion,
      })
      return decryptValue(info.spec.codec, ciphertext, key, rowAad(info, context))
    },
    async indexOf(table, name, value, indexName, row) {
      const info = column(table, name)
      const spec = info.spec.indexes.find((s) => indexName === undefined || s.name === indexName)
      if (spec === undefined)
        throw new ConfigError(
          'CONFIG_INVALID',
          `${table}.${name} has no blind index${indexName === undefined ? '' : ` named ${indexName}`}.`,
        )
      const index: IndexInfo = info.table.indexColumn(spec.name)!
      refuseEmptySearch(index, value)
      const keyName = indexKeyName(info, row)
      const r = getRing()
      const active = await r.activeKey(keyName, 'index')
      const all = await r.searchKeys(keyName, 'index')
      const ordered = [active, ...all.filter((k) => k !== active)]
      return ordered.map((k) => indexValue(k, index, value))
    },
  }
}

/**
 * The key name of `indexOf`: the table's, or the tenant's named in `row` for a table with per-tenant keys.
 * @throws QueryRefusedError `TENANT_REQUIRED` when the table has a key scope and `row` does not name the tenant
 */
function indexKeyName(info: ColumnInfo, row: Readonly<Record<string, unknown>> | undefined): string {
  const scope = info.table.keyScope
  if (scope === undefined) return info.table.logical
  const tenant = contextValue(row?.[scope.column])
  if (tenant === undefined)
    throw tenantRequired(
      info.table,
      info.logical,
      `indexOf(${info.table.physical}, ${info.physical})`,
      'indexOf',
    )
  return tenantKeyName(info.table, tenant)
}
