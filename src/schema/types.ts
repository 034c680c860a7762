import type { ColumnType } from 'kysely'
import type { EncryptedColumn } from './columns.js'
import type { EncryptedSchema, SchemaDefinition } from './schema.js'

/** The plaintext type of an annotation. */
export type PlaintextOf<C> = C extends EncryptedColumn<infer T, string> ? T : never

/** The index column names of a table's annotations; `never` when one is not known literally. */
type IndexColumnsOf<Table> = {
  [C in keyof Table]: Table[C] extends EncryptedColumn<unknown, infer I>
    ? string extends I
      ? never
      : I
    : never
}[keyof Table]

/** The keys `Decrypted<>` leaves out of table `T`: its index columns under `omitBlindIndexes`. */
type Omitted<S, T> = S extends { readonly omitBlindIndexes: true }
  ? S extends EncryptedSchema<infer D, true>
    ? T extends keyof D
      ? IndexColumnsOf<D[T]>
      : never
    : never
  : never

/** Swaps a stored (bytes) column type for its plaintext type, keeping `null` and kysely's `ColumnType`. */
type Swap<Stored, P> =
  Stored extends ColumnType<infer S, infer I, infer U>
    ? ColumnType<SwapValue<S, P>, SwapValue<I, P>, SwapValue<U, P>>
    : SwapValue<Stored, P>
type SwapValue<V, P> = V extends null ? null : V extends undefined ? undefined : P

/**
 * Maps a generated database interface (kysely-codegen and friends, where encrypted columns are
 * `Buffer`) to the plaintext types the application reads and writes through the plugin.
 * Nullability and `Generated<>`/`ColumnType<>` wrappers are kept; blind-index columns stay bytes,
 * or are left out when the schema was made with `omitBlindIndexes: true` (as they are from rows).
 *
 * @example
 * ```ts
 * import type { DB as StoredDB } from './generated-db'       // users.email: Buffer | null
 * type DB = Decrypted<StoredDB, typeof schema>               // users.email: string | null
 * const db = new Kysely<DB>({ dialect: encryption.wrap(dialect), plugins: [encryption.plugin] })
 * ```
 */
export type Decrypted<DB, S extends EncryptedSchema<SchemaDefinition, boolean>> = {
  [T in keyof DB]: T extends keyof S['definition']
    ? {
        [C in keyof DB[T] as C extends Omitted<S, T> ? never : C]: C extends keyof S['definition'][T]
          ? Swap<DB[T][C], PlaintextOf<S['definition'][T][C]>>
          : DB[T][C]
      }
    : DB[T]
}
