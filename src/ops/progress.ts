/** One progress step of a long operation, as passed to `onProgress` (no plaintext, no key material). */
export interface Progress {
  /** The operation: `reencrypt`, `verify`, `status`, `retire`, `rotate`, `rewrap`, `init`. */
  readonly op: string
  /** Physical table, where one applies. */
  readonly table?: string
  /** What is happening now, e.g. `planning`, `batch`, `waiting for metadata TTL`. */
  readonly phase: string
  /** Units done so far (rows, batches or keys, see `unit`). */
  readonly done: number
  /** Units in all, when known. */
  readonly total: number | undefined
  readonly unit: 'rows' | 'batches' | 'keys' | 'ms'
}

/** What every long operation takes. */
export interface RunOptions {
  /** Stops the operation: a job finishes its batch and saves its checkpoint, then returns. */
  readonly signal?: AbortSignal
  /** Called at each step (after each batch of a job). Must not throw. */
  readonly onProgress?: (progress: Progress) => void
}

/** Calls `onProgress`, swallowing what it throws (a broken printer must not break a job). */
export function report(options: RunOptions, progress: Progress): void {
  try {
    options.onProgress?.(progress)
  } catch {
    // ignored on purpose
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (returns whether it was aborted). */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(true)
  return new Promise((resolve) => {
    const done = (aborted: boolean) => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      resolve(aborted)
    }
    const onAbort = () => done(true)
    const timer = setTimeout(() => done(false), ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
