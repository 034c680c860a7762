/**
 * Errors thrown while a query runs carry the frames of the code that ran it, as Kysely's own
 * drivers do (`extendStackTrace` in kysely's postgres and mysql drivers).
 *
 * Why it is needed: V8 keeps `Error.stackTraceLimit` (10) frames, counted from where the error
 * was made. A refusal made deep in the query analysis, or a decryption error made inside the
 * wrapper, fills those ten frames with this library's own calls, so the application's line that
 * ran the query is cut off. An `Error` made in a shallow frame of the query's own call chain (the
 * plugin's `transformQuery`, the wrapped connection's `executeQuery`) holds, through V8's async
 * stack traces, the awaiting callers up to the application's `await db…execute()`: its frames
 * are appended to the error's stack.
 *
 * Only frames are appended (the first line, `Error`, is dropped): no message, no value.
 */

/** A frame of Node's own code, e.g. `at process.processTicksAndRejections (node:internal/…)`. */
const RUNTIME_FRAME = /\(node:internal\/|^\s*at node:internal\//

/** Errors already extended: an error that crosses two extension points is extended once. */
const extended = new WeakSet<object>()

/**
 * Appends the frames of `here` to `error.stack` and returns `error`. Call it with a `new Error()`
 * made in the catch block of the function whose callers should appear.
 *
 * @param error - what was thrown; left as it is when it has no string `stack`
 * @param here - an `Error` made where the caller's frames are on the stack
 * @returns `error` itself, to be re-thrown
 */
export function withCallerStack<E>(error: E, here: Error): E {
  if (typeof error !== 'object' || error === null || extended.has(error)) return error
  const holder = error as { stack?: unknown }
  if (typeof holder.stack !== 'string' || typeof here.stack !== 'string') return error
  const frames = here.stack.split('\n').slice(1)
  // Node's own frames below the caller (the microtask loop that resumed it) say nothing about
  // the caller: without them the stack ends at the application's line.
  while (frames.length > 0 && RUNTIME_FRAME.test(frames[frames.length - 1] as string)) frames.pop()
  const last = frames[frames.length - 1]
  // A stack that already ends at the same caller (a driver that extends its errors, as kysely's
  // pg and mysql2 drivers do) is left as it is, Node's frames after it or not (they follow it
  // only on some runs).
  if (last === undefined || endsAt(holder.stack, last)) return error
  try {
    holder.stack = `${holder.stack}\n${frames.join('\n')}`
    extended.add(error)
  } catch {
    // A frozen error keeps its stack.
  }
  return error
}

/** Whether `stack`'s last frame that is not Node's own is `frame`. */
function endsAt(stack: string, frame: string): boolean {
  const lines = stack.split('\n')
  let i = lines.length - 1
  while (i > 0 && RUNTIME_FRAME.test(lines[i] as string)) i--
  return lines[i] === frame
}
