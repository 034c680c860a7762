import { defineConfig } from 'tsup'

const external = ['kysely', '@aws-sdk/client-kms', 'graphene-pk11', 'citty', 'c12', 'consola', 'cli-progress']

export default defineConfig([
  {
    entry: { index: 'src/index.ts', 'aws-kms': 'src/aws-kms.ts', pkcs11: 'src/pkcs11.ts', ops: 'src/ops.ts' },
    format: ['esm', 'cjs'],
    // Shared chunks in the CommonJS build too (tsup splits ESM only by default): otherwise each
    // entry point carried its own copy of the library, and an error thrown through one
    // (`/ops`, `/pkcs11`) was not `instanceof` the classes of another.
    splitting: true,
    dts: true,
    clean: true,
    // No source maps: they would point at src/, which the package does not ship.
    sourcemap: false,
    target: 'node20',
    external,
  },
  {
    // The `kfe` bin: ESM only (citty and c12 are ESM-only packages).
    entry: { cli: 'src/cli/bin.ts' },
    format: ['esm'],
    dts: false,
    clean: false,
    sourcemap: false,
    target: 'node20',
    external,
    banner: { js: '#!/usr/bin/env node' },
  },
])
