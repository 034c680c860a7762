/**
 * Generated test/vectors/format-v1.json ONCE (0.1.0), and format-v1-calendar-date.json ONCE (when
 * codec tag 8 was added). The files are frozen: never regenerate them; every later format version
 * must still read these vectors. This script refuses to overwrite either; run with `--stdout` to
 * print what it would write (e.g. to compare).
 *
 *   npx tsx test/vectors/generate-format-v1.ts [--stdout]
 *
 * Intermediates (column key, subkey) are computed with node:crypto's hkdfSync, independently of
 * src/fields/hkdf.ts, so the file cross-checks the implementation.
 */
import { hkdfSync } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { CodecKind, JsonValue } from '../../src/fields/codecs.js'
import { encryptFieldWithFixedNonceForVectors } from '../../src/fields/field-cipher.js'
import { KeyMaterial } from '../../src/keys/key-material.js'
import { codecOf, type FormatV1File, type FormatV1Vector, vectorValue } from './format-v1-vectors.js'

const dir = dirname(fileURLToPath(import.meta.url))

const KEY_HEX = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'

interface Spec {
  readonly name: string
  readonly codec: CodecKind
  readonly value: JsonValue
  readonly table?: string
  readonly column?: string
  readonly context?: readonly string[]
  readonly keyVersion?: number
  readonly saltHex?: string
}

const specs: readonly Spec[] = [
  { name: 'text', codec: 'text', value: 'alice@example.com' },
  { name: 'text-empty', codec: 'text', value: '', column: 'nickname' },
  { name: 'text-astral', codec: 'text', value: 'Zoë 😀', column: 'display_name', saltHex: 'ffff' },
  { name: 'number', codec: 'number', value: -1234.5, table: 'accounts', column: 'balance' },
  {
    name: 'bigint',
    codec: 'bigint',
    value: '-123456789012345678901234567890',
    table: 'accounts',
    column: 'units',
  },
  { name: 'boolean', codec: 'boolean', value: true, column: 'verified' },
  { name: 'date', codec: 'date', value: '1969-07-20T20:17:40.001Z', column: 'born_at' },
  { name: 'json', codec: 'json', value: { b: [1, 2, { y: null, x: 'é' }], a: true }, column: 'profile' },
  { name: 'bytes', codec: 'bytes', value: 'deadbeef00ff', column: 'photo', saltHex: '0000' },
  { name: 'text-context', codec: 'text', value: 'alice@example.com', context: ['tenant-42', 'row-7'] },
  { name: 'text-key-version-200', codec: 'text', value: 'alice@example.com', keyVersion: 200 },
]

/** Codec tag 8 (calendarDate), added after 0.1.0: its own file, nonces from 0x20 on. */
const calendarDateSpecs: readonly Spec[] = [
  { name: 'calendar-date', codec: 'calendarDate', value: '1990-05-17', column: 'dob' },
  {
    name: 'calendar-date-leap-day',
    codec: 'calendarDate',
    value: '2024-02-29',
    column: 'dob',
    saltHex: '0001',
  },
  {
    name: 'calendar-date-context',
    codec: 'calendarDate',
    value: '0001-01-01',
    table: 'patients',
    column: 'born_on',
    context: ['tenant-42'],
  },
]
const CALENDAR_DATE_FIRST_NONCE = 0x20

function lp(s: string): Buffer {
  const b = Buffer.from(s, 'utf8')
  const len = Buffer.alloc(2)
  len.writeUInt16BE(b.length)
  return Buffer.concat([len, b])
}

function vector(spec: Spec, index: number): FormatV1Vector {
  const table = spec.table ?? 'users'
  const column = spec.column ?? 'email'
  const context = spec.context ?? []
  const keyVersion = spec.keyVersion ?? 1
  const saltHex = spec.saltHex ?? 'a1b2'
  const nonceHex = `0102030405060708090a0b${index.toString(16).padStart(2, '0')}`
  const codec = codecOf(spec.codec)
  const plaintext = codec.encode(vectorValue(spec.codec, spec.value))
  const key = new KeyMaterial(
    { logicalTable: table, purpose: 'data', version: keyVersion },
    Buffer.from(KEY_HEX, 'hex'),
  )
  const ct = encryptFieldWithFixedNonceForVectors(
    key,
    codec.tag,
    Buffer.from(plaintext),
    { table, column, context },
    { salt: Buffer.from(saltHex, 'hex'), nonce: Buffer.from(nonceHex, 'hex') },
  )
  key.destroy()
  const columnKey = Buffer.from(
    hkdfSync(
      'sha256',
      Buffer.from(KEY_HEX, 'hex'),
      Buffer.alloc(0),
      Buffer.concat([Buffer.from('kfe/v1/column'), lp(table), lp(column)]),
      32,
    ),
  )
  const subkey = Buffer.from(
    hkdfSync('sha256', columnKey, Buffer.from(saltHex, 'hex'), Buffer.from('kfe/v1/record'), 32),
  )
  const headerLength = keyVersion < 128 ? 4 : 5
  const count = Buffer.alloc(2)
  count.writeUInt16BE(context.length)
  const aad = Buffer.concat([
    ct.subarray(0, headerLength),
    Buffer.from('kfe/v1/aad'),
    lp(table),
    lp(column),
    count,
    ...context.map(lp),
  ])
  return {
    name: spec.name,
    codec: spec.codec,
    keyHex: KEY_HEX,
    keyVersion,
    table,
    column,
    context,
    saltHex,
    nonceHex,
    value: spec.value,
    columnKeyHex: columnKey.toString('hex'),
    subkeyHex: subkey.toString('hex'),
    aadHex: aad.toString('hex'),
    plaintextHex: plaintext.toString('hex'),
    ciphertextHex: ct.toString('hex'),
  }
}

const files: ReadonlyArray<readonly [string, FormatV1File]> = [
  [
    'format-v1.json',
    {
      note: 'frozen: never regenerate; every later format version must still read these',
      vectors: specs.map(vector),
    },
  ],
  [
    'format-v1-calendar-date.json',
    {
      note: 'frozen: never regenerate; every later format version must still read these (codec tag 8, calendarDate)',
      vectors: calendarDateSpecs.map((spec, i) => vector(spec, CALENDAR_DATE_FIRST_NONCE + i)),
    },
  ],
]

for (const [name, file] of files) {
  const out = join(dir, name)
  const json = `${JSON.stringify(file, null, 2)}\n`
  if (process.argv.includes('--stdout')) {
    process.stdout.write(`// ${name}\n${json}`)
  } else if (existsSync(out)) {
    console.error(`${out} exists and is frozen: not overwriting it (use --stdout to compare).`)
    process.exitCode = 1
  } else {
    writeFileSync(out, json)
    console.log(`wrote ${file.vectors.length} vectors to ${out}`)
  }
}
