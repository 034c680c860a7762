/**
 * A snake_case name as Kysely's CamelCasePlugin spells it (`email_address` → `emailAddress`): the
 * plugin accepts that spelling of an annotated or context column in a query, so CamelCasePlugin
 * works before or after it.
 */
export function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}
