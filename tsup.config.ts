import { defineConfig } from 'tsup'

export default defineConfig({
  entry: { index: 'src/index.ts', 'aws-kms': 'src/aws-kms.ts', pkcs11: 'src/pkcs11.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  external: ['kysely', '@aws-sdk/client-kms', 'graphene-pk11'],
})
