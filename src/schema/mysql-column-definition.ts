import { type Kysely, sql } from 'kysely'

/**
 * MySQL/MariaDB: the definition of `table.column` as `SHOW CREATE TABLE` states it (`` `email`
 * varchar(200) COLLATE utf8mb4_bin NOT NULL DEFAULT 'none' ``, its name in backticks whatever the
 * session's `sql_mode`), or undefined when there is no such column.
 */
export async function mysqlColumnDefinition(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  table: string,
  column: string,
): Promise<string | undefined> {
  const quoted = (name: string) => `\`${name.replaceAll('`', '``')}\``
  const { rows } = await sql<
    Record<string, string>
  >`show create table ${sql.raw(table.split('.').map(quoted).join('.'))}`.execute(db)
  const create = Object.values(rows[0] ?? {})[1]
  if (typeof create !== 'string') return undefined
  const name = quoted(column)
  // A session with ANSI_QUOTES in its sql_mode is shown names in double quotes, which one without
  // it (where a migration file may run) reads as strings: a CHECK on `"email"` would compare a
  // constant. Every name is restated with backticks, which every sql_mode reads as a name.
  const ansi = `"${column.replaceAll('"', '""')}"`
  for (const line of create.split('\n')) {
    const text = line.trim().replace(/,$/, '')
    if (text.startsWith(`${name} `)) return text
    if (text.startsWith(`${ansi} `)) return backtickNames(text)
  }
  return undefined
}

/**
 * `SHOW CREATE TABLE` text of an ANSI_QUOTES session with each `"name"` outside string literals
 * written `` `name` `` (`""` in a name undoubled, a backtick doubled); string literals (`'…'`,
 * with `''` and backslash escapes) and backquoted names as they are.
 */
function backtickNames(text: string): string {
  let out = ''
  let i = 0
  while (i < text.length) {
    const ch = text[i] as string
    if (ch === "'" || ch === '`') {
      // A string literal or a backquoted name, copied up to its closing quote.
      let j = i + 1
      while (j < text.length) {
        if (ch === "'" && text[j] === '\\') j += 2
        else if (text[j] === ch && text[j + 1] === ch) j += 2
        else if (text[j] === ch) break
        else j++
      }
      out += text.slice(i, j + 1)
      i = j + 1
    } else if (ch === '"') {
      let name = ''
      let j = i + 1
      while (j < text.length) {
        if (text[j] === '"' && text[j + 1] === '"') {
          name += '"'
          j += 2
        } else if (text[j] === '"') break
        else name += text[j++]
      }
      out += `\`${name.replaceAll('`', '``')}\``
      i = j + 1
    } else {
      out += ch
      i++
    }
  }
  return out
}
