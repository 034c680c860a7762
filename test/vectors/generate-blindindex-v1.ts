/**
 * Generated test/vectors/blindindex-v1.json ONCE, from fixed keys. The file is frozen: never
 * regenerate it. A change that alters any value in it breaks every blind index already stored.
 * This script refuses to overwrite the file; it is kept to show how the vectors were made.
 *
 * Run (only for a new, empty vector file): npx tsx test/vectors/generate-blindindex-v1.ts
 */
import { createHmac } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { blindIndex, type Normalizer } from '../../src/blindindex/blind-index.js'
import { computeBlindIndex } from '../../src/blindindex/compute-blind-index.js'
import { indexSubkey, indexSubkeyInfo } from '../../src/blindindex/index-subkey.js'
import { normalizeValue } from '../../src/blindindex/normalizers.js'
import { KeyMaterial } from '../../src/keys/key-material.js'

const out = join(dirname(fileURLToPath(import.meta.url)), 'blindindex-v1.json')
if (existsSync(out)) {
  console.error(`${out} exists and is frozen: never regenerate it.`)
  process.exit(1)
}

/** Fixed, public test keys: 00 01 … 1f (version 1) and 20 21 … 3f (version 2). Never use them for data. */
const keyBytes = (start: number) => Buffer.from(Array.from({ length: 32 }, (_, i) => start + i))
const keys = {
  v1: { logicalTable: 'users', purpose: 'index' as const, version: 1, bytes: keyBytes(0x00) },
  v2: { logicalTable: 'users', purpose: 'index' as const, version: 2, bytes: keyBytes(0x20) },
}

interface Case {
  readonly id: string
  readonly comment: string
  readonly key: keyof typeof keys
  readonly table: string
  readonly spec: { name: string; bits?: number; normalize?: Normalizer[]; columns?: string[] }
  /** Plaintext strings, one per column; encoded as UTF-8 of the normalized string. */
  readonly values: string[]
}

const cases: Case[] = [
  {
    id: 'unique-single',
    comment: 'unique (256-bit) index on one column',
    key: 'v1',
    table: 'users',
    spec: { name: 'email_bidx' },
    values: ['alice@example.com'],
  },
  {
    id: 'unique-single-key-v2',
    comment: 'same as unique-single under index key version 2: a different index value',
    key: 'v2',
    table: 'users',
    spec: { name: 'email_bidx' },
    values: ['alice@example.com'],
  },
  {
    id: 'unique-other-table',
    comment:
      'same key, index name and value as unique-single, another table (key domain): a different subkey',
    key: 'v1',
    table: 'customers',
    spec: { name: 'email_bidx' },
    values: ['alice@example.com'],
  },
  {
    id: 'search-16',
    comment: 'search index, 16 bits (byte aligned), digits normalizer',
    key: 'v1',
    table: 'users',
    spec: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] },
    values: ['123-45-6789'],
  },
  {
    id: 'search-13',
    comment: 'search index, 13 bits: 2 bytes, the 3 low bits of the last byte are zero',
    key: 'v1',
    table: 'users',
    spec: { name: 'zip_bidx', bits: 13 },
    values: ['94103'],
  },
  {
    id: 'search-13-empty',
    comment: 'search index, 13 bits, the empty string (HMAC input is the 0x01 prefix alone)',
    key: 'v1',
    table: 'users',
    spec: { name: 'zip_bidx', bits: 13 },
    values: [''],
  },
  {
    id: 'compound-ab-c',
    comment: 'compound index over two columns, parts ("ab", "c")',
    key: 'v1',
    table: 'users',
    spec: { name: 'name_city_bidx', bits: 32, columns: ['last_name', 'city'] },
    values: ['ab', 'c'],
  },
  {
    id: 'compound-a-bc',
    comment: 'compound index over two columns, parts ("a", "bc"): differs from compound-ab-c',
    key: 'v1',
    table: 'users',
    spec: { name: 'name_city_bidx', bits: 32, columns: ['last_name', 'city'] },
    values: ['a', 'bc'],
  },
  {
    id: 'compound-3-unique',
    comment: 'unique compound index over three columns, one part empty',
    key: 'v1',
    table: 'users',
    spec: { name: 'first_last_dob_bidx', columns: ['first_name', 'last_name', 'dob'] },
    values: ['Ada', '', '1815-12-10'],
  },
  {
    id: 'normalized-email',
    comment: 'unique index with trim + lowercase: " Alice@Example.COM " indexes as "alice@example.com"',
    key: 'v1',
    table: 'users',
    spec: { name: 'email_norm_bidx', normalize: ['trim', 'lowercase'] },
    values: [' Alice@Example.COM '],
  },
  {
    id: 'normalized-nfkc-chain',
    comment: 'search index, 24 bits, nfkc → collapse-whitespace → trim → lowercase on full-width letters',
    key: 'v1',
    table: 'users',
    spec: { name: 'name_bidx', bits: 24, normalize: ['nfkc', 'collapse-whitespace', 'trim', 'lowercase'] },
    values: ['  Ｊｏｈｎ \t  Ｓｍｉｔｈ '],
  },
  {
    id: 'normalized-nfc',
    comment: 'search index, 20 bits, nfc: "Cafe\\u0301" (decomposed) indexes as "Caf\\u00e9"',
    key: 'v1',
    table: 'users',
    spec: { name: 'city_bidx', bits: 20, normalize: ['nfc'] },
    values: ['Cafe\u0301'],
  },
]

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

const vectors = cases.map((c) => {
  const k = keys[c.key]
  const key = new KeyMaterial(
    { logicalTable: k.logicalTable, purpose: k.purpose, version: k.version },
    Buffer.from(k.bytes),
  )
  const spec = blindIndex(c.spec)
  const normalized = c.values.map((v) => normalizeValue(spec, v))
  const parts = normalized.map((v) => Buffer.from(v, 'utf8'))
  const subkey = Buffer.from(indexSubkey(key, c.table, spec.name).key)
  const index = computeBlindIndex(key, c.table, spec, parts)
  const hmacInput =
    parts.length === 1
      ? Buffer.concat([Buffer.from([1]), parts[0] as Buffer])
      : Buffer.concat([
          Buffer.from([parts.length]),
          ...parts.flatMap((p) => {
            const len = Buffer.alloc(4)
            len.writeUInt32BE(p.length)
            return [len, p]
          }),
        ])
  const fullMac = createHmac('sha256', subkey).update(hmacInput).digest()
  key.destroy()
  return {
    id: c.id,
    comment: c.comment,
    key: { logicalTable: k.logicalTable, purpose: k.purpose, version: k.version, bytes: hex(k.bytes) },
    table: c.table,
    spec: {
      name: spec.name,
      kind: spec.kind,
      bits: spec.bits,
      normalize: spec.normalize,
      columns: spec.columns,
    },
    values: c.values,
    normalized,
    encodedParts: parts.map(hex),
    info: hex(indexSubkeyInfo(c.table, spec.name)),
    subkey: hex(subkey),
    hmacInput: hex(hmacInput),
    fullMac: hex(fullMac),
    index: hex(index),
  }
})

writeFileSync(
  out,
  `${JSON.stringify(
    {
      format: 'kysely-field-encryption blind index, version 1',
      frozen: 'FROZEN: never regenerate or edit. Every later release must reproduce these bytes exactly.',
      description:
        'subkey = HKDF-SHA256(ikm = key.bytes, salt = empty, info = "kfe/v1/bidx" || lp(table) || lp(spec.name), L = 32), ' +
        'lp(s) = uint16be(len(utf8(s))) || utf8(s). hmacInput = 0x01 || part (one column) or ' +
        'count || (uint32be(len) || part)... (compound). index = first spec.bits bits of HMAC-SHA256(subkey, hmacInput), ' +
        'ceil(bits/8) bytes, unused low bits of the last byte zero. encodedParts here are UTF-8 of the normalized strings ' +
        '(the string codec of src/fields may add its own framing; these vectors fix the index layer alone). ' +
        'Keys are public test keys: never use them for data.',
      vectors,
    },
    null,
    2,
  )}\n`,
)
console.log(`wrote ${vectors.length} vectors to ${out}`)
