import type { OperationNode } from 'kysely'
import {
  and,
  EQUALITY,
  isNullValue,
  isValues,
  type MappedPass,
  mappedIn,
  nullTest,
  or,
  PHASE_ORS,
  parens,
  type Relation,
  renamed,
} from './migrated-nodes.js'
import { mapChildren } from './node-utils.js'
import { rebuild } from './nodes.js'

/**
 * WHERE conditions on a column stored under another name, in its phase's form (see
 * migrated-columns.ts): while both forms are written, `email = $1` matches the plaintext or, for
 * a row without one, the encrypted value; otherwise the encrypted column's name, for the analyzer.
 */

/** WHERE, and ON CONFLICT's: comparisons of a mapped column in its phase's form. */
export function condition(pass: MappedPass, node: OperationNode, rel: Relation): OperationNode {
  if (pass.produced.has(node)) return node
  switch (node.kind) {
    case 'AndNode':
    case 'OrNode':
    case 'ParensNode':
      return mapChildren(node, (child) => condition(pass, child, rel))
    case 'UnaryOperationNode': {
      const n = node as unknown as { operator: { operator?: string }; operand: OperationNode }
      if (n.operator.operator === 'not') return rebuild(node, { operand: condition(pass, n.operand, rel) })
      return pass.plain(node, rel)
    }
    case 'BinaryOperationNode':
      return comparison(pass, node, rel)
    default:
      return pass.plain(node, rel)
  }
}

function comparison(pass: MappedPass, node: OperationNode, rel: Relation): OperationNode {
  const n = node as unknown as {
    leftOperand: OperationNode
    operator: { operator?: string }
    rightOperand: OperationNode
  }
  const left = mappedIn(n.leftOperand, rel)
  const right = mappedIn(n.rightOperand, rel)
  const m = left ?? right
  // Column against column, or an encrypted-only phase: the encrypted column's name, and the
  // analyzer's rules (blind index, refusals) as for any encrypted column.
  if (m === undefined || (left !== undefined && right !== undefined) || m.form === 'encrypted')
    return pass.plain(node, rel)
  const op = n.operator.operator ?? ''
  const ref = left !== undefined ? n.leftOperand : n.rightOperand
  const other = left !== undefined ? n.rightOperand : n.leftOperand
  const stored = renamed(ref, m)
  const encrypted = rebuild(node, left !== undefined ? { leftOperand: stored } : { rightOperand: stored })
  if ((op === 'is' || op === 'is not') && isNullValue(other)) {
    // The value is NULL when both forms are (writes keep them in step, NULL with NULL).
    const both = op === 'is' ? and(node, encrypted) : or(node, encrypted)
    pass.produced.add(both)
    return parens(both)
  }
  if (!EQUALITY.has(op) || !isValues(other)) return pass.plain(node, rel)
  // As a read takes it: the plaintext when there is one, else the encrypted value. Each branch
  // tests whether the plaintext is NULL, so that `not (…)` of the whole keeps a row that has only
  // its encrypted value (`not (NULL or false)` would be NULL and drop it). The comparison is a
  // copy: the application's node comes back each time its builder is compiled again, and must
  // then be rewritten again, not passed over as produced.
  const plain = Object.freeze({ ...node }) as OperationNode
  const hasPlaintext = nullTest(ref, 'is not')
  const noPlaintext = nullTest(ref, 'is')
  pass.produced.add(plain)
  pass.produced.add(hasPlaintext)
  pass.produced.add(noPlaintext)
  const either = or(parens(and(hasPlaintext, plain)), parens(and(noPlaintext, encrypted)))
  PHASE_ORS.add(either)
  return parens(either)
}
