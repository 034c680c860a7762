/**
 * The side of a worker process that `kfe reencrypt --processes N` (src/cli/processes.ts) starts:
 * how it knows it is one, and how it follows its parent.
 */

/** The environment variable a parent sets to its pid in the environment of the workers it starts. */
export const WORKER_OF = 'KFE_WORKER_OF'

/**
 * Whether this process is a worker that a `kfe … --processes` parent started: the variable names
 * this process's own parent, and the IPC channel to it is open. A variable inherited from further
 * up (a worker's own child) does not count.
 */
export function isWorkerProcess(): boolean {
  return process.env[WORKER_OF] === String(process.ppid) && process.connected === true
}

/**
 * In a worker process: `stop` is aborted when the parent goes away, however it ended (its IPC
 * channel closes), and the worker then stops as on SIGTERM: it finishes its batch, saves the
 * checkpoint and marks the job stopped (`kfe status` reports it interrupted at once). Its output
 * went to the parent only: writing to the closed pipes (EPIPE) is not an error that ends it
 * halfway. Returns how to stop following. Elsewhere it does nothing.
 */
export function followParent(stop: AbortController): () => void {
  if (!isWorkerProcess()) return () => undefined
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
