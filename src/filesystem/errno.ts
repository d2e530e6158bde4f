import { AuthenticationError, MalformedCiphertextError } from '../crypto/errors'
import { logLine } from '../log'
import { FsError } from './fs-error'
import os from 'os'

const errnos = os.constants.errno as Record<string, number>

/**
 * The one place where failures become FUSE errno values. Authentication failures are
 * EIO and logged once here, with the file ID and chunk only.
 */
export function toErrno (e: unknown, fileId?: Buffer): number {
  if (e instanceof AuthenticationError || e instanceof MalformedCiphertextError) {
    const where = fileId !== undefined ? `file ${fileId.toString('hex')}` : 'an entry'
    const what = e instanceof AuthenticationError && e.detail?.chunk !== undefined ? `chunk ${e.detail.chunk} failed authentication` : e.message
    logLine(`${where}: ${what}; returning EIO`, 'error')
    return -errnos.EIO
  }
  const code = (e as { code?: unknown })?.code
  if (e instanceof FsError || typeof code === 'string') {
    const n = errnos[code as string]
    if (n !== undefined) return -n
  }
  logLine(`internal error (${e instanceof Error ? e.name : typeof e}); returning EIO`, 'error')
  return -errnos.EIO
}
