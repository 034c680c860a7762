// After `npm run build`: what `npm pack` would publish holds every file package.json points at,
// and the entry points and the `kfe` bin's code share one copy of the library (an error thrown
// through `/ops`, `/pkcs11` or `/aws-kms`, or by a config's key provider in `kfe`, is `instanceof`
// the classes the main entry exports), in ESM and in CommonJS.
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const root = join(import.meta.dirname, '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const failures = []

const [packed] = JSON.parse(
  execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }),
)
const files = new Set(packed.files.map((f) => f.path))
const pointed = [pkg.main, pkg.module, pkg.types, ...Object.values(pkg.bin), JSON.stringify(pkg.exports)]
for (const path of JSON.stringify(pointed).match(/\.\/[\w-]+\/[\w.-]+/g) ?? [])
  if (!files.has(path.slice(2))) failures.push(`npm pack leaves out ${path}, which package.json points at`)

// One copy of the library per format, the bin's code (dist/cli.js) included: the class is
// defined in one built file of each.
for (const ext of ['.js', '.cjs']) {
  const defining = readdirSync(join(root, 'dist')).filter(
    (f) =>
      f.endsWith(ext) &&
      /\bclass FieldEncryptionError\b|\bFieldEncryptionError = class\b/.test(
        readFileSync(join(root, 'dist', f), 'utf8'),
      ),
  )
  if (defining.length !== 1)
    failures.push(
      `FieldEncryptionError is defined in ${defining.length} ${ext} files of dist/ (${defining.join(', ')}), not one`,
    )
}

// Each entry's constructor refuses empty options with a typed error.
const throwers = { ops: 'fieldEncryptionOps', pkcs11: 'pkcs11KeyProvider', 'aws-kms': 'awsKmsKeyProvider' }
const require = createRequire(import.meta.url)
for (const format of ['esm', 'cjs']) {
  const load = (entry) => {
    const file = join(root, 'dist', `${entry}.${format === 'esm' ? 'js' : 'cjs'}`)
    return format === 'esm' ? import(pathToFileURL(file).href) : require(file)
  }
  const main = await load('index')
  for (const [entry, make] of Object.entries(throwers)) {
    let error
    try {
      ;(await load(entry))[make]({})
    } catch (e) {
      error = e
    }
    const own = main[error?.constructor?.name]
    if (!(error instanceof main.FieldEncryptionError) || own === undefined || !(error instanceof own))
      failures.push(
        `${format}: ${entry}'s ${error?.constructor?.name} is not an instance of the main entry's classes`,
      )
  }
}
for (const f of failures) console.error(`check-package: ${f}`)
if (failures.length > 0) process.exit(1)
console.log(
  `check-package: ${files.size} files packed; ${Object.keys(throwers).length} entries share the main entry's classes in ESM and CommonJS`,
)
