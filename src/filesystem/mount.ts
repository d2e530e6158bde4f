import path from 'path'
import { projectRoot } from '../native'
import { SealFs } from './operations'

/** fuse-native 2.2.6 built from source with our patch (native-deps/fuse-native). */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Fuse = require(path.join(projectRoot, 'build', 'fuse-native')) as FuseClass

interface FuseInstance {
  mount (cb: (err: Error | null) => void): void
  unmount (cb: (err: Error | null) => void): void
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

/** A mounted SealFs: a FUSE session on `mountpoint` until unmount(). */
export class Mount {
  readonly #fuse: FuseInstance

  private constructor (readonly fs: SealFs, readonly mountpoint: string, fuse: FuseInstance) {
    this.#fuse = fuse
  }

  static start (fs: SealFs, mountpoint: string, opts: MountOptions): Promise<Mount> {
    // The kernel has applied the caller's umask to every mode it sends; ours must not apply again.
    process.umask(0)
    const fuse = new Fuse(mountpoint, fs.handlers(() => Fuse.context()), {
      timeout: false,
      fsname: opts.fsname.replace(/[,\\]/g, '_'),
      subtype: 'sealfs',
      defaultPermissions: true,
      // No attribute caching: a write through one hard link must show in stat through the
      // others at once (libfuse 2 gives each name its own inode). Issue 5 weighs the cost.
      // Not hard_remove: with it, fstat of an open, unlinked file fails (the kernel asks by
      // inode and libfuse 2 has no path left). libfuse instead renames such a file to
      // .fuse_hidden*, which SealFs leaves out of listings.
      extraOptions: ['attr_timeout=0', ...opts.options]
    })
    return new Promise((resolve, reject) => {
      fuse.mount(err => err ? reject(err) : resolve(new Mount(fs, mountpoint, fuse)))
    })
  }

  unmount (): Promise<void> {
    return new Promise((resolve, reject) => this.#fuse.unmount(err => err ? reject(err) : resolve()))
  }
}
