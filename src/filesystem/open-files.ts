import fs from 'fs'
import { FileHeader } from '../volume/file-header'
import { NewFile, Volume } from '../volume/volume'
import { DekCache } from './dek-cache'
import { FileContents, plainSize } from './file-contents'
import { FsError } from './fs-error'

const O_ACCMODE = 3

export interface Handle {
  fd: number
  /** The plaintext path it was opened by, kept current across renames (for cache invalidation). */
  path: string
  contents: FileContents | null  // null until the file has a header (a zero-length backing file)
  append: boolean
  writable: boolean
}

/**
 * Open files: FUSE file handles, each with its own backing descriptor, and the shared
 * FileContents of each file (by file ID, so every name and descriptor of a file sees the
 * same size and lock).
 */
export class OpenFiles {
  readonly #handles = new Map<number, Handle>()
  /** Open directories: libfuse names them only by handle (nullpath_ok), so their paths live here. */
  readonly #dirs = new Map<number, { path: string }>()
  readonly #contents = new Map<string, { contents: FileContents, refs: number, handles: Set<Handle> }>()
  readonly deks = new DekCache()
  #nextHandle = 1

  constructor (private readonly volume: Volume) {}

  get (fh: number): Handle {
    const h = this.#handles.get(fh)
    if (h === undefined) throw new FsError('EBADF')
    return h
  }

  /** A handle for `fd` with its contents (from contentsOf or adopt; null for a header-less file). */
  add (fd: number, flags: number, path: string, contents: FileContents | null): number {
    const writable = (flags & O_ACCMODE) !== fs.constants.O_RDONLY
    const handle: Handle = { fd, path, contents, append: (flags & fs.constants.O_APPEND) !== 0, writable }
    this.#attach(handle)
    const fh = this.#nextHandle++
    this.#handles.set(fh, handle)
    return fh
  }

  /** Counts `h` among the handles of its contents (once it has contents). */
  #attach (h: Handle): void {
    if (h.contents !== null) this.#contents.get(h.contents.fileId.toString('hex'))?.handles.add(h)
  }

  /** Gives a handle of a header-less file the contents it was just given an identity with. */
  setContents (h: Handle, contents: FileContents): void {
    h.contents = contents
    this.#attach(h)
  }

  /**
   * The other paths by which the file behind `h` is open. libfuse gives each name of a hard
   * link its own kernel inode, so a write through one name leaves the others' cached pages stale.
   */
  otherPaths (h: Handle): string[] {
    if (h.contents === null) return []
    const handles = this.#contents.get(h.contents.fileId.toString('hex'))?.handles
    if (handles === undefined || handles.size < 2) return []
    const out = new Set<string>()
    for (const o of handles) if (o.path !== h.path) out.add(o.path)
    return [...out]
  }

  openDir (path: string): number {
    const fh = this.#nextHandle++
    this.#dirs.set(fh, { path })
    return fh
  }

  dirPath (fh: number): string {
    const d = this.#dirs.get(fh)
    if (d === undefined) throw new FsError('EBADF')
    return d.path
  }

  releaseDir (fh: number): void {
    this.#dirs.delete(fh)
  }

  /** Keeps handle paths current when a name (or a directory above it) is renamed. */
  renamed (from: string, to: string): void {
    const prefix = from + '/'
    for (const h of [...this.#handles.values(), ...this.#dirs.values()]) {
      if (h.path === from) h.path = to
      else if (h.path.startsWith(prefix)) h.path = to + h.path.slice(from.length)
    }
  }

  pathOf (fh: number): string | undefined {
    return this.#handles.get(fh)?.path
  }

  /** Whether any open file handle has this path. */
  isOpen (path: string): boolean {
    for (const h of this.#handles.values()) if (h.path === path) return true
    return false
  }

  /** Swaps the paths under two names (rename with RENAME_EXCHANGE). */
  exchanged (a: string, b: string): void {
    const marker = `\0${a}`
    this.renamed(a, marker)
    this.renamed(b, a)
    this.renamed(marker, b)
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
    const contents = new FileContents(this.volume, parsed.fileId, dek, plainSize(this.volume, size), null, parsed.flags)
    this.#contents.set(id, { contents, refs: 1, handles: new Set() })
    return contents
  }

  /** Contents for a brand-new file identity (create, or first write to a header-less file). */
  adopt (file: NewFile): FileContents {
    const id = file.fileId.toString('hex')
    const dek = this.deks.pin(id, () => file.dek)
    const contents = new FileContents(this.volume, file.fileId, dek, 0, 0, 0)
    this.#contents.set(id, { contents, refs: 1, handles: new Set() })
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

  async release (fh: number): Promise<void> {
    const h = this.#handles.get(fh)
    if (h === undefined) return
    this.#handles.delete(fh)
    if (h.contents !== null) {
      this.#contents.get(h.contents.fileId.toString('hex'))?.handles.delete(h)
      this.releaseContents(h.contents)
    }
    await new Promise<void>(resolve => fs.close(h.fd, () => resolve()))
  }

  get count (): number {
    return this.#handles.size
  }

  async closeAll (): Promise<void> {
    for (const fh of [...this.#handles.keys()]) await this.release(fh)
    this.deks.clear()
  }
}
