import fc from 'fast-check'
import { type Family, Gen, type Statement } from './gen.js'
import { selectStatement } from './generate-select.js'
import { deleteStatement, insertStatement, updateStatement } from './generate-writes.js'
import type { Kind } from './schema.js'

/** One generated test case: statements run in order in one transaction (rolled back afterwards). */
export interface FuzzCase {
  /** The kind of query, for the refusal-rate table. */
  readonly shape: string
  readonly statements: readonly Statement[]
  /** False when every column the case names (or `selectAll` expands to) is plaintext. */
  readonly touchesEncrypted: boolean
}

/** One case: a select, a write, or a transaction of a few statements. */
export function fuzzCase(family: Family): fc.Arbitrary<FuzzCase> {
  return fc.gen().map((gv) => {
    const g = new Gen(gv, family)
    const one = (): { stmt: Statement; shape: string } => {
      const roll = g.int(0, 99)
      if (roll < 55) return selectStatement(g)
      if (roll < 72) return insertStatement(g)
      if (roll < 87) return updateStatement(g)
      return deleteStatement(g)
    }
    if (g.chance(8)) {
      const n = g.int(2, 3)
      const statements: Statement[] = []
      for (let i = 0; i < n; i++) statements.push(one().stmt)
      return { shape: 'transaction', statements, touchesEncrypted: g.touches }
    }
    const { stmt, shape } = one()
    const raw = g.features.has('raw sql') && !shape.startsWith('select') ? `${shape} (raw sql)` : shape
    return { shape: raw, statements: [stmt], touchesEncrypted: g.touches }
  })
}

/** Allowed join kinds per family, exported for the docs and tests. */
export const JOIN_KINDS = ['innerJoin', 'leftJoin', 'rightJoin', 'fullJoin', 'crossJoin'] as const
export type { Family, Kind, Statement }
