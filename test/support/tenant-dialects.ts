import type { Dialect } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import type { Backend } from './backends.js'
import { newPGlite } from './pglite.js'

/**
 * `n` dialects on one database, as `n` processes of an application would have (for PGlite: one
 * in-memory instance). `close` ends the PGlite instance; a pooled dialect is ended by its Kysely.
 * With PGlite, destroy one Kysely on them only (it closes the shared instance), then call `close`.
 */
export function dialectsOn(backend: Backend, n: number): { dialects: Dialect[]; close: () => Promise<void> } {
  if (backend.name !== 'pglite') {
    return { dialects: Array.from({ length: n }, () => backend.createDialect()), close: async () => {} }
  }
  const instance = newPGlite()
  return {
    dialects: Array.from({ length: n }, () => new PGliteDialect(instance)),
    // The first Kysely destroyed on one of them closes the instance; the others must not again.
    close: async () => {
      if (!instance.closed) await instance.close()
    },
  }
}
