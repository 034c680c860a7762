/**
 * Per-field encrypt, decrypt and blind index of this checkout against the same code loaded from
 * another copy of `src/` (the code before a change), and the bench's hand-written floor, all
 * interleaved in one process: a before/after pair comes from one run, and a loaded machine
 * shifts both alike.
 *
 *   node --expose-gc --import tsx bench/field-ab.ts --base DIR [--rounds N]
 *
 * `DIR` holds a copy of `src/` (e.g. `git worktree add /tmp/base <commit>`). Each round runs every
 * variant once, in a rotating order: 100 batches of calls (a batch lasts ~0.2 ms), keeping the
 * median batch; round 0 is discarded. Printed per payload and operation: µs per call (median and
 * range over rounds) for the floor, base and this checkout, and this checkout over the floor's
 * throughput. Garbage is left to the loop that made it, as in an application: a variant that
 * allocates more pays its collections. Nothing is written to bench/results.
 */
import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { type FieldLibrary, fieldLibraries } from './field-variants.js'
import { payloads } from './fields.js'
import { median, rotate } from './harness.js'

const args = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const at = args.indexOf(name)
  return at === -1 ? undefined : args[at + 1]
}
const base = option('--base')
const rounds = Number(option('--rounds') ?? 15)
if (base === undefined) throw new Error('usage: bench/field-ab.ts --base DIR [--rounds N]')

type Library = typeof import('./field-variants.js')

/** `ours()` of field-variants, as loaded against the `src/` of `dir`. */
async function oursFrom(dir: string): Promise<FieldLibrary> {
  const load = (path: string) => import(pathToFileURL(resolve(dir, path)).href)
  const [{ blindIndex }, compute, { normalizeValue }, { codecs }, cipher, { KeyMaterial }] =
    await Promise.all([
      load('src/blindindex/blind-index.ts'),
      load('src/blindindex/compute-blind-index.ts'),
      load('src/blindindex/normalizers.ts'),
      load('src/fields/codecs.ts'),
      load('src/fields/field-cipher.ts'),
      load('src/keys/key-material.ts'),
    ])
  const dataKey = new KeyMaterial({ logicalTable: 'users', purpose: 'data', version: 1 }, randomBytes(32))
  const indexKey = new KeyMaterial({ logicalTable: 'users', purpose: 'index', version: 1 }, randomBytes(32))
  const spec = blindIndex({ name: 'email_bidx' })
  const aad = { table: 'users', column: 'email' }
  // biome-ignore lint/suspicious/noExplicitAny: modules of another copy, typed as this one's.
  const codec = (p: { kind: string }): any => (p.kind === 'text' ? codecs.text : codecs.json)
  return {
    id: 'base',
    label: `ours (${dir}/src)`,
    storage: 'binary',
    async: false,
    encrypt: (p) => cipher.encryptValue(codec(p), p.value, dataKey, aad),
    decrypt: (p, stored) => cipher.decryptValue(codec(p), stored, dataKey, aad),
    // What the plugin's indexValue does in that copy: the text path where it has one.
    index: (p) => {
      const c = codec(p)
      const normalized = p.kind === 'text' ? normalizeValue(spec, p.value) : p.value
      return c.canonicalText !== undefined && compute.computeTextBlindIndex !== undefined
        ? compute.computeTextBlindIndex(indexKey, 'users', spec, c.canonicalText(normalized))
        : compute.computeBlindIndex(indexKey, 'users', spec, [c.encode(normalized)])
    },
  }
}

const libs = fieldLibraries() as ReturnType<Library['fieldLibraries']>
const variants = [
  libs.find((l) => l.id === 'floor') as FieldLibrary,
  await oursFrom(base),
  libs.find((l) => l.id === 'ours') as FieldLibrary,
]

/** µs per call: the median of 100 batches of `batch` calls. */
function time(fn: () => unknown, batch: number): number {
  const per: number[] = []
  for (let b = 0; b < 100; b++) {
    const t = process.hrtime.bigint()
    for (let i = 0; i < batch; i++) fn()
    per.push(Number(process.hrtime.bigint() - t) / batch / 1000)
  }
  return median(per)
}

const fmt = (x: number) => x.toFixed(2)
for (const c of payloads()) {
  for (const op of ['encrypt', 'decrypt', 'index'] as const) {
    const calls = variants.map((lib) => {
      const stored = lib.encrypt(c.payload)
      return op === 'encrypt'
        ? () => lib.encrypt(c.payload)
        : op === 'decrypt'
          ? () => lib.decrypt(c.payload, stored)
          : () => lib.index?.(c.payload)
    })
    const batch = Math.max(1, Math.round(200 / (c.bytes / 20 + 3)))
    const us: number[][] = variants.map(() => [])
    for (let r = 0; r < rounds; r++) {
      for (const i of rotate(
        variants.map((_, i) => i),
        r,
      )) {
        const t = time(calls[i] as () => unknown, batch)
        if (r > 0) us[i]?.push(t)
      }
    }
    const line = variants.map((v, i) => {
      const xs = us[i] as number[]
      return `${v.id} ${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`
    })
    const [floor, before, after] = us.map((xs) => median(xs)) as [number, number, number]
    process.stdout.write(
      `${c.id} ${op}: ${line.join(', ')} µs; base ${fmt(before)} → ${fmt(after)}; floor/ours ${(floor / after).toFixed(3)}× (base ${(floor / before).toFixed(3)}×)\n`,
    )
  }
}
