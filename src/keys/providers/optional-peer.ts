/**
 * Loading an optional peer dependency (`@aws-sdk/client-kms`, `graphene-pk11`) on a provider's
 * first use, so that importing the provider's subpath never fails and a missing package is a typed
 * error that says what to install.
 */
import { KeyProviderError } from '../../errors.js'

/**
 * The module `load` imports (its default export where a CommonJS module puts it there: `probe`,
 * an export it must have, is looked up on the module first).
 * @param name - The package, as a user installs it.
 * @param provider - Which provider needs it, for the message ("The AWS KMS provider").
 * @throws KeyProviderError `CONFIG_INVALID`: the package is not installed (install it), or it is
 *   but could not be loaded (a broken install, a missing dependency of its own: the cause says)
 */
export async function loadOptionalPeer<M extends object>(
  name: string,
  provider: string,
  probe: keyof M,
  load: () => Promise<unknown>,
): Promise<M> {
  let mod: M & { default?: M }
  try {
    mod = (await load()) as M & { default?: M }
  } catch (error) {
    throw new KeyProviderError(
      'CONFIG_INVALID',
      notInstalled(error, name)
        ? `${provider} needs the optional peer dependency ${name}: npm install ${name}.`
        : `${provider} could not load ${name}, which is installed (see the cause).`,
      { cause: error },
    )
  }
  return mod[probe] === undefined && mod.default !== undefined ? mod.default : mod
}

/** Whether `error` says `name` itself was not found (not a package it imports in turn). */
function notInstalled(error: unknown, name: string): boolean {
  const code = (error as { code?: unknown } | null)?.code
  if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') return false
  const message = error instanceof Error ? error.message : ''
  return message.includes(`'${name}'`)
}
