import { STAT_DEV, STAT_INO_HI, STAT_INO_LO, STAT_MODE } from './backing-addon'
import { Backing } from './backing'
import { FsError } from './fs-error'
import { ROOT_NODE } from './fuse-session'

export const S_IFMT = 0o170000
export const S_IFREG = 0o100000
export const S_IFDIR = 0o040000
export const S_IFLNK = 0o120000

/**
 * One backing entry the kernel knows, as libfuse's passthrough_hp keeps them: an O_PATH
 * descriptor of it (every operation on the node works from this descriptor, so no path is
 * ever rebuilt and no symlink followed), its identity and type, and the kernel's lookup count.
 */
export interface Inode {
  readonly node: number
  readonly fd: number
  /** st_dev and st_ino of the backing entry: hard links are one inode. */
  readonly key: string
  /** S_IFMT bits: fixed for the life of the descriptor. */
  readonly type: number
  lookups: number
  /** A directory's ID (its entries' name context), read once. */
  dirId: Buffer | null
  /**
   * The entry the kernel last learnt this node by, as entryKey(parent, name) (null: not yet,
   * or no longer: unlinked, renamed over, or its entry already dropped), so that its cached
   * entry can be dropped (NodeBudget). Renames carry it along. A string, not the name's
   * Buffer: a small Buffer costs V8 several hundred bytes, and the table holds every node.
   */
  entry: string | null
  /**
   * A regular file that was empty when opened has since been given its identity (header)
   * through this mount. Only this mount writes the cipher dir (sealfs.lock), so while this is
   * false a file opened empty is still empty on disk.
   */
  identified: boolean
}

/** An entry as a string: the parent node, a slash, the name's bytes as latin1 (exact for any byte). */
function entryKey (parent: number, name: Buffer): string {
  return `${parent}/${name.toString('latin1')}`
}

/** The parent node and the name of an entryKey(). */
export function entryOf (key: string): { parent: number, name: Buffer } {
  const slash = key.indexOf('/')
  return { parent: Number(key.slice(0, slash)), name: Buffer.from(key.slice(slash + 1), 'latin1') }
}

export function identityOf (st: Float64Array): string {
  return `${st[STAT_DEV]}:${st[STAT_INO_HI]}:${st[STAT_INO_LO]}`
}

/**
 * The nodes the kernel holds, by node id and by backing identity. Node ids are never
 * reused within a mount, so the kernel's generation number can stay 0. A node stays until
 * the kernel forgets its last lookup, even after its last name is unlinked: an open file
 * lives on through its descriptor, with no hidden name in the cipher dir.
 */
export class InodeTable {
  readonly #byNode = new Map<number, Inode>()
  readonly #byKey = new Map<string, Inode>()
  /** Nodes by the entry they were last known by: see Inode.entry. */
  readonly #byName = new Map<string, Inode>()
  #next = ROOT_NODE + 1

  constructor (private readonly backing: Backing, rootFd: number, rootStat: Float64Array) {
    const root: Inode = { node: ROOT_NODE, fd: rootFd, key: identityOf(rootStat), type: S_IFDIR, lookups: 1, dirId: null, entry: null, identified: false }
    this.#byNode.set(ROOT_NODE, root)
    this.#byKey.set(root.key, root)
  }

  get root (): Inode {
    return this.#byNode.get(ROOT_NODE) as Inode
  }

  get (node: number): Inode {
    const i = this.#byNode.get(node)
    if (i === undefined) throw new FsError('ESTALE')
    return i
  }

  byIdentity (key: string): Inode | undefined {
    return this.#byKey.get(key)
  }

  get size (): number {
    return this.#byNode.size
  }

  /**
   * Counts one kernel lookup of the entry behind `fd` (an O_PATH descriptor with its stat):
   * a known entry keeps its node and the new descriptor is closed; else `fd` becomes a node.
   */
  add (fd: number, st: Float64Array, dirId: Buffer | null = null): Inode {
    const key = identityOf(st)
    const known = this.#byKey.get(key)
    // On NFS a descriptor does not keep the server from reusing an inode number: an entry of
    // another type under a known number is another file, and gets a node of its own.
    if (known !== undefined && known.type === (st[STAT_MODE] & S_IFMT)) {
      void this.backing.closeFd(fd).catch(() => undefined)
      known.lookups++
      if (known.dirId === null) known.dirId = dirId
      return known
    }
    const inode: Inode = { node: this.#next++, fd, key, type: st[STAT_MODE] & S_IFMT, lookups: 1, dirId, entry: null, identified: false }
    this.#byNode.set(inode.node, inode)
    this.#byKey.set(key, inode)
    return inode
  }

  /**
   * Records that the kernel now knows `inode` as `name` in `parent`, and makes it the most
   * recently used node (the table's iteration order is least recently used first).
   */
  named (inode: Inode, parent: number, name: Buffer): void {
    if (inode.node === ROOT_NODE) return
    this.unname(inode)
    this.#rename(inode, parent, name)
    this.#byNode.delete(inode.node)
    this.#byNode.set(inode.node, inode)
  }

  /** Whether the kernel knows a node by `name` in `parent` (a lookup of it revalidates a cached entry). */
  knownAs (parent: number, name: Buffer): boolean {
    return this.#byName.has(entryKey(parent, name))
  }

  /** Forgets the name a node was last known by (it was unlinked, renamed over, or its entry dropped). */
  unname (inode: Inode): void {
    if (inode.entry === null) return
    if (this.#byName.get(inode.entry) === inode) this.#byName.delete(inode.entry)
    inode.entry = null
  }

  /** The name `name` in `parent` is gone (unlink, rmdir). */
  unlinked (parent: number, name: Buffer): void {
    const i = this.#byName.get(entryKey(parent, name))
    if (i !== undefined) this.unname(i)
  }

  /** A rename went through: the moved node is known by its new name; with `exchange`, the other by the old. */
  renamed (parent: number, name: Buffer, newParent: number, newName: Buffer, exchange: boolean): void {
    const moved = this.#byName.get(entryKey(parent, name))
    const other = this.#byName.get(entryKey(newParent, newName))
    if (moved !== undefined) this.unname(moved)
    if (other !== undefined) this.unname(other)
    if (moved !== undefined) this.#rename(moved, newParent, newName)
    if (exchange && other !== undefined) this.#rename(other, parent, name)
  }

  #rename (inode: Inode, parent: number, name: Buffer): void {
    inode.entry = entryKey(parent, name)
    this.#byName.set(inode.entry, inode)
  }

  /** Nodes from the least recently named on, the root excepted. */
  * leastRecent (): IterableIterator<Inode> {
    for (const i of this.#byNode.values()) if (i.node !== ROOT_NODE) yield i
  }

  /**
   * Counts one more kernel lookup of the known node that `st` (a stat of a name, taken
   * without opening it) identifies, if any: no descriptor is opened for an entry whose node
   * already holds one. Undefined for an entry not known yet, or of another type.
   */
  again (st: Float64Array): Inode | undefined {
    const known = this.#byKey.get(identityOf(st))
    if (known === undefined || known.type !== (st[STAT_MODE] & S_IFMT)) return undefined
    known.lookups++
    return known
  }

  forget (node: number, n: number): void {
    const i = this.#byNode.get(node)
    if (i === undefined || node === ROOT_NODE) return
    i.lookups -= n
    if (i.lookups > 0) return
    this.unname(i)
    this.#byNode.delete(node)
    if (this.#byKey.get(i.key) === i) this.#byKey.delete(i.key)
    void this.backing.closeFd(i.fd).catch(() => undefined)
  }

  /** Closes every descriptor (the session has ended). */
  async closeAll (): Promise<void> {
    for (const i of this.#byNode.values()) await this.backing.closeFd(i.fd).catch(() => undefined)
    this.#byNode.clear()
    this.#byKey.clear()
    this.#byName.clear()
  }
}
