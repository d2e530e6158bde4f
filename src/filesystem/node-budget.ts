import { entryOf, Inode, InodeTable, S_IFDIR } from './inodes'

/**
 * Room kept for what is not a node or an open file (the index, Node's own: some 35 at rest)
 * and for the nodes a fast walk adds while a round is under way.
 */
const RESERVE_MAX = 1024
/** A round drops the least recently used nodes down to this share of the high mark. */
const LOW_SHARE = 0.75
/** A name the kernel sends is at most 255 bytes; an entry is u64 parent, u8 length, name. */
const ENTRY_MAX = 8 + 1 + 255
/** What the binding takes in one call (session.c: MAX_WRITE). */
const ROUND_BYTES = 1 << 20
/** After a round that freed little (entries in use), the next waits this long. */
const BACKOFF_MS = 1000
/**
 * How long a request that would add a node waits, past the hard mark, for forgets. Bounded:
 * the kernel drops an entry under its directory's lock, which a lookup there holds.
 */
const WAIT_MS = 20

/**
 * Keeps the daemon's descriptors inside its limit. Every node holds one (InodeTable), and the
 * kernel forgets a node only when it evicts the entry from its caches, which on a machine
 * with memory to spare may be never: a walk of a tree larger than the limit would then fail
 * with EMFILE. Past a high mark, the least recently looked-up cached entries of files and
 * symlinks are handed to the kernel to drop (FUSE_NOTIFY_INVAL_ENTRY); it then forgets the
 * nodes no process holds, and their descriptors close. Directories are never dropped: a
 * process working in one would find its cwd unlinked, and mounts inside would be detached.
 * One round runs at a time; past a hard mark, new lookups wait a little for the forgets.
 */
export class NodeBudget {
  readonly high: number
  readonly low: number
  readonly hard: number
  #dropping = false
  #quietUntil = 0
  readonly #waiters = new Set<() => void>()

  constructor (
    private readonly inodes: InodeTable,
    descriptorLimit: number,
    /** Descriptors of open files, besides the nodes' (an open directory holds none of its own). */
    private readonly openCount: () => number,
    /** The nodes with open handles: their entries are left alone (an open file would show as deleted in /proc). */
    private readonly openNodes: () => Set<number>,
    /** Sends encoded entries to the kernel; calls `done` with how many it dropped; false if it could not start. */
    private readonly invalidate: (entries: Buffer, done: (dropped: number) => void) => boolean
  ) {
    const limit = descriptorLimit > 0 ? descriptorLimit : 1 << 20  // -1: unlimited
    const reserve = Math.min(RESERVE_MAX, Math.floor(limit / 2))
    this.high = limit - reserve
    this.low = Math.floor(this.high * LOW_SHARE)
    this.hard = this.high + Math.floor(reserve / 2)
  }

  get #used (): number {
    return this.inodes.size + this.openCount()
  }

  /** Called after the kernel has learnt of a node: starts a round if past the high mark. */
  check (): void {
    if (this.#dropping || this.#used <= this.high) return
    if (this.#quietUntil !== 0 && Date.now() < this.#quietUntil) return
    this.#quietUntil = 0
    let want = this.#used - this.low
    const out = Buffer.allocUnsafe(Math.min(want * ENTRY_MAX, ROUND_BYTES))
    let at = 0
    const open = this.openNodes()
    const sent: Inode[] = []
    for (const i of this.inodes.leastRecent()) {
      if (want === 0 || at + ENTRY_MAX > out.length) break
      if (i.entry === null || i.type === S_IFDIR || open.has(i.node)) continue
      const { parent, name } = entryOf(i.entry)
      out.writeBigUInt64LE(BigInt(parent), at)
      out[at + 8] = name.length
      name.copy(out, at + 9)
      at += 9 + name.length
      sent.push(i)
      want--
    }
    // A name is sent once: the node is named again only by a new lookup.
    for (const i of sent) this.inodes.unname(i)
    if (at === 0 || !this.invalidate(out.subarray(0, at), dropped => this.#ended(sent.length, dropped))) {
      this.#quietUntil = Date.now() + BACKOFF_MS
      return
    }
    this.#dropping = true
  }

  #ended (sent: number, dropped: number): void {
    this.#dropping = false
    if (dropped < sent / 2) this.#quietUntil = Date.now() + BACKOFF_MS
    this.check()
  }

  /** null while there is room for another descriptor; past the hard mark, a wait for forgets (at most WAIT_MS). */
  room (): Promise<void> | null {
    if (this.#used < this.hard) return null
    this.check()
    return new Promise(resolve => {
      const done = (): void => { clearTimeout(timer); this.#waiters.delete(done); resolve() }
      const timer = setTimeout(done, WAIT_MS)
      this.#waiters.add(done)
    })
  }

  /** Called after forgets: lets waiting requests on once back under the high mark. */
  released (): void {
    if (this.#waiters.size === 0 || this.#used >= this.high) return
    for (const w of [...this.#waiters]) w()
  }
}
