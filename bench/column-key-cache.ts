/**
 * What a column key's construction costs, and why (`npx tsx bench/column-key-cache.ts`): its
 * bounded cache of record subkeys, made by lru-cache with `max` (which allocates every slot up
 * front) against `maxSize` (which does not), in the same run, interleaved rounds, medians.
 * A micro-benchmark of CPU only; not part of `npm run bench`.
 */
import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { ColumnKeys, READER_CACHE_MAX } from '../src/fields/column-keys.js'
import { median } from './harness.js'

const N = 2_000
const ROUNDS = 15
const key = randomBytes(32)
const keep: unknown[] = []

/** Microseconds per call of `make`, over N calls. */
function time(make: (i: number) => unknown): number {
  const start = process.hrtime.bigint()
  for (let i = 0; i < N; i++) keep.push(make(i))
  const us = Number(process.hrtime.bigint() - start) / 1_000 / N
  keep.length = 0
  return us
}

const cases: Record<string, (i: number) => unknown> = {
  'new ColumnKeys (this library)': (i) => new ColumnKeys(key, 'users', `c${i}`),
  'new LRUCache({ max: 1024 })': () => new LRUCache<number, Buffer>({ max: READER_CACHE_MAX }),
  'new LRUCache({ maxSize: 1024, sizeCalculation })': () =>
    new LRUCache<number, Buffer>({ maxSize: READER_CACHE_MAX, sizeCalculation: () => 1 }),
}
const samples = new Map<string, number[]>(Object.keys(cases).map((k) => [k, []]))
for (let r = 0; r < ROUNDS + 2; r++) {
  for (const [name, make] of Object.entries(cases)) {
    const us = time(make)
    if (r >= 2) samples.get(name)?.push(us) // two warm-up rounds
  }
}
for (const [name, xs] of samples)
  console.log(`${name}: ${median(xs).toFixed(1)} µs (median of ${ROUNDS} rounds of ${N})`)
