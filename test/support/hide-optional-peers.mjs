// A module hook (`node --import …`): the optional peer dependencies resolve as not installed, as
// in an application that installed neither (test/integration/optional-peers.test.ts).
import { register } from 'node:module'

const hook = `
const HIDDEN = new Set(['@aws-sdk/client-kms', 'graphene-pk11'])
export async function resolve(specifier, context, next) {
  if (HIDDEN.has(specifier)) {
    const error = new Error("Cannot find package '" + specifier + "' (hidden by the test)")
    error.code = 'ERR_MODULE_NOT_FOUND'
    throw error
  }
  return next(specifier, context)
}
`
register(`data:text/javascript,${encodeURIComponent(hook)}`)
