import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { dialectSql, expectCiphertextOf, expectIndexOf, expectRedacted, ids } from './plugin-at-rest.js'

describe.each(backends())('plugin insert [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend)
    const u = t.names.users

    const rawRow = (where: Record<string, unknown>) =>
      t.raw
        .selectFrom(u)
        .selectAll()
        .where((eb) => eb.and(where))
        .executeTakeFirstOrThrow()

    it('one row: plaintext back, ciphertext and blind indexes at rest, nothing in compile()', async () => {
      const row = {
        name: 'ins-one',
        email: 'One@Example.io',
        ssn: '123-45-6789',
        dob: new Date('1990-01-02T00:00:00.000Z'),
        notes: { allergies: ['peanuts'], level: 3 },
        score: 7.5,
      }
      const query = t.db.insertInto(u).values(row)
      const compiled = query.compile()
      expect(compiled.sql).toBe(
        dialectSql(
          backend,
          `insert into "${u}" ("name", "email", "ssn", "dob", "notes", "score", "email_bidx", "ssn_bidx", "score_bidx") values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        ),
      )
      expectRedacted(compiled, ['One@Example.io', '123-45-6789', 'peanuts'])
      expect(compiled.parameters.map(String)).toEqual([
        'ins-one',
        `[kfe:encrypt ${u}.email]`,
        `[kfe:encrypt ${u}.ssn]`,
        `[kfe:encrypt ${u}.dob]`,
        `[kfe:encrypt ${u}.notes]`,
        `[kfe:encrypt ${u}.score]`,
        `[kfe:index ${u}.email_bidx]`,
        `[kfe:index ${u}.ssn_bidx]`,
        `[kfe:index ${u}.score_bidx]`,
      ])
      await query.execute()

      const back = await t.db
        .selectFrom(u)
        .selectAll()
        .where('name', '=', 'ins-one')
        .executeTakeFirstOrThrow()
      expect(back).toMatchObject(row)

      const stored = await rawRow({ name: 'ins-one' })
      await expectCiphertextOf(t, u, 'email', stored.email, 'One@Example.io')
      await expectCiphertextOf(t, u, 'ssn', stored.ssn, '123-45-6789')
      await expectCiphertextOf(t, u, 'dob', stored.dob, row.dob)
      await expectCiphertextOf(t, u, 'notes', stored.notes, row.notes)
      await expectCiphertextOf(t, u, 'score', stored.score, 7.5)
      await expectIndexOf(t, u, 'email', stored.email_bidx, 'one@example.io')
      await expectIndexOf(t, u, 'ssn', stored.ssn_bidx, '123456789')
      await expectIndexOf(t, u, 'score', stored.score_bidx, 7.5)
      // 16-bit search index: 2 bytes; unique index: the full 32-byte HMAC.
      expect((stored.ssn_bidx as Uint8Array).length).toBe(2)
      expect((stored.email_bidx as Uint8Array).length).toBe(32)
    })

    it('many rows in one statement: each row gets its own ciphertext and index', async () => {
      const rows = [1, 2, 3].map((i) => ({
        name: `ins-many-${i}`,
        email: `many${i}@x.io`,
        ssn: `900-00-000${i}`,
      }))
      const compiled = t.db.insertInto(u).values(rows).compile()
      expectRedacted(compiled, ['many1@x.io', 'many2@x.io', 'many3@x.io', '900-00-0001'])
      await t.db.insertInto(u).values(rows).execute()

      for (const r of rows) {
        const found = await t.db
          .selectFrom(u)
          .select(['name', 'email', 'ssn'])
          .where('email', '=', r.email)
          .execute()
        expect(found).toEqual([r])
        const stored = await rawRow({ name: r.name })
        await expectCiphertextOf(t, u, 'email', stored.email, r.email)
        await expectIndexOf(t, u, 'email', stored.email_bidx, r.email)
      }
      // Same plaintext never gives the same ciphertext (random per-record salt and nonce).
      await t.db
        .insertInto(u)
        .values([
          { name: 'ins-same-a', ssn: '555-55-5555' },
          { name: 'ins-same-b', ssn: '555-55-5555' },
        ])
        .execute()
      const a = await rawRow({ name: 'ins-same-a' })
      const b = await rawRow({ name: 'ins-same-b' })
      expect(Buffer.from(a.ssn).equals(Buffer.from(b.ssn))).toBe(false)
      expect(Buffer.from(a.ssn_bidx).equals(Buffer.from(b.ssn_bidx))).toBe(true)
    })

    it('rows with missing columns: NULL ciphertext and NULL index, no index for an absent value', async () => {
      await t.db
        .insertInto(u)
        .values([
          { name: 'ins-miss-a', email: 'miss-a@x.io' },
          { name: 'ins-miss-b', ssn: '321-00-0000' },
          { name: 'ins-miss-c', email: null, ssn: null },
        ])
        .execute()
      await t.db.insertInto(u).values({ name: 'ins-miss-d' }).execute()

      const back = await t.db
        .selectFrom(u)
        .select(['name', 'email', 'ssn', 'dob', 'notes', 'score'])
        .where('name', 'in', ['ins-miss-a', 'ins-miss-b', 'ins-miss-c', 'ins-miss-d'])
        .orderBy('name')
        .execute()
      expect(back).toEqual([
        { name: 'ins-miss-a', email: 'miss-a@x.io', ssn: null, dob: null, notes: null, score: null },
        { name: 'ins-miss-b', email: null, ssn: '321-00-0000', dob: null, notes: null, score: null },
        { name: 'ins-miss-c', email: null, ssn: null, dob: null, notes: null, score: null },
        { name: 'ins-miss-d', email: null, ssn: null, dob: null, notes: null, score: null },
      ])

      const a = await rawRow({ name: 'ins-miss-a' })
      await expectIndexOf(t, u, 'email', a.email_bidx, 'miss-a@x.io')
      expect(a.ssn).toBeNull()
      expect(a.ssn_bidx).toBeNull()
      const b = await rawRow({ name: 'ins-miss-b' })
      expect(b.email).toBeNull()
      expect(b.email_bidx).toBeNull()
      await expectIndexOf(t, u, 'ssn', b.ssn_bidx, '321000000')
      for (const name of ['ins-miss-c', 'ins-miss-d']) {
        const r = await rawRow({ name })
        expect([r.email, r.email_bidx, r.ssn, r.ssn_bidx, r.score, r.score_bidx]).toEqual([
          null,
          null,
          null,
          null,
          null,
          null,
        ])
      }
    })

    it('a value longer than its maxBytes (320) is refused before anything is sent, on every engine', async () => {
      // 'é' is 2 bytes: 161 of them are 322 bytes in 161 characters (MySQL would refuse the
      // ciphertext in strict mode and cut it short in non-strict mode).
      const long = `${'é'.repeat(161)}@x.io`
      const insert = t.db.insertInto(u).values({ name: 'too-long', email: long }).execute()
      await expect(insert).rejects.toMatchObject({ name: 'CodecError', code: 'CODEC_INVALID_VALUE' })
      await expect(insert).rejects.not.toThrow(/é/)
      expect(await t.raw.selectFrom(u).select('id').where('name', '=', 'too-long').execute()).toEqual([])
      const update = t.db.updateTable(u).set({ email: long }).where('name', '=', 'ins-one').execute()
      await expect(update).rejects.toMatchObject({ code: 'CODEC_INVALID_VALUE' })
      // 320 bytes exactly is within it.
      const fits = `${'a'.repeat(315)}@x.io`
      await t.db.insertInto(u).values({ name: 'just-fits', email: fits }).execute()
      expect(await t.db.selectFrom(u).select('email').where('email', '=', fits).execute()).toEqual([
        { email: fits },
      ])
    })

    it('the unique blind index enforces uniqueness of normalized values', async () => {
      await t.db.insertInto(u).values({ name: 'ins-uniq-1', email: 'uniq@x.io' }).execute()
      await expect(
        t.db.insertInto(u).values({ name: 'ins-uniq-2', email: ' UNIQ@x.io' }).execute(),
      ).rejects.toThrow()
      const found = await t.db.selectFrom(u).select('name').where('email', '=', 'uniq@x.io').execute()
      expect(found).toEqual([{ name: 'ins-uniq-1' }])
    })

    describe.runIf(backend.family === 'postgres')('PostgreSQL only', () => {
      it('returning: decrypted values come back', async () => {
        const query = t.db
          .insertInto(u)
          .values({ name: 'ins-ret', email: 'ret@x.io', ssn: '111-22-3333' })
          .returning(['id', 'email', 'ssn'])
        expect(query.compile().sql).toMatch(/ returning "id", "email", "ssn"$/)
        const back = await query.executeTakeFirstOrThrow()
        expect(back).toMatchObject({ email: 'ret@x.io', ssn: '111-22-3333' })
        const all = await t.db
          .insertInto(u)
          .values([
            { name: 'ins-ret-all-1', email: 'ret-all-1@x.io' },
            { name: 'ins-ret-all-2', score: 12 },
          ])
          .returningAll()
          .execute()
        expect(all).toMatchObject([
          { name: 'ins-ret-all-1', email: 'ret-all-1@x.io', ssn: null, score: null },
          { name: 'ins-ret-all-2', email: null, score: 12 },
        ])
      })

      it('onConflict doUpdateSet with a literal: ciphertext and index follow the new value', async () => {
        await t.db.insertInto(u).values({ id: 10_001, name: 'ins-oc', email: 'oc-old@x.io' }).execute()
        const query = t.db
          .insertInto(u)
          .values({ id: 10_001, name: 'ins-oc', email: 'oc-other@x.io' })
          .onConflict((oc) => oc.column('id').doUpdateSet({ email: 'oc-new@x.io' }))
        expectRedacted(query.compile(), ['oc-other@x.io', 'oc-new@x.io'])
        await query.execute()

        expect(
          await t.db.selectFrom(u).select(['id', 'email']).where('email', '=', 'oc-new@x.io').execute(),
        ).toEqual([{ id: 10_001, email: 'oc-new@x.io' }])
        expect(await t.db.selectFrom(u).select('id').where('email', '=', 'oc-old@x.io').execute()).toEqual([])
        expect(await t.db.selectFrom(u).select('id').where('email', '=', 'oc-other@x.io').execute()).toEqual(
          [],
        )
        const stored = await rawRow({ id: 10_001 })
        await expectCiphertextOf(t, u, 'email', stored.email, 'oc-new@x.io')
        await expectIndexOf(t, u, 'email', stored.email_bidx, 'oc-new@x.io')
      })

      it('onConflict doUpdateSet from excluded: the index column follows excluded too', async () => {
        await t.db
          .insertInto(u)
          .values({ id: 10_002, name: 'ins-ex', email: 'ex-old@x.io', ssn: '1' })
          .execute()
        await t.db
          .insertInto(u)
          .values({ id: 10_002, name: 'ins-ex', email: 'ex-new@x.io', ssn: '2' })
          .onConflict((oc) =>
            oc
              .column('id')
              .doUpdateSet((eb) => ({ email: eb.ref('excluded.email'), ssn: eb.ref('excluded.ssn') })),
          )
          .execute()

        expect(
          await t.db
            .selectFrom(u)
            .select(['id', 'email', 'ssn'])
            .where('email', '=', 'ex-new@x.io')
            .execute(),
        ).toEqual([{ id: 10_002, email: 'ex-new@x.io', ssn: '2' }])
        expect(ids(await t.db.selectFrom(u).select('id').where('ssn', '=', '2').execute())).toContain(10_002)
        expect(await t.db.selectFrom(u).select('id').where('email', '=', 'ex-old@x.io').execute()).toEqual([])
        const stored = await rawRow({ id: 10_002 })
        await expectIndexOf(t, u, 'email', stored.email_bidx, 'ex-new@x.io')
        await expectIndexOf(t, u, 'ssn', stored.ssn_bidx, '2')
      })
    })

    describe.runIf(backend.family === 'mysql')('MySQL only', () => {
      it('onDuplicateKeyUpdate with a literal: ciphertext and index follow the new value', async () => {
        await t.db.insertInto(u).values({ id: 10_001, name: 'ins-dup', email: 'dup-old@x.io' }).execute()
        const query = t.db
          .insertInto(u)
          .values({ id: 10_001, name: 'ins-dup', email: 'dup-other@x.io' })
          .onDuplicateKeyUpdate({ email: 'dup-new@x.io' })
        expectRedacted(query.compile(), ['dup-other@x.io', 'dup-new@x.io'])
        expect(query.compile().sql).toContain('on duplicate key update `email` = ?, `email_bidx` = ?')
        await query.execute()

        expect(
          await t.db.selectFrom(u).select(['id', 'email']).where('email', '=', 'dup-new@x.io').execute(),
        ).toEqual([{ id: 10_001, email: 'dup-new@x.io' }])
        expect(await t.db.selectFrom(u).select('id').where('email', '=', 'dup-old@x.io').execute()).toEqual(
          [],
        )
        const stored = await rawRow({ id: 10_001 })
        await expectCiphertextOf(t, u, 'email', stored.email, 'dup-new@x.io')
        await expectIndexOf(t, u, 'email', stored.email_bidx, 'dup-new@x.io')
      })
    })
  })
})
