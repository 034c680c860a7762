import { ConfigError } from '../errors.js'
import { type RewrapAllResult, rewrapAll } from '../keys/rewrap.js'
import type { OpsContext } from './context.js'
import type { RunOptions } from './progress.js'

/** Options of `rewrap`. */
export interface RewrapOptions extends RunOptions {
  /** The KEK id whose wrappings are replaced (it must be configured, to unwrap). */
  readonly from: string
  /** The KEK id every key gets a wrapping under (it must be configured). */
  readonly to: string
  /** Keep the wrappings under `from` (add a KEK instead of rotating one). @default false */
  readonly keep?: boolean
  /** Count the keys lacking a wrapping under `to`; change nothing. @default false */
  readonly dryRun?: boolean
}

/** Outcome of `rewrap`. */
export interface RewrapResult extends RewrapAllResult {
  readonly from: string
  readonly to: string
  readonly dryRun: boolean
}

/**
 * KEK rotation: gives every stored key a wrapping under `to` (proven to unwrap to the same key
 * before the old one is dropped), then removes the wrappings under `from` unless `keep`. No row is
 * touched. Through {@link rewrapAll}. Keep the old KEK usable for the application's metadata TTL
 * afterwards: running processes may still unwrap with the wrappings they cached.
 * @throws ConfigError `CONFIG_INVALID` when `from` or `to` is not a configured KEK, or they are equal
 */
export async function rewrap(ctx: OpsContext, options: RewrapOptions): Promise<RewrapResult> {
  const find = (id: string) => {
    const p = ctx.providers.find((k) => k.id === id)
    if (p === undefined)
      throw new ConfigError(
        'CONFIG_INVALID',
        `KEK ${id} is not configured (configured: ${ctx.providers.map((k) => k.id).join(', ')}).`,
      )
    return p
  }
  if (options.from === options.to)
    throw new ConfigError('CONFIG_INVALID', '--from and --to name the same KEK.')
  const from = find(options.from)
  const to = find(options.to)
  if (options.dryRun === true) {
    const keys = await ctx.store.listAll()
    return {
      from: from.id,
      to: to.id,
      dryRun: true,
      keys: keys.length,
      // As the real run: a destroyed (shredded) key gets no wrapping.
      rewrapped: keys.filter((k) => k.state !== 'destroyed' && !k.wrappings.some((w) => w.kekId === to.id))
        .length,
    }
  }
  const result = await rewrapAll({
    store: ctx.store,
    from: [from, ...ctx.providers.filter((p) => p !== from && p !== to)],
    to,
    removeKekIds: options.keep === true ? [] : [from.id],
    ...(ctx.audit === undefined ? {} : { audit: ctx.audit }),
  })
  ctx.ring.refresh()
  return { ...result, from: from.id, to: to.id, dryRun: false }
}
