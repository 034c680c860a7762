// A module hook (`node --import …`): the optional peer dependencies resolve as not installed, as
// in an application that installed neither (test/integration/optional-peers.test.ts); with
// KFE_TEST_PEERS=broken, as installed but failing to load (a dependency of their own missing).
import { register } from 'node:module'

const hook = `
const HIDDEN = new Set(['@aws-sdk/client-kms', 'graphene-pk11'])
const BROKEN = ${JSON.stringify(process.env.KFE_TEST_PEERS === 'broken')}
export async function resolve(specifier, context, next) {
  if (HIDDEN.has(specifier)) {
    const missing = BROKEN ? '@smithy/hidden-by-the-test' : specifier
    const error = new Error("Cannot find package '" + missing + "' (hidden by the test)")
    error.code = 'ERR_MODULE_NOT_FOUND'
    throw error
  }
  return next(specifier, context)
}
`
register(`data:text/javascript,${encodeURIComponent(hook)}`)
