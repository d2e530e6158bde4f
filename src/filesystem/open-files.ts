import { FileHeader, HEADER_BYTES } from '../volume/file-header'
import { NewFile, Volume } from '../volume/volume'
import { DekCache } from './dek-cache'
import { FileContents, plainSize } from './file-contents'
import { FsError } from './fs-error'

export interface Handle {
  fd: number
  /** The node it was opened through. */
  node: number
  /** null until the file has an identity: a zero-length or header-only backing file (see Files.open). */
  contents: FileContents | null
  /** The file ID in a header-only file's header when it was opened: its row goes when the file gets an identity of its own. */
  staleId?: Buffer
  append: boolean
  writable: boolean
}

/**
 * Open files: FUSE file handles, each with its own backing descriptor, and the shared
 * FileContents (DEK, size, lock) of each open node. Contents are kept by node, that is by
 * backing inode, never by file ID: a header copied into another backing file must not give
 * that file this one's state (its size, its lock, its chunk count).
 */
export class OpenFiles {
  readonly #handles = new Map<number, Handle>()
  /** Each open node's contents, with the number of handles (and pending identities) holding them. */
  readonly #contents = new Map<number, { contents: FileContents, refs: number }>()
  readonly deks = new DekCache()
  #nextHandle = 1

  /** `localIo`: the backing is a local disk (FileContents runs short I/O on the JS thread). */
  constructor (private readonly volume: Volume, private readonly localIo = false, private readonly blockSize = 512) {}

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
    const shared = this.#contents.get(h.node)
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

  contentsOfNode (node: number): FileContents | undefined {
    return this.#contents.get(node)?.contents
  }

  /**
   * The contents of an open of `node`, whose backing file has this header (null: shorter
   * than one) and size, with a reference taken; null while the file has no identity of its
   * own: empty, or header-only (it gets a fresh identity at its first write, whatever header
   * it holds, as in gocryptfs: a header copied into it names another file's key). Synchronous:
   * two opens racing must end up sharing one FileContents (one lock).
   */
  contentsOf (node: number, parsed: FileHeader | null, size: number): FileContents | null {
    const shared = this.#contents.get(node)
    if (shared !== undefined) {
      shared.refs++
      return shared.contents
    }
    if (parsed === null || size <= HEADER_BYTES) return null
    const id = parsed.fileId.toString('hex')
    const dek = this.deks.pin(id, () => this.volume.openDek(parsed))
    const contents = new FileContents(this.volume, parsed.fileId, dek, plainSize(this.volume, size), null, parsed.flags, this.localIo, this.blockSize)
    this.#contents.set(node, { contents, refs: 1 })
    return contents
  }

  /** Contents for a brand-new identity of `node` (its first write); the reference is the caller's. */
  adopt (node: number, file: NewFile): FileContents {
    const id = file.fileId.toString('hex')
    const dek = this.deks.pin(id, () => file.dek)
    const contents = new FileContents(this.volume, file.fileId, dek, 0, 0, 0, this.localIo, this.blockSize)
    this.#contents.set(node, { contents, refs: 1 })
    return contents
  }

  /** Whether any open node has contents with this file ID. */
  hasFileOpen (fileId: Buffer): boolean {
    for (const { contents } of this.#contents.values()) if (contents.fileId.equals(fileId)) return true
    return false
  }

  /** Drops one reference to `node`'s contents. */
  releaseContents (node: number, contents: FileContents): void {
    const shared = this.#contents.get(node)
    if (shared === undefined || shared.contents !== contents) return
    if (--shared.refs === 0) {
      this.#contents.delete(node)
      this.deks.unpin(contents.fileId.toString('hex'))
    }
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

  /** Every handle (the session has ended); the caller closes their descriptors. */
  removeAll (): Handle[] {
    const all = [...this.#handles.keys()].map(fh => this.remove(fh) as Handle)
    this.deks.clear()
    return all
  }
}
