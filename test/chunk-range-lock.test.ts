import { describe, expect, it } from 'vitest'
import { ChunkRangeLock, WHOLE_FILE } from '../src/filesystem/chunk-range-lock'

/** A job that records when it ran and finishes when told. */
function job (log: string[], name: string): { fn: () => Promise<void>, finish: () => void } {
  let finish = (): void => undefined
  const done = new Promise<void>(resolve => { finish = resolve })
  return { fn: async () => { log.push(`${name} start`); await done; log.push(`${name} end`) }, finish }
}

const tick = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

describe('the chunk-range lock of a file', () => {
  it('lets writes to different chunks run at once, and serializes writes to the same chunk', async () => {
    const lock = new ChunkRangeLock()
    const log: string[] = []
    const a = job(log, 'a'); const b = job(log, 'b'); const c = job(log, 'c')
    const pa = lock.run(0, 1, true, a.fn)
    const pb = lock.run(5, 5, true, b.fn)
    const pc = lock.run(1, 2, true, c.fn)  // overlaps a
    await tick()
    expect(log).toEqual(['a start', 'b start'])
    a.finish(); await pa; await tick()
    expect(log).toEqual(['a start', 'b start', 'a end', 'c start'])
    b.finish(); c.finish(); await Promise.all([pb, pc])
  })

  it('lets reads of a chunk share it, keeps a write out until they end, and later reads behind that write', async () => {
    const lock = new ChunkRangeLock()
    const log: string[] = []
    const r1 = job(log, 'r1'); const r2 = job(log, 'r2'); const w = job(log, 'w'); const r3 = job(log, 'r3')
    const p1 = lock.run(3, 3, false, r1.fn)
    const p2 = lock.run(3, 4, false, r2.fn)
    const pw = lock.run(4, 4, true, w.fn)
    const p3 = lock.run(4, 4, false, r3.fn)  // after the waiting writer: not ahead of it
    await tick()
    expect(log).toEqual(['r1 start', 'r2 start'])
    r1.finish(); r2.finish(); await Promise.all([p1, p2]); await tick()
    expect(log.slice(-1)).toEqual(['w start'])
    w.finish(); await pw; await tick()
    expect(log.slice(-1)).toEqual(['r3 start'])
    r3.finish(); await p3
  })

  it('gives the whole file to what changes the size, after and before everything else', async () => {
    const lock = new ChunkRangeLock()
    const log: string[] = []
    const w = job(log, 'w'); const t = job(log, 't'); const r = job(log, 'r')
    const pw = lock.run(100, 100, true, w.fn)
    const pt = lock.run(WHOLE_FILE.first, WHOLE_FILE.last, true, t.fn)
    const pr = lock.run(0, 0, false, r.fn)
    await tick()
    expect(log).toEqual(['w start'])
    w.finish(); await pw; await tick()
    expect(log.slice(-1)).toEqual(['t start'])
    t.finish(); await pt; await tick()
    expect(log.slice(-1)).toEqual(['r start'])
    r.finish(); await pr
  })
})
