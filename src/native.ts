import path from 'path'

// The addons live outside src/ and dist/; resolve them from the project root either way.
const root = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../..' : '..')

export interface ChunkCipherAddon {
  seal (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer): number
  open (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole?: boolean): number
  sealAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, cb: (n: number) => void): void
  openAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, cb: (n: number) => void): void
  /**
   * With a file: open reads `input` from fd at position first; seal writes its output there
   * after. A null callback runs the job on the calling thread and returns its result.
   * `tail`: open reads that many bytes more after the run into `input` (its last bytes) and
   * does not open them; seal writes that many bytes of `out` after the sealed run with it.
   */
  sealAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, reserve: boolean, fd: number, position: number, newFrom: number, tail: number, journalFd: number, journalPos: number, journalRecord: Buffer | null, journalKeep: boolean, cb: (n: number) => void): void
  sealAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, reserve: boolean, fd: number, position: number, newFrom: number, tail: number, journalFd: number, journalPos: number, journalRecord: Buffer | null, journalKeep: boolean, cb: null): number
  openAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, fd: number, position: number, tail: number, cb: (n: number) => void): void
  openAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, fd: number, position: number, tail: number, cb: null): number
  /**
   * Read-modify-write of a run: `input` holds the new bytes at [dataStart, dataEnd); the old
   * bytes around them in the first and last chunks (the run had oldLen bytes) are read from fd
   * and opened first; then the run is sealed into `out` and written at position. If that
   * write fails part-way, the old edge chunks are written back.
   * Writes with a file (seal and rewrite): `newFrom` is -1, or where in the sealed run the
   * bytes past the old end of the file begin (the old bytes before them are kept and written
   * back if the write fails); `reserve` allocates the run's space (fallocate, size kept)
   * before anything is written.
   */
  rewriteAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, fd: number, position: number, dataStart: number, dataEnd: number, oldLen: number, newFrom: number, reserve: boolean, tail: number, journalFd: number, journalPos: number, journalRecord: Buffer | null, journalKeep: boolean, cb: (n: number) => void): void
  rewriteAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, fd: number, position: number, dataStart: number, dataEnd: number, oldLen: number, newFrom: number, reserve: boolean, tail: number, journalFd: number, journalPos: number, journalRecord: Buffer | null, journalKeep: boolean, cb: null): number
}

/** A handle on keyed OpenSSL contexts (native-deps/name-cipher). */
export type NameKeys = object
/** encrypt/decrypt return the bytes written to `out`, or -1 (bad arguments), -2 (tag mismatch: decrypt), -3 (OpenSSL). */
export interface NameCipherAddon {
  keys (encKey: Buffer, macKey: Buffer): NameKeys
  free (keys: NameKeys): void
  encrypt (keys: NameKeys, domain: number, dirId: Buffer, name: Buffer, out: Buffer): number
  decrypt (keys: NameKeys, domain: number, dirId: Buffer, sealed: Buffer, out: Buffer): number
}

/** Each returns 0 or a negative errno. */
export interface PosixAddon {
  flock (fd: number, operation: number): number
  sendDatagram (socketPath: string, message: Buffer): number
  /** Raises RLIMIT_NOFILE as far as the process may (at most 2^20); the soft limit now in force (-1: unlimited). */
  raiseFdLimit (): number
  /** syncfs(2) of the filesystem holding fd: 0 or a negative errno. */
  syncfs (fd: number): number
  /** RLIMIT_CORE 0 and PR_SET_DUMPABLE 0: PR_GET_DUMPABLE afterwards (0), or a negative errno. */
  disableCoreDumps (): number
  /** dup2(fd, 1) and dup2(fd, 2): 0 or a negative errno. */
  redirectOutput (fd: number): number
  /** _exit(2): ends the process without waiting for the thread pool. */
  exitNow (code: number): never
}

export const LOCK_SH = 1
export const LOCK_EX = 2
export const LOCK_NB = 4

export function loadAddon<T> (name: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(root, 'native-deps', 'build', 'Release', `${name}.node`)) as T
}

export const projectRoot = root
