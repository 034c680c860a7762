import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const read = (path: string) => readFileSync(join(root, path), 'utf8')

// What `npm pack` puts in the tarball (dist/ only when built: not needed for the checks below).
const packed: readonly string[] = (
  JSON.parse(
    execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }),
  ) as Array<{ files: Array<{ path: string }> }>
)[0]!.files.map((f) => f.path)

const docs = packed.filter((p) => p.endsWith('.md'))

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>()
  let fenced = false
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced
    const m = !fenced && /^#{1,6}\s+(.*)$/.exec(line)
    if (!m) continue
    out.add(
      (m[1] as string)
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-'),
    )
  }
  return out
}

/** Relative link targets of a markdown file, outside code blocks and code spans. */
function links(markdown: string): string[] {
  const prose = markdown.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '')
  return [...prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => m[1] as string)
}

describe('the package and its docs', () => {
  it('ships the license, changelog, security policy, readme, docs and examples, and no source maps', () => {
    for (const file of ['LICENSE', 'CHANGELOG.md', 'SECURITY.md', 'README.md', 'examples/postgres.ts'])
      expect(packed).toContain(file)
    expect(packed.filter((p) => p.endsWith('.map'))).toEqual([])
    expect(read('LICENSE')).toContain('Apache License\n                           Version 2.0, January 2004')
    expect(read('LICENSE')).toContain('END OF TERMS AND CONDITIONS')
    expect(JSON.parse(read('package.json')).license).toBe('Apache-2.0')
    expect(read('tsup.config.ts')).toMatch(/sourcemap: false/)
  })

  it('builds dist/ before npm pack and npm publish (dist/ is not in git; .ci/check-package.mjs checks the build)', () => {
    expect(JSON.parse(read('package.json')).scripts.prepack).toBe('npm run build')
  })

  it('has Markdown files to check', () => {
    expect(docs).toEqual(expect.arrayContaining(['README.md', 'docs/guide.md', 'docs/keys.md']))
  })

  describe.each(docs)('%s', (doc) => {
    const text = read(doc)

    it('links only to files in the package, and to headings that exist', () => {
      const broken: string[] = []
      for (const target of links(text)) {
        if (/^[a-z]+:/i.test(target)) continue // https:, mailto:
        const [path, anchor] = target.split('#') as [string, string | undefined]
        const file = path === '' ? doc : normalize(join(dirname(doc), path)).replace(/\\/g, '/')
        if (!packed.includes(file)) {
          broken.push(`${target} (${file} is not in the package)`)
          continue
        }
        if (anchor !== undefined && file.endsWith('.md') && !anchors(read(file)).has(anchor))
          broken.push(`${target} (no heading #${anchor} in ${file})`)
      }
      expect(broken).toEqual([])
    })

    it('names no file outside the package and no command that does not exist', () => {
      const wrong: string[] = []
      // Paths of the repository a reader of the package could look for.
      for (const m of text.matchAll(/`((?:docs|examples|bench)\/[\w./-]+\.\w+)`/g))
        if (!packed.includes(m[1] as string)) wrong.push(m[1] as string)
      // Source and test files are not in the package: a page may cite them only as the source
      // repository's, and must say so.
      if (!/source repository/.test(text))
        for (const m of text.replace(/```[\s\S]*?```/g, '').matchAll(/`((?:src|test)\/[\w./-]*)`/g))
          wrong.push(`${m[1]} (the page does not say it cites the source repository)`)
      for (const banned of [/DESIGN\.md/, /\.ci\/run/, /status command/i])
        if (banned.test(text)) wrong.push(String(banned))
      // A `kfe <command>` named anywhere must be one that src/cli defines.
      for (const m of text.matchAll(/(?:^|[`\s])kfe ([a-z][a-z-]*)/gm))
        if (!existsSync(join(root, 'src', 'cli', 'commands', `${m[1]}.ts`))) wrong.push(`kfe ${m[1]}`)
      expect(wrong).toEqual([])
    })
  })

  it("the README's PostgreSQL example is examples/postgres.ts, which `npm run typecheck` compiles", () => {
    const readme = read('README.md')
    const section = readme.slice(readme.indexOf('## Quickstart'))
    const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
    expect(block).toBe(read('examples/postgres.ts'))
    const tsconfig = read('tsconfig.json')
    expect(tsconfig).toMatch(/"include": \[[^\]]*"examples"/)
    expect(tsconfig).toMatch(/"kysely-field-encryption": \["\.\/src\/index\.ts"\]/)
  })

  it("docs/keys.md's worked example is examples/keys.ts (type-checked, and run by keys-worked-example.test.ts)", () => {
    const keys = read('docs/keys.md')
    const section = keys.slice(keys.indexOf('## Worked example'))
    expect(/```ts\n([\s\S]*?)```/.exec(section)?.[1]).toBe(read('examples/keys.ts'))
  })

  it('the README starts with the install line and keeps the contributor commands in "Developing"', () => {
    const readme = read('README.md')
    expect(readme.split('\n').slice(0, 5).join('\n')).toContain(
      'npm install kysely-field-encryption kysely pg',
    )
    const developing = readme.slice(readme.indexOf('## Developing'))
    for (const command of ['npm install\n', 'npm run demo', 'npm test', 'PG_URL=', 'MYSQL_URL='])
      expect(developing).toContain(command)
    expect(readme).toContain('## Security')
  })
})
