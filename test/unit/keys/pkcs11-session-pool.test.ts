import { describe, expect, it } from 'vitest'
import { SessionPool } from '../../../src/keys/providers/pkcs11-session-pool.js'

const tick = () => new Promise<void>((resolve) => setImmediate(resolve))

function counting(size: number) {
  let next = 0
  const closed: number[] = []
  const pool = new SessionPool<number>({
    size,
    open: () => {
      next += 1
      return next
    },
    close: (s) => {
      closed.push(s)
    },
  })
  return { pool, closed, opened: () => next }
}

describe('SessionPool', () => {
  it('never runs more than `size` operations at once, and serves every caller', async () => {
    const { pool, opened } = counting(2)
    let active = 0
    let peak = 0
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        pool.use(
          async (s) => {
            active += 1
            peak = Math.max(peak, active)
            await tick()
            active -= 1
            return [i, s] as const
          },
          () => false,
        ),
      ),
    )
    expect(results.map(([i]) => i)).toEqual(Array.from({ length: 50 }, (_, i) => i))
    expect(peak).toBe(2)
    expect(opened()).toBe(2)
    expect(new Set(results.map(([, s]) => s))).toEqual(new Set([1, 2]))
  })

  it('closes a session whose operation failed as broken, and opens a new one for the next caller', async () => {
    const { pool, closed, opened } = counting(1)
    await expect(
      pool.use(
        async () => {
          throw new Error('gone')
        },
        () => true,
      ),
    ).rejects.toThrow('gone')
    expect(closed).toEqual([1])
    expect(
      await pool.use(
        async (s) => s,
        () => false,
      ),
    ).toBe(2)
    expect(opened()).toBe(2)
    expect(pool.openCount).toBe(1)
  })

  it('keeps a session after an ordinary failure', async () => {
    const { pool, closed } = counting(1)
    await expect(
      pool.use(
        async () => {
          throw new Error('wrong key ref')
        },
        () => false,
      ),
    ).rejects.toThrow()
    expect(closed).toEqual([])
    expect(
      await pool.use(
        async (s) => s,
        () => false,
      ),
    ).toBe(1)
  })

  it('invalidate() closes idle sessions at once and busy ones when they come back', async () => {
    const { pool, closed } = counting(2)
    await Promise.all([
      pool.use(
        async () => tick(),
        () => false,
      ),
      pool.use(
        async () => tick(),
        () => false,
      ),
    ])
    let release: () => void = () => {}
    const busy = pool.use(
      (s) => new Promise<number>((resolve) => (release = () => resolve(s))),
      () => false,
    )
    await tick()
    pool.invalidate()
    expect(closed).toHaveLength(1)
    release()
    await busy
    expect(closed).toHaveLength(2)
    expect(
      await pool.use(
        async (s) => s,
        () => false,
      ),
    ).toBe(3)
  })

  it('hands a freed place to the first waiter when opening a session fails', async () => {
    let attempts = 0
    const pool = new SessionPool<number>({
      size: 1,
      open: () => {
        attempts += 1
        if (attempts === 1) throw new Error('token busy')
        return attempts
      },
      close: () => {},
    })
    const first = pool.use(
      async (s) => s,
      () => false,
    )
    const second = pool.use(
      async (s) => s,
      () => false,
    )
    await expect(first).rejects.toThrow('token busy')
    expect(await second).toBe(2)
    expect(pool.openCount).toBe(1)
  })

  it('rejects callers after close(), including the ones waiting', async () => {
    const { pool } = counting(1)
    let release: () => void = () => {}
    const busy = pool.use(
      () => new Promise<void>((resolve) => (release = resolve)),
      () => false,
    )
    const waiting = pool.use(
      async () => 1,
      () => false,
    )
    await tick()
    expect(pool.waiting).toBe(1)
    pool.close()
    await expect(waiting).rejects.toThrow('closed')
    release()
    await busy
    expect(pool.openCount).toBe(0)
    await expect(
      pool.use(
        async () => 1,
        () => false,
      ),
    ).rejects.toThrow('closed')
    expect(() => new SessionPool({ size: 0, open: () => 1, close: () => {} })).toThrow(RangeError)
  })
})
