import { type EncryptedSchema, encrypted, encryptedSchema } from '../../src/index.js'

/** What a logical column holds, which decides the values compared with it. */
export type Kind = 'int' | 'text' | 'num' | 'date' | 'json'

/** How a column is stored on the encrypted copy. */
export type Protection = 'plain' | 'unique' | 'search' | 'none'

/** One logical column of the fuzz schema. */
export interface FuzzColumn {
  readonly name: string
  readonly kind: Kind
  readonly protection: Protection
  /** Carries a UNIQUE constraint (on the plaintext copy) / a unique blind index (encrypted copy). */
  readonly unique?: boolean
  readonly notNull?: boolean
  /**
   * Unique together with this column (on the plaintext copy): a unique blind index under a key per
   * tenant is unique within the tenant.
   */
  readonly uniqueWith?: string
  /** Compared exactly (binary collation on MariaDB), like the plugin's guard of a context column. */
  readonly binary?: boolean
}

/**
 * The related tables: users ← orders (user_id), users ← tags (user_id), users ← accounts (user_id);
 * accounts has a row context and a key per tenant (tenant_id).
 */
export const TABLES: Readonly<Record<'users' | 'orders' | 'tags' | 'accounts', readonly FuzzColumn[]>> = {
  users: [
    { name: 'id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'name', kind: 'text', protection: 'plain', notNull: true },
    { name: 'age', kind: 'int', protection: 'plain' },
    { name: 'email', kind: 'text', protection: 'unique', unique: true },
    { name: 'ssn', kind: 'text', protection: 'search' },
    { name: 'dob', kind: 'date', protection: 'none' },
    { name: 'notes', kind: 'json', protection: 'none' },
    { name: 'score', kind: 'num', protection: 'unique', unique: true },
  ],
  orders: [
    { name: 'id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'user_id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'item', kind: 'text', protection: 'plain', notNull: true },
    { name: 'qty', kind: 'int', protection: 'plain' },
    { name: 'email', kind: 'text', protection: 'unique', unique: true },
    { name: 'amount', kind: 'num', protection: 'search' },
  ],
  tags: [
    { name: 'id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'user_id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'label', kind: 'text', protection: 'plain', notNull: true },
    { name: 'secret', kind: 'text', protection: 'none' },
  ],
  accounts: [
    { name: 'id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'tenant_id', kind: 'text', protection: 'plain', notNull: true, binary: true },
    { name: 'user_id', kind: 'int', protection: 'plain', notNull: true },
    { name: 'iban', kind: 'text', protection: 'unique', uniqueWith: 'tenant_id' },
    { name: 'memo', kind: 'text', protection: 'none' },
  ],
}

/**
 * The tenants of accounts (each has its keys, made by openFuzzDb). Its context column: the row's
 * ciphertexts are bound to it, so a write of it touches them (the plugin refuses one that does
 * not rewrite them).
 */
export const TENANTS = ['acme', 'globex'] as const

export type TableName = keyof typeof TABLES
export const TABLE_NAMES = Object.keys(TABLES) as TableName[]

export function column(table: TableName, name: string): FuzzColumn {
  const c = TABLES[table].find((x) => x.name === name)
  if (c === undefined) throw new Error(`fuzz: no column ${table}.${name}`)
  return c
}

/** The encryption schema of the encrypted copy, keyed by its physical table names. */
export function fuzzEncryptedSchema(names: Readonly<Record<TableName, string>>): EncryptedSchema {
  return encryptedSchema(
    {
      [names.users]: {
        email: encrypted.text({ index: { name: 'email_bidx' } }),
        // 8 bits (the fewest allowed): a search index with false positives the plugin must filter.
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 8 } }),
        dob: encrypted.date(),
        notes: encrypted.json(),
        score: encrypted.number({ index: { name: 'score_bidx' } }),
      },
      [names.orders]: {
        email: encrypted.text({ index: { name: 'email_bidx' } }),
        amount: encrypted.number({ index: { name: 'amount_bidx', bits: 8 } }),
      },
      [names.tags]: {
        secret: encrypted.text(),
      },
      // A unique index under each tenant's key: two tenants may hold one IBAN.
      [names.accounts]: {
        iban: encrypted.text({ index: { name: 'iban_bidx' } }),
        memo: encrypted.text(),
      },
    },
    { tables: { [names.accounts]: { context: ['tenant_id'], keyScope: 'tenant_id' } } },
  )
}

/** Value pools: equality searches hit stored values often, and miss sometimes. */
export const POOLS = {
  text: ['alpha', 'beta', 'gamma', 'delta', 'Beta ', 'zeta'],
  int: [1, 2, 3, 4, 5, 6, 7, 8, 20, 30, 40],
  email: ['kq-ada@x.io', 'kq-bob@x.io', 'kq-cy@x.io', 'kq-dee@x.io', 'kq-eve@x.io', 'KQ-ADA@x.io'],
  ssn: ['kq-111-22-3333', 'kq-222-33-4444', 'kq-333-44-5555', 'kq-444-55-6666'],
  num: [7310.25, 7311.5, 7312.75, 7313.125, 7314.0625],
  date: ['1970-01-02T03:04:05.000Z', '1985-06-07T08:09:10.000Z', '2001-02-03T04:05:06.000Z'],
  json: [{ k: 'kq-note-one', n: 1 }, { k: 'kq-note-two', tags: ['a', 'b'] }, ['kq-note-three', 3]],
  secret: ['kq-tag-secret-1', 'kq-tag-secret-2', 'kq-tag-secret-3'],
  iban: ['kq-iban-1001', 'kq-iban-2002', 'kq-iban-3003'],
  memo: ['kq-memo-one', 'kq-memo-two'],
} as const

/** Pool of values for a column (by name for encrypted text columns, else by kind). */
export function poolOf(table: TableName, col: FuzzColumn): readonly unknown[] {
  if (col.kind === 'text' && col.protection !== 'plain') {
    if (col.name === 'email') return POOLS.email
    if (col.name === 'ssn') return POOLS.ssn
    if (col.name === 'iban') return POOLS.iban
    if (col.name === 'memo') return POOLS.memo
    return POOLS.secret
  }
  if (col.name === 'tenant_id') return TENANTS
  if (col.kind === 'text') return table === 'orders' ? ['pen', 'ink', 'pad', 'alpha'] : POOLS.text
  if (col.kind === 'int') return POOLS.int
  if (col.kind === 'num') return POOLS.num
  if (col.kind === 'date') return POOLS.date.map((d) => new Date(d))
  return POOLS.json
}

/** Every plaintext of an encrypted column the fuzzer uses: none may reach the driver. */
export function fuzzSecrets(): string[] {
  return [
    ...POOLS.email,
    ...POOLS.ssn,
    ...POOLS.secret,
    ...POOLS.iban,
    ...POOLS.memo,
    'kq-note-one',
    'kq-note-two',
    'kq-note-three',
    ...POOLS.num.map(String),
  ]
}

/** The rows both copies start from (the same logical data). */
export const SEED: Readonly<Record<TableName, readonly Record<string, unknown>[]>> = {
  users: [
    {
      id: 1,
      name: 'alpha',
      age: 30,
      email: 'kq-ada@x.io',
      ssn: 'kq-111-22-3333',
      dob: new Date(POOLS.date[0]),
      notes: POOLS.json[0],
      score: 7310.25,
    },
    {
      id: 2,
      name: 'beta',
      age: 40,
      email: 'kq-bob@x.io',
      ssn: 'kq-222-33-4444',
      dob: new Date(POOLS.date[1]),
      notes: POOLS.json[1],
      score: 7311.5,
    },
    {
      id: 3,
      name: 'gamma',
      age: null,
      email: 'kq-cy@x.io',
      ssn: 'kq-111-22-3333',
      dob: null,
      notes: null,
      score: null,
    },
    {
      id: 4,
      name: 'beta',
      age: 20,
      email: null,
      ssn: null,
      dob: new Date(POOLS.date[2]),
      notes: POOLS.json[2],
      score: 7312.75,
    },
    {
      id: 5,
      name: 'delta',
      age: 30,
      email: 'KQ-ADA@x.io',
      ssn: 'kq-333-44-5555',
      dob: null,
      notes: null,
      score: null,
    },
  ],
  orders: [
    { id: 1, user_id: 1, item: 'pen', qty: 2, email: 'kq-ada@x.io', amount: 7310.25 },
    { id: 2, user_id: 1, item: 'ink', qty: 1, email: null, amount: 7311.5 },
    { id: 3, user_id: 2, item: 'pen', qty: null, email: 'kq-bob@x.io', amount: 7310.25 },
    { id: 4, user_id: 4, item: 'pad', qty: 5, email: 'kq-dee@x.io', amount: null },
    { id: 5, user_id: 9, item: 'alpha', qty: 3, email: 'kq-eve@x.io', amount: 7313.125 },
  ],
  tags: [
    { id: 1, user_id: 1, label: 'alpha', secret: 'kq-tag-secret-1' },
    { id: 2, user_id: 2, label: 'beta', secret: null },
    { id: 3, user_id: 2, label: 'zeta', secret: 'kq-tag-secret-2' },
    { id: 4, user_id: 7, label: 'delta', secret: 'kq-tag-secret-1' },
  ],
  accounts: [
    { id: 1, tenant_id: 'acme', user_id: 1, iban: 'kq-iban-1001', memo: 'kq-memo-one' },
    { id: 2, tenant_id: 'globex', user_id: 2, iban: 'kq-iban-2002', memo: null },
    { id: 3, tenant_id: 'acme', user_id: 2, iban: null, memo: 'kq-memo-two' },
    { id: 4, tenant_id: 'globex', user_id: 4, iban: 'kq-iban-1001', memo: 'kq-memo-one' },
  ],
}
