import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { confirmShred } from '../../../src/cli/commands/shred.js'

/** A terminal (or not) to answer the question on, and where the question goes. */
function terminal(isTTY: boolean): { input: PassThrough & { isTTY: boolean }; output: PassThrough } {
  return { input: Object.assign(new PassThrough(), { isTTY }), output: new PassThrough() }
}

const asked = { table: 'orders', tenant: 'globex', versions: 3 }

describe('kfe shred: the confirmation', () => {
  it('the tenant typed again confirms it', async () => {
    const io = terminal(true)
    const confirmed = confirmShred({ ...asked, json: false, ...io })
    io.input.write('globex\n')
    await expect(confirmed).resolves.toBeUndefined()
  })

  it('no terminal, --json, another answer, Ctrl-C, the signal: OPS_INVALID, nothing destroyed', async () => {
    const refusals: Promise<void>[] = []
    refusals.push(confirmShred({ ...asked, json: false, ...terminal(false) }))
    refusals.push(confirmShred({ ...asked, json: true, ...terminal(true) }))
    const wrong = terminal(true)
    refusals.push(confirmShred({ ...asked, json: false, ...wrong }))
    wrong.input.write('acme\n')
    const closed = terminal(true)
    refusals.push(confirmShred({ ...asked, json: false, ...closed }))
    closed.input.end() // the input closed
    // Ctrl-C on a terminal: readline reads it in raw mode (the process gets no SIGINT).
    const input = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => input })
    const output = Object.assign(new PassThrough(), { isTTY: true, columns: 80 })
    refusals.push(confirmShred({ ...asked, json: false, input, output }))
    input.write('\x03')
    const stop = new AbortController()
    refusals.push(confirmShred({ ...asked, json: false, ...terminal(true), signal: stop.signal }))
    stop.abort()
    for (const refusal of refusals) {
      await expect(refusal).rejects.toMatchObject({
        code: 'OPS_INVALID',
        message: expect.stringContaining('nothing was destroyed'),
      })
    }
  })
})
