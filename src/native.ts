import path from 'path'

// The addons live outside src/ and dist/; resolve them from the project root either way.
const root = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../..' : '..')

export interface ChunkCipherAddon {
  seal (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer): number
  open (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole?: boolean): number
  sealAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, cb: (n: number) => void): void
  openAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, cb: (n: number) => void): void
  /** With a file: open reads `input` from fd at position first; seal writes its output there after. */
  sealAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, fd: number, position: number, cb: (n: number) => void): void
  openAsync (key: Buffer, prefix: Buffer, firstIndex: number, input: Buffer, chunkSize: number, out: Buffer, zeroIsHole: boolean, fd: number, position: number, cb: (n: number) => void): void
}

/** Each returns 0 or a negative errno; the getters return a Buffer on success. */
export interface PosixAddon {
  utimensat (path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): number
  futimens (fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): number
  renameat2 (from: string, to: string, flags: number): number
  mknod (path: string, mode: number, dev: number): number
  lsetxattr (path: string, name: string, value: Buffer, flags: number): number
  lgetxattr (path: string, name: string): Buffer | number
  llistxattr (path: string): Buffer | number
  lremovexattr (path: string, name: string): number
  flock (fd: number, operation: number): number
  sendDatagram (socketPath: string, message: Buffer): number
}

export const LOCK_SH = 1
export const LOCK_EX = 2
export const LOCK_NB = 4

export function loadAddon<T> (name: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(root, 'native-deps', 'build', 'Release', `${name}.node`)) as T
}

export const projectRoot = root
