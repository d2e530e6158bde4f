import { FileHeader, HEADER_BYTES } from '../volume/file-header'
import { NewFile, Volume } from '../volume/volume'
import { DekCache } from './dek-cache'
import { FileContents } from './file-contents'
import { FsError } from './fs-error'

export interface Handle {
  fd: number
  /** The node it was opened through. */
  node: number
  /** null until the file has an identity: a zero-length or header-only backing file (see Files.open). */
  contents: FileContents | null
  append: boolean
  writable: boolean
}

interface Shared {
  contents: FileContents
  /** Handles holding it (and an identity being given: see adopt). */
  refs: number
  /** Its DEK's DekCache entry. */
  cacheId: string
  /** Its header is not on disk yet (adopt): no open takes it until identified(). */
  pending: boolean
  /** The nodes it is the contents of: one, except where hard links show as separate inodes. */
  nodes: Set<number>
}

/**
 * The DekCache entry of a header: the file ID and every field the DEK was opened from, so
 * that a header changed in the cipher dir (its flags, its key version, its wrapped DEK) is
 * opened (and authenticated) again rather than served from the cache.
 */
export function dekCacheId (h: FileHeader): string {
  return `${h.fileId.toString('hex')}:${h.keyVersion}:${h.flags}:${h.wrappedDek.toString('hex')}`
}

/**
 * Open files: FUSE file handles, each with its own backing descriptor, and the shared
 * FileContents (DEK, size, lock) of each open node. Contents are kept by node, that is by
 * backing inode, not by file ID: a header copied into another backing file must not give
 * that file this one's state (its size, its lock, its chunk count). Only where the backing
 * store shows a file's hard links as separate inodes (sshfs) are contents shared by file ID,
 * so that writes through two of its names share one size and lock.
 */
export class OpenFiles {
  readonly #handles = new Map<number, Handle>()
  readonly #byNode = new Map<number, Shared>()
  /** Contents by file ID (hex): only with `shareByFileId`. */
  readonly #byFile = new Map<string, Shared>()
  readonly deks = new DekCache()
  #nextHandle = 1

  /**
   * `localIo`: the backing is a local disk (FileContents runs short I/O on the JS thread);
   * `shareByFileId`: the backing store hides hard links (see above).
   */
  constructor (private readonly volume: Volume, private readonly localIo = false, private readonly blockSize = 512, readonly shareByFileId = false) {}

  get (fh: number): Handle {
    const h = this.#handles.get(fh)
    if (h === undefined) throw new FsError('EBADF')
    return h
  }

  /** A new handle; its contents (if any) carry the reference contentsOf, adopt or share took for it. */
  add (handle: Handle): number {
    const fh = this.#nextHandle++
    this.#handles.set(fh, handle)
    return fh
  }

  /** The nodes with open handles. */
  openNodes (): Set<number> {
    const out = new Set<number>()
    for (const h of this.#handles.values()) out.add(h.node)
    return out
  }

  isNodeOpen (node: number): boolean {
    for (const h of this.#handles.values()) if (h.node === node) return true
    return false
  }

  /** Gives a handle without contents its node's contents (one more reference). */
  share (h: Handle, contents: FileContents): FileContents {
    const shared = this.#byNode.get(h.node)
    if (shared === undefined || shared.contents !== contents) throw new Error('share: not the contents of this node')
    shared.refs++
    h.contents = contents
    return contents
  }

  /** Gives every handle of a node without contents the identity one of them was just given. */
  attachToNode (node: number, contents: FileContents): void {
    for (const h of this.#handles.values()) {
      if (h.node === node && h.contents === null) this.share(h, contents)
    }
  }

  /** The contents of an open node (also while its new identity's header is being written). */
  contentsOfNode (node: number): FileContents | undefined {
    return this.#byNode.get(node)?.contents
  }

  /**
   * The contents of an open of `node`, whose backing file has this header (null: shorter
   * than one) and size, with a reference taken; null while the file has no identity of its
   * own: empty, or header-only (it gets a fresh identity at its first write, whatever header
   * it holds, as in gocryptfs: a header copied into it names another file's key), or while
   * the identity another handle is giving it is not on disk yet. Synchronous: two opens
   * racing must end up sharing one FileContents (one lock).
   */
  contentsOf (node: number, parsed: FileHeader | null, size: number): FileContents | null {
    const onNode = this.#byNode.get(node)
    if (onNode !== undefined) {
      if (onNode.pending) return null  // identified() gives it to this handle (attachToNode)
      onNode.refs++
      return onNode.contents
    }
    if (parsed === null) return null
    const fileKey = parsed.fileId.toString('hex')
    const byFile = this.shareByFileId ? this.#byFile.get(fileKey) : undefined
    // Another name of this file is open (its header may be on disk before its first chunk):
    // the same contents. (A copy of the backing file is taken for a link too: such a store
    // cannot tell them apart.)
    if (byFile !== undefined && !byFile.pending) {
      byFile.refs++
      byFile.nodes.add(node)
      this.#byNode.set(node, byFile)
      return byFile.contents
    }
    if (size <= HEADER_BYTES) return null
    const cacheId = dekCacheId(parsed)
    const dek = this.deks.pin(cacheId, () => this.volume.openDek(parsed))
    const contents = new FileContents(this.volume, parsed.fileId, dek, this.volume.layout.plainSize(size), null, parsed.flags, this.localIo, this.blockSize, parsed)
    this.#register(node, { contents, refs: 1, cacheId, pending: false, nodes: new Set([node]) })
    return contents
  }

  #register (node: number, shared: Shared): void {
    this.#byNode.set(node, shared)
    if (this.shareByFileId) this.#byFile.set(shared.contents.fileId.toString('hex'), shared)
  }

  /**
   * Contents for a brand-new identity of `node` (its first write); the reference is the
   * caller's. Pending until identified(): an open meanwhile gets no contents, so that no
   * chunk is written before the header is on disk.
   */
  adopt (node: number, file: NewFile, header: FileHeader): FileContents {
    const cacheId = dekCacheId(header)
    const dek = this.deks.pin(cacheId, () => file.dek)
    const contents = new FileContents(this.volume, file.fileId, dek, 0, 0, file.flags, this.localIo, this.blockSize, header)
    this.#register(node, { contents, refs: 1, cacheId, pending: true, nodes: new Set([node]) })
    return contents
  }

  /** The header of an adopted identity is on disk: opens may take it. */
  identified (node: number): void {
    const shared = this.#byNode.get(node)
    if (shared !== undefined) shared.pending = false
  }

  /** Whether `h` holds the last reference to its contents (its release ends them). */
  lastReference (h: Handle): boolean {
    const shared = this.#byNode.get(h.node)
    return h.contents !== null && shared !== undefined && shared.contents === h.contents && shared.refs === 1
  }

  /** Whether any open node has contents with this file ID. */
  hasFileOpen (fileId: Buffer): boolean {
    for (const { contents } of this.#byNode.values()) if (contents.fileId.equals(fileId)) return true
    return false
  }

  /** Drops one reference to `node`'s contents. */
  releaseContents (node: number, contents: FileContents): void {
    const shared = this.#byNode.get(node)
    if (shared === undefined || shared.contents !== contents) return
    if (--shared.refs > 0) return
    for (const n of shared.nodes) this.#byNode.delete(n)
    const fileKey = contents.fileId.toString('hex')
    if (this.#byFile.get(fileKey) === shared) this.#byFile.delete(fileKey)
    contents.forgetKeys()
    this.deks.unpin(shared.cacheId)
  }

  /** Forgets a handle; returns it so the caller closes its descriptor. */
  remove (fh: number): Handle | undefined {
    const h = this.#handles.get(fh)
    if (h === undefined) return undefined
    this.#handles.delete(fh)
    if (h.contents !== null) this.releaseContents(h.node, h.contents)
    return h
  }

  get count (): number {
    return this.#handles.size
  }

  /** Every open handle. */
  handles (): Handle[] {
    return [...this.#handles.values()]
  }

  /** Every handle (the session has ended); the caller closes their descriptors. */
  removeAll (): Handle[] {
    const all = [...this.#handles.keys()].map(fh => this.remove(fh) as Handle)
    this.deks.clear()
    return all
  }
}
