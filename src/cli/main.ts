import { defineCommand } from 'citty'
// Bundled into the built bin by tsup (esbuild), read as a JSON module under tsx: either way no path
// is resolved at run time (the bin may run from a copy of dist/ away from the package).
import pkg from '../../package.json' with { type: 'json' }
import { encryptColumnCommand } from './commands/encrypt-column.js'
import { initCommand } from './commands/init.js'
import { migrationCommand } from './commands/migration.js'
import { reencryptCommand } from './commands/reencrypt.js'
import { retireCommand } from './commands/retire.js'
import { rewrapCommand } from './commands/rewrap.js'
import { rotateCommand } from './commands/rotate.js'
import { shredCommand } from './commands/shred.js'
import { statusCommand } from './commands/status.js'
import { verifyCommand } from './commands/verify.js'

/** The `kfe` command and its subcommands. Exit codes: 0 ok, 1 failed, 2 needs attention. */
export const main = defineCommand({
  meta: {
    name: 'kfe',
    version: pkg.version,
    description: 'Key and data operations of kysely-field-encryption',
  },
  subCommands: {
    init: initCommand,
    status: statusCommand,
    rotate: rotateCommand,
    reencrypt: reencryptCommand,
    verify: verifyCommand,
    retire: retireCommand,
    rewrap: rewrapCommand,
    'encrypt-column': encryptColumnCommand,
    migration: migrationCommand,
    shred: shredCommand,
  },
})
