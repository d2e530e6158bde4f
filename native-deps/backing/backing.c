// The backing store ("cipher dir") reached only through descriptors. The cipher dir is
// hostile input: whoever can write to it may plant symlinks, FIFOs or device nodes where
// sealfs expects its own files, and may swap entries between two of our syscalls. So:
//  - every name is one path component, relative to a directory descriptor the caller holds,
//    and is checked before any syscall (no '/', no NUL, not "." or "..", at most 255 bytes);
//  - opens of a name use openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS
//    and O_NOFOLLOW, so no symlink is followed in any component;
//  - opens for I/O add O_NONBLOCK (a planted FIFO returns at once instead of waiting for a
//    writer) and O_NOCTTY (a planted tty never becomes the daemon's controlling terminal),
//    and check the type by fstat of the opened descriptor, never by a stat of the name first;
//  - changes to an entry found earlier go through its O_PATH descriptor, which names one
//    inode: renaming something else over the name in between cannot redirect them.
// Every function runs synchronously (returns its result), or, given a trailing callback, as
// one libuv pool job that calls cb(result) (cb(result, buffer) for the two that produce data).
// Both forms run the same executor on the same job struct. Results are >= 0 or -errno.

#define _GNU_SOURCE
#include <node_api.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

#define NAME_BUF 256    // one component (NAME_MAX) or an xattr name (XATTR_NAME_MAX), and a NUL
#define PATH_BUF 4096   // a path or symlink target (PATH_MAX with its NUL)
#define PROC_FD_BUF 32  // "/proc/self/fd/" and an int
#define MAX_ARGS 8
#define DIRENT_HEADER 10  // readdirFd's encoding: d_ino (8 bytes), d_type, the name's length

// The STAT layout (src/filesystem/backing-addon.ts has the same indices).
enum {
  STAT_INO_HI, STAT_INO_LO, STAT_MODE, STAT_NLINK, STAT_UID, STAT_GID, STAT_RDEV, STAT_SIZE, STAT_BLOCKS,
  STAT_ATIME_SEC, STAT_ATIME_NSEC, STAT_MTIME_SEC, STAT_MTIME_NSEC, STAT_CTIME_SEC, STAT_CTIME_NSEC,
  STAT_DEV, STAT_BLKSIZE, STAT_LENGTH
};
#define STATFS_LENGTH 10
#define HEADER_OUT_LENGTH 2

// The operations; each has a JS function of its name in OPS.
typedef enum {
  OP_STAT_AT, OP_LOOKUP_AT, OP_OPEN_AT, OP_REOPEN, OP_MKDIR_AT, OP_UNLINK_AT, OP_RENAME_AT,
  OP_SYMLINK_AT, OP_MKNOD_AT, OP_LINK_FD, OP_READLINK_AT, OP_CHMOD_FD, OP_ACCESS_FD, OP_CHOWN_FD, OP_UTIMENS_FD,
  OP_GETXATTR_FD, OP_SETXATTR_FD, OP_LISTXATTR_FD, OP_REMOVEXATTR_FD, OP_READDIR_FD,
  OP_READ_SMALL_FILE_AT, OP_WRITE_FILE_AT, OP_FSYNC_AT, OP_FSYNC_FD, OP_CLOSE_FD,
  OP_CREATE_WITH_HEADER_AT, OP_OPEN_HEADER_FD, OP_UNLINK_LAST_AT, OP_STATFS_FD, OP_OPEN_PATH
} op_t;
#define OP_COUNT (OP_OPEN_PATH + 1)

// Argument letters, one JS argument each ('a' takes two):
//   d  a descriptor: a non-negative int32 (else -EBADF); D: a second one
//   n  a name: one path component (else -EINVAL, -ENAMETOOLONG); e: may be empty (the
//      descriptor itself); N: a second name
//   x  an xattr name: 1..255 bytes, no NUL (else -EINVAL, -ERANGE as the kernel has it)
//   p  a whole path or a symlink target: 1..4095 bytes, no NUL (else -EINVAL, -ENAMETOOLONG)
//   f  open flags (int32); U: unlinkat flags (0, AT_REMOVEDIR); W: renameat2 flags (0,
//      RENAME_NOREPLACE, RENAME_EXCHANGE); X: setxattr flags (0, XATTR_CREATE, XATTR_REPLACE)
//   m  a mode (<= 0177777) of which only the permission bits apply (open and mkdir ignore the
//      type bits too; FUSE's create passes S_IFREG); M: type and permission bits, both apply
//   t  the expected type: 0 (regular or directory), S_IFREG or S_IFDIR
//   r  a device number as mknod takes it (uint32)
//   u  a uid, g  a gid: 0..0xffffffff, or -1 (unchanged)
//   a  a time: seconds (integral, may be negative) and nanoseconds (< 1e9, UTIME_NOW, UTIME_OMIT)
//   l  a size limit (0..2^31-1)
//   z  a boolean
//   b  a Buffer, read from or written to
//   s  a Float64Array of at least the op's out_len doubles, written
// A value of the wrong JS type, or the wrong number of arguments, throws a TypeError (a bug
// in the caller); a value out of range is the call's result instead (-errno, no syscall).
typedef struct {
  const char *name;
  const char *args;
  size_t out_len;     // 's': the doubles it must hold
  bool makes_buffer;  // the result is a Buffer of job->data
} op_info;

static const op_info OPS[OP_COUNT] = {
  [OP_STAT_AT] = {"statAt", "des", STAT_LENGTH, false},
  [OP_LOOKUP_AT] = {"lookupAt", "dns", STAT_LENGTH, false},
  [OP_OPEN_AT] = {"openAt", "dnfmt", 0, false},
  [OP_REOPEN] = {"reopen", "dft", 0, false},
  [OP_MKDIR_AT] = {"mkdirAt", "dnm", 0, false},
  [OP_UNLINK_AT] = {"unlinkAt", "dnU", 0, false},
  [OP_RENAME_AT] = {"renameAt", "dnDNW", 0, false},
  [OP_SYMLINK_AT] = {"symlinkAt", "pdn", 0, false},
  [OP_MKNOD_AT] = {"mknodAt", "dnMr", 0, false},
  [OP_LINK_FD] = {"linkFd", "dDN", 0, false},
  [OP_READLINK_AT] = {"readlinkAt", "deb", 0, false},
  [OP_CHMOD_FD] = {"chmodFd", "dm", 0, false},
  [OP_ACCESS_FD] = {"accessFd", "dm", 0, false},
  [OP_CHOWN_FD] = {"chownFd", "dug", 0, false},
  [OP_UTIMENS_FD] = {"utimensFd", "daa", 0, false},
  [OP_GETXATTR_FD] = {"getxattrFd", "dxb", 0, false},
  [OP_SETXATTR_FD] = {"setxattrFd", "dxbX", 0, false},
  [OP_LISTXATTR_FD] = {"listxattrFd", "db", 0, false},
  [OP_REMOVEXATTR_FD] = {"removexattrFd", "dx", 0, false},
  [OP_READDIR_FD] = {"readdirFd", "d", 0, true},
  [OP_READ_SMALL_FILE_AT] = {"readSmallFileAt", "dnl", 0, true},
  [OP_WRITE_FILE_AT] = {"writeFileAt", "dnbmz", 0, false},
  [OP_FSYNC_AT] = {"fsyncAt", "de", 0, false},
  [OP_FSYNC_FD] = {"fsyncFd", "dz", 0, false},
  [OP_CLOSE_FD] = {"closeFd", "d", 0, false},
  [OP_CREATE_WITH_HEADER_AT] = {"createWithHeaderAt", "dnfmb", 0, false},
  [OP_OPEN_HEADER_FD] = {"openHeaderFd", "dfbsz", HEADER_OUT_LENGTH, false},
  [OP_UNLINK_LAST_AT] = {"unlinkLastAt", "dnb", 0, false},
  [OP_STATFS_FD] = {"statfsFd", "ds", STATFS_LENGTH, false},
  [OP_OPEN_PATH] = {"openPath", "pf", 0, false},
};

typedef struct {
  op_t op;
  int refused;                  // errno of an argument out of range: the job does nothing
  int fd, fd2;
  char name[NAME_BUF], name2[NAME_BUF];
  char path[PATH_BUF];
  int flags;
  mode_t mode, type;
  dev_t dev;
  uid_t uid;
  gid_t gid;
  struct timespec ts[2];
  bool flag;                    // writeFileAt: sync; fsyncFd: datasync; openHeaderFd: prefetch
  size_t max;                   // readSmallFileAt
  uint8_t *buf;                 // the 'b' argument
  size_t len;
  double *out;                  // the 's' argument
  int64_t result;
  uint8_t *data;                // what readdirFd and readSmallFileAt produce (malloc'd)
  napi_async_work work;
  napi_ref buf_ref, out_ref, callback;
} job_t;

// ---- helpers for the executors (they run on a pool thread or the JS thread, never touch JS) ----

static int64_t ok_or_errno(long rc) {
  return rc < 0 ? -errno : rc;
}

static void proc_fd_path(char *out, int fd) {
  snprintf(out, PROC_FD_BUF, "/proc/self/fd/%d", fd);
}

// Whether a file's mode is of the expected type (0: regular or directory).
static bool type_ok(mode_t mode, mode_t type) {
  return type ? (mode & S_IFMT) == type : S_ISREG(mode) || S_ISDIR(mode);
}

static void fill_stat(double *out, const struct stat *st) {
  out[STAT_INO_HI] = (double)((uint64_t)st->st_ino >> 32);
  out[STAT_INO_LO] = (double)((uint64_t)st->st_ino & 0xffffffffu);
  out[STAT_MODE] = st->st_mode;
  out[STAT_NLINK] = (double)st->st_nlink;
  out[STAT_UID] = st->st_uid;
  out[STAT_GID] = st->st_gid;
  out[STAT_RDEV] = (double)st->st_rdev;
  out[STAT_SIZE] = (double)st->st_size;
  out[STAT_BLOCKS] = (double)st->st_blocks;
  out[STAT_ATIME_SEC] = (double)st->st_atim.tv_sec;
  out[STAT_ATIME_NSEC] = (double)st->st_atim.tv_nsec;
  out[STAT_MTIME_SEC] = (double)st->st_mtim.tv_sec;
  out[STAT_MTIME_NSEC] = (double)st->st_mtim.tv_nsec;
  out[STAT_CTIME_SEC] = (double)st->st_ctim.tv_sec;
  out[STAT_CTIME_NSEC] = (double)st->st_ctim.tv_nsec;
  out[STAT_DEV] = (double)st->st_dev;
  out[STAT_BLKSIZE] = (double)st->st_blksize;
}

static ssize_t pread_full(int fd, uint8_t *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -1 : (ssize_t)done;
    done += (size_t)n;
  }
  return (ssize_t)done;
}

static int pwrite_full(int fd, const uint8_t *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

// close() that keeps the errno of the failure being reported.
static int64_t close_with(int fd, int err) {
  close(fd);
  return -err;
}

// Set once a syscall answered ENOSYS (an older kernel, or a seccomp filter), for the process.
static atomic_bool no_openat2, no_fchmodat2;

// openat2 refusing symlinks in every component, or openat on kernels before 5.6 (as safe here:
// the name is a single component and O_NOFOLLOW is always set).
static int open_beneath(int dirfd, const char *name, int flags, mode_t mode) {
  if (!atomic_load_explicit(&no_openat2, memory_order_relaxed)) {
    struct open_how how = {
      .flags = (uint32_t)flags,
      .mode = (flags & (O_CREAT | __O_TMPFILE)) ? mode : 0,  // openat2 rejects a mode otherwise
      .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return fd;
    atomic_store_explicit(&no_openat2, true, memory_order_relaxed);
  }
  return openat(dirfd, name, flags, mode);
}

// A descriptor of the name below dirfd, O_NOFOLLOW and O_CLOEXEC added. O_NOATIME is refused
// (EPERM) for a file the daemon does not own: such a file is opened without it.
static int open_name(int dirfd, const char *name, int flags, mode_t mode) {
  flags |= O_NOFOLLOW | O_CLOEXEC;
  int fd = open_beneath(dirfd, name, flags, mode);
  if (fd < 0 && errno == EPERM && (flags & O_NOATIME)) fd = open_beneath(dirfd, name, flags & ~O_NOATIME, mode);
  return fd;
}

// The same for the inode an O_PATH descriptor names, through its /proc magic link (which
// must be followed, so no O_NOFOLLOW).
static int open_proc(int pathfd, int flags) {
  char proc[PROC_FD_BUF];
  proc_fd_path(proc, pathfd);
  int fd = open(proc, (flags & ~O_NOFOLLOW) | O_CLOEXEC);
  if (fd < 0 && errno == EPERM && (flags & O_NOATIME)) fd = open(proc, (flags & ~(O_NOFOLLOW | O_NOATIME)) | O_CLOEXEC);
  return fd;
}

// O_NONBLOCK was added for the open only; it stays when the caller asked for it.
static int64_t keep_nonblock(int fd, int flags) {
  if (flags & O_NONBLOCK) return fd;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) return close_with(fd, errno);
  return fd;
}

static int64_t reopen_checked(int pathfd, int flags, mode_t type, struct stat *st);

// A descriptor of the name for I/O, of the expected type (else -EIO); its fstat in st. An
// existing entry is looked at through an O_PATH descriptor first, so a planted FIFO or
// device is never opened (a device's driver would run its open code for us); only a file
// we are creating (O_CREAT) is opened at once, O_NONBLOCK and then checked.
static int64_t open_checked(int dirfd, const char *name, int flags, mode_t mode, mode_t type, struct stat *st) {
  if (!(flags & O_CREAT)) {
    int pathfd = open_name(dirfd, name, O_PATH, 0);
    if (pathfd < 0) return -errno;
    struct stat was;
    if (fstat(pathfd, &was) < 0) return close_with(pathfd, errno);
    if (S_ISLNK(was.st_mode)) return close_with(pathfd, ELOOP);  // as an O_NOFOLLOW open says it
    int64_t fd = reopen_checked(pathfd, flags, type, st);
    close(pathfd);
    return fd;
  }
  int fd = open_name(dirfd, name, flags | O_NONBLOCK | O_NOCTTY, mode);
  if (fd < 0) return -errno;
  if (fstat(fd, st) < 0) return close_with(fd, errno);
  if (!type_ok(st->st_mode, type)) return close_with(fd, EIO);
  return fd;
}

// A descriptor for I/O of the inode the O_PATH descriptor names, of the expected type (else
// -EIO, and never a symlink); its fstat in st. The identity check makes sure the magic link
// reached that very inode.
static int64_t reopen_checked(int pathfd, int flags, mode_t type, struct stat *st) {
  struct stat was;
  if (fstat(pathfd, &was) < 0) return -errno;
  if (!type_ok(was.st_mode, type)) return -EIO;
  if (S_ISDIR(was.st_mode)) flags = O_RDONLY | O_DIRECTORY | (flags & O_NONBLOCK);
  int fd = open_proc(pathfd, flags | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return -errno;
  if (fstat(fd, st) < 0) return close_with(fd, errno);
  if (st->st_dev != was.st_dev || st->st_ino != was.st_ino) return close_with(fd, EIO);
  return keep_nonblock(fd, flags);
}

// ---- the operations ----

static int64_t lookup_at(job_t *job) {
  struct stat st;
  int fd = open_name(job->fd, job->name, O_PATH, 0);
  if (fd < 0) return -errno;
  // The stat of the descriptor, not of the name: the two agree even if the name is swapped.
  if (fstat(fd, &st) < 0) return close_with(fd, errno);
  fill_stat(job->out, &st);
  return fd;
}

static int64_t open_at(job_t *job) {
  struct stat st;
  int64_t fd = open_checked(job->fd, job->name, job->flags, job->mode, job->type, &st);
  return fd < 0 ? fd : keep_nonblock((int)fd, job->flags);
}

static int64_t link_fd(job_t *job) {
  if (linkat(job->fd, "", job->fd2, job->name2, AT_EMPTY_PATH) == 0) return 0;
  // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (ENOENT without it; EPERM where restricted);
  // the magic link does the same for the owner. It reaches a symlink itself, not its target.
  if (errno != ENOENT && errno != EPERM) return -errno;
  char proc[PROC_FD_BUF];
  proc_fd_path(proc, job->fd);
  return ok_or_errno(linkat(AT_FDCWD, proc, job->fd2, job->name2, AT_SYMLINK_FOLLOW));
}

static int64_t readlink_at(job_t *job) {
  ssize_t n = readlinkat(job->fd, job->name, (char *)job->buf, job->len);
  if (n < 0) return -errno;
  return (size_t)n == job->len ? -ENAMETOOLONG : n;  // a full buffer may have been cut short
}

// access(2) of the inode an O_PATH descriptor names, by this process's effective IDs:
// faccessat2 with AT_EMPTY_PATH (Linux 5.8), or its magic link. The mode is R_OK|W_OK|X_OK bits.
static int64_t access_fd(job_t *job) {
  int mode = (int)(job->mode & 07);
  if (syscall(SYS_faccessat2, job->fd, "", mode, AT_EMPTY_PATH | AT_EACCESS) == 0) return 0;
  if (errno != ENOSYS) return -errno;
  char proc[PROC_FD_BUF];
  proc_fd_path(proc, job->fd);
  return faccessat(AT_FDCWD, proc, mode, AT_EACCESS) == 0 ? 0 : -errno;
}

// chmod of the inode an O_PATH descriptor names: fchmodat2 with AT_EMPTY_PATH (Linux 6.6), or
// its magic link. A symlink has no mode of its own to change.
static int64_t chmod_fd(job_t *job) {
  struct stat st;
  if (fstat(job->fd, &st) < 0) return -errno;
  if (S_ISLNK(st.st_mode)) return -EOPNOTSUPP;
  if (!atomic_load_explicit(&no_fchmodat2, memory_order_relaxed)) {
    if (syscall(SYS_fchmodat2, job->fd, "", job->mode, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOSYS) return -errno;
    atomic_store_explicit(&no_fchmodat2, true, memory_order_relaxed);
  }
  char proc[PROC_FD_BUF];
  proc_fd_path(proc, job->fd);
  return ok_or_errno(chmod(proc, job->mode));
}

// Times of the entry an O_PATH descriptor names, a symlink itself included (AT_EMPTY_PATH:
// Linux 5.8). Before that utimensat refuses the flag (EINVAL); the magic link, followed, then
// reaches the same entry (a symlink, not its target). With AT_SYMLINK_NOFOLLOW it would reach
// only the magic link itself, and change nothing.
static int64_t utimens_fd(job_t *job) {
  if (utimensat(job->fd, "", job->ts, AT_EMPTY_PATH) == 0) return 0;
  if (errno != EINVAL) return -errno;
  char proc[PROC_FD_BUF];
  proc_fd_path(proc, job->fd);
  return ok_or_errno(utimensat(AT_FDCWD, proc, job->ts, 0));
}

// The xattr calls on an O_PATH descriptor: f*xattr refuse O_PATH descriptors, so they go
// through the magic link. A symlink gets the answers for a symlink without user.* xattrs
// (Linux allows none on symlinks): no attribute, an empty list, and EPERM to set one.
static int64_t xattr_fd(job_t *job) {
  struct stat st;
  if (fstat(job->fd, &st) < 0) return -errno;
  bool link = S_ISLNK(st.st_mode);
  char proc[PROC_FD_BUF];
  proc_fd_path(proc, job->fd);
  void *buf = job->len ? job->buf : NULL;  // an empty buffer asks for the size
  switch (job->op) {
  case OP_GETXATTR_FD: return link ? -ENODATA : ok_or_errno(getxattr(proc, job->name, buf, job->len));
  case OP_SETXATTR_FD: return link ? -EPERM : ok_or_errno(setxattr(proc, job->name, job->buf, job->len, job->flags));
  case OP_LISTXATTR_FD: return link ? 0 : ok_or_errno(listxattr(proc, buf, job->len));
  default: return link ? -ENODATA : ok_or_errno(removexattr(proc, job->name));
  }
}

// The entries of a directory (dirfd may be O_PATH), "." and ".." left out, each as d_ino
// (8 bytes, little-endian), d_type, the name's length and the name, into job->data.
static int64_t readdir_fd(job_t *job) {
  int fd = openat(job->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  char raw[32768] __attribute__((aligned(8)));
  size_t used = 0, size = 16384;
  uint8_t *out = malloc(size);
  if (!out) return close_with(fd, ENOMEM);
  for (;;) {
    ssize_t n = getdents64(fd, raw, sizeof raw);
    if (n < 0) {
      free(out);
      return close_with(fd, errno);
    }
    if (n == 0) break;
    for (ssize_t at = 0; at < n;) {
      const struct dirent64 *d = (const struct dirent64 *)(raw + at);
      at += d->d_reclen;
      size_t len = strlen(d->d_name);
      // A name over 255 bytes (a FUSE or network backing can report one) cannot be sealfs's:
      // it is left out rather than cut.
      if (len > NAME_MAX || strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0) continue;
      if (used + DIRENT_HEADER + len > size) {
        uint8_t *bigger = realloc(out, size * 2);
        if (!bigger) {
          free(out);
          return close_with(fd, ENOMEM);
        }
        out = bigger;
        size *= 2;
      }
      uint64_t ino = d->d_ino;
      for (int i = 0; i < 8; i++) out[used + i] = (uint8_t)(ino >> (8 * i));
      out[used + 8] = d->d_type;
      out[used + 9] = (uint8_t)len;
      memcpy(out + used + DIRENT_HEADER, d->d_name, len);
      used += DIRENT_HEADER + len;
    }
  }
  close(fd);
  job->data = out;
  return (int64_t)used;
}

static int64_t read_small_file_at(job_t *job) {
  struct stat st;
  int64_t fd = open_checked(job->fd, job->name, O_RDONLY, 0, S_IFREG, &st);
  if (fd < 0) return fd;
  if ((uint64_t)st.st_size > job->max) return close_with((int)fd, EFBIG);
  uint8_t *data = malloc(st.st_size ? (size_t)st.st_size : 1);
  if (!data) return close_with((int)fd, ENOMEM);
  ssize_t got = pread_full((int)fd, data, (size_t)st.st_size);
  if (got < 0) {
    free(data);
    return close_with((int)fd, errno);
  }
  close((int)fd);
  job->data = data;
  return got;
}

// A new file (O_EXCL) of the given bytes; on any failure after the create the name goes again.
static int64_t write_file_at(job_t *job) {
  int fd = open_name(job->fd, job->name, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY, job->mode);
  if (fd < 0) return -errno;
  int err = 0;
  if (pwrite_full(fd, job->buf, job->len) < 0 || (job->flag && fsync(fd) < 0)) err = errno;
  if (close(fd) < 0 && !err) err = errno;  // a network filesystem may report a failed write here
  if (!err) return 0;
  unlinkat(job->fd, job->name, 0);
  return -err;
}

static int64_t fsync_at(job_t *job) {
  struct stat st;
  int64_t fd = *job->name ? open_checked(job->fd, job->name, O_RDONLY, 0, 0, &st)
                          : ok_or_errno(openat(job->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd < 0) return fd;
  if (fsync((int)fd) < 0) return close_with((int)fd, errno);
  close((int)fd);
  return 0;
}

static int64_t create_with_header_at(job_t *job) {
  int fd = open_name(job->fd, job->name, job->flags | O_CREAT | O_EXCL | O_NOCTTY, job->mode);
  if (fd < 0) return -errno;
  if (pwrite_full(fd, job->buf, job->len) < 0) {
    int err = errno;
    close(fd);
    unlinkat(job->fd, job->name, 0);
    return -err;
  }
  return fd;
}

// reopen as a regular file, then its header (up to len bytes at 0) and its size; with
// `prefetch` (an open for reading) the file's start is asked for with the header.
#define READAHEAD_BYTES (128 * 1024)  // the kernel's default readahead window

static int64_t open_header_fd(job_t *job) {
  struct stat st;
  int64_t fd = reopen_checked(job->fd, job->flags, S_IFREG, &st);
  if (fd < 0) return fd;
  // The header alone would start a readahead of a few pages, and the first READ would then
  // wait for the disk a second time: ask for the file's start (one readahead window) at once.
  if (job->flag && (size_t)st.st_size > job->len) {
    posix_fadvise((int)fd, 0, st.st_size < READAHEAD_BYTES ? st.st_size : READAHEAD_BYTES, POSIX_FADV_WILLNEED);
  }
  ssize_t got = pread_full((int)fd, job->buf, job->len);
  if (got < 0) return close_with((int)fd, errno);
  job->out[0] = (double)got;
  job->out[1] = (double)st.st_size;
  return fd;
}

// unlink of a name that may be a regular file's last link: its header (up to len bytes at 0)
// is read first, so the caller can forget that file's key. Result: the bytes read (0: not such
// a file, or unreadable), or -errno of the unlink.
static int64_t unlink_last_at(job_t *job) {
  ssize_t got = 0;
  struct stat st;
  // Only a regular file's last link that holds data after its header is opened: an empty or
  // header-only file (whose header may be a copy of another file's), a symlink or a link of
  // several has no key to forget, and costs just the unlink.
  int pathfd = open_name(job->fd, job->name, O_PATH, 0);
  if (pathfd >= 0) {
    if (fstat(pathfd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 && (size_t)st.st_size > job->len) {
      int64_t fd = reopen_checked(pathfd, O_RDONLY, S_IFREG, &st);
      if (fd >= 0) {
        got = pread_full((int)fd, job->buf, job->len);
        if (got < 0) got = 0;
        close((int)fd);
      }
    }
    close(pathfd);
  }
  return unlinkat(job->fd, job->name, 0) == 0 ? got : -errno;
}

static int64_t statfs_fd(job_t *job) {
  struct statfs s;
  if (fstatfs(job->fd, &s) < 0) return -errno;
  double *o = job->out;
  o[0] = (double)s.f_bsize;
  o[1] = (double)s.f_frsize;
  o[2] = (double)s.f_blocks;
  o[3] = (double)s.f_bfree;
  o[4] = (double)s.f_bavail;
  o[5] = (double)s.f_files;
  o[6] = (double)s.f_ffree;
  o[7] = (double)s.f_namelen;
  o[8] = (double)(uint32_t)s.f_type;  // a magic number: unsigned, as the tables list them
  o[9] = (double)s.f_flags;
  return 0;
}

static void execute(job_t *job) {
  struct stat st;
  int64_t r;
  if (job->refused) {
    job->result = -job->refused;
    return;
  }
  switch (job->op) {
  case OP_STAT_AT:
    r = ok_or_errno(fstatat(job->fd, job->name, &st, AT_SYMLINK_NOFOLLOW | (*job->name ? 0 : AT_EMPTY_PATH)));
    if (r == 0) fill_stat(job->out, &st);
    break;
  case OP_LOOKUP_AT: r = lookup_at(job); break;
  case OP_OPEN_AT: r = open_at(job); break;
  case OP_REOPEN: r = reopen_checked(job->fd, job->flags, job->type, &st); break;
  case OP_MKDIR_AT: r = ok_or_errno(mkdirat(job->fd, job->name, job->mode)); break;
  case OP_UNLINK_AT: r = ok_or_errno(unlinkat(job->fd, job->name, job->flags)); break;
  case OP_RENAME_AT: r = ok_or_errno(renameat2(job->fd, job->name, job->fd2, job->name2, (unsigned)job->flags)); break;
  case OP_SYMLINK_AT: r = ok_or_errno(symlinkat(job->path, job->fd, job->name)); break;
  case OP_MKNOD_AT: r = ok_or_errno(mknodat(job->fd, job->name, job->mode, job->dev)); break;
  case OP_LINK_FD: r = link_fd(job); break;
  case OP_READLINK_AT: r = readlink_at(job); break;
  case OP_CHMOD_FD: r = chmod_fd(job); break;
  case OP_ACCESS_FD: r = access_fd(job); break;
  case OP_CHOWN_FD: r = ok_or_errno(fchownat(job->fd, "", job->uid, job->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)); break;
  case OP_UTIMENS_FD: r = utimens_fd(job); break;
  case OP_GETXATTR_FD: case OP_SETXATTR_FD: case OP_LISTXATTR_FD: case OP_REMOVEXATTR_FD: r = xattr_fd(job); break;
  case OP_READDIR_FD: r = readdir_fd(job); break;
  case OP_READ_SMALL_FILE_AT: r = read_small_file_at(job); break;
  case OP_WRITE_FILE_AT: r = write_file_at(job); break;
  case OP_FSYNC_AT: r = fsync_at(job); break;
  case OP_FSYNC_FD: r = ok_or_errno(job->flag ? fdatasync(job->fd) : fsync(job->fd)); break;
  // Linux frees the descriptor even when close reports an error: the caller must not retry.
  case OP_CLOSE_FD: r = ok_or_errno(close(job->fd)); break;
  case OP_CREATE_WITH_HEADER_AT: r = create_with_header_at(job); break;
  case OP_OPEN_HEADER_FD: r = open_header_fd(job); break;
  case OP_UNLINK_LAST_AT: r = unlink_last_at(job); break;
  case OP_STATFS_FD: r = statfs_fd(job); break;
  case OP_OPEN_PATH: r = ok_or_errno(open(job->path, job->flags | O_CLOEXEC | O_NOCTTY, 0)); break;
  }
  job->result = r;
}

// ---- arguments ----

static bool type_error(napi_env env, const op_info *op, const char *what) {
  char msg[128];
  snprintf(msg, sizeof msg, "backing.%s: %s", op->name, what);
  napi_throw_type_error(env, NULL, msg);
  return false;
}

// A JS number that is an integer in [min, max] (both within +-2^53): 1; another number: 0;
// not a number: -1.
static int get_int(napi_env env, napi_value v, double min, double max, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return -1;
  if (!(d >= min && d <= max) || d != (double)(int64_t)d) return 0;  // NaN fails the first test
  *out = (int64_t)d;
  return 1;
}

static bool get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is = false;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return false;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

// One path component into out (NUL-terminated): 0, or the errno to refuse it with.
static int take_name(const uint8_t *data, size_t len, bool empty_ok, char *out) {
  if (len == 0) {
    out[0] = 0;
    return empty_ok ? 0 : EINVAL;
  }
  if (len > NAME_MAX) return ENAMETOOLONG;
  if (memchr(data, '/', len) || memchr(data, 0, len)) return EINVAL;
  if (data[0] == '.' && (len == 1 || (len == 2 && data[1] == '.'))) return EINVAL;
  memcpy(out, data, len);
  out[len] = 0;
  return 0;
}

// Bytes without a NUL, 1..max, into out (NUL-terminated): 0, or the errno to refuse them with.
static int take_bytes(const uint8_t *data, size_t len, size_t max, int too_long, char *out) {
  if (len == 0 || memchr(data, 0, len)) return EINVAL;
  if (len > max) return too_long;
  memcpy(out, data, len);
  out[len] = 0;
  return 0;
}

static size_t arg_count(const char *args) {
  size_t n = strlen(args);
  for (const char *k = args; *k; k++) n += *k == 'a';
  return n;
}

// The op's arguments into the job; the Buffer, Float64Array and callback values (if any) in
// held[0..2]. False with a TypeError pending for a value of the wrong JS type or count.
static bool parse_args(napi_env env, napi_callback_info info, job_t *job, napi_value held[3]) {
  size_t argc = MAX_ARGS;
  napi_value argv[MAX_ARGS];
  void *data;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok) return false;
  job->op = (op_t)(intptr_t)data;
  const op_info *op = &OPS[job->op];
  size_t want = arg_count(op->args);
  if (argc == want + 1) {
    napi_valuetype t;
    if (napi_typeof(env, argv[want], &t) != napi_ok || t != napi_function) return type_error(env, op, "the last argument must be a callback");
    held[2] = argv[want];
  } else if (argc != want) {
    return type_error(env, op, "wrong number of arguments");
  }
  int times = 0;
  size_t i = 0;
  for (const char *k = op->args; *k; k++) {
    napi_value v = argv[i++];
    int64_t n = 0;
    int got = 1, refuse = EINVAL;  // got: as get_int; refuse: the errno for a value out of range
    uint8_t *bytes;
    size_t len;
    switch (*k) {
    case 'd': case 'D':
      got = get_int(env, v, 0, INT32_MAX, &n);
      refuse = EBADF;
      *(*k == 'd' ? &job->fd : &job->fd2) = (int)n;
      break;
    case 'n': case 'e': case 'N': case 'x': case 'p':
      if (!get_bytes(env, v, &bytes, &len)) return type_error(env, op, "names and paths must be Buffers");
      refuse = *k == 'x' ? take_bytes(bytes, len, NAME_MAX, ERANGE, job->name)
             : *k == 'p' ? take_bytes(bytes, len, PATH_BUF - 1, ENAMETOOLONG, job->path)
             : take_name(bytes, len, *k == 'e', *k == 'N' ? job->name2 : job->name);
      got = refuse == 0;
      break;
    case 'f': case 'U': case 'W': case 'X':
      got = get_int(env, v, INT32_MIN, INT32_MAX, &n);
      if (got > 0 && *k == 'U') got = n == 0 || n == AT_REMOVEDIR;
      if (got > 0 && *k == 'W') got = n == 0 || n == RENAME_NOREPLACE || n == RENAME_EXCHANGE;
      if (got > 0 && *k == 'X') got = n == 0 || n == XATTR_CREATE || n == XATTR_REPLACE;
      job->flags = (int)n;
      break;
    case 'm': case 'M':
      got = get_int(env, v, 0, S_IFMT | 07777, &n);
      job->mode = (mode_t)(*k == 'm' ? n & 07777 : n);
      break;
    case 't':
      got = get_int(env, v, 0, S_IFMT, &n);
      if (got > 0) got = n == 0 || n == S_IFREG || n == S_IFDIR;
      job->type = (mode_t)n;
      break;
    case 'r':
      got = get_int(env, v, 0, UINT32_MAX, &n);
      job->dev = (dev_t)n;
      break;
    case 'u': case 'g':
      got = get_int(env, v, -1, UINT32_MAX, &n);
      if (*k == 'u') job->uid = (uid_t)(uint32_t)n;  // -1 becomes (uid_t)-1: unchanged
      else job->gid = (gid_t)(uint32_t)n;
      break;
    case 'a': {
      int64_t nsec = 0;
      got = get_int(env, v, -9007199254740992.0, 9007199254740992.0, &n);
      int got_nsec = get_int(env, argv[i++], 0, UTIME_NOW, &nsec);
      if (got_nsec < 0) got = -1;
      else if (got > 0) got = got_nsec && (nsec < 1000000000 || nsec == UTIME_NOW || nsec == UTIME_OMIT);
      job->ts[times].tv_sec = (time_t)n;
      job->ts[times++].tv_nsec = (long)nsec;
      break;
    }
    case 'l':
      got = get_int(env, v, 0, INT32_MAX, &n);
      job->max = (size_t)n;
      break;
    case 'z':
      if (napi_get_value_bool(env, v, &job->flag) != napi_ok) got = -1;
      break;
    case 'b':
      if (!get_bytes(env, v, &job->buf, &job->len)) return type_error(env, op, "data must be a Buffer");
      held[0] = v;
      break;
    case 's': {
      napi_typedarray_type type;
      size_t length;
      bool is = false;
      napi_is_typedarray(env, v, &is);
      if (!is || napi_get_typedarray_info(env, v, &type, &length, (void **)&job->out, NULL, NULL) != napi_ok ||
          type != napi_float64_array || length < op->out_len)
        return type_error(env, op, "out must be a Float64Array long enough");
      held[1] = v;
      break;
    }
    }
    if (got < 0) return type_error(env, op, "numeric arguments must be numbers, flags booleans");
    if (got == 0 && !job->refused) job->refused = refuse;
  }
  return true;
}

// ---- the JS side ----

static napi_value make_result(napi_env env, job_t *job) {
  napi_value v;
  if (OPS[job->op].makes_buffer && job->result >= 0) {
    void *copy;
    napi_create_buffer_copy(env, (size_t)job->result, job->data, &copy, &v);
  } else {
    napi_create_int64(env, job->result, &v);
  }
  free(job->data);
  job->data = NULL;
  return v;
}

static void on_pool(napi_env env, void *data) {
  execute(data);
}

static void on_done(napi_env env, napi_status status, void *data) {
  job_t *job = data;
  napi_value cb, global, argv[2], ret;
  size_t argc = 1;
  if (status != napi_ok) job->result = -EIO;  // not run (cancelled): no descriptor to leak
  argv[0] = make_result(env, job);
  if (OPS[job->op].makes_buffer) {
    if (job->result >= 0) {
      argv[1] = argv[0];
      napi_create_int64(env, job->result, &argv[0]);
    } else {
      napi_get_undefined(env, &argv[1]);
    }
    argc = 2;
  }
  napi_get_reference_value(env, job->callback, &cb);
  napi_get_global(env, &global);
  if (job->buf_ref) napi_delete_reference(env, job->buf_ref);
  if (job->out_ref) napi_delete_reference(env, job->out_ref);
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, cb, argc, argv, &ret);
}

// Every function: synchronous without a callback, one pool job with one.
static napi_value call(napi_env env, napi_callback_info info) {
  job_t *job = calloc(1, sizeof *job);
  napi_value held[3] = {NULL, NULL, NULL};
  if (!job) {
    napi_throw_error(env, NULL, "backing: out of memory");
    return NULL;
  }
  if (!parse_args(env, info, job, held)) {
    free(job);
    return NULL;
  }
  if (!held[2]) {
    execute(job);
    napi_value v = make_result(env, job);
    free(job);
    return v;
  }
  // The Buffer and the Float64Array are used on the pool thread: held until the job is done.
  napi_value name;
  napi_create_string_utf8(env, OPS[job->op].name, NAPI_AUTO_LENGTH, &name);
  if ((held[0] && napi_create_reference(env, held[0], 1, &job->buf_ref) != napi_ok) ||
      (held[1] && napi_create_reference(env, held[1], 1, &job->out_ref) != napi_ok) ||
      napi_create_reference(env, held[2], 1, &job->callback) != napi_ok ||
      napi_create_async_work(env, NULL, name, on_pool, on_done, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    if (job->buf_ref) napi_delete_reference(env, job->buf_ref);
    if (job->out_ref) napi_delete_reference(env, job->out_ref);
    if (job->callback) napi_delete_reference(env, job->callback);
    if (job->work) napi_delete_async_work(env, job->work);
    free(job);
    napi_throw_error(env, NULL, "backing: could not queue the job");
  }
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  for (intptr_t op = 0; op < OP_COUNT; op++) {
    napi_value fn;
    napi_create_function(env, OPS[op].name, NAPI_AUTO_LENGTH, call, (void *)op, &fn);
    napi_set_named_property(env, exports, OPS[op].name, fn);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
