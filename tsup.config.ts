import { defineConfig } from 'tsup'

export default defineConfig({
  entry: { index: 'src/index.ts', 'aws-kms': 'src/aws-kms.ts', pkcs11: 'src/pkcs11.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  // No source maps: they would point at src/, which the package does not ship.
  sourcemap: false,
  target: 'node20',
  external: ['kysely', '@aws-sdk/client-kms', 'graphene-pk11'],
})
