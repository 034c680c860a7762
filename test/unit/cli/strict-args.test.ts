import { describe, expect, it } from 'vitest'
import { main } from '../../../src/cli/main.js'
import { missingArgumentsError, unknownCommandError } from '../../../src/cli/strict-args.js'

const missing = (...argv: string[]) => missingArgumentsError(argv, main)

describe('kfe: required arguments left out', () => {
  it('a missing positional or required option is OPS_INVALID naming it (citty printed its usage text)', () => {
    for (const [argv, named] of [
      [['verify', '--json'], '<table>'],
      [['rewrap', '--from', 'x', '--json'], '--to'],
      [['migration', 't', 'c', '--json'], '--phase'],
      [['shred', 't', '--json'], '--tenant'],
      [['encrypt-column', 't'], '<column>'],
      // A string option given last has no value.
      [['rewrap', '--to', 'y', '--from'], '--from'],
    ] as const) {
      const error = missing(...argv)
      expect(error).toMatchObject({ code: 'OPS_INVALID' })
      expect(error?.message).toContain(named)
      expect(error?.message).toContain('nothing was run')
    }
  })

  it('nothing is missing: every spelling of a given option, --help, no command, an optional positional', () => {
    for (const argv of [
      ['verify', 't'],
      ['rewrap', '--from=x', '--to', 'y'],
      ['migration', 't', 'c', '--phase', 'add'],
      ['shred', 't', '--tenant', 'acme', '--yes'],
      ['verify', '--help'],
      ['shred', '-h'],
      ['init'],
      ['status', '--json'],
      ['--json'],
      [],
    ]) {
      expect(missing(...argv)).toBeUndefined()
    }
  })
})

describe('kfe: a command it does not know', () => {
  it('is OPS_INVALID naming it, with or without --json; no command is an error with --json only (kfe alone prints the usage)', () => {
    const unknown = (...argv: string[]) => unknownCommandError(argv, main)
    for (const argv of [['frobnicate'], ['frobnicate', '--json'], ['--json']]) {
      expect(unknown(...argv), argv.join(' ')).toMatchObject({ code: 'OPS_INVALID' })
    }
    expect(unknown('frobnicate')?.message).toContain('Unknown command frobnicate')
    for (const argv of [[], ['--help'], ['status'], ['status', '--json']])
      expect(unknown(...argv)).toBeUndefined()
  })
})
