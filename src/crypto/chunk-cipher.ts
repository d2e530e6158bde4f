import os from 'os'
import { AuthenticationError } from './errors'
import { ChunkCipherAddon, loadAddon } from '../native'
import { SecretKey } from './secret-key'

const addon = loadAddon<ChunkCipherAddon>('chunk_cipher')

const ERR_SHORT_READ = -1000000002
const ERR_IO_BASE = -2000000000

function errnoName (errno: number): string {
  const names = os.constants.errno as Record<string, number>
  return Object.keys(names).find(k => names[k] === errno) ?? 'EIO'
}

export const NONCE_BYTES = 12
export const TAG_BYTES = 16
export const CHUNK_OVERHEAD = NONCE_BYTES + TAG_BYTES
/** volume ID (16) || file ID (16): the part of every chunk's AAD that names its file. */
export const AAD_PREFIX_BYTES = 32

/**
 * Runs up to this many bytes are sealed and opened on the calling thread: AES-GCM on
 * 64 KiB takes about 15 µs here, less than the hand-off to the libuv pool and back.
 */
export const SYNC_RUN_MAX = 64 * 1024

/** How a sealed run is written over a file (ChunkCipher.sealAt). */
export interface Placement {
  /** -1, or where in the sealed run the bytes past the old end of the file begin (the old bytes before them are kept, and written back if the write fails). */
  newFrom: number
  /** Allocate the run's space before writing (fallocate, size kept). */
  reserve: boolean
  /** Bytes of the output after the sealed run written with it (a file's end tag), 0 if none. */
  tail: number
  /**
   * null, or the write-journal slot the job records the old edge chunks in (after the head the
   * caller wrote into `record`) before it writes the run; zeroed once the run is written.
   */
  journal?: JournalSlot | null
}

/** Where a write job records what it overwrites (docs/FORMAT.md §8): a slot of a journal file. */
export interface JournalSlot {
  readonly fd: number
  /** The slot's offset in the journal file. */
  readonly position: number
  /** The slot's bytes: the head (the caller's), then room for two sealed chunks. */
  readonly record: Buffer
  /** The record outlives the job (not zeroed when the run is written): the caller spends it. */
  keep?: boolean
}
export const IN_PLACE: Placement = { newFrom: -1, reserve: false, tail: 0 }

export const MIN_CHUNK_SIZE = 4096
export const MAX_CHUNK_SIZE = 1024 * 1024

export function isValidChunkSize (n: number): boolean {
  return Number.isInteger(n) && n >= MIN_CHUNK_SIZE && n <= MAX_CHUNK_SIZE && (n & (n - 1)) === 0
}

/**
 * AES-256-GCM over runs of fixed-size plaintext chunks (native, OpenSSL EVP).
 * Each chunk is sealed as nonce (12, fresh random) || ciphertext || tag (16), with
 * AAD = volume ID || file ID || chunk index (u64 BE). Knows nothing of files or paths:
 * callers give the AAD prefix and the index of the run's first chunk.
 */
export class ChunkCipher {
  readonly stride: number

  constructor (readonly chunkSize: number) {
    if (!isValidChunkSize(chunkSize)) throw new RangeError(`chunk size must be a power of two from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}`)
    this.stride = chunkSize + CHUNK_OVERHEAD
  }

  /** Bytes of ciphertext for `plainLen` bytes of plaintext starting at a chunk boundary. */
  sealedSize (plainLen: number): number {
    return plainLen + Math.ceil(plainLen / this.chunkSize) * CHUNK_OVERHEAD
  }

  /** Plaintext bytes in `cipherLen` bytes of chunks, or -1 if the length is impossible (a torn final chunk). */
  openedSize (cipherLen: number): number {
    const full = Math.floor(cipherLen / this.stride)
    const rest = cipherLen - full * this.stride
    if (rest === 0) return full * this.chunkSize
    if (rest <= CHUNK_OVERHEAD) return -1
    return full * this.chunkSize + rest - CHUNK_OVERHEAD
  }

  sealSync (key: SecretKey, prefix: Buffer, firstIndex: number, plain: Buffer, out: Buffer): number {
    return this.#check(addon.seal(key.bytes, prefix, firstIndex, plain, this.chunkSize, out), firstIndex)
  }

  openSync (key: SecretKey, prefix: Buffer, firstIndex: number, sealed: Buffer, out: Buffer, zeroIsHole = false): number {
    return this.#check(addon.open(key.bytes, prefix, firstIndex, sealed, this.chunkSize, out, zeroIsHole), firstIndex)
  }

  /** Seals `plain` into `out` on the libuv pool (short runs: at once); resolves to the sealed length. */
  seal (key: SecretKey, prefix: Buffer, firstIndex: number, plain: Buffer, out: Buffer): Promise<number> {
    if (plain.length <= SYNC_RUN_MAX) {
      try { return Promise.resolve(this.sealSync(key, prefix, firstIndex, plain, out)) } catch (e) { return Promise.reject(e) }
    }
    return new Promise((resolve, reject) => {
      addon.sealAsync(key.bytes, prefix, firstIndex, plain, this.chunkSize, out, false, n => {
        try { resolve(this.#check(n, firstIndex)) } catch (e) { reject(e) }
      })
    })
  }

  /**
   * Opens `sealed` into `out` on the libuv pool (short runs: at once); rejects with AuthenticationError naming the
   * bad chunk. With `zeroIsHole` (files whose authenticated header says they are sparse), a
   * chunk stored as all zero bytes is a hole and reads as zeros.
   */
  open (key: SecretKey, prefix: Buffer, firstIndex: number, sealed: Buffer, out: Buffer, zeroIsHole = false): Promise<number> {
    if (sealed.length <= SYNC_RUN_MAX) {
      try { return Promise.resolve(this.openSync(key, prefix, firstIndex, sealed, out, zeroIsHole)) } catch (e) { return Promise.reject(e) }
    }
    return new Promise((resolve, reject) => {
      addon.openAsync(key.bytes, prefix, firstIndex, sealed, this.chunkSize, out, zeroIsHole, n => {
        try { resolve(this.#check(n, firstIndex)) } catch (e) { reject(e) }
      })
    })
  }

  /**
   * Reads the sealed run at `position` of `fd` into `scratch` (its length, less `tail`, says
   * how much) and opens it into `out`: the read and the decryption are one job on the libuv
   * pool. `tail` bytes more are read after the run into the end of `scratch`, not opened (a
   * file's end tag). A file that ends early is EIO; I/O errors carry their errno name as `code`.
   */
  openAt (key: SecretKey, prefix: Buffer, firstIndex: number, fd: number, position: number, scratch: Buffer, out: Buffer, zeroIsHole = false, here = false, tail = 0): Promise<number> {
    if (here) return this.#here(addon.openAsync(key.bytes, prefix, firstIndex, scratch, this.chunkSize, out, zeroIsHole, fd, position, tail, null), firstIndex)
    return new Promise((resolve, reject) => {
      addon.openAsync(key.bytes, prefix, firstIndex, scratch, this.chunkSize, out, zeroIsHole, fd, position, tail, n => {
        try { resolve(this.#check(n, firstIndex)) } catch (e) { reject(e) }
      })
    })
  }

  /**
   * Seals `plain` into `out` and writes the sealed run at `position` of `fd`, as one pool job.
   * `place`: where the run's bytes past the old end of the file begin (the old bytes before
   * them are kept and written back if the write fails part-way: a full disk fails it in its
   * extension), whether to allocate the run's space before writing (a sparse file's holes),
   * and how many bytes of `out` after the sealed run to write with it (`out` has room for them).
   */
  sealAt (key: SecretKey, prefix: Buffer, firstIndex: number, plain: Buffer, out: Buffer, fd: number, position: number, here = false, place = IN_PLACE): Promise<number> {
    if (here) return this.#here(addon.sealAsync(key.bytes, prefix, firstIndex, plain, this.chunkSize, out, place.reserve, fd, position, place.newFrom, place.tail, place.journal?.fd ?? -1, place.journal?.position ?? 0, place.journal?.record ?? null, place.journal?.keep === true, null), firstIndex)
    return new Promise((resolve, reject) => {
      addon.sealAsync(key.bytes, prefix, firstIndex, plain, this.chunkSize, out, place.reserve, fd, position, place.newFrom, place.tail, place.journal?.fd ?? -1, place.journal?.position ?? 0, place.journal?.record ?? null, place.journal?.keep === true, n => {
        try { resolve(this.#check(n, firstIndex)) } catch (e) { reject(e) }
      })
    })
  }

  /**
   * Read-modify-write as one pool job: `plain` (the whole run) holds the new bytes at
   * [dataStart, dataEnd) and zeros elsewhere; the run's old bytes outside that range (it had
   * `oldLen`) are read from `fd` and opened, merged in, and the run is sealed and written. A
   * write that fails part-way puts the old edge chunks back; `place` as for sealAt.
   */
  rewriteAt (key: SecretKey, prefix: Buffer, firstIndex: number, plain: Buffer, out: Buffer, fd: number, position: number,
    dataStart: number, dataEnd: number, oldLen: number, zeroIsHole: boolean, here = false, place = IN_PLACE): Promise<number> {
    if (here) return this.#here(addon.rewriteAsync(key.bytes, prefix, firstIndex, plain, this.chunkSize, out, zeroIsHole, fd, position, dataStart, dataEnd, oldLen, place.newFrom, place.reserve, place.tail, place.journal?.fd ?? -1, place.journal?.position ?? 0, place.journal?.record ?? null, place.journal?.keep === true, null), firstIndex)
    return new Promise((resolve, reject) => {
      addon.rewriteAsync(key.bytes, prefix, firstIndex, plain, this.chunkSize, out, zeroIsHole, fd, position, dataStart, dataEnd, oldLen, place.newFrom, place.reserve, place.tail, place.journal?.fd ?? -1, place.journal?.position ?? 0, place.journal?.record ?? null, place.journal?.keep === true, n => {
        try { resolve(this.#check(n, firstIndex)) } catch (e) { reject(e) }
      })
    })
  }

  /** The result of a job run on this thread (`here`: a short run on a local disk), as a promise like the pool's. */
  #here (n: number, firstIndex: number): Promise<number> {
    try { return Promise.resolve(this.#check(n, firstIndex)) } catch (e) { return Promise.reject(e) }
  }

  #check (n: number, firstIndex: number): number {
    if (n >= 0) return n
    if (n > -1000000000) throw new AuthenticationError('chunk', { chunk: firstIndex + (-n - 1) })
    if (n === ERR_SHORT_READ) throw Object.assign(new Error('sealed run ends early'), { code: 'EIO' })
    if (n <= ERR_IO_BASE) throw Object.assign(new Error('backing file I/O failed'), { code: errnoName(ERR_IO_BASE - n) })
    throw new Error('chunk cipher: bad arguments or OpenSSL failure')
  }
}
