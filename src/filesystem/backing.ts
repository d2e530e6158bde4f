import fs from 'fs'
import { backing as addon, DIRENT_HEADER, O_PATH } from './backing-addon'
import { writeFullAt } from './fd-io'
import { FsError } from './fs-error'

const EMPTY = Buffer.alloc(0)

/** One entry of a backing directory: its name's bytes, d_ino and d_type. */
export interface Dirent { name: Buffer, ino: bigint, type: number }

type Result = number | Buffer
type Callback = (r: number, b?: Buffer) => void
type Call = (...args: unknown[]) => Result

export { isLocalFilesystem } from '../volume/local-disk'

/**
 * The cipher dir's backing store, reached only through descriptors (native-deps/backing).
 * Each call runs on the JS thread when the backing is local (a local lstat costs less than
 * a hand-off to the pool) and on the libuv pool when it is a network filesystem, where one
 * slow call must not stall every other request. fsync and the writes that sync always go
 * to the pool: the JS thread never waits on a disk flush.
 * Failures throw FsError with the call's errno.
 */
export class Backing {
  /**
   * `blockSize`: the unit the backing store allocates in, at most (a write that ends in the
   * block the file already ends in needs no new space; see FileContents).
   */
  constructor (readonly inline: boolean, readonly blockSize = 512) {}

  #run (name: string, args: unknown[], inline = this.inline): Promise<Result> {
    const fn = (addon as unknown as Record<string, Call>)[name]
    if (inline) {
      const r = fn(...args)
      return typeof r === 'number' && r < 0 ? Promise.reject(FsError.fromErrno(r)) : Promise.resolve(r)
    }
    return new Promise((resolve, reject) => {
      const cb: Callback = (r, b) => r < 0 ? reject(FsError.fromErrno(r)) : resolve(b ?? r)
      fn(...args, cb)
    })
  }

  async #n (name: string, args: unknown[], inline = this.inline): Promise<number> {
    return await this.#run(name, args, inline) as number
  }

  async #b (name: string, args: unknown[]): Promise<Buffer> {
    return await this.#run(name, args) as Buffer
  }

  statAt (dirfd: number, name: Buffer, out: Float64Array): Promise<number> { return this.#n('statAt', [dirfd, name, out]) }
  lookupAt (dirfd: number, name: Buffer, out: Float64Array): Promise<number> { return this.#n('lookupAt', [dirfd, name, out]) }
  openAt (dirfd: number, name: Buffer, flags: number, mode: number, type: number): Promise<number> { return this.#n('openAt', [dirfd, name, flags, mode, type]) }
  reopen (pathfd: number, flags: number, type: number): Promise<number> { return this.#n('reopen', [pathfd, flags, type]) }
  /** An O_PATH descriptor of the file an I/O descriptor refers to (by /proc/self/fd: no name is looked up). */
  async pathFdOf (fd: number, out: Float64Array): Promise<number> {
    const pathFd = await this.#n('openPath', [Buffer.from(`/proc/self/fd/${fd}`), O_PATH])
    await this.statAt(pathFd, EMPTY, out).catch(async (e: unknown) => { await this.closeFd(pathFd).catch(() => undefined); throw e })
    return pathFd
  }

  /** Writes all of `buf` at `pos` of an open file (a header: the bulk goes through the chunk cipher). */
  async writeAt (fd: number, buf: Buffer, pos: number): Promise<void> {
    if (!this.inline) return await writeFullAt(fd, buf, pos)
    for (let off = 0; off < buf.length;) {
      const n = fs.writeSync(fd, buf, off, buf.length - off, pos + off)
      if (n <= 0) throw new FsError('EIO')
      off += n
    }
  }

  mkdirAt (dirfd: number, name: Buffer, mode: number): Promise<number> { return this.#n('mkdirAt', [dirfd, name, mode]) }
  unlinkAt (dirfd: number, name: Buffer, flags: number): Promise<number> { return this.#n('unlinkAt', [dirfd, name, flags]) }
  renameAt (olddirfd: number, oldname: Buffer, newdirfd: number, newname: Buffer, flags: number): Promise<number> {
    return this.#n('renameAt', [olddirfd, oldname, newdirfd, newname, flags])
  }

  symlinkAt (target: Buffer, dirfd: number, name: Buffer): Promise<number> { return this.#n('symlinkAt', [target, dirfd, name]) }
  mknodAt (dirfd: number, name: Buffer, mode: number, dev: number): Promise<number> { return this.#n('mknodAt', [dirfd, name, mode, dev]) }
  linkFd (pathfd: number, newdirfd: number, newname: Buffer): Promise<number> { return this.#n('linkFd', [pathfd, newdirfd, newname]) }
  readlinkAt (dirfd: number, name: Buffer, out: Buffer): Promise<number> { return this.#n('readlinkAt', [dirfd, name, out]) }
  chmodFd (pathfd: number, mode: number): Promise<number> { return this.#n('chmodFd', [pathfd, mode]) }
  accessFd (pathfd: number, mode: number): Promise<number> { return this.#n('accessFd', [pathfd, mode]) }
  chownFd (pathfd: number, uid: number, gid: number): Promise<number> { return this.#n('chownFd', [pathfd, uid, gid]) }
  utimensFd (pathfd: number, as: number, an: number, ms: number, mn: number): Promise<number> { return this.#n('utimensFd', [pathfd, as, an, ms, mn]) }
  getxattrFd (pathfd: number, name: Buffer, out: Buffer): Promise<number> { return this.#n('getxattrFd', [pathfd, name, out]) }
  setxattrFd (pathfd: number, name: Buffer, value: Buffer, flags: number): Promise<number> { return this.#n('setxattrFd', [pathfd, name, value, flags]) }
  listxattrFd (pathfd: number, out: Buffer): Promise<number> { return this.#n('listxattrFd', [pathfd, out]) }
  removexattrFd (pathfd: number, name: Buffer): Promise<number> { return this.#n('removexattrFd', [pathfd, name]) }
  readdirFd (dirfd: number): Promise<Buffer> { return this.#b('readdirFd', [dirfd]) }

  /** The entries of a directory ('.' and '..' left out), readdirFd's encoding taken apart. */
  async listDir (dirfd: number): Promise<Dirent[]> {
    const raw = await this.readdirFd(dirfd)
    const out: Dirent[] = []
    for (let at = 0; at + DIRENT_HEADER <= raw.length;) {
      const len = raw[at + DIRENT_HEADER - 1]
      out.push({ ino: raw.readBigUInt64LE(at), type: raw[at + 8], name: raw.subarray(at + DIRENT_HEADER, at + DIRENT_HEADER + len) })
      at += DIRENT_HEADER + len
    }
    return out
  }
  readSmallFileAt (dirfd: number, name: Buffer, max: number): Promise<Buffer> { return this.#b('readSmallFileAt', [dirfd, name, max]) }
  /** Creates `name` (O_EXCL) holding `data`; with `sync`, fsynced, on the pool. */
  writeFileAt (dirfd: number, name: Buffer, data: Buffer, mode: number, sync: boolean): Promise<number> {
    return this.#n('writeFileAt', [dirfd, name, data, mode, sync], this.inline && !sync)
  }

  /** fsync of a directory (empty name: `dirfd` itself) or file: always on the pool. */
  fsyncAt (dirfd: number, name: Buffer): Promise<number> { return this.#n('fsyncAt', [dirfd, name], false) }
  fsyncFd (fd: number, datasync: boolean): Promise<number> { return this.#n('fsyncFd', [fd, datasync], false) }
  closeFd (fd: number): Promise<number> { return this.#n('closeFd', [fd]) }
  createWithHeaderAt (dirfd: number, name: Buffer, flags: number, mode: number, header: Buffer): Promise<number> {
    return this.#n('createWithHeaderAt', [dirfd, name, flags, mode, header])
  }

  openHeaderFd (pathfd: number, flags: number, header: Buffer, out: Float64Array, prefetch: boolean): Promise<number> {
    return this.#n('openHeaderFd', [pathfd, flags, header, out, prefetch])
  }

  unlinkLastAt (dirfd: number, name: Buffer, header: Buffer): Promise<number> { return this.#n('unlinkLastAt', [dirfd, name, header]) }
  statfsFd (fd: number, out: Float64Array): Promise<number> { return this.#n('statfsFd', [fd, out]) }
}
