/**
 * Loading the PKCS#11 library through graphene-pk11 (an optional peer dependency), once per
 * library path per process, and finalising it when its last user releases it.
 */
import type * as Graphene from 'graphene-pk11'
import { KeyProviderError } from '../../errors.js'
import { loadOptionalPeer } from './optional-peer.js'
import { CKF_OS_LOCKING_OK, ckrName } from './pkcs11-errors.js'

/** The graphene-pk11 module, loaded on first use. */
export type GrapheneModule = typeof Graphene

function loadGraphene(): Promise<GrapheneModule> {
  return loadOptionalPeer<GrapheneModule>(
    'graphene-pk11',
    'The PKCS#11 provider',
    'Module',
    () => import('graphene-pk11'),
  )
}

/** A loaded, initialised PKCS#11 library and how many providers use it. */
export interface SharedModule {
  readonly g: GrapheneModule
  readonly module: Graphene.Module
  refs: number
  /**
   * Per slot (its handle in hex), the SHA-256 of the PIN this library last logged the token in
   * with: login state is the process's, so a later login is answered "already logged in" without
   * its PIN being checked; this is what it is compared with (see pkcs11-token.ts `login`).
   */
  readonly logins: Map<string, Buffer>
}

/**
 * One loaded, initialised module per library path per process: `C_Initialize`/`C_Finalize` are
 * process-wide (PKCS#11 v2.40 §5.4), so two providers on one library share it and the last
 * `release` finalises it.
 */
const sharedModules = new Map<string, Promise<SharedModule>>()

/**
 * Loads and initialises the PKCS#11 library at `path` (or takes another reference to it).
 * @internal Exported for test/support/softhsm.ts; not part of the public API.
 * @throws KeyProviderError `CONFIG_INVALID` when the library cannot be loaded.
 */
export async function acquirePkcs11Module(path: string): Promise<SharedModule> {
  let pending = sharedModules.get(path)
  if (pending === undefined) {
    pending = (async () => {
      const g = await loadGraphene()
      let module: Graphene.Module
      try {
        module = g.Module.load(path, 'kysely-field-encryption')
      } catch (error) {
        throw new KeyProviderError('CONFIG_INVALID', `Cannot load the PKCS#11 library ${path}.`, {
          cause: error,
        })
      }
      try {
        // OS locking: the HSM calls run on libuv worker threads (pkcs11js *Async), several at once.
        module.initialize({ flags: CKF_OS_LOCKING_OK })
      } catch (error) {
        throw new KeyProviderError(
          'PROVIDER_UNAVAILABLE',
          `C_Initialize failed for ${path}: ${ckrName(error)}.`,
          {
            cause: error,
          },
        )
      }
      return { g, module, refs: 0, logins: new Map<string, Buffer>() }
    })()
    sharedModules.set(path, pending)
    pending.catch(() => sharedModules.delete(path))
  }
  const shared = await pending
  shared.refs += 1
  return shared
}

/**
 * Drops one reference taken by {@link acquirePkcs11Module}; the last one finalises the library.
 * @internal
 */
export function releasePkcs11Module(path: string, shared: SharedModule): void {
  shared.refs -= 1
  if (shared.refs > 0) return
  sharedModules.delete(path)
  try {
    shared.module.finalize()
  } catch {
    // Already finalised (or the device is gone): nothing left to release.
  }
}
