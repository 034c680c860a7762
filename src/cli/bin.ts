import { runMain } from 'citty'
import { main } from './main.js'
import { createOutput, EXIT } from './output.js'
import {
  missingArgumentsError,
  unknownCommandError,
  unknownOptions,
  unknownOptionsError,
} from './strict-args.js'

// `kfe`: the package.json `bin`. Commands set process.exitCode (0 ok, 1 failed, 2 needs attention).
const argv = process.argv.slice(2)
const unknown = unknownOptions(argv, main)
const command = argv.find((a) => !a.startsWith('-')) ?? ''
const refused =
  unknownCommandError(argv, main) ??
  (unknown !== undefined && unknown.length > 0 ? unknownOptionsError(unknown, command) : undefined) ??
  missingArgumentsError(argv, main)
if (refused !== undefined) {
  createOutput(argv.includes('--json')).error(refused)
  process.exitCode = EXIT.failed
} else {
  void runMain(main).then(() => {
    // The result is written and the exit code set. What the config opened and the command could
    // not close would keep the process alive without end: a PGlite instance whose start-up was
    // still running when the command failed before its first query (Kysely closes a dialect's
    // driver only once it was used). Leave at the latest five seconds from now, once what is
    // written to stdout and stderr has gone out (a pipe is written asynchronously).
    const leave = (): void => {
      if (process.stdout.writableLength + process.stderr.writableLength > 0) setTimeout(leave, 100).unref()
      else process.exit()
    }
    setTimeout(leave, 5000).unref()
  })
}
