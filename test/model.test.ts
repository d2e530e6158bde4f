import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { cleanup, makeVolume, mount, umount, Vol } from './helpers'
import { CHUNK, modelSeeds, modelSteps, modelTimeoutMs, runModel } from './model'

describe('model-based random operations against a plain directory', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume({ chunkSize: CHUNK }); mount(v) })
  afterAll(async () => { await cleanup(v) })

  const steps = modelSteps
  for (const seed of modelSeeds) {
    it(`seed ${seed}: ${steps} steps`, async () => {
      const plainSide = path.join(v.base, `plain-${seed}`)
      const mntSide = path.join(v.mnt, `seed-${seed}`)
      fs.mkdirSync(plainSide)
      fs.mkdirSync(mntSide)
      try {
        await runModel(mntSide, plainSide, seed, steps, async () => { await umount(v); mount(v) })
      } catch (e) {
        console.error(`model test failed: SEALFS_MODEL_SEED=${seed} SEALFS_MODEL_STEPS=${steps}`)
        throw e
      }
    }, modelTimeoutMs)
  }
})
