import { ChunkCipher } from '../crypto/chunk-cipher'
import { END_TAG_BYTES } from '../crypto/end-tag'
import { HEADER_BYTES } from './file-header'

/**
 * Where a backing regular file's parts lie (docs/FORMAT.md §6): the header, the chunks, and in
 * a volume with end tags (config `endTags`) the end tag after the last chunk. A file with no plaintext is
 * empty or its header alone, and has no end tag.
 */
export class FileLayout {
  /** Bytes after the last chunk: the end tag, or none. */
  readonly tail: number

  constructor (readonly chunks: ChunkCipher, readonly endTags: boolean) {
    this.tail = endTags ? END_TAG_BYTES : 0
  }

  /** Offset of chunk `i` in the backing file. */
  chunkOffset (i: number): number {
    return HEADER_BYTES + i * this.chunks.stride
  }

  /** Backing size of a file (with its identity) of `size` plaintext bytes. */
  backingSize (size: number): number {
    return size === 0 ? HEADER_BYTES : HEADER_BYTES + this.chunks.sealedSize(size) + this.tail
  }

  /** Plaintext size of a backing file of `backingSize` bytes, or -1 if no file of that layout has that size (a torn end). */
  exactPlainSize (backingSize: number): number {
    if (backingSize <= HEADER_BYTES) return 0
    const n = backingSize - HEADER_BYTES - this.tail
    if (n <= 0) return -1
    return this.chunks.openedSize(n)
  }

  /** The plaintext size shown for a backing file: a torn end counts as absent (reading there is EIO). */
  plainSize (backingSize: number): number {
    const n = this.exactPlainSize(backingSize)
    if (n >= 0) return n
    return Math.floor(Math.max(0, backingSize - HEADER_BYTES - this.tail) / this.chunks.stride) * this.chunks.chunkSize
  }
}
