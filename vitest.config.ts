import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

// Most integration files wait on a database, not on the CPU: at least 3 files at once, even on a
// 2-core machine (vitest's default there is 1; the whole suite took 717 s with 1 and 444 s with 3).
const WORKERS = Math.max(3, availableParallelism() - 1)

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
    // A worker process runs file after file with the modules it has loaded (kysely, pg, mysql2,
    // PGlite, src/): each file still gets its own test state and setup files, but not its own
    // module graph. Loading that graph again for each of 150 files was ~270 s of the suite's CPU
    // (vitest's "collect"); the whole suite took 674-724 s isolated, 350-414 s not. Test files
    // therefore keep no state in modules they share: each makes its own tables, rings and pools.
    isolate: false,
    maxWorkers: WORKERS,
    // As many as at most: with fewer, tinypool stops a worker that goes idle while the others
    // still run, and without isolation that stop raced the end of the run ("Terminating worker
    // thread", an unhandled rejection: it failed 9 of 9 runs of test/unit and 1 of 2 of the whole
    // suite, each leaving a worker process behind; with as many as at most, 0 of 5).
    minWorkers: WORKERS,
    // The second counts the tests a missing backend skipped, for the summary printed last.
    reporters: ['default', './test/support/not-run-reporter.ts'],
  },
})
