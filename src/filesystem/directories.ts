import { EMPTY, Filesystem } from './filesystem'
import { FsError } from './fs-error'

const DT_DIR = 4
const DOT = Buffer.from('.')
const DOTDOT = Buffer.from('..')

interface OpenDir {
  node: number
  /** The plaintext listing in the binding's encoding (see FuseSessionAddon.replyDir). */
  listing: Buffer | null
}

/**
 * Open directories: a listing is read and decrypted whole when the directory is first read
 * (and again on rewinddir), then served in pages by byte offset.
 */
export class Directories {
  readonly #open = new Map<number, OpenDir>()
  #next = 1

  constructor (private readonly fs: Filesystem) {}

  opendir (node: number): number {
    this.fs.dir(node)
    const fh = this.#next++
    this.#open.set(fh, { node, listing: null })
    return fh
  }

  async readdir (fh: number, offset: number): Promise<Buffer> {
    const d = this.#open.get(fh)
    if (d === undefined) throw new FsError('EBADF')
    if (offset === 0 || d.listing === null) d.listing = await this.#list(d.node)
    return d.listing
  }

  async #list (node: number): Promise<Buffer> {
    const dir = this.fs.dir(node)
    const entries = await this.fs.names.list(dir)
    const parts: Buffer[] = [encode(1n, DT_DIR, DOT), encode(1n, DT_DIR, DOTDOT)]
    for (const e of entries) parts.push(encode(e.ino === 0n ? 1n : e.ino, e.type, e.name))
    return Buffer.concat(parts)
  }

  releasedir (fh: number): void {
    this.#open.delete(fh)
  }

  /**
   * fsync(2) on a directory fsyncs its backing directory, so the entries created, renamed or
   * removed in it are durable. EINVAL: a backing store that cannot sync a directory.
   */
  async fsyncdir (fh: number): Promise<void> {
    const d = this.#open.get(fh)
    if (d === undefined) throw new FsError('EBADF')
    await this.fs.backing.fsyncAt(this.fs.dir(d.node).fd, EMPTY).catch((err: FsError) => { if (err.code !== 'EINVAL') throw err })
  }

  get count (): number {
    return this.#open.size
  }
}

/** One entry: 8-byte LE inode number, d_type, name length, name (as the backing addon lists). */
function encode (ino: bigint, type: number, name: Buffer): Buffer {
  const b = Buffer.allocUnsafe(10 + name.length)
  b.writeBigUInt64LE(ino, 0)
  b[8] = type
  b[9] = name.length
  name.copy(b, 10)
  return b
}
