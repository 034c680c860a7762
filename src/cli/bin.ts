import { runMain } from 'citty'
import { main } from './main.js'

// `kfe`: the package.json `bin`. Commands set process.exitCode (0 ok, 1 failed, 2 needs attention).
void runMain(main)
