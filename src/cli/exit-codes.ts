import { VolumeError, VolumeErrorKind } from '../volume/errors'

/** Exit codes of the sealfs command (also listed in README.md). */
export const EXIT = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  MISSING_DIR: 3,
  NOT_EMPTY: 4,
  NOT_A_VOLUME: 5,
  BAD_CONFIG: 6,
  WRONG_PASSPHRASE: 7,
  PASSPHRASE_SOURCE: 8,
  MOUNT_FAILED: 9,
  WEAK_KDF: 10,
  BUSY: 11,
  NO_SUCH_SLOT: 12,
  LAST_SLOT: 13,
  EXISTS: 14,
  KEY_SERVICE: 15,
  VOLUME_MISMATCH: 16,
  EPHEMERAL: 17,
  ROTATION_IN_PROGRESS: 18,
  SLOTS_UNOPENED: 19,
  /** fsck found problems and left some (or was not asked to repair). */
  FSCK_PROBLEMS: 20,
  /** fsck --repair found problems and repaired every one. */
  FSCK_REPAIRED: 21,
  /** An upgrade (fsck --repair --upgrade) is unfinished: the volume does not mount until it is finished. */
  UPGRADE_IN_PROGRESS: 22,
  /** key rotate --reencrypt: the write journal holds writes a crash interrupted (fsck --repair settles them first). */
  INTERRUPTED_WRITES: 23,
  /** umount: the path is not a sealfs mount. */
  NOT_MOUNTED: 24,
  /** mount: Ctrl-C, SIGTERM or SIGHUP came before the mount was ready; nothing is mounted. */
  CANCELLED: 25,
  /** path: no entry has that file ID, or the path is not in the volume. */
  NOT_FOUND: 26,
  /** The cipher dir or its config cannot be read by this user (EACCES): another user's volume. */
  PERMISSION_DENIED: 27
} as const

export type CliErrorKind = 'usage' | 'passphrase-source' | 'mount-failed' | 'missing-dir' | 'not-empty' | 'busy' | 'not-mounted' | 'cancelled' | 'not-found'

/** A failure of the command itself (not of the volume), with its one-line message. */
export class CliError extends Error {
  constructor (readonly kind: CliErrorKind, message: string) {
    super(message)
    this.name = 'CliError'
  }
}

const volumeCodes: Record<VolumeErrorKind, number> = {
  'missing-dir': EXIT.MISSING_DIR,
  'not-empty': EXIT.NOT_EMPTY,
  'not-a-volume': EXIT.NOT_A_VOLUME,
  'damaged-config': EXIT.BAD_CONFIG,
  unsupported: EXIT.BAD_CONFIG,
  'weak-kdf': EXIT.WEAK_KDF,
  'wrong-passphrase': EXIT.WRONG_PASSPHRASE,
  'bad-input': EXIT.USAGE,
  busy: EXIT.BUSY,
  'no-such-slot': EXIT.NO_SUCH_SLOT,
  'last-slot': EXIT.LAST_SLOT,
  exists: EXIT.EXISTS,
  'key-service': EXIT.KEY_SERVICE,
  'volume-mismatch': EXIT.VOLUME_MISMATCH,
  ephemeral: EXIT.EPHEMERAL,
  'rotation-in-progress': EXIT.ROTATION_IN_PROGRESS,
  'slots-unopened': EXIT.SLOTS_UNOPENED,
  'interrupted-writes': EXIT.INTERRUPTED_WRITES,
  'upgrade-in-progress': EXIT.UPGRADE_IN_PROGRESS,
  'permission-denied': EXIT.PERMISSION_DENIED
}

const cliCodes: Record<CliErrorKind, number> = {
  usage: EXIT.USAGE,
  'passphrase-source': EXIT.PASSPHRASE_SOURCE,
  'mount-failed': EXIT.MOUNT_FAILED,
  'missing-dir': EXIT.MISSING_DIR,
  'not-empty': EXIT.NOT_EMPTY,
  busy: EXIT.BUSY,
  'not-mounted': EXIT.NOT_MOUNTED,
  cancelled: EXIT.CANCELLED,
  'not-found': EXIT.NOT_FOUND
}

/** The one place where an error becomes an exit code. */
export function exitCodeOf (e: unknown): number {
  if (e instanceof VolumeError) return volumeCodes[e.kind]
  if (e instanceof CliError) return cliCodes[e.kind]
  return EXIT.INTERNAL
}

/** The one line shown for an error: its message for our typed errors, a generic line otherwise. */
export function messageOf (e: unknown): string {
  if (e instanceof VolumeError || e instanceof CliError) return e.message
  const err = e as { code?: unknown, syscall?: unknown, path?: unknown }
  if (typeof err?.code === 'string' && typeof err.syscall === 'string') {
    return `unexpected I/O error: ${err.code} in ${err.syscall}${typeof err.path === 'string' ? ` on ${err.path}` : ''}`
  }
  return `internal error (a bug, please report it): ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`
}
