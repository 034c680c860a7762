import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  // examples/ import the package by name, as a user does (tsconfig maps it the same way).
  resolve: {
    alias: [
      {
        find: /^kysely-field-encryption$/,
        replacement: fileURLToPath(new URL('./src/index.ts', import.meta.url)),
      },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // Reused analyses of repeated query shapes are checked against the full analysis in every test.
    setupFiles: ['test/support/verify-shape-cache.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration files share one PostgreSQL and one MariaDB; each file uses its own tables.
    fileParallelism: true,
    pool: 'forks',
    // Most integration files wait on a database, not on the CPU: at least 3 files at once, even on
    // a 2-core machine (vitest's default there is 1; the whole suite took 717 s with 1 and 444 s with 3).
    maxWorkers: Math.max(3, availableParallelism() - 1),
    minWorkers: 1,
    // The second counts the tests a missing backend skipped, for the summary printed last.
    reporters: ['default', './test/support/not-run-reporter.ts'],
  },
})
