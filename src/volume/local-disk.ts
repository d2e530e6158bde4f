/** statfs f_type of filesystems on a local disk (or in memory): their metadata calls answer at once, and flock(2) reaches every user of them. */
const LOCAL_TYPES = new Set([
  0xef53, // ext2/3/4
  0x58465342, // xfs
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0xf2f52010, // f2fs
  0x2fc12fc1, // zfs
  0x794c7630, // overlayfs
  0x4d44 // vfat
])

/** Whether a filesystem (by statfs f_type) is on a local disk; anything else (NFS, sshfs, SMB) is treated as a network filesystem. */
export function isLocalFilesystem (fsType: number): boolean {
  return LOCAL_TYPES.has(fsType)
}
