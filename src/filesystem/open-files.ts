import { FileHeader } from '../volume/file-header'
import { NewFile, Volume } from '../volume/volume'
import { DekCache } from './dek-cache'
import { FileContents, plainSize } from './file-contents'
import { FsError } from './fs-error'

export interface Handle {
  fd: number
  /** The node it was opened through. */
  node: number
  contents: FileContents | null  // null until the file has a header (a zero-length backing file)
  append: boolean
  writable: boolean
}

/**
 * Open files: FUSE file handles, each with its own backing descriptor, and the shared
 * FileContents of each file (by file ID, so every descriptor of a file sees the same size
 * and lock, also where a backing store shows hard links as separate inodes).
 */
export class OpenFiles {
  readonly #handles = new Map<number, Handle>()
  readonly #contents = new Map<string, { contents: FileContents, refs: number }>()
  /** Contents by node, for the sizes getattr reports while a file is open. */
  readonly #byNode = new Map<number, { contents: FileContents, handles: number }>()
  readonly deks = new DekCache()
  #nextHandle = 1

  /** `localIo`: the backing is a local disk (FileContents runs short I/O on the JS thread). */
  constructor (private readonly volume: Volume, private readonly localIo = false, private readonly blockSize = 512) {}

  get (fh: number): Handle {
    const h = this.#handles.get(fh)
    if (h === undefined) throw new FsError('EBADF')
    return h
  }

  add (handle: Handle): number {
    const fh = this.#nextHandle++
    this.#handles.set(fh, handle)
    this.#attach(handle)
    return fh
  }

  #attach (h: Handle): void {
    if (h.contents === null) return
    const n = this.#byNode.get(h.node)
    if (n !== undefined) n.handles++
    else this.#byNode.set(h.node, { contents: h.contents, handles: 1 })
  }

  #detach (h: Handle): void {
    if (h.contents === null) return
    const n = this.#byNode.get(h.node)
    if (n !== undefined && --n.handles === 0) this.#byNode.delete(h.node)
  }

  /** Gives a handle of a header-less file the contents it was just given an identity with. */
  setContents (h: Handle, contents: FileContents): void {
    h.contents = contents
    this.#attach(h)
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

  /** Gives a header-less handle contents another handle of its node has (one more reference). */
  share (h: Handle, contents: FileContents): FileContents {
    this.#contents.get(contents.fileId.toString('hex'))!.refs++
    this.setContents(h, contents)
    return contents
  }

  /** Gives every header-less handle of a node the identity one of them just wrote (one reference each). */
  attachToNode (node: number, contents: FileContents): void {
    for (const h of this.#handles.values()) {
      if (h.node === node && h.contents === null) this.share(h, contents)
    }
  }

  contentsOfNode (node: number): FileContents | undefined {
    return this.#byNode.size > 0 ? this.#byNode.get(node)?.contents : undefined
  }

  /**
   * The shared contents of a file with this header (null: a zero-length, header-less file) and
   * backing size. Adds a reference. Synchronous: two opens racing must end up sharing one
   * FileContents (one lock).
   */
  contentsOf (parsed: FileHeader | null, size: number): FileContents | null {
    if (parsed === null) return null
    const id = parsed.fileId.toString('hex')
    const shared = this.#contents.get(id)
    if (shared !== undefined) {
      shared.refs++
      return shared.contents
    }
    const dek = this.deks.pin(id, () => this.volume.openDek(parsed))
    const contents = new FileContents(this.volume, parsed.fileId, dek, plainSize(this.volume, size), null, parsed.flags, this.localIo, this.blockSize)
    this.#contents.set(id, { contents, refs: 1 })
    return contents
  }

  /** Contents for a brand-new file identity (create, or first write to a header-less file). */
  adopt (file: NewFile): FileContents {
    const id = file.fileId.toString('hex')
    const dek = this.deks.pin(id, () => file.dek)
    const contents = new FileContents(this.volume, file.fileId, dek, 0, 0, 0, this.localIo, this.blockSize)
    this.#contents.set(id, { contents, refs: 1 })
    return contents
  }

  /** The open contents of a file ID, if any descriptor has it open. */
  find (fileId: Buffer): FileContents | undefined {
    return this.#contents.get(fileId.toString('hex'))?.contents
  }

  releaseContents (contents: FileContents): void {
    const id = contents.fileId.toString('hex')
    const shared = this.#contents.get(id)
    if (shared === undefined) return
    if (--shared.refs === 0) {
      this.#contents.delete(id)
      this.deks.unpin(id)
    }
  }

  /** Forgets a handle; returns it so the caller closes its descriptor. */
  remove (fh: number): Handle | undefined {
    const h = this.#handles.get(fh)
    if (h === undefined) return undefined
    this.#handles.delete(fh)
    this.#detach(h)
    if (h.contents !== null) this.releaseContents(h.contents)
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
