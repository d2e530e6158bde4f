import path from 'path'
import { loadAddon, PosixAddon } from '../native'
import { Volume } from '../volume/volume'
import { backing as addon, O_PATH, STAT_ATIME_NSEC, STAT_ATIME_SEC, STAT_BLKSIZE, STAT_LENGTH, STAT_MTIME_NSEC, STAT_MTIME_SEC, STAT_NLINK, STATFS_BSIZE, STATFS_LENGTH, STATFS_TYPE } from './backing-addon'
import { Backing, isLocalFilesystem } from './backing'
import { tempName } from './entry-names'
import { EMPTY, Filesystem } from './filesystem'
import { FsError } from './fs-error'
import { fuse } from './fuse-session'
import { identityOf, InodeTable } from './inodes'
import { widenReadahead } from './readahead'
import { Requests } from './requests'

const O_DIRECTORY = 0o200000

export interface MountOptions {
  /** Extra FUSE/kernel options, already checked by the caller (e.g. "ro", "allow_other"). */
  options: string[]
  fsname: string
}

/** Largest read and write request the kernel sends. */
export const MAX_REQUEST = 1024 * 1024

/**
 * Whether the backing store shows hard links as one inode with a link count (local
 * filesystems, NFS), which caching needs to keep every name of a file coherent: the kernel
 * then holds one node, one set of attributes and one page cache per file. sshfs, for one,
 * gives each name its own inode number and a link count of 1. A read-only mount changes
 * nothing, so nothing it caches can go stale through it. The test leaves the root's times
 * as they were.
 */
async function linksAreVisible (b: Backing, rootFd: number, readOnly: boolean): Promise<boolean> {
  if (readOnly) return true
  const rootStat = new Float64Array(STAT_LENGTH)
  await b.statAt(rootFd, EMPTY, rootStat)
  const a = tempName()
  const l = Buffer.concat([a, Buffer.from('.link')])
  try {
    await b.writeFileAt(rootFd, a, EMPTY, 0o600, false)
    const sa = new Float64Array(STAT_LENGTH)
    const fd = await b.lookupAt(rootFd, a, sa)
    try { await b.linkFd(fd, rootFd, l) } finally { await b.closeFd(fd) }
    const sb = new Float64Array(STAT_LENGTH)
    await b.statAt(rootFd, l, sb)
    await b.statAt(rootFd, a, sa)
    return identityOf(sa) === identityOf(sb) && sa[STAT_NLINK] === 2 && sb[STAT_NLINK] === 2
  } catch {
    return false
  } finally {
    await b.unlinkAt(rootFd, a, 0).catch(() => undefined)
    await b.unlinkAt(rootFd, l, 0).catch(() => undefined)
    await b.utimensFd(rootFd, rootStat[STAT_ATIME_SEC], rootStat[STAT_ATIME_NSEC], rootStat[STAT_MTIME_SEC], rootStat[STAT_MTIME_NSEC]).catch(() => undefined)
  }
}

/** A mounted volume: a FUSE session on `mountpoint` until unmount(). */
export class Mount {
  #ended = false

  private constructor (readonly requests: Requests, readonly mountpoint: string) {}

  static async start (volume: Volume, mountpoint: string, opts: MountOptions): Promise<Mount> {
    // Every entry the kernel caches holds a descriptor here (InodeTable): a tree larger than
    // the descriptor limit would fail with EMFILE long before memory runs short.
    const descriptorLimit = loadAddon<PosixAddon>('posix').raiseFdLimit()
    const rootFd = addon.openPath(Buffer.from(volume.dir), O_PATH | O_DIRECTORY)
    if (rootFd < 0) throw FsError.fromErrno(rootFd)
    const counts = new Float64Array(STATFS_LENGTH)
    const rootStat = new Float64Array(STAT_LENGTH)
    if (addon.statfsFd(rootFd, counts) < 0 || addon.statAt(rootFd, EMPTY, rootStat) < 0) {
      addon.closeFd(rootFd)
      throw new FsError('EIO')
    }
    // The allocation block, at most: the smaller of statfs's f_bsize and st_blksize (XFS may
    // report a larger preferred I/O size; ZFS its record size), and never above 4 KiB.
    const blockSize = Math.min(...[counts[STATFS_BSIZE], rootStat[STAT_BLKSIZE]].filter(n => n > 0), 4096)
    const b = new Backing(isLocalFilesystem(counts[STATFS_TYPE]), blockSize)
    // A file's attributes and pages are cached only where a change through one hard link
    // reaches the others (one inode per file).
    const cacheable = await linksAreVisible(b, rootFd, volume.readOnly)
    const fs = new Filesystem(volume, b, new InodeTable(b, rootFd, rootStat), {
      fileAttr: cacheable ? 1 : 0,
      dirAttr: 1,
      entry: 1,
      // Pages read stay cached across opens (a re-read costs no request): every write comes
      // through this mount (sealfs.lock).
      keepCache: cacheable,
      linksVisible: cacheable
    })
    await fs.sweepAsides()
    const requests = new Requests(fs, descriptorLimit)
    // The kernel has applied the caller's umask to every mode it sends; ours must not apply again.
    process.umask(0)
    const options = [
      `fsname=${opts.fsname.replace(/[,\\]/g, '_')}`,
      'subtype=sealfs',
      // Other users reach the mount only with allow_other: then the kernel checks their
      // permissions against the attributes. Without it FUSE admits the mount's own user
      // alone, whose rights the backing store checks as the daemon's (ACCESS included),
      // and the kernel no longer asks for a directory's attributes after every change in it
      // (as gocryptfs: create and unlink went from 0.69x and 0.72x of it to 0.92x and 1.14x).
      ...(opts.options.includes('allow_other') ? ['default_permissions'] : []),
      ...opts.options
    ].join(',')
    fuse.mount(requests, Buffer.from(mountpoint), options, MAX_REQUEST)
    widenReadahead(path.resolve(mountpoint), MAX_REQUEST / 1024)
    return new Mount(requests, mountpoint)
  }

  /** Called once when the kernel ends the connection (someone unmounted it). */
  set onExit (fn: () => void) {
    this.requests.onExit = fn
  }

  get requestCount (): number {
    return this.requests.count
  }

  get busy (): boolean {
    return this.requests.busy
  }

  /**
   * Unmounts and, once no operation runs, closes every descriptor and forgets every data key.
   * `gone`: the kernel already ended the connection (unmounted from outside), so there is
   * nothing left to unmount. Resolves to the number of operations still running after
   * `waitMs` (a stalled backing store): then nothing is closed or zeroed, since a pool job may
   * still read or write through a descriptor (whose number could be reused) with a key;
   * the caller exits instead, which ends those jobs with the process.
   */
  async unmount (gone = false, waitMs = 10_000): Promise<number> {
    if (this.#ended) return 0
    this.#ended = true
    if (gone) fuse.end(this.requests)
    else fuse.unmount(this.requests)
    if (!await this.requests.settled(waitMs)) return this.requests.running
    await this.requests.files.closeAll()
    await this.requests.fs.inodes.closeAll()
    return 0
  }
}
