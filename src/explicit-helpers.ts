import { ConfigError, DecryptionError } from './errors.js'
import type { FieldEncryption } from './field-encryption.js'
import { contextValue } from './fields/context-values.js'
import { decryptValue } from './fields/field-cipher.js'
import { readHeader } from './fields/format.js'
import type { KeyRing } from './keys/key-ring.js'
import { encryptColumn, indexValue, refuseEmptySearch } from './plugin/resolve-values.js'
import { contextMissing, readContext, rowAad } from './schema/row-context.js'
import type { ColumnInfo, EncryptedSchema, IndexInfo } from './schema/schema.js'

/** The explicit helpers for raw `sql` of {@link FieldEncryption}: encrypt, decrypt, indexOf. */
export function explicitHelpers(
  schema: EncryptedSchema,
  getRing: () => KeyRing,
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
      const key = await getRing().activeKey(info.table.logical, 'data')
      return encryptColumn(key, info, value, context.length === 0 ? undefined : (values as string[]))
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
      const key = await getRing().key({
        logicalTable: info.table.logical,
        purpose: 'data',
        version: keyVersion,
      })
      const context = readContext(info.table, info, (i) => row?.[info.table.context[i] as string])
      return decryptValue(info.spec.codec, ciphertext, key, rowAad(info, context))
    },
    async indexOf(table, name, value, indexName) {
      const info = column(table, name)
      const spec = info.spec.indexes.find((s) => indexName === undefined || s.name === indexName)
      if (spec === undefined)
        throw new ConfigError(
          'CONFIG_INVALID',
          `${table}.${name} has no blind index${indexName === undefined ? '' : ` named ${indexName}`}.`,
        )
      const index: IndexInfo = info.table.indexColumn(spec.name)!
      refuseEmptySearch(index, value)
      const r = getRing()
      const active = await r.activeKey(info.table.logical, 'index')
      const all = await r.searchKeys(info.table.logical, 'index')
      const ordered = [active, ...all.filter((k) => k !== active)]
      return ordered.map((k) => indexValue(k, index, value))
    },
  }
}
