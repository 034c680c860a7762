/** A clock that moves only when told (starts far from 0: lru-cache reads a start of 0 as "no TTL"). */
export function manualClock(start = 1_000_000) {
  let t = start
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms
    },
  }
}
