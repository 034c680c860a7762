/**
 * Case 1: one field, three payloads (a 24-byte string, a 200-byte string, a 4 KiB JSON value):
 * encrypt, decrypt and blind index per library, plus the bytes each ciphertext adds.
 */
import { isDeepStrictEqual } from 'node:util'
import type { JsonValue } from '../src/fields/canonical-json.js'
import { type FieldLibrary, fieldLibraries, type Payload, storedLength } from './field-variants.js'
import { measureGroups, type Summary, type Timed } from './harness.js'

export type FieldOp = 'encrypt' | 'decrypt' | 'index'

export interface PayloadInfo {
  readonly id: string
  readonly label: string
  /** UTF-8 bytes of the plaintext every library is given (JSON: its JSON text). */
  readonly bytes: number
}

export interface FieldResults {
  readonly rounds: number
  readonly timeMs: number
  readonly payloads: readonly PayloadInfo[]
  readonly libraries: ReadonlyArray<Pick<FieldLibrary, 'id' | 'label' | 'storage' | 'indexNote' | 'async'>>
  /** payload → op → library → ms per operation. */
  readonly timings: Record<string, Partial<Record<FieldOp, Record<string, Summary>>>>
  /** library → payload → stored length − plaintext length (bytes; characters for text storage). */
  readonly overhead: Record<string, Record<string, number>>
}

/** A JSON object whose JSON text is exactly `bytes` long (ASCII, so bytes = characters). */
function jsonOfLength(bytes: number): JsonValue {
  const value: { [k: string]: JsonValue } = {}
  for (let i = 0; JSON.stringify(value).length < bytes - 200; i++) {
    value[`item_${String(i).padStart(3, '0')}`] = {
      sku: `SKU-${10_000 + i}`,
      qty: (i * 7) % 13,
      price: Math.round(((i * 37) % 1000) * 1.5) / 100,
      tags: ['a', 'b'],
      ok: i % 2 === 0,
    }
  }
  value.note = ''
  value.note = 'x'.repeat(bytes - JSON.stringify(value).length)
  return value
}

/** The three payloads of case 1. */
export function payloads(): Array<PayloadInfo & { payload: Payload }> {
  const s24 = 'jane.doe+1@example.co.uk'
  const s200 = 'Flat 4B, 221 Baker Street, Marylebone, London NW1 6XE, United Kingdom. '
    .repeat(3)
    .slice(0, 200)
  const json = jsonOfLength(4096)
  const out = [
    { id: 'str24', label: '24-byte string', payload: { kind: 'text', value: s24 } as Payload },
    { id: 'str200', label: '200-byte string', payload: { kind: 'text', value: s200 } as Payload },
    { id: 'json4k', label: '4 KiB JSON', payload: { kind: 'json', value: json } as Payload },
  ]
  return out.map((p) => ({
    ...p,
    bytes: Buffer.byteLength(p.payload.kind === 'text' ? p.payload.value : JSON.stringify(p.payload.value)),
  }))
}

/** Calls `fn` until it has run ~`budgetMs`, and returns the ms of one call. */
async function timeOne(fn: () => unknown, budgetMs = 20): Promise<number> {
  let n = 0
  const start = performance.now()
  while (performance.now() - start < budgetMs || n < 3) {
    const out = fn()
    if (out instanceof Promise) await out
    n++
  }
  return (performance.now() - start) / n
}

/** Operations per timed call, so each call lasts ~0.2 ms: long enough that the timer is noise. */
function batchFor(msPerOp: number): number {
  return Math.max(1, Math.min(512, Math.round(0.2 / msPerOp)))
}

async function timed(lib: FieldLibrary, name: string, one: () => unknown): Promise<Timed> {
  const batch = batchFor(await timeOne(one))
  const run = lib.async
    ? async (n: number) => {
        for (let i = 0; i < n; i++) await one()
      }
    : (n: number) => {
        for (let i = 0; i < n; i++) one()
      }
  return { name, batch, run }
}

/**
 * Runs case 1.
 * @param rounds - rounds including the discarded warm-up round
 * @param timeMs - time per variant per round
 */
export async function runFieldBench(
  rounds: number,
  timeMs: number,
  log: (s: string) => void,
): Promise<FieldResults> {
  const libs = fieldLibraries()
  const cases = payloads()
  const overhead: Record<string, Record<string, number>> = {}
  const groups: Array<{ id: string; variants: Timed[] }> = []
  for (const c of cases) {
    const enc: Timed[] = []
    const dec: Timed[] = []
    const idx: Timed[] = []
    for (const lib of libs) {
      // Correctness first: a fast wrong answer is not a result.
      const stored = await lib.encrypt(c.payload)
      const back = await lib.decrypt(c.payload, stored)
      if (!isDeepStrictEqual(back, c.payload.value)) throw new Error(`${lib.id} does not round-trip ${c.id}`)
      overhead[lib.id] ??= {}
      ;(overhead[lib.id] as Record<string, number>)[c.id] = storedLength(stored) - c.bytes
      enc.push(await timed(lib, lib.id, () => lib.encrypt(c.payload)))
      dec.push(await timed(lib, lib.id, () => lib.decrypt(c.payload, stored)))
      if (lib.index !== undefined) {
        const index = lib.index.bind(lib)
        idx.push(await timed(lib, lib.id, () => index(c.payload)))
      }
    }
    groups.push({ id: `${c.id}/encrypt`, variants: enc })
    groups.push({ id: `${c.id}/decrypt`, variants: dec })
    groups.push({ id: `${c.id}/index`, variants: idx })
  }
  const measured = await measureGroups(groups, rounds, { timeMs, iterations: 2 }, (r) =>
    log(`fields: round ${r + 1}/${rounds}${r === 0 ? ' (warm-up, discarded)' : ''}`),
  )
  const timings: FieldResults['timings'] = {}
  for (const [id, byLib] of measured) {
    const [payload, op] = id.split('/') as [string, FieldOp]
    timings[payload] ??= {}
    ;(timings[payload] as Partial<Record<FieldOp, Record<string, Summary>>>)[op] = Object.fromEntries(byLib)
  }
  return {
    rounds,
    timeMs,
    payloads: cases.map(({ id, label, bytes }) => ({ id, label, bytes })),
    libraries: libs.map(({ id, label, storage, indexNote, async }) => ({
      id,
      label,
      storage,
      ...(indexNote === undefined ? {} : { indexNote }),
      async,
    })),
    timings,
    overhead,
  }
}
