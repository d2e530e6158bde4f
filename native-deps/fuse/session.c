// sealfs's FUSE binding: a libfuse 3 low-level session driven from Node's event loop.
//
// The session's /dev/fuse descriptor is nonblocking and watched with uv_poll; when it is
// readable, requests are received and processed here, on the JS thread, and each low-level
// callback calls its JS handler at once (no thread hand-off: a request costs one wake-up).
// A handler replies now (fast local syscalls) or later (pool jobs: crypto, slow backings)
// by the request's id. This file holds no policy: the inode table, names and crypto live
// in TypeScript (src/filesystem/).
//
// Threading rule: everything here runs on the JS thread, but for one exception: entry
// invalidations (invalEntries) are written to /dev/fuse from a libuv pool thread, because
// the kernel takes the parent directory's lock for them, which a request waiting for this
// very thread may hold. That thread touches only its own copy of the entries, the session's
// fuse_session and the stopping flag; while one is in flight (s->notifying) the session is
// not unmounted, destroyed or closed: an end asked for meanwhile fails requests here until
// it returns (s->draining).
// libfuse never runs a thread of its own (no fuse_session_loop*), so the pending table
// needs no lock.
//
// Ids: a request waiting for its reply is a slot in the pending table; its id carries the
// slot and a generation, so a late, repeated or made-up id from JS is refused and can
// never reach a freed request.
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_WRITE (1u << 20)
#define PATH_MAX_BYTES 4096

enum {
  OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR, OP_UNLINK,
  OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE, OP_RELEASE, OP_FSYNC,
  OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_FSYNCDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR,
  OP_LISTXATTR, OP_REMOVEXATTR, OP_CREATE, OP_ACCESS, OP_EXITED, OP_COUNT
};
static const char *op_names[OP_COUNT] = {
  "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink",
  "rmdir", "symlink", "rename", "link", "open", "read", "write", "release", "fsync",
  "opendir", "readdir", "releasedir", "fsyncdir", "statfs", "setxattr", "getxattr",
  "listxattr", "removexattr", "create", "access", "exited"
};

typedef struct Session {
  struct fuse_session *se;
  napi_env env;
  napi_ref handlers[OP_COUNT];
  napi_async_context async;
  napi_ref self;          // the JS object of this session, receiver of handler calls
  uv_poll_t poll;
  struct fuse_buf buf;
  int polling;
  int mounted;
  int destroyed;
  int dispatching;        // inside fuse_session_process_buf: ending now would free the session under it
  int end_requested;      // 0, or 1 (end) / 2 (unmount and end) once dispatching is over
  uint32_t max_readahead;
  uint32_t pending;       // requests handed to JS and not answered yet
  long spin_ns;           // how long to keep asking /dev/fuse after the last request (0: not at all)
  int answered_here;      // the last request was answered during its dispatch (no pool job pending)
  uint32_t notifying;     // invalEntries jobs on the pool: the session and its descriptor must outlive them
  atomic_int stopping;    // the session is ending: a job sends no more invalidations
  int draining;           // ended while a job ran: requests are failed here until it returns
  int drain_unmount;      // ... and then the session is unmounted (1) or just ended (0)
} Session;

// ------------------------------------------------------------------ pending requests

#define SLOT_BITS 20
#define MAX_SLOTS (1u << SLOT_BITS)
typedef struct { fuse_req_t req; Session *s; uint32_t gen; int next_free; } Slot;
#define SLOT_SPAN 1048576.0  // 2^SLOT_BITS
static Slot *slots;
static uint32_t slot_count, slot_cap;
static int free_head = -1;

static int64_t pending_add(Session *s, fuse_req_t req) {
  int i;
  if (free_head >= 0) {
    i = free_head;
    free_head = slots[i].next_free;
  } else {
    if (slot_count == slot_cap) {
      if (slot_cap == MAX_SLOTS) return -1;
      uint32_t cap = slot_cap == 0 ? 256 : slot_cap * 2;
      Slot *grown = realloc(slots, cap * sizeof *slots);
      if (grown == NULL) return -1;
      memset(grown + slot_cap, 0, (cap - slot_cap) * sizeof *slots);
      slots = grown;
      slot_cap = cap;
    }
    i = (int)slot_count++;
  }
  slots[i].req = req;
  slots[i].s = s;
  s->pending++;
  // A 32-bit generation per slot: a slot's id comes back only after 2^32 reuses.
  slots[i].gen++;
  return ((int64_t)slots[i].gen << SLOT_BITS) | i;
}

static void pending_free(uint32_t i) {
  if (slots[i].s != NULL) slots[i].s->pending--;
  slots[i].req = NULL;
  slots[i].s = NULL;
  slots[i].next_free = free_head;
  free_head = (int)i;
}

// The request behind an id, taken out of the table (NULL: unknown, stale or answered).
static fuse_req_t pending_take(double id, Session **owner) {
  if (!(id >= 0 && id < 4294967296.0 * SLOT_SPAN) || id != (double)(int64_t)id) return NULL;
  int64_t v = (int64_t)id;
  uint32_t i = (uint32_t)(v & (MAX_SLOTS - 1)), gen = (uint32_t)(v >> SLOT_BITS);
  if (i >= slot_count || slots[i].req == NULL || slots[i].gen != gen) return NULL;
  fuse_req_t req = slots[i].req;
  if (owner != NULL) *owner = slots[i].s;
  pending_free(i);
  return req;
}

// ------------------------------------------------------------------ calling JS

static Session *session_of(fuse_req_t req) { return fuse_req_userdata(req); }

// Calls handler `op` with argv (argv[0] is left for the id). Returns 0, or -1 if the
// request could not be handed to JS (it has then been answered with an error here).
static void call_handler(Session *s, int op, fuse_req_t req, napi_value *argv, size_t argc) {
  napi_env env = s->env;
  if (s->draining) {  // JS has ended the session: nothing reaches it any more
    if (req != NULL) fuse_reply_err(req, EIO);
    return;
  }
  if (req != NULL) {
    int64_t id = pending_add(s, req);
    if (id < 0) { fuse_reply_err(req, EAGAIN); return; }
    napi_create_double(env, (double)id, &argv[0]);
  }
  napi_value fn, recv, result;
  if (napi_get_reference_value(env, s->handlers[op], &fn) != napi_ok || fn == NULL ||
      napi_get_reference_value(env, s->self, &recv) != napi_ok || recv == NULL) goto failed;
  // make_callback: the microtasks a handler queues (its awaits) run when it returns.
  if (napi_make_callback(env, s->async, recv, fn, argc, argv, &result) == napi_ok) return;
  // A handler never throws (src/filesystem/requests.ts catches everything); if one did,
  // the request still gets an answer and the exception is not left pending.
  napi_value exc;
  napi_get_and_clear_last_exception(env, &exc);
failed:
  if (req != NULL) {
    double id;
    napi_get_value_double(env, argv[0], &id);
    fuse_req_t again = pending_take(id, NULL);
    if (again != NULL) fuse_reply_err(again, EIO);
  }
}

static napi_value num(napi_env env, double v) { napi_value r; napi_create_double(env, v, &r); return r; }
static napi_value bytes(napi_env env, const void *data, size_t len) {
  napi_value r; void *copy;
  if (napi_create_buffer_copy(env, len, data, &copy, &r) != napi_ok) napi_get_null(env, &r);
  return r;
}
static napi_value name_buf(napi_env env, const char *name) { return bytes(env, name, strlen(name)); }

// ------------------------------------------------------------------ low-level callbacks

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  Session *s = userdata;
  conn->max_write = MAX_WRITE;
  conn->max_readahead = s->max_readahead;
  // Every change comes through this mount (sealfs.lock), so the kernel need not compare
  // mtimes to drop cached pages; whether pages stay cached is decided per open (keep_cache).
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // The kernel applies the caller's umask before it sends a mode.
  conn->want &= ~FUSE_CAP_DONT_MASK;
  // The kernel clears set-user-ID and set-group-ID bits on write, truncate and chown itself
  // (libfuse 3.14 asks to leave it to the filesystem, and a root daemon's writes would keep them).
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name);
  call_handler(s, OP_LOOKUP, req, a, 3);
}

static void forget_one(Session *s, fuse_ino_t ino, uint64_t n) {
  napi_value a[3];
  napi_get_undefined(s->env, &a[0]);
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)n);
  call_handler(s, OP_FORGET, NULL, a, 3);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Session *s = session_of(req);
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  forget_one(s, ino, nlookup);
  napi_close_handle_scope(s->env, scope);
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  Session *s = session_of(req);
  for (size_t i = 0; i < count; i++) {
    napi_handle_scope scope;
    napi_open_handle_scope(s->env, &scope);
    forget_one(s, forgets[i].ino, forgets[i].nlookup);
    napi_close_handle_scope(s->env, scope);
  }
  fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, fi != NULL ? (double)fi->fh : -1);
  call_handler(s, OP_GETATTR, req, a, 3);
}

// setattr(id, ino, toSet, fh or -1, mode, uid, gid, size, atimeSec, atimeNsec, mtimeSec, mtimeNsec)
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_env env = s->env; napi_value a[12];
  a[1] = num(env, (double)ino); a[2] = num(env, to_set); a[3] = num(env, fi != NULL ? (double)fi->fh : -1);
  a[4] = num(env, attr->st_mode); a[5] = num(env, attr->st_uid); a[6] = num(env, attr->st_gid);
  a[7] = num(env, (double)attr->st_size);
  a[8] = num(env, (double)attr->st_atim.tv_sec); a[9] = num(env, (double)attr->st_atim.tv_nsec);
  a[10] = num(env, (double)attr->st_mtim.tv_sec); a[11] = num(env, (double)attr->st_mtim.tv_nsec);
  call_handler(s, OP_SETATTR, req, a, 12);
}

// Sent only without default_permissions (a mount without allow_other), for access(2) and chdir.
static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, mask);
  call_handler(s, OP_ACCESS, req, a, 3);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  Session *s = session_of(req); napi_value a[2];
  a[1] = num(s->env, (double)ino);
  call_handler(s, OP_READLINK, req, a, 2);
}

// Entry-making requests carry the caller's uid and gid: a root daemon gives new entries to them.
static void caller_args(Session *s, fuse_req_t req, napi_value *a) {
  const struct fuse_ctx *ctx = fuse_req_ctx(req);
  a[0] = num(s->env, ctx->uid);
  a[1] = num(s->env, ctx->gid);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  Session *s = session_of(req); napi_value a[7];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name); a[3] = num(s->env, mode); a[4] = num(s->env, (double)rdev);
  caller_args(s, req, &a[5]);
  call_handler(s, OP_MKNOD, req, a, 7);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  Session *s = session_of(req); napi_value a[6];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name); a[3] = num(s->env, mode);
  caller_args(s, req, &a[4]);
  call_handler(s, OP_MKDIR, req, a, 6);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name);
  call_handler(s, OP_UNLINK, req, a, 3);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name);
  call_handler(s, OP_RMDIR, req, a, 3);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  Session *s = session_of(req); napi_value a[6];
  a[1] = name_buf(s->env, link); a[2] = num(s->env, (double)parent); a[3] = name_buf(s->env, name);
  caller_args(s, req, &a[4]);
  call_handler(s, OP_SYMLINK, req, a, 6);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  Session *s = session_of(req); napi_value a[6];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name);
  a[3] = num(s->env, (double)newparent); a[4] = name_buf(s->env, newname); a[5] = num(s->env, flags);
  call_handler(s, OP_RENAME, req, a, 6);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  Session *s = session_of(req); napi_value a[4];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)newparent); a[3] = name_buf(s->env, newname);
  call_handler(s, OP_LINK, req, a, 4);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, fi->flags);
  call_handler(s, OP_OPEN, req, a, 3);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[5];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh); a[3] = num(s->env, (double)size); a[4] = num(s->env, (double)off);
  call_handler(s, OP_READ, req, a, 5);
}

// The data lives in the receive buffer, which the next request reuses. A small write reaches
// JS as a copy; a large one as a view of the receive buffer, valid only during the handler's
// call (a[5] true), which copies it into a buffer it reuses: a fresh 1 MiB buffer per request
// cost 256 page faults and half the daemon's CPU in a dd write. The view is detached when the
// handler returns, so a reference kept by mistake reads as empty, never as a later request.
#define WRITE_VIEW_BYTES (64 * 1024)
static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[6];
  bool borrowed = size > WRITE_VIEW_BYTES;
  if (!borrowed || napi_create_external_buffer(s->env, size, (void *)buf, NULL, NULL, &a[3]) != napi_ok) {
    borrowed = false;
    a[3] = bytes(s->env, buf, size);
  }
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh); a[4] = num(s->env, (double)off);
  napi_get_boolean(s->env, borrowed, &a[5]);
  call_handler(s, OP_WRITE, req, a, 6);
  napi_value ab;
  if (borrowed && napi_get_typedarray_info(s->env, a[3], NULL, NULL, NULL, &ab, NULL) == napi_ok) napi_detach_arraybuffer(s->env, ab);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh);
  call_handler(s, OP_RELEASE, req, a, 3);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[4];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh); a[3] = num(s->env, datasync);
  call_handler(s, OP_FSYNC, req, a, 4);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[2];
  a[1] = num(s->env, (double)ino);
  call_handler(s, OP_OPENDIR, req, a, 2);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[5];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh); a[3] = num(s->env, (double)size); a[4] = num(s->env, (double)off);
  call_handler(s, OP_READDIR, req, a, 5);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh);
  call_handler(s, OP_RELEASEDIR, req, a, 3);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[4];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)fi->fh); a[3] = num(s->env, datasync);
  call_handler(s, OP_FSYNCDIR, req, a, 4);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  Session *s = session_of(req); napi_value a[2];
  a[1] = num(s->env, (double)ino);
  call_handler(s, OP_STATFS, req, a, 2);
}

// sealfs keeps user.* attributes only. Other names are answered here: the kernel asks for
// security.capability before every write, and that must not cost a trip to JS.
static int user_xattr(const char *name) { return strncmp(name, "user.", 5) == 0; }

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  if (!user_xattr(name)) { fuse_reply_err(req, EOPNOTSUPP); return; }
  Session *s = session_of(req); napi_value a[5];
  a[1] = num(s->env, (double)ino); a[2] = name_buf(s->env, name); a[3] = bytes(s->env, value, size); a[4] = num(s->env, flags);
  call_handler(s, OP_SETXATTR, req, a, 5);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  if (!user_xattr(name)) { fuse_reply_err(req, ENODATA); return; }
  Session *s = session_of(req); napi_value a[4];
  a[1] = num(s->env, (double)ino); a[2] = name_buf(s->env, name); a[3] = num(s->env, (double)size);
  call_handler(s, OP_GETXATTR, req, a, 4);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = num(s->env, (double)size);
  call_handler(s, OP_LISTXATTR, req, a, 3);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  if (!user_xattr(name)) { fuse_reply_err(req, ENODATA); return; }
  Session *s = session_of(req); napi_value a[3];
  a[1] = num(s->env, (double)ino); a[2] = name_buf(s->env, name);
  call_handler(s, OP_REMOVEXATTR, req, a, 3);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  Session *s = session_of(req); napi_value a[7];
  a[1] = num(s->env, (double)parent); a[2] = name_buf(s->env, name); a[3] = num(s->env, mode); a[4] = num(s->env, fi->flags);
  caller_args(s, req, &a[5]);
  call_handler(s, OP_CREATE, req, a, 7);
}

// No flush: nothing is buffered in the daemon and POSIX locks are the kernel's (no
// getlk/setlk), so libfuse's ENOSYS to the first FLUSH makes the kernel stop sending one on
// every close(2), a round trip per file saved (cat of 12,000 files).
static const struct fuse_lowlevel_ops ops = {
  .init = ll_init, .lookup = ll_lookup, .forget = ll_forget, .forget_multi = ll_forget_multi,
  .getattr = ll_getattr, .setattr = ll_setattr, .readlink = ll_readlink, .mknod = ll_mknod,
  .mkdir = ll_mkdir, .unlink = ll_unlink, .rmdir = ll_rmdir, .symlink = ll_symlink,
  .rename = ll_rename, .link = ll_link, .open = ll_open, .read = ll_read, .write = ll_write,
  .release = ll_release, .fsync = ll_fsync, .opendir = ll_opendir,
  .readdir = ll_readdir, .releasedir = ll_releasedir, .fsyncdir = ll_fsyncdir,
  .statfs = ll_statfs, .setxattr = ll_setxattr, .getxattr = ll_getxattr,
  .listxattr = ll_listxattr, .removexattr = ll_removexattr, .create = ll_create, .access = ll_access,
};

// ------------------------------------------------------------------ the event loop side

static void notify_exited(Session *s) {
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  napi_value a[1];
  napi_get_undefined(s->env, &a[0]);
  call_handler(s, OP_EXITED, NULL, a, 1);
  napi_close_handle_scope(s->env, scope);
}

static void stop_polling(Session *s) {
  if (!s->polling) return;
  s->polling = 0;
  uv_poll_stop(&s->poll);
}

static void session_end(Session *s, int unmount);

static void on_readable(uv_poll_t *handle, int status, int events) {
  Session *s = handle->data;
  // At most 64 requests a wake-up, so timers and pool completions are not starved.
  struct timespec idle_since = { 0, 0 };
  for (int i = 0; i < 64 && s->polling; i++) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EAGAIN || res == -EINTR) {
      // Nothing waiting. A process doing one request at a time sends its next one a few
      // microseconds after our reply; going back to epoll and being woken for it costs more
      // than asking again for a little while (spin_ns), so ask until it has been quiet that long.
      if (s->spin_ns == 0 || !s->answered_here) return;
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (idle_since.tv_sec == 0 && idle_since.tv_nsec == 0) idle_since = now;
      long waited = (now.tv_sec - idle_since.tv_sec) * 1000000000L + (now.tv_nsec - idle_since.tv_nsec);
      if (waited >= s->spin_ns) return;
      i--;
      continue;
    }
    idle_since.tv_sec = 0; idle_since.tv_nsec = 0;
    if (res <= 0 || fuse_session_exited(s->se)) {
      // ENODEV: unmounted from outside (fusermount -u, umount); the connection is gone.
      stop_polling(s);
      notify_exited(s);
      return;
    }
    napi_handle_scope scope;
    napi_open_handle_scope(s->env, &scope);
    s->dispatching = 1;
    fuse_session_process_buf(s->se, &s->buf);
    s->dispatching = 0;
    s->answered_here = s->pending == 0;
    napi_close_handle_scope(s->env, scope);
    if (s->end_requested) { session_end(s, s->end_requested == 2); return; }
  }
}

// ------------------------------------------------------------------ argument helpers

#define THROW(msg) do { napi_throw_type_error(env, NULL, msg); return NULL; } while (0)

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) return 0;
  return 1;
}

static int get_double(napi_env env, napi_value v, double *out) {
  return napi_get_value_double(env, v, out) == napi_ok;
}

static int get_u64(napi_env env, napi_value v, uint64_t *out) {
  double d;
  if (!get_double(env, v, &d) || !(d >= 0 && d <= 9007199254740991.0) || d != (double)(uint64_t)d) return 0;
  *out = (uint64_t)d;
  return 1;
}

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is = false;
  return napi_is_buffer(env, v, &is) == napi_ok && is && napi_get_buffer_info(env, v, data, len) == napi_ok;
}

// The attribute layout shared with the backing addon (src/filesystem/backing-addon.ts, STAT_*).
#define ATTR_LEN 17
static int get_attrs(napi_env env, napi_value v, const double **out) {
  napi_typedarray_type t; size_t len; void *data; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok || t != napi_float64_array || len < ATTR_LEN) return 0;
  *out = data;
  return 1;
}

static void fill_stat(struct stat *st, const double *a) {
  memset(st, 0, sizeof *st);
  st->st_ino = ((uint64_t)a[0] << 32) | (uint32_t)a[1];
  st->st_mode = (mode_t)a[2];
  st->st_nlink = (nlink_t)a[3];
  st->st_uid = (uid_t)a[4];
  st->st_gid = (gid_t)a[5];
  st->st_rdev = (dev_t)a[6];
  st->st_size = (off_t)a[7];
  st->st_blocks = (blkcnt_t)a[8];
  st->st_atim.tv_sec = (time_t)a[9]; st->st_atim.tv_nsec = (long)a[10];
  st->st_mtim.tv_sec = (time_t)a[11]; st->st_mtim.tv_nsec = (long)a[12];
  st->st_ctim.tv_sec = (time_t)a[13]; st->st_ctim.tv_nsec = (long)a[14];
  st->st_blksize = (blksize_t)a[16];
}

// Every reply function takes the id first; an unknown id is ignored (returns false).
static napi_value bool_result(napi_env env, int ok) { napi_value r; napi_get_boolean(env, ok, &r); return r; }

// replyErr(id, errno): errno 0 is success for requests that carry no data.
static napi_value ReplyErr(napi_env env, napi_callback_info info) {
  napi_value argv[2]; double id; int32_t e;
  if (!get_args(env, info, 2, argv) || !get_double(env, argv[0], &id) || napi_get_value_int32(env, argv[1], &e) != napi_ok || e < 0 || e > 4095)
    THROW("replyErr(id, errno)");
  fuse_req_t req = pending_take(id, NULL);
  if (req != NULL) fuse_reply_err(req, e);
  return bool_result(env, req != NULL);
}

static int get_entry(napi_env env, napi_value *argv, struct fuse_entry_param *e) {
  uint64_t node; const double *a; double attr_timeout, entry_timeout;
  if (!get_u64(env, argv[0], &node) || !get_attrs(env, argv[1], &a) || !get_double(env, argv[2], &attr_timeout) ||
      !get_double(env, argv[3], &entry_timeout) || !(attr_timeout >= 0) || !(entry_timeout >= 0)) return 0;
  memset(e, 0, sizeof *e);
  e->ino = node;
  e->generation = 0;  // node ids are never reused within a session
  fill_stat(&e->attr, a);
  e->attr_timeout = attr_timeout;
  e->entry_timeout = entry_timeout;
  return 1;
}

// replyEntry(id, nodeId (0: a negative entry), attrs, attrTimeout, entryTimeout)
static napi_value ReplyEntry(napi_env env, napi_callback_info info) {
  napi_value argv[5]; double id; struct fuse_entry_param e;
  if (!get_args(env, info, 5, argv) || !get_double(env, argv[0], &id) || !get_entry(env, argv + 1, &e))
    THROW("replyEntry(id, nodeId, attrs, attrTimeout, entryTimeout)");
  fuse_req_t req = pending_take(id, NULL);
  return bool_result(env, req != NULL && fuse_reply_entry(req, &e) == 0);
}

static int get_open(napi_env env, napi_value fhv, napi_value keepv, napi_value directv, struct fuse_file_info *fi) {
  uint64_t fh; bool keep = false, direct = false;
  if (!get_u64(env, fhv, &fh) || napi_get_value_bool(env, keepv, &keep) != napi_ok || napi_get_value_bool(env, directv, &direct) != napi_ok) return 0;
  memset(fi, 0, sizeof *fi);
  fi->fh = fh;
  fi->keep_cache = keep;
  fi->direct_io = direct;
  return 1;
}

// replyCreate(id, nodeId, attrs, attrTimeout, entryTimeout, fh, keepCache, directIo)
static napi_value ReplyCreate(napi_env env, napi_callback_info info) {
  napi_value argv[8]; double id; struct fuse_entry_param e; struct fuse_file_info fi;
  if (!get_args(env, info, 8, argv) || !get_double(env, argv[0], &id) || !get_entry(env, argv + 1, &e) || !get_open(env, argv[5], argv[6], argv[7], &fi))
    THROW("replyCreate(id, nodeId, attrs, attrTimeout, entryTimeout, fh, keepCache, directIo)");
  fuse_req_t req = pending_take(id, NULL);
  // false: unknown id, or the kernel did not take the reply (then the caller undoes the
  // lookup count and closes the handle: no FORGET or RELEASE will come for them).
  return bool_result(env, req != NULL && fuse_reply_create(req, &e, &fi) == 0);
}

// replyAttr(id, attrs, attrTimeout)
static napi_value ReplyAttr(napi_env env, napi_callback_info info) {
  napi_value argv[3]; double id, timeout; const double *a;
  if (!get_args(env, info, 3, argv) || !get_double(env, argv[0], &id) || !get_attrs(env, argv[1], &a) || !get_double(env, argv[2], &timeout) || !(timeout >= 0))
    THROW("replyAttr(id, attrs, attrTimeout)");
  fuse_req_t req = pending_take(id, NULL);
  if (req == NULL) return bool_result(env, 0);
  struct stat st;
  fill_stat(&st, a);
  fuse_reply_attr(req, &st, timeout);
  return bool_result(env, 1);
}

// replyOpen(id, fh, keepCache, directIo)
static napi_value ReplyOpen(napi_env env, napi_callback_info info) {
  napi_value argv[4]; double id; struct fuse_file_info fi;
  if (!get_args(env, info, 4, argv) || !get_double(env, argv[0], &id) || !get_open(env, argv[1], argv[2], argv[3], &fi))
    THROW("replyOpen(id, fh, keepCache, directIo)");
  fuse_req_t req = pending_take(id, NULL);
  return bool_result(env, req != NULL && fuse_reply_open(req, &fi) == 0);
}

// replyBuf(id, buffer, length): the first `length` bytes of `buffer`.
static napi_value ReplyBuf(napi_env env, napi_callback_info info) {
  napi_value argv[3]; double id; void *data; size_t len; uint64_t n;
  if (!get_args(env, info, 3, argv) || !get_double(env, argv[0], &id) || !get_buffer(env, argv[1], &data, &len) || !get_u64(env, argv[2], &n) || n > len)
    THROW("replyBuf(id, buffer, length <= buffer.length)");
  fuse_req_t req = pending_take(id, NULL);
  if (req != NULL) fuse_reply_buf(req, data, (size_t)n);
  return bool_result(env, req != NULL);
}

// replyReadlink(id, target, length): a symlink's target, bytes without NUL.
static napi_value ReplyReadlink(napi_env env, napi_callback_info info) {
  napi_value argv[3]; double id; void *data; size_t len; uint64_t n;
  if (!get_args(env, info, 3, argv) || !get_double(env, argv[0], &id) || !get_buffer(env, argv[1], &data, &len) || !get_u64(env, argv[2], &n) ||
      n > len || n >= PATH_MAX_BYTES || memchr(data, 0, (size_t)n) != NULL)
    THROW("replyReadlink(id, target, length < 4096, no NUL)");
  fuse_req_t req = pending_take(id, NULL);
  if (req == NULL) return bool_result(env, 0);
  char target[PATH_MAX_BYTES];
  memcpy(target, data, (size_t)n);
  target[n] = 0;
  fuse_reply_readlink(req, target);
  return bool_result(env, 1);
}

// replyWrite(id, count)
static napi_value ReplyWrite(napi_env env, napi_callback_info info) {
  napi_value argv[2]; double id; uint64_t n;
  if (!get_args(env, info, 2, argv) || !get_double(env, argv[0], &id) || !get_u64(env, argv[1], &n) || n > MAX_WRITE)
    THROW("replyWrite(id, count)");
  fuse_req_t req = pending_take(id, NULL);
  if (req != NULL) fuse_reply_write(req, (size_t)n);
  return bool_result(env, req != NULL);
}

// replyXattr(id, size): the size of a value or list, for a size probe (size 0 asked).
static napi_value ReplyXattr(napi_env env, napi_callback_info info) {
  napi_value argv[2]; double id; uint64_t n;
  if (!get_args(env, info, 2, argv) || !get_double(env, argv[0], &id) || !get_u64(env, argv[1], &n))
    THROW("replyXattr(id, size)");
  fuse_req_t req = pending_take(id, NULL);
  if (req != NULL) fuse_reply_xattr(req, (size_t)n);
  return bool_result(env, req != NULL);
}

// replyStatfs(id, Float64Array [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax])
static napi_value ReplyStatfs(napi_env env, napi_callback_info info) {
  napi_value argv[2]; double id; napi_typedarray_type t; size_t len; void *data; napi_value ab; size_t off;
  if (!get_args(env, info, 2, argv) || !get_double(env, argv[0], &id) ||
      napi_get_typedarray_info(env, argv[1], &t, &len, &data, &ab, &off) != napi_ok || t != napi_float64_array || len < 8)
    THROW("replyStatfs(id, Float64Array(8))");
  fuse_req_t req = pending_take(id, NULL);
  if (req == NULL) return bool_result(env, 0);
  const double *a = data;
  struct statvfs st;
  memset(&st, 0, sizeof st);
  st.f_bsize = (unsigned long)a[0]; st.f_frsize = (unsigned long)a[1];
  st.f_blocks = (fsblkcnt_t)a[2]; st.f_bfree = (fsblkcnt_t)a[3]; st.f_bavail = (fsblkcnt_t)a[4];
  st.f_files = (fsfilcnt_t)a[5]; st.f_ffree = (fsfilcnt_t)a[6]; st.f_favail = (fsfilcnt_t)a[6];
  st.f_namemax = (unsigned long)a[7];
  fuse_reply_statfs(req, &st);
  return bool_result(env, 1);
}

// replyDir(id, listing, offset, size): one page of a directory listing. `listing` holds
// entries as the backing addon's readdirFd encodes them (8-byte LE inode, 1-byte type,
// 1-byte name length, name); a readdir offset is a byte offset into it, so each page
// starts where the last one ended.
static napi_value ReplyDir(napi_env env, napi_callback_info info) {
  napi_value argv[4]; double id; void *data; size_t len; uint64_t off, size;
  if (!get_args(env, info, 4, argv) || !get_double(env, argv[0], &id) || !get_buffer(env, argv[1], &data, &len) ||
      !get_u64(env, argv[2], &off) || !get_u64(env, argv[3], &size) || size > MAX_WRITE)
    THROW("replyDir(id, listing, offset, size)");
  fuse_req_t req = pending_take(id, NULL);
  if (req == NULL) return bool_result(env, 0);
  const unsigned char *p = data;
  char *out = malloc(size > 0 ? size : 1);
  if (out == NULL) { fuse_reply_err(req, ENOMEM); return bool_result(env, 1); }
  size_t used = 0, at = off <= len ? (size_t)off : len;
  char name[256];
  while (at + 10 <= len) {
    size_t nl = p[at + 9];
    if (nl == 0 || at + 10 + nl > len) break;  // malformed: end the listing here
    uint64_t ino = 0;
    for (int b = 7; b >= 0; b--) ino = (ino << 8) | p[at + b];
    memcpy(name, p + at + 10, nl);
    name[nl] = 0;
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = ino;
    st.st_mode = (mode_t)p[at + 8] << 12;  // d_type is the mode's type bits shifted down
    size_t next = at + 10 + nl;
    size_t need = fuse_add_direntry(req, out + used, size - used, name, &st, (off_t)next);
    if (need > size - used) break;
    used += need;
    at = next;
  }
  fuse_reply_buf(req, out, used);
  free(out);
  return bool_result(env, 1);
}

// ------------------------------------------------------------------ mount and unmount

static void session_free(Session *s) {
  for (int i = 0; i < OP_COUNT; i++) if (s->handlers[i] != NULL) napi_delete_reference(s->env, s->handlers[i]);
  if (s->self != NULL) napi_delete_reference(s->env, s->self);
  if (s->async != NULL) napi_async_destroy(s->env, s->async);
  free(s->buf.mem);
  free(s);
}

static void on_poll_closed(uv_handle_t *handle) { session_free(handle->data); }

// Answers every request of `s` that is still waiting for JS (the connection is going away).
static void fail_pending(Session *s) {
  for (uint32_t i = 0; i < slot_count; i++) {
    if (slots[i].req != NULL && slots[i].s == s) {
      fuse_reply_err(slots[i].req, EIO);
      pending_free(i);
    }
  }
}

static void session_end(Session *s, int unmount);
static void session_destroy(Session *s);

static void session_end_js(napi_env env, napi_value obj, Session *s, int unmount) {
  // The JS object no longer names the session: a second unmount/end throws instead of
  // reaching the session after it is freed.
  void *unused;
  napi_remove_wrap(env, obj, &unused);
  session_end(s, unmount);
}

static void session_end(Session *s, int unmount) {
  if (s->destroyed) return;
  if (s->dispatching) { if (s->end_requested < 1 + unmount) s->end_requested = 1 + unmount; return; }
  if (s->notifying > 0) {
    // An invalidation job is writing to /dev/fuse, perhaps waiting in the kernel for a
    // directory lock that a request not read yet holds. The descriptor stays open (closing
    // it would let a backing file take its number under the job's writes) and requests are
    // read and failed until the job returns (inval_done ends the session then).
    atomic_store(&s->stopping, 1);
    if (!s->draining || unmount) s->drain_unmount = unmount;
    s->draining = 1;
    fail_pending(s);
    return;
  }
  s->destroyed = 1;
  s->draining = 0;
  stop_polling(s);
  fail_pending(s);
  // fuse_session_unmount: umount2 as root, else fusermount3 -u through fork/exec with an
  // argument vector (never a shell), so any byte in the mount point is just a byte.
  if (unmount && s->mounted) fuse_session_unmount(s->se);
  s->mounted = 0;
  session_destroy(s);
}

static void session_destroy(Session *s) {
  fuse_session_destroy(s->se);
  s->se = NULL;
  uv_close((uv_handle_t *)&s->poll, on_poll_closed);
}

// ------------------------------------------------------------------ entry invalidation

typedef struct {
  uv_work_t work;
  Session *s;
  napi_ref done;        // JS callback, called with the number of entries the kernel dropped
  size_t len, dropped;
  unsigned char data[];  // the caller's entries, copied: u64 LE parent, u8 name length, name
} InvalJob;

static void inval_run(uv_work_t *w) {
  InvalJob *j = (InvalJob *)w;
  char name[256];
  for (size_t at = 0; at + 9 <= j->len && !atomic_load(&j->s->stopping);) {
    uint64_t parent = 0;
    for (int b = 7; b >= 0; b--) parent = (parent << 8) | j->data[at + b];
    size_t nl = j->data[at + 8];
    if (nl == 0 || at + 9 + nl > j->len) break;
    memcpy(name, j->data + at + 9, nl);
    name[nl] = 0;
    at += 9 + nl;
    if (fuse_lowlevel_notify_inval_entry(j->s->se, (fuse_ino_t)parent, name, nl) == 0) j->dropped++;
  }
}

static void inval_done(uv_work_t *w, int status) {
  InvalJob *j = (InvalJob *)w;
  Session *s = j->s;
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, recv, arg, result;
  napi_create_double(env, (double)j->dropped, &arg);
  // The receiver must be an object (napi_make_callback refuses undefined): the session's.
  // Once JS has ended the session, nothing is called back.
  if (!s->draining && napi_get_reference_value(env, j->done, &fn) == napi_ok && fn != NULL &&
      napi_get_reference_value(env, s->self, &recv) == napi_ok && recv != NULL &&
      napi_make_callback(env, s->async, recv, fn, 1, &arg, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
  }
  napi_delete_reference(env, j->done);
  napi_close_handle_scope(env, scope);
  free(j);
  if (--s->notifying == 0 && s->draining) session_end(s, s->drain_unmount);
}

static void finalize_session(napi_env env, void *data, void *hint) {
  // The JS object is gone; a session still mounted stays so until process exit (the kernel
  // ends it then). Nothing here may call into JS.
}

static napi_value get_session(napi_env env, napi_value obj, Session **out) {
  void *p;
  if (napi_unwrap(env, obj, &p) != napi_ok || p == NULL) return NULL;
  *out = p;
  return obj;
}

// mount(session object with handler methods, mountPoint: Buffer, options: string, maxReadahead)
// Wraps the session into `obj`; its methods are called with `obj` as `this`.
static napi_value Mount(napi_env env, napi_callback_info info) {
  napi_value argv[4]; void *mp; size_t mpl; char opts[4096]; size_t ol; uint32_t readahead;
  if (!get_args(env, info, 4, argv) || !get_buffer(env, argv[1], &mp, &mpl) || mpl == 0 || mpl >= PATH_MAX_BYTES ||
      memchr(mp, 0, mpl) != NULL || napi_get_value_string_utf8(env, argv[2], opts, sizeof opts, &ol) != napi_ok ||
      ol >= sizeof opts - 1 || napi_get_value_uint32(env, argv[3], &readahead) != napi_ok)
    THROW("mount(handlers, mountPoint: Buffer, options: string, maxReadahead)");
  Session *s = calloc(1, sizeof *s);
  if (s == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  s->env = env;
  s->max_readahead = readahead;
  // 50 µs: on this project's 2-core VM, 4 KiB random reads went from 14k to 22k IOPS (one
  // process) at a cost of at most 50 µs of CPU after the last request of a burst.
  // SEALFS_SPIN_US overrides it (0: never), for measurements.
  const char *spin = getenv("SEALFS_SPIN_US");
  long spin_us = spin != NULL ? atol(spin) : 50;
  s->spin_ns = (spin_us < 0 ? 0 : spin_us > 1000 ? 1000 : spin_us) * 1000L;
  for (int i = 0; i < OP_COUNT; i++) {
    napi_value fn; napi_valuetype t;
    if (napi_get_named_property(env, argv[0], op_names[i], &fn) != napi_ok || napi_typeof(env, fn, &t) != napi_ok || t != napi_function) {
      session_free(s);
      char msg[64];
      snprintf(msg, sizeof msg, "mount: handler '%s' missing", op_names[i]);
      THROW(msg);
    }
    napi_create_reference(env, fn, 1, &s->handlers[i]);
  }
  napi_create_reference(env, argv[0], 1, &s->self);
  napi_value resource_name;
  napi_create_string_utf8(env, "sealfs:fuse", NAPI_AUTO_LENGTH, &resource_name);
  if (napi_async_init(env, argv[0], resource_name, &s->async) != napi_ok) { session_free(s); THROW("mount: async context"); }

  char mnt[PATH_MAX_BYTES];
  memcpy(mnt, mp, mpl);
  mnt[mpl] = 0;
  char *args_v[] = { "sealfs", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(ol > 0 ? 3 : 1, args_v);
  s->se = fuse_session_new(&args, &ops, sizeof ops, s);
  if (s->se == NULL) { session_free(s); napi_throw_error(env, "EINVAL", "fuse: bad mount options"); return NULL; }
  if (fuse_session_mount(s->se, mnt) != 0) {
    fuse_session_destroy(s->se);
    session_free(s);
    napi_throw_error(env, "EIO", "fuse failed to mount");
    return NULL;
  }
  s->mounted = 1;
  int fd = fuse_session_fd(s->se);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &s->poll, fd);
  s->poll.data = s;
  s->polling = 1;
  uv_poll_start(&s->poll, UV_READABLE, on_readable);
  if (napi_wrap(env, argv[0], s, finalize_session, NULL, NULL) != napi_ok) {
    session_end(s, 1);
    THROW("mount: the handlers object is already a session");
  }
  return NULL;
}

// unmount(session): unmounts (if still mounted) and ends the session. Requests still
// waiting for a reply get EIO. A second call throws (the session is no longer wrapped).
static napi_value Unmount(napi_env env, napi_callback_info info) {
  napi_value argv[1]; Session *s;
  if (!get_args(env, info, 1, argv) || get_session(env, argv[0], &s) == NULL) THROW("unmount(session)");
  session_end_js(env, argv[0], s, 1);
  return NULL;
}

// end(session): ends a session whose connection is already gone (after 'exited').
static napi_value End(napi_env env, napi_callback_info info) {
  napi_value argv[1]; Session *s;
  if (!get_args(env, info, 1, argv) || get_session(env, argv[0], &s) == NULL) THROW("end(session)");
  session_end_js(env, argv[0], s, 0);
  return NULL;
}

// invalEntries(session, entries: Buffer, done(dropped)): asks the kernel to drop the cached
// entries (u64 LE parent node, u8 name length, name; at most 1 MiB), so that it forgets the
// nodes no one uses. Runs on the pool (see the threading rule); done is called on the JS thread.
static napi_value InvalEntries(napi_env env, napi_callback_info info) {
  napi_value argv[3]; Session *s; void *data; size_t len; napi_valuetype t;
  if (!get_args(env, info, 3, argv) || get_session(env, argv[0], &s) == NULL || !get_buffer(env, argv[1], &data, &len) ||
      len > MAX_WRITE || napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function)
    THROW("invalEntries(session, entries: Buffer, done)");
  if (s->destroyed || s->draining) return bool_result(env, 0);
  InvalJob *j = malloc(sizeof *j + len);
  if (j == NULL) return bool_result(env, 0);
  memset(j, 0, sizeof *j);
  j->s = s;
  j->len = len;
  memcpy(j->data, data, len);
  if (napi_create_reference(env, argv[2], 1, &j->done) != napi_ok) { free(j); return bool_result(env, 0); }
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  if (uv_queue_work(loop, &j->work, inval_run, inval_done) != 0) {
    napi_delete_reference(env, j->done);
    free(j);
    return bool_result(env, 0);
  }
  s->notifying++;
  return bool_result(env, 1);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    { "invalEntries", NULL, InvalEntries, NULL, NULL, NULL, napi_default, NULL },
    { "mount", NULL, Mount, NULL, NULL, NULL, napi_default, NULL },
    { "unmount", NULL, Unmount, NULL, NULL, NULL, napi_default, NULL },
    { "end", NULL, End, NULL, NULL, NULL, napi_default, NULL },
    { "replyErr", NULL, ReplyErr, NULL, NULL, NULL, napi_default, NULL },
    { "replyEntry", NULL, ReplyEntry, NULL, NULL, NULL, napi_default, NULL },
    { "replyCreate", NULL, ReplyCreate, NULL, NULL, NULL, napi_default, NULL },
    { "replyAttr", NULL, ReplyAttr, NULL, NULL, NULL, napi_default, NULL },
    { "replyOpen", NULL, ReplyOpen, NULL, NULL, NULL, napi_default, NULL },
    { "replyBuf", NULL, ReplyBuf, NULL, NULL, NULL, napi_default, NULL },
    { "replyReadlink", NULL, ReplyReadlink, NULL, NULL, NULL, napi_default, NULL },
    { "replyWrite", NULL, ReplyWrite, NULL, NULL, NULL, napi_default, NULL },
    { "replyXattr", NULL, ReplyXattr, NULL, NULL, NULL, napi_default, NULL },
    { "replyStatfs", NULL, ReplyStatfs, NULL, NULL, NULL, napi_default, NULL },
    { "replyDir", NULL, ReplyDir, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
