// Syscalls that node:fs does not expose (or not with the precision sealfs needs).
// Synchronous: none of them is on the data path. The three *Async calls at the end put a
// file operation's several syscalls into one libuv pool job: each hand-off to the pool
// and back costs more than the syscalls themselves.
// utimensat: nanosecond times, UTIME_NOW and UTIME_OMIT, and never following a
// symlink in the cipher dir (AT_SYMLINK_NOFOLLOW).

#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PATH_BUF 4097
#define NAME_BUF 256

static int get_string(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) return 0;
  return len < size - 1;
}

static napi_value int_result(napi_env env, int rc) {
  napi_value res;
  napi_create_int32(env, rc == 0 ? 0 : -errno, &res);
  return res;
}

// A getter's result: a Buffer copy of the n bytes it produced, or its negative errno.
static napi_value bytes_result(napi_env env, ssize_t n, const char *data) {
  napi_value res;
  if (n < 0) { napi_create_int32(env, -errno, &res); return res; }
  void *copy;
  napi_create_buffer_copy(env, (size_t)n, data, &copy, &res);
  return res;
}

static napi_value bad_args(napi_env env, const char *what) {
  napi_throw_type_error(env, NULL, what);
  return NULL;
}

// mknod(path, mode, dev): FIFOs, sockets and device nodes.
static napi_value Mknod(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_BUF]; uint32_t mode, dev;
  if (argc < 3 || !get_string(env, argv[0], path, sizeof path) ||
      napi_get_value_uint32(env, argv[1], &mode) != napi_ok || napi_get_value_uint32(env, argv[2], &dev) != napi_ok)
    return bad_args(env, "mknod: bad arguments");
  return int_result(env, mknod(path, (mode_t)mode, (dev_t)dev));
}

// lsetxattr(path, name, value, flags)
static napi_value Lsetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_BUF], name[NAME_BUF]; void *value; size_t len; int32_t flags; bool is_buf = false;
  if (argc < 4 || !get_string(env, argv[0], path, sizeof path) || !get_string(env, argv[1], name, sizeof name) ||
      napi_is_buffer(env, argv[2], &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, argv[2], &value, &len) != napi_ok || napi_get_value_int32(env, argv[3], &flags) != napi_ok)
    return bad_args(env, "lsetxattr: bad arguments");
  return int_result(env, lsetxattr(path, name, value, len, flags));
}

// lgetxattr(path, name) -> Buffer, or a negative errno
static napi_value Lgetxattr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_BUF], name[NAME_BUF];
  if (argc < 2 || !get_string(env, argv[0], path, sizeof path) || !get_string(env, argv[1], name, sizeof name))
    return bad_args(env, "lgetxattr: bad arguments");
  static char value[65536];
  return bytes_result(env, lgetxattr(path, name, value, sizeof value), value);
}

// llistxattr(path) -> Buffer of NUL-terminated names, or a negative errno
static napi_value Llistxattr(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_BUF];
  if (argc < 1 || !get_string(env, argv[0], path, sizeof path)) return bad_args(env, "llistxattr: bad arguments");
  static char list[65536];
  return bytes_result(env, llistxattr(path, list, sizeof list), list);
}

// lremovexattr(path, name)
static napi_value Lremovexattr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_BUF], name[NAME_BUF];
  if (argc < 2 || !get_string(env, argv[0], path, sizeof path) || !get_string(env, argv[1], name, sizeof name))
    return bad_args(env, "lremovexattr: bad arguments");
  return int_result(env, lremovexattr(path, name));
}

static int get_times(napi_env env, napi_value *argv, struct timespec ts[2]) {
  double as, ms; uint32_t an, mn;
  if (napi_get_value_double(env, argv[0], &as) != napi_ok || napi_get_value_uint32(env, argv[1], &an) != napi_ok ||
      napi_get_value_double(env, argv[2], &ms) != napi_ok || napi_get_value_uint32(env, argv[3], &mn) != napi_ok) return 0;
  ts[0].tv_sec = (time_t)as; ts[0].tv_nsec = (long)an;
  ts[1].tv_sec = (time_t)ms; ts[1].tv_nsec = (long)mn;
  return 1;
}

static napi_value Utimensat(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[PATH_BUF]; struct timespec ts[2];
  if (argc < 5 || !get_string(env, argv[0], path, sizeof path) || !get_times(env, argv + 1, ts))
    return bad_args(env, "utimensat: bad arguments");
  return int_result(env, utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW));
}

// futimens(fd, ...): the same times through an open descriptor (the file may have no name left).
static napi_value Futimens(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd; struct timespec ts[2];
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || !get_times(env, argv + 1, ts))
    return bad_args(env, "futimens: bad arguments");
  return int_result(env, futimens(fd, ts));
}

// renameat2(from, to, flags): RENAME_NOREPLACE and RENAME_EXCHANGE on the backing filesystem
// (EINVAL where it has neither, as the kernel reports it).
static napi_value Renameat2(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char from[PATH_BUF], to[PATH_BUF]; uint32_t flags;
  if (argc < 3 || !get_string(env, argv[0], from, sizeof from) || !get_string(env, argv[1], to, sizeof to) ||
      napi_get_value_uint32(env, argv[2], &flags) != napi_ok)
    return bad_args(env, "renameat2: bad arguments");
  return int_result(env, renameat2(AT_FDCWD, from, AT_FDCWD, to, flags));
}

// flock(fd, operation): the volume lock (released by the kernel when the daemon dies).
static napi_value Flock(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd, op;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &op) != napi_ok)
    return bad_args(env, "flock: bad arguments");
  return int_result(env, flock(fd, op));
}

// sendDatagram(socketPath, message): one AF_UNIX datagram, for sd_notify (NOTIFY_SOCKET,
// which may name an abstract socket with a leading '@') and for syslog (/dev/log).
static napi_value SendDatagram(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1]; void *msg; size_t len; bool is_buf = false;
  if (argc < 2 || !get_string(env, argv[0], path, sizeof path) || napi_is_buffer(env, argv[1], &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, argv[1], &msg, &len) != napi_ok)
    return bad_args(env, "sendDatagram: bad arguments");
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t plen = strlen(path);
  if (plen == 0 || plen >= sizeof addr.sun_path) return int_result(env, (errno = EINVAL, -1));
  memcpy(addr.sun_path, path, plen);
  if (path[0] == '@') addr.sun_path[0] = 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return int_result(env, -1);
  ssize_t n = sendto(fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen));
  int saved = errno;
  close(fd);
  errno = saved;
  return int_result(env, n < 0 ? -1 : 0);
}

// ---- one pool job for several syscalls ----

typedef struct {
  int kind;  // JOB_UNLINK_LAST, JOB_CREATE or JOB_OPEN_HEADER
  char path[PATH_BUF];
  int flags;
  mode_t mode;
  uint8_t *buf;
  size_t len;
  int64_t result, bytes, size;
  napi_async_work work;
  napi_ref buf_ref, callback;
} job_t;

#define JOB_UNLINK_LAST 1
#define JOB_CREATE 2
#define JOB_OPEN_HEADER 3

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

// unlink: when the entry is a regular file's last link (with at least len bytes), its first
// len bytes (the header) are read into buf first. Result: bytes read (0: not such a file, or
// unreadable), or -errno of the unlink.
static void unlink_last(job_t *job) {
  ssize_t got = 0;
  struct stat st;
  if (lstat(job->path, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 && (size_t)st.st_size >= job->len) {
    int fd = open(job->path, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
    if (fd < 0 && errno == EPERM) fd = open(job->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      got = pread_full(fd, job->buf, job->len);
      if (got < 0) got = 0;
      close(fd);
    }
  }
  job->result = unlink(job->path) == 0 ? got : -errno;
}

// open(path, flags, mode) of a new file, then its header (buf) written at 0. Result: the
// descriptor, or -errno (after a failed write the new file is removed again).
static void create_with_header(job_t *job) {
  int fd = open(job->path, job->flags | O_CLOEXEC, job->mode);
  if (fd < 0) { job->result = -errno; return; }
  if (pwrite_full(fd, job->buf, job->len) < 0) {
    int saved = errno;
    close(fd);
    unlink(job->path);
    job->result = -saved;
    return;
  }
  job->result = fd;
}

// open(path, flags) of an existing file, then up to len bytes of its start (the header) read
// into buf and its size taken. Result: the descriptor (bytes: how many were read; size), or
// -errno. With O_NOATIME, a file the daemon does not own (EPERM) is opened without it.
static void open_header(job_t *job) {
  int fd = open(job->path, job->flags | O_CLOEXEC);
  if (fd < 0 && errno == EPERM && (job->flags & O_NOATIME)) fd = open(job->path, (job->flags & ~O_NOATIME) | O_CLOEXEC);
  if (fd < 0) { job->result = -errno; return; }
  struct stat st;
  ssize_t got = pread_full(fd, job->buf, job->len);
  if (got < 0 || fstat(fd, &st) < 0) {
    int saved = errno;
    close(fd);
    job->result = -saved;
    return;
  }
  job->bytes = got;
  job->size = st.st_size;
  job->result = fd;
}

static void job_execute(napi_env env, void *data) {
  job_t *job = data;
  if (job->kind == JOB_UNLINK_LAST) unlink_last(job);
  else if (job->kind == JOB_CREATE) create_with_header(job);
  else open_header(job);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  job_t *job = data;
  napi_value cb, global, argv[3], ret;
  size_t argc = job->kind == JOB_OPEN_HEADER ? 3 : 1;
  napi_get_reference_value(env, job->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int64(env, status == napi_ok ? job->result : -EIO, &argv[0]);
  napi_create_int64(env, job->bytes, &argv[1]);
  napi_create_int64(env, job->size, &argv[2]);
  napi_delete_reference(env, job->buf_ref);
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, cb, argc, argv, &ret);
}

static napi_value queue_job(napi_env env, job_t *job, napi_value buf, napi_value cb) {
  napi_value name;
  napi_create_reference(env, buf, 1, &job->buf_ref);
  napi_create_reference(env, cb, 1, &job->callback);
  napi_create_string_utf8(env, "sealfs.posix", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, job_execute, job_complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return NULL;
}

static int get_buffer(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

// Arguments: path, then flags (int) and mode (uint) where the kind has them, then the
// buffer and the callback. Queues the job, or throws `bad` as a TypeError.
static napi_value queue_from_args(napi_env env, napi_callback_info info, int kind, const char *bad) {
  size_t want = kind == JOB_CREATE ? 5 : kind == JOB_OPEN_HEADER ? 4 : 3;
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  job_t *job = calloc(1, sizeof(job_t));
  if (!job) return bad_args(env, bad);
  job->kind = kind;
  size_t at = 1;
  int32_t flags = 0; uint32_t mode = 0;
  int ok = argc >= want && get_string(env, argv[0], job->path, sizeof job->path);
  if (ok && kind != JOB_UNLINK_LAST) ok = napi_get_value_int32(env, argv[at++], &flags) == napi_ok;
  if (ok && kind == JOB_CREATE) ok = napi_get_value_uint32(env, argv[at++], &mode) == napi_ok;
  if (!ok || !get_buffer(env, argv[at], &job->buf, &job->len)) {
    free(job);
    return bad_args(env, bad);
  }
  job->flags = flags;
  job->mode = (mode_t)mode;
  return queue_job(env, job, argv[at], argv[at + 1]);
}

// unlinkLastAsync(path, header, cb)
static napi_value UnlinkLastAsync(napi_env env, napi_callback_info info) {
  return queue_from_args(env, info, JOB_UNLINK_LAST, "unlinkLastAsync: bad arguments");
}

// createAsync(path, flags, mode, header, cb)
static napi_value CreateAsync(napi_env env, napi_callback_info info) {
  return queue_from_args(env, info, JOB_CREATE, "createAsync: bad arguments");
}

// openHeaderAsync(path, flags, header, cb(fd, bytesRead, size))
static napi_value OpenHeaderAsync(napi_env env, napi_callback_info info) {
  return queue_from_args(env, info, JOB_OPEN_HEADER, "openHeaderAsync: bad arguments");
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"utimensat", NULL, Utimensat, NULL, NULL, NULL, napi_default, NULL},
    {"futimens", NULL, Futimens, NULL, NULL, NULL, napi_default, NULL},
    {"renameat2", NULL, Renameat2, NULL, NULL, NULL, napi_default, NULL},
    {"mknod", NULL, Mknod, NULL, NULL, NULL, napi_default, NULL},
    {"lsetxattr", NULL, Lsetxattr, NULL, NULL, NULL, napi_default, NULL},
    {"lgetxattr", NULL, Lgetxattr, NULL, NULL, NULL, napi_default, NULL},
    {"llistxattr", NULL, Llistxattr, NULL, NULL, NULL, napi_default, NULL},
    {"lremovexattr", NULL, Lremovexattr, NULL, NULL, NULL, napi_default, NULL},
    {"flock", NULL, Flock, NULL, NULL, NULL, napi_default, NULL},
    {"sendDatagram", NULL, SendDatagram, NULL, NULL, NULL, napi_default, NULL},
    {"unlinkLastAsync", NULL, UnlinkLastAsync, NULL, NULL, NULL, napi_default, NULL},
    {"createAsync", NULL, CreateAsync, NULL, NULL, NULL, napi_default, NULL},
    {"openHeaderAsync", NULL, OpenHeaderAsync, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
