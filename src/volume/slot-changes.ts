import fs from 'fs'
import path from 'path'
import { CONFIG_FILE, MAX_SLOTS, MAX_UNWRAP_CMD, KeySlot, PassphraseSlot, VolumeConfig, checkConfig, checkUnlockCost, isValidSlotName, readConfig, removeStaleTemps, slotName, writeConfig } from './config'
import { costProblem } from '../crypto/passphrase-kdf'
import { SecretKey } from '../crypto/secret-key'
import { VolumeError } from './errors'
import { Credential, SlotIdentity, createCommandSlot, createKeyfileSlot, createPassphraseSlot, unlockSlot } from './key-slot'
import { ConfigLock } from './volume-lock'
import { checkDir } from './volume'

/** A way into the volume for a key command: a credential, and optionally the one slot to try. */
export interface Unlock { credential: Credential, slot?: string }

/** What a new slot holds: a passphrase (or generated recovery key), or a key file's bytes. */
export type NewSlot =
  | { kind: 'passphrase', name: string, passphrase: Buffer, cost: { opslimit: number, memlimit: number }, recovery?: boolean }
  | { kind: 'keyfile', name: string, keyfile: Buffer }
  | { kind: 'command', name: string, wrapCmd: string, unwrapCmd: string }

/**
 * Reads the config, unlocks it with `unlock` and replaces it with what `change` makes of it,
 * under the key-slot lock. sealfs.conf is replaced whole and atomically (temp file, fsync,
 * rename, fsync of the directory): a crash or kill -9 at any point leaves the old config or
 * the new one, never a mix.
 */
async function changeConfig (dir: string, unlock: Unlock, change: (config: VolumeConfig, masterKey: SecretKey, opened: KeySlot) => Promise<VolumeConfig>): Promise<void> {
  checkDir(dir)
  const lock = ConfigLock.acquire(dir)
  try {
    removeStaleTemps(dir)
    const config = readConfig(dir)
    const { masterKey, slot } = await unlockSlot(config, unlock.credential, unlock.slot)
    try {
      writeConfig(dir, await change(config, masterKey, slot))
    } finally {
      masterKey.dispose()
    }
  } finally {
    lock.release()
  }
}

function checkCost (cost: { opslimit: number, memlimit: number }): void {
  const costWrong = costProblem(cost)
  if (costWrong !== null) throw new VolumeError('weak-kdf', costWrong)
}

/** The next slot id: one above the highest, or the lowest free one if that would be too high. */
function nextId (config: VolumeConfig): number {
  const top = Math.max(...config.slots.map(s => s.id))
  if (top < 0x7fffffff) return top + 1
  let id = 1
  while (config.slots.some(s => s.id === id)) id++
  return id
}

function slotNamed (config: VolumeConfig, name: string): KeySlot {
  const slot = config.slots.find(s => slotName(s) === name)
  if (slot === undefined) throw new VolumeError('no-such-slot', `the volume has no key slot named '${name}'`)
  return slot
}

/** Adds a slot; its name must be new. */
export async function addSlot (dir: string, unlock: Unlock, add: NewSlot): Promise<void> {
  if (!isValidSlotName(add.name)) throw new VolumeError('bad-input', `'${add.name}' cannot name a key slot: use letters, digits, '.', '_' or '-', starting with a letter or digit (at most 64)`)
  if (add.kind === 'passphrase') checkCost(add.cost)
  if (add.kind === 'command' && (add.unwrapCmd.length === 0 || add.unwrapCmd.length > MAX_UNWRAP_CMD || !/^[\x20-\x7e]*$/.test(add.unwrapCmd))) {
    throw new VolumeError('bad-input', `the unwrap command must be printable ASCII, at most ${MAX_UNWRAP_CMD} characters`)
  }
  await changeConfig(dir, unlock, async (config, masterKey) => {
    if (config.slots.some(s => slotName(s) === add.name)) throw new VolumeError('exists', `the volume already has a key slot named '${add.name}'`)
    if (config.slots.length >= MAX_SLOTS) throw new VolumeError('bad-input', `the volume has ${MAX_SLOTS} key slots, the most it can have`)
    // Before the new slot's KDF runs: what unlocking with every passphrase slot would then cost.
    if (add.kind === 'passphrase') checkUnlockCost([...config.slots, { kind: 'passphrase', ...add.cost } as KeySlot], path.join(dir, CONFIG_FILE))
    const who: SlotIdentity = { id: nextId(config), name: add.name, created: new Date().toISOString() }
    const slot = add.kind === 'keyfile'
      ? createKeyfileSlot(config, who, masterKey, add.keyfile)
      : add.kind === 'command'
        ? await createCommandSlot(config, who, masterKey, add.wrapCmd, add.unwrapCmd)
        : await createPassphraseSlot(config, who, masterKey, add.passphrase, add.cost, add.recovery === true)
    const next = { ...config, slots: [...config.slots, slot] }
    checkConfig(next, path.join(dir, CONFIG_FILE))
    return next
  })
}

/** Removes the slot named `name`; never the last one. */
export async function removeSlot (dir: string, unlock: Unlock, name: string): Promise<void> {
  await changeConfig(dir, unlock, async config => {
    const slot = slotNamed(config, name)
    if (config.slots.length === 1) throw new VolumeError('last-slot', `'${name}' is the volume's only key slot; add another before removing it`)
    return { ...config, slots: config.slots.filter(s => s !== slot) }
  })
}

/**
 * Gives a passphrase slot a new passphrase: the slot named `name`, or else the one that
 * `unlock` opened. Its id, name and creation time stay; its salt and wrap are new.
 */
export async function changePassphrase (dir: string, unlock: Unlock, passphrase: Buffer, name?: string, cost: { opslimit?: number, memlimit?: number } = {}): Promise<string> {
  let changed = ''
  await changeConfig(dir, unlock, async (config, masterKey, opened) => {
    const slot = name !== undefined ? slotNamed(config, name) : opened
    changed = slotName(slot)
    if (slot.kind !== 'passphrase') throw new VolumeError('bad-input', `key slot '${changed}' is a ${slot.kind} slot, not a passphrase slot`)
    if (slot.recovery === true) throw new VolumeError('bad-input', `key slot '${changed}' holds a recovery key: remove it and add a new one (--recovery)`)
    const was = slot as PassphraseSlot
    const newCost = { opslimit: cost.opslimit ?? was.opslimit, memlimit: cost.memlimit ?? was.memlimit }  // what is not given stays
    checkCost(newCost)
    checkUnlockCost([...config.slots.filter(s => s !== slot), { kind: 'passphrase', ...newCost } as KeySlot], path.join(dir, CONFIG_FILE))
    const fresh = await createPassphraseSlot(config, { id: was.id, name: changed, created: was.created ?? new Date().toISOString() }, masterKey, passphrase, newCost)
    const next = { ...config, slots: config.slots.map(s => s === slot ? fresh : s) }
    checkConfig(next, path.join(dir, CONFIG_FILE))
    return next
  })
  return changed
}
