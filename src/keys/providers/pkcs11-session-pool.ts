/**
 * A small, bounded pool of PKCS#11 sessions (or anything that must be used by one caller at a
 * time). It knows nothing about PKCS#11 itself: the provider passes `open` and `close`.
 *
 * Why a pool: a PKCS#11 session runs one cryptographic operation at a time (PKCS#11 v2.40 §5.6:
 * a session has at most one active operation of each kind, and `C_EncryptInit` … `C_Encrypt` is a
 * two-call sequence that must not interleave). The pool hands each session to one operation at a
 * time and queues the rest, first come, first served.
 */

/** Options of {@link SessionPool}. */
export interface SessionPoolOptions<S> {
  /** Maximum number of sessions open at once. Must be a positive integer. */
  readonly size: number
  /** Opens (and logs in) one session. May throw; the pool then frees the place for the next caller. */
  readonly open: () => S | Promise<S>
  /** Closes one session. Must not throw (errors are swallowed). */
  readonly close: (session: S) => void
}

interface Entry<S> {
  readonly session: S
  readonly generation: number
}

/**
 * Bounded pool with a FIFO wait queue and "generations": {@link SessionPool.invalidate} drops every
 * idle session at once and marks the ones in use so that they are closed when released, because a
 * lost login or a `C_CloseAllSessions` kills every session of the slot, not only the one that saw it.
 */
export class SessionPool<S> {
  readonly #options: SessionPoolOptions<S>
  readonly #idle: Entry<S>[] = []
  readonly #waiters: Array<(entry: Entry<S> | null) => void> = []
  #open = 0
  #generation = 0
  #closed = false

  constructor(options: SessionPoolOptions<S>) {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new RangeError(`Session pool size must be a positive integer, got ${String(options.size)}.`)
    }
    this.#options = options
  }

  /** Number of sessions currently open (idle or in use). */
  get openCount(): number {
    return this.#open
  }

  /** Number of callers waiting for a session. */
  get waiting(): number {
    return this.#waiters.length
  }

  /**
   * Runs `fn` with a session of its own. If `fn` throws an error for which `broken(error)` is true,
   * the session is closed instead of being returned to the pool.
   * @throws whatever `open` or `fn` throws; an `Error` if the pool is closed.
   */
  async use<T>(fn: (session: S) => Promise<T>, broken: (error: unknown) => boolean): Promise<T> {
    const entry = await this.#acquire()
    let release = true
    try {
      return await fn(entry.session)
    } catch (error) {
      if (broken(error)) release = false
      throw error
    } finally {
      if (release) this.#release(entry)
      else this.#destroy(entry)
    }
  }

  /** Closes every idle session; sessions in use are closed when they come back. */
  invalidate(): void {
    this.#generation += 1
    for (const entry of this.#idle.splice(0)) this.#destroy(entry)
  }

  /** Closes every idle session, and every busy one when it comes back; wakes waiters with an error. */
  close(): void {
    this.#closed = true
    this.invalidate()
    for (const wake of this.#waiters.splice(0)) wake(null)
  }

  async #acquire(): Promise<Entry<S>> {
    if (this.#closed) throw new Error('session pool is closed')
    const idle = this.#idle.pop()
    if (idle !== undefined) return idle
    if (this.#open < this.#options.size) return this.#openEntry()
    const entry = await new Promise<Entry<S> | null>((resolve) => this.#waiters.push(resolve))
    if (entry === null) throw new Error('session pool is closed')
    // A waiter woken with a placeholder (see #free) opens its own session.
    return entry.generation < 0 ? this.#openEntry(true) : entry
  }

  /** Opens a session; `reserved` when #free already counted this place for the caller. */
  async #openEntry(reserved = false): Promise<Entry<S>> {
    if (!reserved) this.#open += 1
    const generation = this.#generation
    try {
      return { session: await this.#options.open(), generation }
    } catch (error) {
      this.#free()
      throw error
    }
  }

  #release(entry: Entry<S>): void {
    if (this.#closed || entry.generation !== this.#generation) {
      this.#destroy(entry)
      return
    }
    const wake = this.#waiters.shift()
    if (wake !== undefined) wake(entry)
    else this.#idle.push(entry)
  }

  #destroy(entry: Entry<S>): void {
    try {
      this.#options.close(entry.session)
    } catch {
      // Closing a session that is already gone (the reason it is being destroyed) may fail.
    }
    this.#free()
  }

  /** A place was freed: let the next waiter open a new session in it. */
  #free(): void {
    const wake = this.#closed ? undefined : this.#waiters.shift()
    if (wake === undefined) {
      this.#open -= 1
      return
    }
    // Hand the place to that waiter (the count stays), so a later caller cannot take it first.
    wake({ session: undefined as unknown as S, generation: -1 })
  }
}
