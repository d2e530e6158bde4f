// Prototype for issue 12 (not part of sealfs): libfuse 3's low-level API driven two ways, to
// measure what a request costs before the real binding is written.
//
//   mode "loop":    the session's /dev/fuse descriptor is watched with uv_poll on Node's event
//                   loop; requests are received and processed on the JS thread, and the
//                   low-level callbacks call the JS handlers directly. A handler replies at
//                   once or later (after a pool job) with the request's id.
//   mode "threads": fuse_session_loop_mt runs in libfuse's worker threads; READ is served in C
//                   in the worker (pread + reply, no JS), everything else reaches JS through a
//                   threadsafe function and the worker moves on.
//
// The JS side (bench/prototype/ll-passthrough.ts) keeps the inode table: nodeid -> O_PATH fd.
// Build: node bench/prototype/build.js   (needs libfuse3-dev)
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

// Exported by libfuse 3 (FUSE_3.0) but missing from 3.14's public header.
int fuse_session_receive_buf(struct fuse_session *se, struct fuse_buf *buf);
void fuse_session_process_buf(struct fuse_session *se, const struct fuse_buf *buf);

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)

enum { OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_OPEN, OP_READ, OP_RELEASE, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_STATFS, OP_COUNT };
static const char *op_names[OP_COUNT] = { "lookup", "forget", "getattr", "open", "read", "release", "opendir", "readdir", "releasedir", "statfs" };

// Requests waiting for a reply from JS, by id (slot index). A reply names its id; a stale or
// bogus id is refused, so JS can never make the addon touch a freed request.
#define MAX_PENDING 4096
typedef struct {
  fuse_req_t req;
  int in_use;
} Pending;

typedef struct {
  int op;
  uint32_t id;
  uint64_t ino;
  uint64_t fh;
  uint64_t n;       // size (read), nlookup (forget), flags (open)
  int64_t off;
  char *name;       // lookup: a copy (the receive buffer is reused)
  size_t name_len;
} Call;

typedef struct {
  struct fuse_session *se;
  int threads;
  napi_env env;
  napi_ref handlers[OP_COUNT];
  // loop mode
  uv_poll_t poll;
  struct fuse_buf buf;
  // threads mode
  napi_threadsafe_function tsfn;
  pthread_t loop_thread;
  pthread_mutex_t lock;
  Pending pending[MAX_PENDING];
  uint32_t next_free;
  double entry_timeout;
} Session;

static Session *g;  // one session per process in the prototype

static uint32_t pending_add(Session *s, fuse_req_t req) {
  if (s->threads) pthread_mutex_lock(&s->lock);
  uint32_t id = UINT32_MAX;
  for (uint32_t k = 0; k < MAX_PENDING; k++) {
    uint32_t i = (s->next_free + k) % MAX_PENDING;
    if (!s->pending[i].in_use) { s->pending[i].in_use = 1; s->pending[i].req = req; s->next_free = (i + 1) % MAX_PENDING; id = i; break; }
  }
  if (s->threads) pthread_mutex_unlock(&s->lock);
  return id;
}

static fuse_req_t pending_take(Session *s, uint32_t id) {
  fuse_req_t req = NULL;
  if (id >= MAX_PENDING) return NULL;
  if (s->threads) pthread_mutex_lock(&s->lock);
  if (s->pending[id].in_use) { req = s->pending[id].req; s->pending[id].in_use = 0; }
  if (s->threads) pthread_mutex_unlock(&s->lock);
  return req;
}

// ------------------------------------------------------------------ calling JS

static void call_js(napi_env env, Call *c) {
  napi_value fn, argv[5], undefined;
  napi_get_undefined(env, &undefined);
  if (napi_get_reference_value(env, g->handlers[c->op], &fn) != napi_ok) return;
  size_t argc = 0;
  if (c->op != OP_FORGET) napi_create_uint32(env, c->id, &argv[argc++]);
  napi_create_bigint_uint64(env, c->ino, &argv[argc++]);
  switch (c->op) {
    case OP_LOOKUP: {
      void *data;
      napi_create_buffer_copy(env, c->name_len, c->name, &data, &argv[argc++]);
      break;
    }
    case OP_FORGET: napi_create_double(env, (double)c->n, &argv[argc++]); break;
    case OP_OPEN: napi_create_double(env, (double)c->n, &argv[argc++]); break;
    case OP_READ: case OP_READDIR:
      napi_create_double(env, (double)c->fh, &argv[argc++]);
      napi_create_double(env, (double)c->n, &argv[argc++]);
      napi_create_double(env, (double)c->off, &argv[argc++]);
      break;
    case OP_RELEASE: case OP_RELEASEDIR: napi_create_double(env, (double)c->fh, &argv[argc++]); break;
    default: break;
  }
  napi_value result;
  napi_call_function(env, undefined, fn, argc, argv, &result);
}

static void tsfn_call(napi_env env, napi_value js_cb, void *context, void *data) {
  Call *c = data;
  if (env != NULL) {
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    call_js(env, c);
    napi_close_handle_scope(env, scope);
  }
  free(c->name);
  free(c);
}

static void dispatch(fuse_req_t req, Call *c) {
  Session *s = g;
  if (req != NULL) {
    c->id = pending_add(s, req);
    if (c->id == UINT32_MAX) { fuse_reply_err(req, EAGAIN); free(c->name); free(c); return; }
  }
  if (s->threads) {
    napi_call_threadsafe_function(s->tsfn, c, napi_tsfn_blocking);
  } else {
    call_js(s->env, c);  // on the JS thread, inside the poll callback's scope
    free(c->name);
    free(c);
  }
}

static Call *new_call(int op, fuse_ino_t ino) {
  Call *c = calloc(1, sizeof *c);
  c->op = op;
  c->ino = ino;
  return c;
}

// ------------------------------------------------------------------ low-level callbacks

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Call *c = new_call(OP_LOOKUP, parent);
  c->name_len = strlen(name);
  c->name = malloc(c->name_len + 1);
  memcpy(c->name, name, c->name_len + 1);
  dispatch(req, c);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Call *c = new_call(OP_FORGET, ino);
  c->n = nlookup;
  dispatch(NULL, c);
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  for (size_t i = 0; i < count; i++) {
    Call *c = new_call(OP_FORGET, forgets[i].ino);
    c->n = forgets[i].nlookup;
    dispatch(NULL, c);
  }
  fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { dispatch(req, new_call(OP_GETATTR, ino)); }

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Call *c = new_call(OP_OPEN, ino);
  c->n = (uint64_t)fi->flags;
  dispatch(req, c);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  if (g->threads) {
    // Served here, in libfuse's worker thread: no JS, no hand-off.
    char *buf = malloc(size);
    ssize_t n = pread((int)fi->fh, buf, size, off);
    if (n < 0) fuse_reply_err(req, errno); else fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
    return;
  }
  Call *c = new_call(OP_READ, ino);
  c->fh = fi->fh;
  c->n = size;
  c->off = off;
  dispatch(req, c);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Call *c = new_call(OP_RELEASE, ino);
  c->fh = fi->fh;
  dispatch(req, c);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { dispatch(req, new_call(OP_OPENDIR, ino)); }

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  Call *c = new_call(OP_READDIR, ino);
  c->fh = fi->fh;
  c->n = size;
  c->off = off;
  dispatch(req, c);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  Call *c = new_call(OP_RELEASEDIR, ino);
  c->fh = fi->fh;
  dispatch(req, c);
}

static const struct fuse_lowlevel_ops ops = {
  .init = ll_init, .lookup = ll_lookup, .forget = ll_forget, .forget_multi = ll_forget_multi,
  .getattr = ll_getattr, .open = ll_open, .read = ll_read, .release = ll_release,
  .opendir = ll_opendir, .readdir = ll_readdir, .releasedir = ll_releasedir,
};

// ------------------------------------------------------------------ loop mode: uv_poll

static void on_readable(uv_poll_t *handle, int status, int events) {
  Session *s = handle->data;
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  // At most 64 requests a wake-up, so other work on the loop is not starved.
  for (int i = 0; i < 64; i++) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EAGAIN || res == -EINTR) break;
    if (res <= 0 || fuse_session_exited(s->se)) { uv_poll_stop(&s->poll); break; }
    fuse_session_process_buf(s->se, &s->buf);
  }
  napi_close_handle_scope(s->env, scope);
}

static void *loop_thread(void *arg) {
  Session *s = arg;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, 10);
  fuse_session_loop_mt(s->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  return NULL;
}

// ------------------------------------------------------------------ JS API

static int64_t attr_i64(const double *a, int i) { return (int64_t)a[i]; }

// attrs: Float64Array [ino, mode, nlink, uid, gid, rdev, size, blocks, atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns]
static void fill_stat(struct stat *st, const double *a) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)attr_i64(a, 0); st->st_mode = (mode_t)attr_i64(a, 1); st->st_nlink = (nlink_t)attr_i64(a, 2);
  st->st_uid = (uid_t)attr_i64(a, 3); st->st_gid = (gid_t)attr_i64(a, 4); st->st_rdev = (dev_t)attr_i64(a, 5);
  st->st_size = attr_i64(a, 6); st->st_blocks = attr_i64(a, 7); st->st_blksize = 4096;
  st->st_atim.tv_sec = attr_i64(a, 8); st->st_atim.tv_nsec = attr_i64(a, 9);
  st->st_mtim.tv_sec = attr_i64(a, 10); st->st_mtim.tv_nsec = attr_i64(a, 11);
  st->st_ctim.tv_sec = attr_i64(a, 12); st->st_ctim.tv_nsec = attr_i64(a, 13);
}

static int get_attrs(napi_env env, napi_value v, double **out) {
  napi_typedarray_type t; size_t len; void *data; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok || t != napi_float64_array || len < 14) return -1;
  *out = data;
  return 0;
}

static fuse_req_t take_arg(napi_env env, napi_value v) {
  uint32_t id;
  if (napi_get_value_uint32(env, v, &id) != napi_ok) return NULL;
  return pending_take(g, id);
}

static napi_value ReplyErr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2]; int32_t e;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  CHECK(napi_get_value_int32(env, argv[1], &e));
  if (req) fuse_reply_err(req, e);
  return NULL;
}

// replyEntry(id, nodeid, attrs)
static napi_value ReplyEntry(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3]; double nodeid; double *a;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  CHECK(napi_get_value_double(env, argv[1], &nodeid));
  if (get_attrs(env, argv[2], &a) != 0) { if (req) fuse_reply_err(req, EIO); napi_throw_type_error(env, NULL, "attrs"); return NULL; }
  if (!req) return NULL;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  e.ino = (fuse_ino_t)nodeid;
  e.generation = 1;
  fill_stat(&e.attr, a);
  e.attr_timeout = g->entry_timeout;
  e.entry_timeout = g->entry_timeout;
  fuse_reply_entry(req, &e);
  return NULL;
}

static napi_value ReplyAttr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2]; double *a;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  if (get_attrs(env, argv[1], &a) != 0) { if (req) fuse_reply_err(req, EIO); napi_throw_type_error(env, NULL, "attrs"); return NULL; }
  if (!req) return NULL;
  struct stat st;
  fill_stat(&st, a);
  fuse_reply_attr(req, &st, g->entry_timeout);
  return NULL;
}

// replyOpen(id, fh, keepCache)
static napi_value ReplyOpen(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3]; double fh; bool keep = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  CHECK(napi_get_value_double(env, argv[1], &fh));
  napi_get_value_bool(env, argv[2], &keep);
  if (!req) return NULL;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = (uint64_t)fh;
  fi.keep_cache = keep;
  fuse_reply_open(req, &fi);
  return NULL;
}

// replyBuf(id, buffer, length)
static napi_value ReplyBuf(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3]; void *data; size_t len; uint32_t n;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  CHECK(napi_get_value_uint32(env, argv[2], &n));
  if (n > len) n = (uint32_t)len;
  if (req) fuse_reply_buf(req, data, n);
  return NULL;
}

// replyPread(id, fd, size, offset): pread and reply in one native call (loop mode, local disk)
static napi_value ReplyPread(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4]; int32_t fd; uint32_t size; double off;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  CHECK(napi_get_value_int32(env, argv[1], &fd));
  CHECK(napi_get_value_uint32(env, argv[2], &size));
  CHECK(napi_get_value_double(env, argv[3], &off));
  if (!req) return NULL;
  if (size > (1u << 20)) size = 1u << 20;
  static char buf[1 << 20];  // JS thread only
  ssize_t n = pread(fd, buf, size, (off_t)off);
  if (n < 0) fuse_reply_err(req, errno); else fuse_reply_buf(req, buf, (size_t)n);
  return NULL;
}

// replyDirent(id, names[], inos[], types[], size, offset): one page of readdir from offset
static napi_value ReplyDir(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5]; uint32_t count, size; double off;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = take_arg(env, argv[0]);
  CHECK(napi_get_array_length(env, argv[1], &count));
  CHECK(napi_get_value_uint32(env, argv[3], &size));
  CHECK(napi_get_value_double(env, argv[4], &off));
  if (!req) return NULL;
  char *buf = calloc(1, size);
  size_t used = 0;
  for (uint32_t i = (uint32_t)off; i < count; i++) {
    napi_value nv, iv; char name[256]; size_t nl; double ino;
    napi_get_element(env, argv[1], i, &nv);
    napi_get_element(env, argv[2], i, &iv);
    if (napi_get_value_string_utf8(env, nv, name, sizeof name, &nl) != napi_ok) break;
    napi_get_value_double(env, iv, &ino);
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = (ino_t)ino;
    size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, i + 1);
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf, used);
  free(buf);
  return NULL;
}

// fstatat(dirfd, name or "" for the fd itself, attrs): sync, fills the Float64Array; returns -errno or 0
static napi_value StatAt(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3]; int32_t fd; void *name; size_t nl; double *a; napi_value r;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_buffer_info(env, argv[1], &name, &nl));
  if (get_attrs(env, argv[2], &a) != 0 || nl > 255) { napi_throw_type_error(env, NULL, "args"); return NULL; }
  char n[256];
  memcpy(n, name, nl); n[nl] = 0;
  struct stat st;
  int rc = fstatat(fd, n, &st, AT_SYMLINK_NOFOLLOW | (nl == 0 ? AT_EMPTY_PATH : 0));
  if (rc == 0) {
    a[0] = (double)st.st_ino; a[1] = st.st_mode; a[2] = (double)st.st_nlink; a[3] = st.st_uid; a[4] = st.st_gid; a[5] = (double)st.st_rdev;
    a[6] = (double)st.st_size; a[7] = (double)st.st_blocks; a[8] = (double)st.st_atim.tv_sec; a[9] = (double)st.st_atim.tv_nsec;
    a[10] = (double)st.st_mtim.tv_sec; a[11] = (double)st.st_mtim.tv_nsec; a[12] = (double)st.st_ctim.tv_sec; a[13] = (double)st.st_ctim.tv_nsec;
  }
  napi_create_int32(env, rc == 0 ? 0 : -errno, &r);
  return r;
}

// openAt(dirfd, name, flags): -errno or the fd (O_NOFOLLOW always)
static napi_value OpenAt(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3]; int32_t fd, flags; void *name; size_t nl; napi_value r;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_buffer_info(env, argv[1], &name, &nl));
  CHECK(napi_get_value_int32(env, argv[2], &flags));
  if (nl > 255) { napi_throw_type_error(env, NULL, "name"); return NULL; }
  char n[256];
  memcpy(n, name, nl); n[nl] = 0;
  int rc = openat(fd, n, flags | O_NOFOLLOW | O_CLOEXEC);
  napi_create_int32(env, rc >= 0 ? rc : -errno, &r);
  return r;
}

// mount(mountpoint, options string, handlers {lookup, ...}, threads: boolean, entryTimeout)
static napi_value Mount(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5]; char mnt[4096], opts[1024]; size_t l; bool threads; double timeout;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &l));
  CHECK(napi_get_value_string_utf8(env, argv[1], opts, sizeof opts, &l));
  CHECK(napi_get_value_bool(env, argv[3], &threads));
  CHECK(napi_get_value_double(env, argv[4], &timeout));
  if (g != NULL) { napi_throw_error(env, NULL, "one session per process"); return NULL; }
  Session *s = calloc(1, sizeof *s);
  s->env = env;
  s->threads = threads;
  s->entry_timeout = timeout;
  pthread_mutex_init(&s->lock, NULL);
  for (int i = 0; i < OP_COUNT; i++) {
    napi_value fn;
    CHECK(napi_get_named_property(env, argv[2], op_names[i], &fn));
    CHECK(napi_create_reference(env, fn, 1, &s->handlers[i]));
  }
  char *args_v[] = { "ll-proto", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
  s->se = fuse_session_new(&args, &ops, sizeof ops, s);
  if (s->se == NULL || fuse_session_mount(s->se, mnt) != 0) { napi_throw_error(env, NULL, "fuse mount failed"); return NULL; }
  g = s;
  if (threads) {
    napi_value name;
    napi_create_string_utf8(env, "ll-proto", NAPI_AUTO_LENGTH, &name);
    CHECK(napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, tsfn_call, &s->tsfn));
    pthread_create(&s->loop_thread, NULL, loop_thread, s);
  } else {
    int fd = fuse_session_fd(s->se);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uv_loop_t *loop;
    napi_get_uv_event_loop(env, &loop);
    uv_poll_init(loop, &s->poll, fd);
    s->poll.data = s;
    uv_poll_start(&s->poll, UV_READABLE, on_readable);
  }
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    { "mount", NULL, Mount, NULL, NULL, NULL, napi_default, NULL },
    { "replyErr", NULL, ReplyErr, NULL, NULL, NULL, napi_default, NULL },
    { "replyEntry", NULL, ReplyEntry, NULL, NULL, NULL, napi_default, NULL },
    { "replyAttr", NULL, ReplyAttr, NULL, NULL, NULL, napi_default, NULL },
    { "replyOpen", NULL, ReplyOpen, NULL, NULL, NULL, napi_default, NULL },
    { "replyBuf", NULL, ReplyBuf, NULL, NULL, NULL, napi_default, NULL },
    { "replyPread", NULL, ReplyPread, NULL, NULL, NULL, napi_default, NULL },
    { "replyDir", NULL, ReplyDir, NULL, NULL, NULL, napi_default, NULL },
    { "statAt", NULL, StatAt, NULL, NULL, NULL, napi_default, NULL },
    { "openAt", NULL, OpenAt, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
