/**
 * The hand-written floor of `npm run bench:ops`: a re-encryption job written by hand in the
 * application, of the same shape as ours — keyset batches by primary key, the batch read, its
 * two ciphertexts opened under the old key and sealed under the new one (AES-256-GCM, node:crypto),
 * both blind indexes computed again (HMAC-SHA256), and ONE `UPDATE` per batch: `UPDATE … FROM
 * unnest(…)` on PostgreSQL, `UPDATE … JOIN (SELECT … UNION ALL …)` on MariaDB/MySQL. Optionally
 * compare-and-set (the update also requires each row's ciphertexts to be the ones read). No key
 * store, no versions in the ciphertext, no checkpoint, no transaction per batch: the least work
 * a correct job of this shape does.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, randomFillSync } from 'node:crypto'
import type { Pool as MysqlPool } from 'mysql2/promise'
import type pg from 'pg'

/** One row as the floor stores it. */
export interface FloorRow {
  readonly id: number
  readonly name: string
  readonly email: Buffer
  readonly email_bidx: Buffer
  readonly ssn: Buffer
  readonly ssn_bidx: Buffer
}

/** AES-256-GCM under one of two keys (the job moves every row from one to the other), and the two index keys. */
/** The floor's keys, to open the same keys in another process (bench/ops-process.ts). */
export interface FloorSecrets {
  readonly keys: readonly [string, string]
  readonly emailMac: string
  readonly ssnMac: string
}

export class FloorCipher {
  readonly #keys: Buffer[]
  readonly #emailMac: Buffer
  readonly #ssnMac: Buffer
  readonly #nonces = Buffer.alloc(12 * 1024)
  #offset = this.#nonces.length
  /** The key the table's rows are under now (0 or 1). */
  current = 0

  /** New random keys, or (`secrets`) those of another process's cipher. */
  constructor(secrets?: FloorSecrets) {
    const hex = (h: string) => Buffer.from(h, 'hex')
    this.#keys = secrets === undefined ? [randomBytes(32), randomBytes(32)] : secrets.keys.map(hex)
    this.#emailMac = secrets === undefined ? randomBytes(32) : hex(secrets.emailMac)
    this.#ssnMac = secrets === undefined ? randomBytes(32) : hex(secrets.ssnMac)
  }

  /** The keys, for {@link FloorCipher}'s constructor in another process. */
  secrets(): FloorSecrets {
    const [a, b] = this.#keys as [Buffer, Buffer]
    return {
      keys: [a.toString('hex'), b.toString('hex')],
      emailMac: this.#emailMac.toString('hex'),
      ssnMac: this.#ssnMac.toString('hex'),
    }
  }

  /** nonce ‖ ciphertext ‖ tag under key `k`. */
  seal(text: string, k: number): Buffer {
    if (this.#offset + 12 > this.#nonces.length) {
      randomFillSync(this.#nonces)
      this.#offset = 0
    }
    const iv = this.#nonces.subarray(this.#offset, this.#offset + 12)
    this.#offset += 12
    const cipher = createCipheriv('aes-256-gcm', this.#keys[k]!, iv)
    const body = cipher.update(text, 'utf8')
    cipher.final()
    return Buffer.concat([iv, body, cipher.getAuthTag()])
  }

  open(ct: Uint8Array, k: number): string {
    const decipher = createDecipheriv('aes-256-gcm', this.#keys[k]!, ct.subarray(0, 12))
    decipher.setAuthTag(ct.subarray(ct.length - 16))
    const text = decipher.update(ct.subarray(12, ct.length - 16)).toString('utf8')
    decipher.final()
    return text
  }

  /** The email's blind index: the whole HMAC-SHA256 (a unique index). */
  emailIndex(email: string): Buffer {
    return createHmac('sha256', this.#emailMac).update(email, 'utf8').digest()
  }

  /** The ssn's blind index: 16 bits of its HMAC-SHA256 (a search index). */
  ssnIndex(ssn: string): Buffer {
    return createHmac('sha256', this.#ssnMac).update(ssn, 'utf8').digest().subarray(0, 2)
  }

  /** A row as the floor inserts it, under the current key. */
  row(id: number, name: string, email: string, ssn: string): FloorRow {
    return {
      id,
      name,
      email: this.seal(email, this.current),
      email_bidx: this.emailIndex(email),
      ssn: this.seal(ssn, this.current),
      ssn_bidx: this.ssnIndex(ssn),
    }
  }
}

/** The database side of the floor: plan the batches, read one, write one. */
export interface FloorDriver {
  /** Primary-key bounds `(lo, hi]` of consecutive batches of `batchSize` rows (`lo` null: from the start; `hi` null: to the end). */
  plan(batchSize: number): Promise<FloorBatch[]>
  read(lo: number | null, hi: number | null): Promise<Array<{ id: number; email: Buffer; ssn: Buffer }>>
  /** One UPDATE for the batch; returns the rows it changed. */
  write(rows: readonly Rewritten[], cas: boolean): Promise<number>
}

/** A row re-encrypted: its new values, and (for compare-and-set) the ciphertexts read. */
export interface Rewritten {
  readonly id: number
  readonly email: Buffer
  readonly emailBidx: Buffer
  readonly ssn: Buffer
  readonly ssnBidx: Buffer
  readonly oldEmail: Buffer
  readonly oldSsn: Buffer
}

/** Primary-key bounds `(lo, hi]` of one batch. */
export type FloorBatch = { readonly lo: number | null; readonly hi: number | null }

/**
 * Moves every row of the driver's table from the cipher's current key to the other one, with
 * `workers` concurrent workers (each its own connection) taking the planned batches in turn.
 * @returns the rows written (the caller checks it is every row)
 */
export async function runFloorJob(
  driver: FloorDriver,
  cipher: FloorCipher,
  options: { batchSize: number; workers: number; cas: boolean },
): Promise<number> {
  const batches = await driver.plan(options.batchSize)
  const written = await rewriteBatches(driver, cipher, batches, cipher.current, options)
  cipher.current = 1 - cipher.current
  return written
}

/**
 * The floor's work on planned `batches`: each batch's rows read, moved from key `from` to the
 * other one, and written by one UPDATE, by `workers` concurrent workers taking them in turn.
 * A process of a job shared by several (bench/ops-process.ts) is given its share of the batches.
 * @returns the rows written
 */
export async function rewriteBatches(
  driver: FloorDriver,
  cipher: FloorCipher,
  batches: readonly FloorBatch[],
  from: number,
  options: { workers: number; cas: boolean },
): Promise<number> {
  const to = 1 - from
  let next = 0
  let written = 0
  const worker = async () => {
    for (let b = next++; b < batches.length; b = next++) {
      const { lo, hi } = batches[b]!
      const rows = await driver.read(lo, hi)
      const out: Rewritten[] = rows.map((r) => {
        const email = cipher.open(r.email, from)
        const ssn = cipher.open(r.ssn, from)
        return {
          id: r.id,
          email: cipher.seal(email, to),
          emailBidx: cipher.emailIndex(email),
          ssn: cipher.seal(ssn, to),
          ssnBidx: cipher.ssnIndex(ssn),
          oldEmail: r.email,
          oldSsn: r.ssn,
        }
      })
      if (out.length === 0) continue
      // Not `written += await …`: that reads `written` before the await, and workers interleave.
      const n = await driver.write(out, options.cas)
      written += n
    }
  }
  await Promise.all(Array.from({ length: options.workers }, worker))
  return written
}

/** Walks the primary key `batchSize` rows at a time, as the job engine plans its batches. */
async function planBy(
  next: (lo: number | null, offset: number) => Promise<number | undefined>,
  batchSize: number,
): Promise<Array<{ lo: number | null; hi: number | null }>> {
  const out: Array<{ lo: number | null; hi: number | null }> = []
  let lo: number | null = null
  for (;;) {
    const hi = await next(lo, batchSize - 1)
    if (hi === undefined) {
      out.push({ lo, hi: null })
      return out
    }
    out.push({ lo, hi })
    lo = hi
  }
}

/** PostgreSQL: `UPDATE … FROM unnest($1::int[], $2::bytea[], …)`. */
export function postgresFloor(pool: pg.Pool, table: string): FloorDriver {
  const t = `"${table}"`
  return {
    plan: (batchSize) =>
      planBy(async (lo, offset) => {
        const r = await pool.query<{ id: number }>(
          `select id from ${t} where ($1::int is null or id > $1) order by id limit 1 offset $2`,
          [lo, offset],
        )
        return r.rows[0]?.id
      }, batchSize),
    async read(lo, hi) {
      const r = await pool.query<{ id: number; email: Buffer; ssn: Buffer }>(
        `select id, email, ssn from ${t} where ($1::int is null or id > $1) and ($2::int is null or id <= $2) order by id`,
        [lo, hi],
      )
      return r.rows
    },
    async write(rows, cas) {
      const columns = [
        rows.map((r) => r.id),
        rows.map((r) => r.email),
        rows.map((r) => r.emailBidx),
        rows.map((r) => r.ssn),
        rows.map((r) => r.ssnBidx),
      ]
      const r = cas
        ? await pool.query(
            `update ${t} as t set email = u.email, email_bidx = u.email_bidx, ssn = u.ssn, ssn_bidx = u.ssn_bidx
             from unnest($1::int[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[])
               as u(id, email, email_bidx, ssn, ssn_bidx, old_email, old_ssn)
             where t.id = u.id and t.email = u.old_email and t.ssn = u.old_ssn`,
            [...columns, rows.map((r) => r.oldEmail), rows.map((r) => r.oldSsn)],
          )
        : await pool.query(
            `update ${t} as t set email = u.email, email_bidx = u.email_bidx, ssn = u.ssn, ssn_bidx = u.ssn_bidx
             from unnest($1::int[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[])
               as u(id, email, email_bidx, ssn, ssn_bidx)
             where t.id = u.id`,
            columns,
          )
      return r.rowCount ?? 0
    },
  }
}

/** MariaDB/MySQL: `UPDATE … JOIN (SELECT ? AS id, … UNION ALL SELECT ?, …) AS u ON …`. */
export function mysqlFloor(pool: MysqlPool, table: string): FloorDriver {
  const t = `\`${table}\``
  return {
    plan: (batchSize) =>
      planBy(async (lo, offset) => {
        const [rows] = await pool.query(
          `select id from ${t} where (? is null or id > ?) order by id limit 1 offset ?`,
          [lo, lo, offset],
        )
        return (rows as Array<{ id: number }>)[0]?.id
      }, batchSize),
    async read(lo, hi) {
      const [rows] = await pool.query(
        `select id, email, ssn from ${t} where (? is null or id > ?) and (? is null or id <= ?) order by id`,
        [lo, lo, hi, hi],
      )
      return rows as Array<{ id: number; email: Buffer; ssn: Buffer }>
    },
    async write(rows, cas) {
      const width = cas ? 7 : 5
      const first = cas
        ? 'select ? as id, ? as email, ? as email_bidx, ? as ssn, ? as ssn_bidx, ? as old_email, ? as old_ssn'
        : 'select ? as id, ? as email, ? as email_bidx, ? as ssn, ? as ssn_bidx'
      const more = ` union all select ${Array.from({ length: width }, () => '?').join(', ')}`
      const params: unknown[] = []
      for (const r of rows) {
        params.push(r.id, r.email, r.emailBidx, r.ssn, r.ssnBidx)
        if (cas) params.push(r.oldEmail, r.oldSsn)
      }
      const [result] = await pool.query(
        `update ${t} as t join (${first}${more.repeat(rows.length - 1)}) as u on t.id = u.id
         set t.email = u.email, t.email_bidx = u.email_bidx, t.ssn = u.ssn, t.ssn_bidx = u.ssn_bidx
         ${cas ? 'where t.email = u.old_email and t.ssn = u.old_ssn' : ''}`,
        params,
      )
      // Rows matched, not "changed": a row rewritten to the same bytes still counts (it never is: new nonces).
      return (result as { affectedRows: number }).affectedRows
    },
  }
}
