import { createHmac } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { blindIndex, type Normalizer } from '../../../src/blindindex/blind-index.js'
import { computeBlindIndex, computeTextBlindIndex } from '../../../src/blindindex/compute-blind-index.js'
import { indexSubkey, indexSubkeyInfo } from '../../../src/blindindex/index-subkey.js'
import { normalizeValue } from '../../../src/blindindex/normalizers.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'

interface Vector {
  id: string
  key: { logicalTable: string; purpose: 'index'; version: number; bytes: string }
  table: string
  spec: { name: string; kind: 'unique' | 'search'; bits: number; normalize: Normalizer[]; columns: string[] }
  values: string[]
  normalized: string[]
  encodedParts: string[]
  info: string
  subkey: string
  hmacInput: string
  fullMac: string
  index: string
}

const file = JSON.parse(
  readFileSync(
    join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'vectors', 'blindindex-v1.json'),
    'utf8',
  ),
) as { frozen: string; vectors: Vector[] }

describe('frozen blind index vectors v1 (test/vectors/blindindex-v1.json)', () => {
  it('is marked frozen and covers unique, 16-bit, 13-bit, compound and normalized indexes', () => {
    expect(file.frozen).toMatch(/never regenerate/)
    const ids = file.vectors.map((v) => v.id)
    for (const id of ['unique-single', 'search-16', 'search-13', 'compound-ab-c', 'normalized-email']) {
      expect(ids).toContain(id)
    }
  })

  it.each(file.vectors.map((v) => [v.id, v] as const))('%s', (_id, v) => {
    const key = new KeyMaterial(
      { logicalTable: v.key.logicalTable, purpose: v.key.purpose, version: v.key.version },
      Buffer.from(v.key.bytes, 'hex'),
    )
    const spec = blindIndex({
      name: v.spec.name,
      bits: v.spec.bits,
      normalize: v.spec.normalize,
      columns: v.spec.columns,
    })
    expect(spec.kind).toBe(v.spec.kind)
    const normalized = v.values.map((s) => normalizeValue(spec, s))
    expect(normalized).toEqual(v.normalized)
    const parts = normalized.map((s) => Buffer.from(s, 'utf8'))
    expect(parts.map((p) => p.toString('hex'))).toEqual(v.encodedParts)
    expect(indexSubkeyInfo(v.table, spec.name).toString('hex')).toBe(v.info)
    expect(indexSubkey(key, v.table, spec.name).key.toString('hex')).toBe(v.subkey)
    const mac = createHmac('sha256', Buffer.from(v.subkey, 'hex'))
      .update(Buffer.from(v.hmacInput, 'hex'))
      .digest()
    expect(mac.toString('hex')).toBe(v.fullMac)
    const index = computeBlindIndex(key, v.table, spec, parts)
    expect(index.toString('hex')).toBe(v.index)
    expect(index.length).toBe(Math.ceil(v.spec.bits / 8))
    // The text path the plugin takes for a single-column text or JSON index hashes the same bytes.
    if (normalized.length === 1)
      expect(computeTextBlindIndex(key, v.table, spec, normalized[0] as string).toString('hex')).toBe(v.index)
    key.destroy()
  })

  it('pins the distinctions the format promises', () => {
    const byId = new Map(file.vectors.map((v) => [v.id, v.index]))
    expect(byId.get('unique-single')).not.toBe(byId.get('unique-single-key-v2'))
    expect(byId.get('unique-single')).not.toBe(byId.get('unique-other-table'))
    expect(byId.get('compound-ab-c')).not.toBe(byId.get('compound-a-bc'))
    expect(byId.get('search-13')?.length).toBe(4)
    expect(Number.parseInt(byId.get('search-13')?.slice(2) ?? 'ff', 16) & 0b111).toBe(0)
  })
})
