import type { OperationNode } from 'kysely'
import type { ColumnInfo, EncryptedSchema } from '../schema/schema.js'
import { someChild } from './node-utils.js'
import { rawWords } from './raw-text.js'
import { identifierName, tableName } from './table-names.js'

/**
 * Walks over the relations a query tree declares (FROM, JOIN, INTO, UPDATE, WITH, and the names raw
 * SQL holds), for the analyzer's rare paths: a qualifier no relation in scope answers to, a
 * statement that reads an encrypted table somewhere below it.
 */

/**
 * Calls `visit` on every node of the tree, depth first, except column references and what they
 * hold (a reference's qualifier names a relation; it does not declare or read one).
 */
function forEachRelationNode(root: OperationNode, visit: (n: OperationNode) => boolean | undefined): void {
  const stack: OperationNode[] = [root]
  while (stack.length > 0) {
    const n = stack.pop() as OperationNode
    if (n.kind === 'ReferenceNode') continue
    if (visit(n) === true) return
    someChild(n, (child) => {
      stack.push(child)
      return false
    })
  }
}

/**
 * Every table name, alias and CTE name the tree declares (FROM, JOIN, INTO, UPDATE, WITH; not
 * the qualifiers of column references), lower-cased. A walk of the whole tree: only called on
 * the rare path of a qualifier no relation in scope answers to.
 */
export function relationNames(root: OperationNode | undefined): ReadonlySet<string> {
  const names = new Set<string>()
  if (root === undefined) return names
  forEachRelationNode(root, (n) => {
    if (n.kind === 'TableNode') names.add(tableName(n).name.toLowerCase())
    if (n.kind === 'AliasNode') {
      const alias = (n as unknown as { alias: OperationNode }).alias
      if (alias.kind === 'IdentifierNode') names.add(identifierName(alias).toLowerCase())
    }
    return undefined
  })
  return names
}

/**
 * Every identifier of the raw SQL in the tree (see {@link rawWords}), lower-cased: the names raw
 * SQL may declare a relation by. A walk of the whole tree, on the same rare path as
 * {@link relationNames}.
 */
export function rawWordsIn(root: OperationNode | undefined): ReadonlySet<string> {
  const words = new Set<string>()
  if (root === undefined) return words
  forEachRelationNode(root, (n) => {
    rawWords(n, words)
    return undefined
  })
  return words
}

/** An encrypted column of the first encrypted table the tree reads (FROM, JOIN), at any depth, if any. */
export function firstEncryptedColumn(node: OperationNode, schema: EncryptedSchema): ColumnInfo | undefined {
  let found: ColumnInfo | undefined
  forEachRelationNode(node, (n) => {
    if (n.kind !== 'TableNode') return undefined
    const { schema: s, name } = tableName(n)
    found = schema.table(name, s)?.columns.values().next().value
    return found !== undefined
  })
  return found
}
