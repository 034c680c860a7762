import type { Codec, CodecKind } from '../../src/fields/codecs.js'
import { codecs, type JsonValue } from '../../src/fields/codecs.js'

/** One frozen known-answer vector of ciphertext format v1, as stored in format-v1.json. */
export interface FormatV1Vector {
  readonly name: string
  readonly codec: CodecKind
  readonly keyHex: string
  readonly keyVersion: number
  readonly table: string
  readonly column: string
  readonly context: readonly string[]
  readonly saltHex: string
  readonly nonceHex: string
  /** The value, as JSON: bigint as a decimal string, date as an ISO string, bytes as hex. */
  readonly value: JsonValue
  readonly columnKeyHex: string
  readonly subkeyHex: string
  readonly aadHex: string
  readonly plaintextHex: string
  readonly ciphertextHex: string
}

/** The file format-v1.json. */
export interface FormatV1File {
  readonly note: string
  readonly vectors: readonly FormatV1Vector[]
}

/** Turns a vector's JSON `value` into the codec's JS value. */
export function vectorValue(kind: CodecKind, value: JsonValue): unknown {
  switch (kind) {
    case 'bigint':
      return BigInt(value as string)
    case 'date':
      return new Date(value as string)
    case 'bytes':
      return Buffer.from(value as string, 'hex')
    case 'text':
    case 'calendarDate':
    case 'number':
    case 'boolean':
    case 'json':
      return value
  }
}

/** The codec of a vector. */
export function codecOf(kind: CodecKind): Codec<unknown> {
  return codecs[kind] as Codec<unknown>
}
