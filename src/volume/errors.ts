// Failures of opening or creating a volume. Messages are one line, safe to show a user,
// and never contain key material or passphrases.

export type VolumeErrorKind =
  | 'missing-dir'        // the cipher dir (or mount point) does not exist or is not a directory
  | 'not-empty'          // init on a non-empty directory
  | 'not-a-volume'       // no sealfs.conf
  | 'damaged-config'     // sealfs.conf unreadable or invalid
  | 'permission-denied'  // the cipher dir or its config is another user's (EACCES)
  | 'unsupported'        // format version or algorithm we do not know
  | 'weak-kdf'           // KDF parameters below the floor (or absurdly high)
  | 'wrong-passphrase'   // no slot unlocks with the given credential
  | 'bad-input'          // an option value that cannot be used
  | 'busy'               // another daemon has the volume mounted (the mount lock is held)
  | 'no-such-slot'       // no key slot of the name given
  | 'last-slot'          // removing the only key slot
  | 'exists'             // a slot of that name, or a file about to be made, exists already
  | 'key-service'        // a key-service command failed, refused, or was not allowed to run
  | 'volume-mismatch'    // the cipher dir holds another volume than the one pinned (--volume-id)
  | 'ephemeral'          // an ephemeral volume: nothing can open it
  | 'rotation-in-progress' // a key rotation is running, or was interrupted and must be finished first
  | 'slots-unopened'     // a rotation cannot rewrap slots whose credentials were not given
  | 'upgrade-in-progress' // fsck --repair --upgrade was interrupted and must be finished first
  | 'interrupted-writes' // the write journal holds writes a crash interrupted: fsck --repair settles them

export class VolumeError extends Error {
  constructor (readonly kind: VolumeErrorKind, message: string) {
    super(message)
    this.name = 'VolumeError'
  }
}

/** What to say of a volume whose upgrade to end tags is unfinished. */
export function upgradeUnfinished (dir: string): string {
  return `an upgrade of ${dir} to end tags was interrupted; run 'sealfs fsck --repair --upgrade ${dir}' to finish it before mounting`
}

/** A directory this user may not reach (EACCES on the way to it): another user's volume. */
export function unreachable (dir: string): VolumeError {
  return new VolumeError('permission-denied', `${dir} cannot be reached: permission denied (it belongs to another user; run sealfs as that user, or as root)`)
}
