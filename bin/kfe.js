#!/usr/bin/env node
// The `kfe` bin (package.json `bin`). The CLI itself is dist/cli.js, built beside the library and
// sharing its chunks (tsup.config.ts); the bin is this file so that no built module of the
// library carries a shebang line.
import '../dist/cli.js'
