import { afterAll, beforeAll } from 'vitest'

/**
 * A fixture made before the suite's tests (`make`) and destroyed after them (`destroy`), read
 * through the returned proxy: inside tests and hooks only (it throws before the suite started).
 */
export function useSuiteFixture<T extends object>(
  name: string,
  make: () => Promise<T>,
  destroy: (fixture: T) => Promise<void>,
): T {
  let current: T | undefined
  beforeAll(async () => {
    current = await make()
  })
  afterAll(async () => {
    if (current !== undefined) await destroy(current)
  })
  return new Proxy({} as T, {
    get(_, prop) {
      if (current === undefined) throw new Error(`${name}: ${String(prop)} read before the suite started`)
      return Reflect.get(current, prop)
    },
  })
}
