import type { OperationNode } from 'kysely'
import type { ColumnInfo } from '../schema/schema.js'
import type { Role } from './analysis-context.js'
import { refuse } from './refusal.js'
import type { Source } from './relation.js'

/**
 * The aliases an output carrying an encrypted column may have: the plan finds the column in each
 * row by the alias as written, so the result key must be that alias byte for byte, or the
 * ciphertext comes back undecrypted (and a search's row check, reading the key as written, drops
 * the row). Refused on every engine alike, though each rule comes from one of them: the analysis
 * does not know the engine, and a query should not run on one and be refused on the other.
 */

/** PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes (`select 1 as <64 bytes>`). */
const MAX_ALIAS_BYTES = 63

/**
 * {@link checkOutputAlias} for an output passing `source` on; and, in the query of a derived
 * table or CTE (or a set operation's branch), refuses a blind index's alias given as raw SQL: a
 * query reading that output by a name the plan does not know would compare a plaintext with the
 * index bytes, sent as it is (helper-129). Elsewhere the name is read by no one (the root's
 * bytes only come back; an EXISTS's outputs are never read; a scalar subquery's one output is
 * taken by position, and its source goes on: see selections).
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `alias`)
 */
export function checkSourceAlias(source: Source, alias: OperationNode, name: string, role: Role): void {
  if (source.kind === 'column') checkOutputAlias(source.info, alias, name)
  else if (alias.kind !== 'IdentifierNode' && role === 'derived')
    throw refuse(
      source.info.column,
      'alias',
      `an alias of blind index column ${source.info.physical} given as raw SQL`,
      'Give the alias as a string.',
    )
}

/**
 * Refuses an alias of an output carrying encrypted column `info` that an engine would not return
 * as written: raw SQL (`.as(sql\`e\`)`: the plan cannot know the name it prints), over 63 bytes,
 * or one {@link alteredBy} names a reason for.
 *
 * @param alias - The AliasNode's alias, as written.
 * @param name - Its name (see identifierName).
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `alias`)
 */
export function checkOutputAlias(info: ColumnInfo, alias: OperationNode, name: string): void {
  if (alias.kind !== 'IdentifierNode')
    throw refuse(
      info,
      'alias',
      'an alias of an encrypted column given as raw SQL',
      'Give the alias as a string.',
    )
  if (Buffer.byteLength(name) > MAX_ALIAS_BYTES)
    throw refuse(
      info,
      'alias',
      `aliases of encrypted columns must be at most ${MAX_ALIAS_BYTES} bytes`,
      'Choose a shorter alias.',
    )
  const reason = alteredBy(name)
  if (reason !== undefined)
    throw refuse(info, 'alias', `alias ${JSON.stringify(name)}: ${reason}`, 'Choose another alias.')
}

/**
 * Why an engine would return `name` as other text, if it would (each tested on MariaDB 10.11,
 * PostgreSQL 16 and PGlite; the MySQL rules are in its docs, "Schema Object Names"):
 * - a first character that is a space or an ASCII control character (U+0001–U+0020, U+007F):
 *   MySQL and MariaDB drop every leading byte that is not graphic (warning 1466, "Leading spaces
 *   are removed from name"), so `as ' e'` comes back as `e`. Trailing ones are kept.
 * - a UTF-16 surrogate: an unpaired one is sent by every driver as U+FFFD (UTF-8 has no form for
 *   it); a pair is a character beyond the Basic Multilingual Plane, which MySQL does not permit in
 *   identifiers (MariaDB refuses the query; MySQL converts aliases to utf8mb3).
 * - NUL, which no engine permits in an identifier.
 */
function alteredBy(name: string): string | undefined {
  const first = name.charCodeAt(0)
  if (first <= 0x20 || first === 0x7f)
    return 'MySQL and MariaDB drop a leading space or control character from an alias'
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c === 0) return 'NUL is not permitted in an identifier'
    if (c >= 0xd800 && c <= 0xdfff)
      return 'a character beyond the Basic Multilingual Plane, or an unpaired surrogate (MySQL does not permit the one, no engine receives the other as written)'
  }
  return undefined
}
