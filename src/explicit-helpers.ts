import { ConfigError, DecryptionError } from './errors.js'
import { contextValue } from './fields/context-values.js'
import { decryptValue } from './fields/field-cipher.js'
import { readHeader } from './fields/format.js'
import type { KeyRing } from './keys/key-ring.js'
import { checkContextValues } from './plugin/context-types.js'
import { encryptColumn, evictedWhileLoading, indexValue, refuseEmptySearch } from './plugin/resolve-values.js'
import type { SchemaGate } from './plugin/schema-gate.js'
import { rowKeyName, tenantKeyName, tenantRequired } from './schema/key-scope.js'
import { contextMissing, readContext, rowAad } from './schema/row-context.js'
import { type ColumnInfo, type EncryptedSchema, type IndexInfo, slotOfVersion } from './schema/schema.js'

/** One blind-index value of {@link ExplicitHelpers.blindIndexesOf}: a version's, and where it is stored. */
export interface BlindIndexValue {
  /**
   * The column that holds it: the index's own, or for an index with a rotation slot
   * (`rotationSlot`), the column of its version (odd versions the index's own, even ones the slot).
   */
  readonly column: string
  /** The index key version that computed it. */
  readonly version: number
  /** The active version's: the one a write stores (in every case) and a search probes (with a rotation slot, the only one). */
  readonly active: boolean
  readonly value: Buffer
}

/** The explicit helpers of {@link FieldEncryption} for raw `sql`. */
export interface ExplicitHelpers {
  /**
   * The ciphertext of `value` for `table.column` (physical names), for raw `sql`.
   * @param row - For a table with a row context (`context` option): the row's context values by
   *   column name, e.g. `{ tenant_id: 'acme', id: 42 }`.
   * @throws QueryRefusedError `CONTEXT_MISSING` when the table binds a context and `row` lacks a value,
   *   or gives one its column stores as another value (`'07'` for an integer column; checked, as for
   *   an INSERT, once the schema check read the catalog); `TENANT_INVALID` for a tenant that cannot name keys
   */
  encrypt(
    table: string,
    column: string,
    value: unknown,
    row?: Readonly<Record<string, unknown>>,
  ): Promise<Buffer>
  /**
   * Decrypts a ciphertext read with raw `sql` from `table.column`.
   * @param row - For a table with a row context: the row's context values by column name.
   * @throws DecryptionError `NOT_CIPHERTEXT` when `ciphertext` is not bytes (`null`, a string, a number);
   *   `CONTEXT_MISSING` when the table binds a context and `row` lacks a value.
   */
  decrypt(
    table: string,
    column: string,
    ciphertext: Uint8Array,
    row?: Readonly<Record<string, unknown>>,
  ): Promise<unknown>
  /**
   * Blind-index values of `value` for `table.column` (its first index, or `index`): one per live
   * index version, for `where email_bidx in (...)` in raw `sql`. The first is the active one, to write.
   * @param row - For a table with per-tenant keys (`keyScope`): the tenant, e.g. `{ tenant_id: 'acme' }`.
   * @throws QueryRefusedError `TENANT_REQUIRED` when the table has a key scope and `row` lacks its tenant
   */
  indexOf(
    table: string,
    column: string,
    value: unknown,
    index?: string,
    row?: Readonly<Record<string, unknown>>,
  ): Promise<Buffer[]>
  /**
   * The blind-index values of `value` for `table.column` (its first index, or `index`), one per
   * live index version, the active one first, each with the column that holds it: what
   * {@link ExplicitHelpers.indexOf} gives, for an index with a rotation slot, whose versions
   * live in two columns (a raw write fills each version's column; a raw search probes the active
   * version's column with its value).
   * @throws as {@link ExplicitHelpers.indexOf}
   */
  blindIndexesOf(
    table: string,
    column: string,
    value: unknown,
    index?: string,
    row?: Readonly<Record<string, unknown>>,
  ): Promise<BlindIndexValue[]>
}

/**
 * The explicit helpers for raw `sql`: encrypt, decrypt, indexOf, blindIndexesOf.
 *
 * @param getGate - The schema check of the wrapped dialect whose key ring `getRing` returns: its
 *   catalog says how each context column stores the values `encrypt` binds (see {@link checkContextValues}).
 */
export function explicitHelpers(
  schema: EncryptedSchema,
  getRing: () => KeyRing,
  getGate: () => SchemaGate | undefined,
): ExplicitHelpers {
  const options = { schema }
  const column = (table: string, name: string): ColumnInfo => {
    const info = options.schema.tableNamed(table)?.column(name)
    if (info === undefined)
      throw new ConfigError('CONFIG_INVALID', `${table}.${name} is not an encrypted column of the schema.`)
    return info
  }

  const blindIndexesOf: ExplicitHelpers['blindIndexesOf'] = async (table, name, value, indexName, row) => {
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
    // The keys are used right after the last await; one the cache wiped meanwhile (evicted while
    // another loaded: cache.max below what this needs, or other queries' keys) is fetched again,
    // as a query's keys are.
    for (let attempt = 0; attempt < 3; attempt++) {
      const active = await r.activeKey(keyName, 'index')
      const all = await r.searchKeys(keyName, 'index')
      if (active.destroyed || all.some((k) => k.destroyed)) continue
      const ordered = [active, ...all.filter((k) => k !== active)]
      return ordered.map((k) => ({
        column:
          spec.rotationSlot !== undefined && slotOfVersion(k.ref.version) === 1
            ? spec.rotationSlot
            : spec.name,
        version: k.ref.version,
        active: k === active,
        value: indexValue(k, index, value),
      }))
    }
    throw evictedWhileLoading()
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
      return (await blindIndexesOf(table, name, value, indexName, row)).map((v) => v.value)
    },
    blindIndexesOf,
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
