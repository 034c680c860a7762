/**
 * The side of a worker process that `kfe reencrypt --processes N` (src/cli/processes.ts) starts:
 * how it knows it is one, and how it follows its parent.
 */

/** The environment variable a parent sets to its pid in the environment of the workers it starts. */
export const WORKER_OF = 'KFE_WORKER_OF'

// Read once, at start, and removed: the processes the config or a provider starts do not inherit
// it. Only with an IPC channel (`process.send` stays defined after it closes): a variable copied
// into another process's environment does not make it a worker.
const parent = typeof process.send === 'function' ? process.env[WORKER_OF] : undefined
delete process.env[WORKER_OF]

/**
 * Whether this process was started as a worker of a `kfe … --processes` parent (decided once, at
 * start, whatever happens to the parent later): it joins the job its parent planned and plans
 * none (`joinOnly`).
 */
export function isWorkerProcess(): boolean {
  return parent !== undefined
}

/**
 * In a worker process: whether its parent was gone, or had closed the channel to stop it, before
 * the worker began (its start takes a few hundred milliseconds): it then does nothing.
 */
export function parentGone(): boolean {
  return parent !== undefined && (parent !== String(process.ppid) || process.connected !== true)
}

/**
 * In a worker process: `stop` is aborted when its parent closes the IPC channel, to stop it or
 * because it ended however it did (`kill -9` included), and the worker then stops as on SIGTERM: it
 * finishes its batch, saves the checkpoint and marks the job stopped (`kfe status` reports it
 * interrupted at once). Its output went to the parent only: writing to the closed pipes (EPIPE) is
 * not an error that ends it halfway. Returns how to stop following. Elsewhere it does nothing.
 */
export function followParent(stop: AbortController): () => void {
  if (parent === undefined) return () => undefined
  const onDisconnect = () => stop.abort()
  const ignore = () => undefined
  process.on('disconnect', onDisconnect)
  process.stdout.on('error', ignore)
  process.stderr.on('error', ignore)
  // The channel alone does not keep the worker alive once its command is done.
  process.channel?.unref()
  return () => {
    process.off('disconnect', onDisconnect)
  }
}
