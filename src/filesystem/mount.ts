import path from 'path'
import { projectRoot } from '../native'
import { SealFs } from './operations'
import { widenReadahead } from './readahead'

/** fuse-native 2.2.6 built from source against libfuse 3 with our patch (native-deps/fuse-native). */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Fuse = require(path.join(projectRoot, 'build', 'fuse-native')) as FuseClass

interface FuseInstance {
  mount (cb: (err: Error | null) => void): void
  unmount (cb: (err: Error | null) => void): void
  invalidate (path: string, cb: (rc: number) => void): void
}
interface FuseClass {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseInstance
  context (): { uid: number, gid: number, pid: number }
}

export interface MountOptions {
  /** Extra FUSE/kernel options, already checked by the caller (e.g. "ro", "allow_other"). */
  options: string[]
  fsname: string
}

/** Largest read and write request the kernel sends. */
export const MAX_REQUEST = 1024 * 1024

/** A mounted SealFs: a FUSE session on `mountpoint` until unmount(). */
export class Mount {
  readonly #fuse: FuseInstance

  private constructor (readonly fs: SealFs, readonly mountpoint: string, fuse: FuseInstance) {
    this.#fuse = fuse
  }

  static async start (fs: SealFs, mountpoint: string, opts: MountOptions): Promise<Mount> {
    await fs.sweepOrphans()
    // Attributes and pages are cached only where a change through one hard link can be traced
    // to the others.
    const cacheable = await fs.linksAreVisible()
    const attrTimeout = cacheable ? 1 : 0
    // The kernel has applied the caller's umask to every mode it sends; ours must not apply again.
    process.umask(0)
    // Any result will do: -ENOENT means the kernel holds no inode for the path, so nothing is cached.
    const invalidate = (p: string): Promise<void> => new Promise(resolve => fuse.invalidate(p, () => resolve()))
    const fuse: FuseInstance = new Fuse(mountpoint, fs.handlers(() => Fuse.context(), invalidate), {
      timeout: false,
      fsname: opts.fsname.replace(/[,\\]/g, '_'),
      subtype: 'sealfs',
      defaultPermissions: true,
      // 1 MiB requests (the kernel's largest): an eighth of the round trips of 128 KiB on
      // sequential I/O; whole requests are sealed/opened in one native call.
      maxWrite: MAX_REQUEST,
      // SealFs keeps only user.* xattrs; the binding answers other names itself (ENODATA),
      // which saves a round trip to the JS thread on every write (security.capability).
      userXattrsOnly: true,
      // The kernel caches attributes for a second (as libfuse's default): with none, every
      // path walk asked again for every directory on the path (permission checks). A change
      // through one name of a hard-linked file drops the others' (SealFs, LinkNames); on a
      // backing that hides link identity (sshfs) nothing is cached.
      // The binding also sets nullpath_ok and use_ino (native-deps/fuse-native). Not hard_remove:
      // the kernel asks for fstat/fchmod/futimens of an unlinked open file without its handle,
      // so libfuse must keep a name for it (.fuse_hidden*, see SealFs.rmdir).
      // kernel_cache: pages read stay cached across opens (a re-read costs no request). Safe
      // under the same condition as attribute caching: every write comes through this mount
      // (sealfs.lock) and drops the pages of the file's other names.
      extraOptions: [`attr_timeout=${attrTimeout}`, ...(cacheable ? ['kernel_cache'] : []), ...opts.options]
    })
    return new Promise((resolve, reject) => {
      fuse.mount(err => {
        if (err) { reject(err); return }
        widenReadahead(path.resolve(mountpoint), MAX_REQUEST / 1024)
        resolve(new Mount(fs, mountpoint, fuse))
      })
    })
  }

  unmount (): Promise<void> {
    return new Promise((resolve, reject) => this.#fuse.unmount(err => err ? reject(err) : resolve()))
  }
}
