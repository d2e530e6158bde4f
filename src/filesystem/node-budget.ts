import { Inode, InodeTable, S_IFDIR } from './inodes'

/** Room kept for what is not a node: open files' descriptors, the index, the log. */
const RESERVE_MAX = 1024
/** A round drops the least recently used nodes down to this share of the high mark. */
const LOW_SHARE = 0.75
/** A name the kernel sends is at most 255 bytes; an entry is u64 parent, u8 length, name. */
const ENTRY_MAX = 8 + 1 + 255

/**
 * Keeps the inode table inside the descriptor limit. Every node holds a descriptor
 * (InodeTable), and the kernel forgets a node only when it evicts the entry from its caches,
 * which on a machine with memory to spare may be never: a walk of a tree larger than the
 * limit would then fail with EMFILE. Past a high mark, the least recently used cached
 * entries are handed to the kernel to drop (FUSE_NOTIFY_INVAL_ENTRY); it then forgets the
 * nodes no process holds, and their descriptors close. One round runs at a time.
 */
export class NodeBudget {
  readonly high: number
  readonly low: number
  #dropping = false

  constructor (
    private readonly inodes: InodeTable,
    descriptorLimit: number,
    /** Sends encoded entries to the kernel; calls `done` when it has; false if it could not start. */
    private readonly invalidate: (entries: Buffer, done: (dropped: number) => void) => boolean
  ) {
    const limit = descriptorLimit > 0 ? descriptorLimit : 1 << 20
    this.high = limit - Math.min(RESERVE_MAX, Math.floor(limit / 4))
    this.low = Math.floor(this.high * LOW_SHARE)
  }

  /** Called after the kernel has learnt of a node: starts a round if the table is past the high mark. */
  check (): void {
    if (this.#dropping || this.inodes.size <= this.high) return
    let want = this.inodes.size - this.low
    const out = Buffer.allocUnsafe(want * ENTRY_MAX)
    let at = 0
    const add = (i: Inode): void => {
      out.writeBigUInt64LE(BigInt(i.parent), at)
      out[at + 8] = (i.name as Buffer).length
      ;(i.name as Buffer).copy(out, at + 9)
      at += 9 + (i.name as Buffer).length
      want--
    }
    // Files and symlinks first: dropping a directory's entry drops everything cached below
    // it, which may be where the work is going on. Directories only when files are not enough.
    for (const pass of [false, true]) {
      for (const i of this.inodes.leastRecent()) {
        if (want === 0) break
        if (i.name !== null && (i.type === S_IFDIR) === pass) add(i)
      }
    }
    if (at === 0) return
    this.#dropping = this.invalidate(out.subarray(0, at), () => { this.#dropping = false })
  }
}
