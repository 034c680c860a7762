/**
 * The likely causes of an `UNWRAP_FAILED`, for its message: a wrapped key that the configured KEK
 * does not open. Names only configuration (the KEK id), never key material.
 *
 * @param kekId - the id of the KEK that failed to unwrap
 */
export function unwrapFailedCauses(kekId: string): string {
  return `Likely causes: another KEK is configured under the id ${kekId} (a different key behind the same id), or the key table was restored from another environment whose keys were wrapped by its own KEK. Configure the KEK that wrapped these keys, or restore the matching key table.`
}

/** Same, for a wrapping labelled with a KEK id no configured provider has. */
export function unknownKekCauses(kekId: string): string {
  return `Likely causes: the provider of ${kekId} is missing from keyProvider, or the key table was restored from another environment. Add that KEK's provider (any order), or restore the matching key table.`
}
