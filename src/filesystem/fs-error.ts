import os from 'os'

const codeOf = Object.fromEntries(Object.entries(os.constants.errno as Record<string, number>).map(([code, n]) => [n, code]))

/** An errno-shaped failure raised by the filesystem layer itself (not by node:fs). */
export class FsError extends Error {
  constructor (readonly code: string) {
    super(code)
    this.name = 'FsError'
  }

  /** The failure of a native call that returned -errno (an unknown number is EIO). */
  static fromErrno (negErrno: number): FsError {
    return new FsError(codeOf[-negErrno] ?? 'EIO')
  }
}
