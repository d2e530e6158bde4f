/** An errno-shaped failure raised by the filesystem layer itself (not by node:fs). */
export class FsError extends Error {
  constructor (readonly code: string) {
    super(code)
    this.name = 'FsError'
  }
}
