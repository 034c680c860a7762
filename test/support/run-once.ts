import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { inject } from 'vitest'

const asked = new Map<string, Promise<string>>()

/**
 * A directory made once per `npm test` run and shared by every test file that asks for it (files run in
 * several worker processes): the first file to ask makes it, the others wait until it is
 * there. It lives in the run's directory (`runDir`, from global-setup.ts), which the teardown
 * removes; nothing is made in a run whose files do not ask (`npm run test:unit` needs no CLI build).
 *
 * The maker holds a lock directory (`mkdir` is atomic) and renames its finished work into place,
 * so a waiter never sees half of it; if making fails, the waiters fail with the maker's error.
 *
 * @param name - The directory's name in the run's directory.
 * @param make - Fills the (empty) directory it is given.
 * @returns The directory's path.
 */
export function oncePerRun(name: string, make: (dir: string) => Promise<void>): Promise<string> {
  let dir = asked.get(name)
  if (dir === undefined) {
    dir = madeOrAwaited(join(inject('runDir'), name), make)
    asked.set(name, dir)
  }
  return dir
}

async function madeOrAwaited(dir: string, make: (dir: string) => Promise<void>): Promise<string> {
  const failed = `${dir}.failed`
  if (tryLock(`${dir}.lock`)) {
    const work = `${dir}.tmp`
    try {
      mkdirSync(work, { recursive: true })
      await make(work)
      renameSync(work, dir)
      return dir
    } catch (error) {
      writeFileSync(failed, (error as Error).stack ?? String(error))
      rmSync(work, { recursive: true, force: true })
      throw error
    }
  }
  // Another file makes it (a build or an initdb: seconds, more on a loaded machine); the caller's
  // hook timeout bounds the wait should that file's process die on the way.
  for (;;) {
    if (existsSync(dir)) return dir
    if (existsSync(failed)) throw new Error(`${dir} was not made: ${readFileSync(failed, 'utf8')}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function tryLock(path: string): boolean {
  try {
    mkdirSync(path, { recursive: false })
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw error
  }
}
