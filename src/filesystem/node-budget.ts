import { Inode, InodeTable, S_IFDIR } from './inodes'

/**
 * Room kept for what is not a node (open files' descriptors, the index, Node's own: some 35
 * at rest) and for the nodes a fast walk adds while a round is under way.
 */
const RESERVE_MAX = 1024
/** A round drops the least recently used nodes down to this share of the high mark. */
const LOW_SHARE = 0.75
/** A name the kernel sends is at most 255 bytes; an entry is u64 parent, u8 length, name. */
const ENTRY_MAX = 8 + 1 + 255
/**
 * How long a request that would add a node waits, past the hard mark, for forgets. Bounded:
 * the kernel drops an entry under its directory's lock, which a lookup there holds.
 */
const WAIT_MS = 20

/**
 * Keeps the inode table inside the descriptor limit. Every node holds a descriptor
 * (InodeTable), and the kernel forgets a node only when it evicts the entry from its caches,
 * which on a machine with memory to spare may be never: a walk of a tree larger than the
 * limit would then fail with EMFILE. Past a high mark, the least recently looked-up cached
 * entries are handed to the kernel to drop (FUSE_NOTIFY_INVAL_ENTRY); it then forgets the
 * nodes no process holds, and their descriptors close. One round runs at a time; past a
 * hard mark, new lookups wait a little for the forgets (room()).
 */
export class NodeBudget {
  readonly high: number
  readonly low: number
  readonly hard: number
  #dropping = false
  readonly #waiters = new Set<() => void>()

  constructor (
    private readonly inodes: InodeTable,
    descriptorLimit: number,
    /** The nodes with open handles: their entries are left alone (an open file would show as deleted in /proc). */
    private readonly openNodes: () => Set<number>,
    /** Sends encoded entries to the kernel; calls `done` when it has; false if it could not start. */
    private readonly invalidate: (entries: Buffer, done: () => void) => boolean
  ) {
    const limit = descriptorLimit > 0 ? descriptorLimit : 1 << 20
    const reserve = Math.min(RESERVE_MAX, Math.floor(limit / 2))
    this.high = limit - reserve
    this.low = Math.floor(this.high * LOW_SHARE)
    this.hard = this.high + Math.floor(reserve / 2)
  }

  /** Called after the kernel has learnt of a node: starts a round if the table is past the high mark. */
  check (): void {
    if (this.#dropping || this.inodes.size <= this.high) return
    let want = this.inodes.size - this.low
    const out = Buffer.allocUnsafe(want * ENTRY_MAX)
    let at = 0
    const add = (i: Inode, name: Buffer): void => {
      out.writeBigUInt64LE(BigInt(i.parent), at)
      out[at + 8] = name.length
      name.copy(out, at + 9)
      at += 9 + name.length
      want--
    }
    // Files and symlinks first: dropping a directory's entry drops everything cached below
    // it, and a process working in it would find its cwd unlinked. Directories only when
    // files are not enough.
    const open = this.openNodes()
    for (const dirs of [false, true]) {
      for (const i of this.inodes.leastRecent()) {
        if (want === 0) break
        if (i.name !== null && (i.type === S_IFDIR) === dirs && !open.has(i.node)) add(i, i.name)
      }
    }
    if (at === 0) return
    this.#dropping = this.invalidate(out.subarray(0, at), () => {
      this.#dropping = false
      this.check()
    })
  }

  /** null while there is room for another node; past the hard mark, a wait for forgets (at most WAIT_MS). */
  room (): Promise<void> | null {
    if (this.inodes.size < this.hard) return null
    this.check()
    return new Promise(resolve => {
      const done = (): void => { clearTimeout(timer); this.#waiters.delete(done); resolve() }
      const timer = setTimeout(done, WAIT_MS)
      this.#waiters.add(done)
    })
  }

  /** Called after forgets: lets waiting requests on once the table is back under the high mark. */
  released (): void {
    if (this.#waiters.size === 0 || this.inodes.size >= this.high) return
    for (const w of [...this.#waiters]) w()
  }
}
