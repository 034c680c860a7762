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

/** A snake_case name as Kysely's `CamelCasePlugin` spells it in queries (`email_address` → `emailAddress`). */
type CamelCase<N extends string> = N extends `${infer Head}_${infer Rest}`
  ? `${Head}${Capitalize<CamelCase<Rest>>}`
  : N

/**
 * The key of `D` that the name `K` of a generated interface stands for: `K` itself, or a key whose
 * camelCase spelling is `K` (the interface kysely-codegen writes for `CamelCasePlugin`);
 * `never` when there is none.
 */
type KeyFor<D, K> = K extends keyof D
  ? K
  : { [X in keyof D & string]: CamelCase<X> extends K ? X : never }[keyof D & string]

/** A table of the generated interface whose schema table is `T`: its columns mapped. */
type DecryptedTable<
  Table,
  S extends EncryptedSchema<SchemaDefinition, boolean>,
  T extends keyof S['definition'],
> = {
  [C in keyof Table as C extends Omitted<S, T> | CamelCase<Omitted<S, T> & string> ? never : C]: [
    KeyFor<S['definition'][T], C>,
  ] extends [never]
    ? Table[C]
    : Swap<Table[C], PlaintextOf<S['definition'][T][KeyFor<S['definition'][T], C>]>>
}

/**
 * Maps a generated database interface (kysely-codegen and friends, where encrypted columns are
 * `Buffer`) to the plaintext types the application reads and writes through the plugin.
 * Nullability and `Generated<>`/`ColumnType<>` wrappers are kept; blind-index columns stay bytes,
 * or are left out when the schema was made with `omitBlindIndexes: true` (as they are from rows).
 * Tables and columns are matched by their name in the schema or by its camelCase spelling, so an
 * interface generated for `CamelCasePlugin` (`userAccounts.emailAddress`) is mapped too.
 *
 * @example
 * ```ts
 * import type { DB as StoredDB } from './generated-db'       // users.email: Buffer | null
 * type DB = Decrypted<StoredDB, typeof schema>               // users.email: string | null
 * const db = new Kysely<DB>({ dialect: encryption.wrap(dialect), plugins: [encryption.plugin] })
 * ```
 */
export type Decrypted<DB, S extends EncryptedSchema<SchemaDefinition, boolean>> = {
  [T in keyof DB]: [KeyFor<S['definition'], T>] extends [never]
    ? DB[T]
    : DecryptedTable<DB[T], S, KeyFor<S['definition'], T>>
}
