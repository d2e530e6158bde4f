// What node:fs cannot do for the daemon's own housekeeping (the backing store is reached
// through native-deps/backing): flock(2) for the volume lock, syncfs(2) for a key rotation,
// one AF_UNIX datagram for sd_notify and syslog, the descriptor limit, no core dumps, and
// the standard streams of a daemon once its mount is ready.

#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

static napi_value bad_args(napi_env env, const char *what) {
  napi_throw_type_error(env, NULL, what);
  return NULL;
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

// syncfs(fd): writes out the filesystem holding fd (a key rotation's rewritten headers,
// before it forgets how to undo a batch); one call, not an fsync per file.
static napi_value Syncfs(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) return bad_args(env, "syncfs: bad arguments");
  return int_result(env, syncfs(fd));
}

// disableCoreDumps(): the daemon holds keys; a core file must never hold them. RLIMIT_CORE
// 0 (soft and hard, so no child can raise it) and PR_SET_DUMPABLE 0 (no core, no ptrace
// attach by the same user). Returns PR_GET_DUMPABLE afterwards (0), or -errno.
static napi_value DisableCoreDumps(napi_env env, napi_callback_info info) {
  (void)info;
  struct rlimit none = { 0, 0 };
  napi_value res;
  if (setrlimit(RLIMIT_CORE, &none) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    napi_create_int32(env, -errno, &res);
    return res;
  }
  napi_create_int32(env, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), &res);
  return res;
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
  // MSG_DONTWAIT: a journal or syslog that is not reading loses the line; it never stalls
  // the daemon's one JS thread, and with it every request of the mount.
  ssize_t n = sendto(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen));
  int saved = errno;
  close(fd);
  errno = saved;
  return int_result(env, n < 0 ? -1 : 0);
}

// The most descriptors the daemon asks for: one per backing entry the kernel has cached.
#define FD_LIMIT_WANTED ((rlim_t)1 << 20)

// raiseFdLimit(): the mount holds an O_PATH descriptor for every entry the kernel keeps in
// its caches, as libfuse's passthrough_hp does, so a large tree needs many. Raises the soft
// RLIMIT_NOFILE to the hard one and, where the process may (CAP_SYS_RESOURCE: a root
// daemon), the hard one to fs.nr_open, both at most 2^20. Returns the soft limit in force.
static napi_value RaiseFdLimit(napi_env env, napi_callback_info info) {
  (void)info;
  rlim_t want = FD_LIMIT_WANTED;
  FILE *f = fopen("/proc/sys/fs/nr_open", "re");
  if (f != NULL) {
    unsigned long long nr_open = 0;
    if (fscanf(f, "%llu", &nr_open) == 1 && nr_open > 0 && (rlim_t)nr_open < want) want = (rlim_t)nr_open;
    fclose(f);
  }
  struct rlimit rl;
  napi_value res;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    napi_create_double(env, 1024, &res);  // unknown: assume the usual soft limit
    return res;
  }
  if (rl.rlim_max < want) {
    struct rlimit raised = { want, want };
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;  // EPERM without the capability: keep the hard limit
  }
  if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < want) {
    struct rlimit soft = { rl.rlim_max < want ? rl.rlim_max : want, rl.rlim_max };
    if (setrlimit(RLIMIT_NOFILE, &soft) == 0) rl = soft;
  }
  napi_create_double(env, rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur, &res);
  return res;
}

// redirectOutput(fd): dup2(fd, 1) and dup2(fd, 2). Until its mount is ready, a detached
// daemon's standard error is a pipe its parent copies to the user's terminal (libfuse and
// fusermount3 say there why a mount failed); then the parent exits, and what is written there
// later (by libfuse, or a fusermount3 child) goes to the log file or /dev/null instead of a
// pipe nobody reads.
static napi_value RedirectOutput(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return bad_args(env, "redirectOutput: bad arguments");
  if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0) return int_result(env, -1);
  return int_result(env, 0);
}

// exitNow(code): _exit(2). A mount cancelled while its KDF runs ends at once: exit(3) would
// first wait, in libuv's teardown, for the thread pool's running Argon2 to finish (seconds).
static napi_value ExitNow(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t code;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &code) != napi_ok || code < 0 || code > 255) return bad_args(env, "exitNow: bad arguments");
  _exit(code);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"flock", NULL, Flock, NULL, NULL, NULL, napi_default, NULL},
    {"sendDatagram", NULL, SendDatagram, NULL, NULL, NULL, napi_default, NULL},
    {"raiseFdLimit", NULL, RaiseFdLimit, NULL, NULL, NULL, napi_default, NULL},
    {"syncfs", NULL, Syncfs, NULL, NULL, NULL, napi_default, NULL},
    {"disableCoreDumps", NULL, DisableCoreDumps, NULL, NULL, NULL, napi_default, NULL},
    {"redirectOutput", NULL, RedirectOutput, NULL, NULL, NULL, napi_default, NULL},
    {"exitNow", NULL, ExitNow, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
