/**
 * The phases of moving a plaintext column to an encrypted one, as a column's annotation states
 * them (`encrypted.text({ storedAs: 'email_encrypted', migration: 'dual-writing' })`). Each is
 * what one deploy of the application does; `backfilling` is not a deploy of its own: it is
 * `kfe encrypt-column` running while every process of the application is `dual-writing`.
 *
 * - `added`: the encrypted and blind-index columns exist beside the plaintext one; the
 *   application still reads, writes and searches only the plaintext column.
 * - `dual-writing`: writes fill the plaintext column and the encrypted and index columns; reads
 *   take the plaintext when present, else the encrypted value (a row a `cut-over` process wrote);
 *   searches match either, the same way.
 * - `backfilled`: every row has its encrypted value (`kfe verify` passed); the application
 *   behaves as in `dual-writing`, so a rollback to it loses nothing.
 * - `cut-over`: reads and searches use only the encrypted columns; writes set the plaintext
 *   column to NULL.
 * - `dropped`: the plaintext column is gone; the annotated name maps to the encrypted column.
 */
export type MigrationPhase = 'added' | 'dual-writing' | 'backfilled' | 'cut-over' | 'dropped'

/** Every phase, in order. */
export const MIGRATION_PHASES: readonly MigrationPhase[] = Object.freeze([
  'added',
  'dual-writing',
  'backfilled',
  'cut-over',
  'dropped',
])

/**
 * Whether processes in phases `a` and `b` may run at once (a rolling deploy) with no row lost or
 * exposed and every search returning the rows it should: the same phase, or two neighbouring
 * phases.
 * - `added` + `dual-writing`: both write the plaintext, which stays authoritative; start the
 *   backfill only once no `added` process is left (it repairs any encrypted value an `added`
 *   process made stale by updating the plaintext alone).
 * - `dual-writing` + `backfilled`: the same reads and writes.
 * - `backfilled` + `cut-over`: every row has its encrypted value, which `cut-over` reads;
 *   `cut-over` writes NULL plaintext, and `backfilled` reads such a row as its encrypted value.
 * - `cut-over` + `dropped`: neither reads the plaintext; run the drop migration only once no
 *   `cut-over` process is left (they still write NULL into the column).
 *
 * Any other pair is unsafe: e.g. `dual-writing` + `cut-over` before the backfill is done (the
 * `cut-over` process reads rows not yet backfilled as NULL), `added` + `cut-over` (the `added`
 * process reads the NULL plaintext a `cut-over` process wrote).
 *
 * @example
 * ```ts
 * phasesMayOverlap('dual-writing', 'backfilled') // true
 * phasesMayOverlap('added', 'cut-over')          // false
 * ```
 */
export function phasesMayOverlap(a: MigrationPhase, b: MigrationPhase): boolean {
  return Math.abs(MIGRATION_PHASES.indexOf(a) - MIGRATION_PHASES.indexOf(b)) <= 1
}
