/** Child processes of the tests as the operating system sees them (`kfe` runs, their workers). */
import { type ChildProcess, execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

/** Resolves at the first batch a `kfe` job child reports (its progress: JSON lines on stderr). */
export function firstBatch(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    let buffered = ''
    child.stderr?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      for (const line of lines) if (line.includes('"phase":"batch"')) resolve()
    })
  })
}

/** The child processes of `pid` (Linux, macOS: `pgrep -P`). */
export function childrenOf(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number)
  } catch {
    return [] // pgrep exits 1 when there is none
  }
}

/** Whether process `pid` runs (a zombie, ended but not reaped by its new parent, does not). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true // no /proc (macOS): it answered the signal
  }
}
