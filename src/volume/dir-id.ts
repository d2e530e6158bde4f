import fs from 'fs'
import path from 'path'
import { DIR_ID_BYTES } from '../crypto/name-cipher'
import { randomBytes } from '../crypto/secret-key'
import { VolumeError } from './errors'

/** Every cipher directory holds its random directory ID, the context of its entries' names. */
export const DIR_ID_FILE = 'sealfs.diriv'

export function newDirId (): Buffer {
  return randomBytes(DIR_ID_BYTES)
}

export function writeDirIdSync (cipherDir: string, id: Buffer): void {
  const file = path.join(cipherDir, DIR_ID_FILE)
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o400)
  try {
    fs.writeSync(fd, id)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * The root directory's ID must be there: without it no name in the volume can be read, and
 * a mount would show an empty volume. Read without following a symlink or blocking on a FIFO.
 */
export function checkRootDirId (cipherDir: string): void {
  const file = path.join(cipherDir, DIR_ID_FILE)
  let ok = false
  try {
    // Looked at before it is opened: a planted device's driver never runs for us, and a tty never becomes our terminal.
    if (!fs.lstatSync(file).isFile()) throw new Error('not a regular file')
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY)
    try {
      const buf = Buffer.alloc(DIR_ID_BYTES + 1)
      ok = fs.fstatSync(fd).isFile() && fs.readSync(fd, buf, 0, buf.length, 0) === DIR_ID_BYTES
    } finally {
      fs.closeSync(fd)
    }
  } catch { /* missing or unreadable: said below */ }
  if (!ok) throw new VolumeError('damaged-config', `${file} is missing or damaged: it holds the root directory's ID, without which no name in the volume can be read; restore it from a backup of the cipher dir`)
}

export async function readDirId (cipherDir: string): Promise<Buffer> {
  const fh = await fs.promises.open(path.join(cipherDir, DIR_ID_FILE), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
  try {
    const buf = Buffer.alloc(DIR_ID_BYTES + 1)
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0)
    if (bytesRead !== DIR_ID_BYTES) throw Object.assign(new Error('directory ID file is damaged'), { code: 'EIO' })
    return buf.subarray(0, DIR_ID_BYTES)
  } finally {
    await fh.close()
  }
}
