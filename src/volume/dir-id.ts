import fs from 'fs'
import path from 'path'
import { DIR_ID_BYTES } from '../crypto/name-cipher'
import { randomBytes } from '../crypto/secret-key'

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
