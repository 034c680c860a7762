import { defineConfig } from 'tsup'

const external = ['kysely', '@aws-sdk/client-kms', 'graphene-pk11', 'citty', 'c12', 'consola', 'cli-progress']

/** The package's entry points (package.json `exports`). */
const library = {
  index: 'src/index.ts',
  'aws-kms': 'src/aws-kms.ts',
  pkcs11: 'src/pkcs11.ts',
  ops: 'src/ops.ts',
}

const common = {
  // Shared chunks between entry points (tsup splits only ESM by default): one copy of the library
  // in each format, so an error thrown through `/ops`, `/pkcs11` or `/aws-kms` is `instanceof`
  // the main entry's classes.
  splitting: true,
  dts: { entry: library },
  // No source maps: they would point at src/, which the package does not ship.
  sourcemap: false,
  target: 'node20',
  external,
} as const

export default defineConfig([
  {
    ...common,
    // The `kfe` bin's code (`dist/cli.js`, started by bin/kfe.js) is built with the ESM library,
    // sharing its chunks: a config imports `kysely-field-encryption`, and the errors of its key
    // providers must be the CLI's own classes (a copy of the library in the bin printed a key
    // provider's CONFIG_INVALID as DATABASE_ERROR, and its job engine did not know the outage).
    entry: { ...library, cli: 'src/cli/bin.ts' },
    format: ['esm'],
    clean: true,
  },
  { ...common, entry: library, format: ['cjs'], clean: false },
])
