// Syscalls that node:fs does not expose with the precision sealfs needs.
// utimensat: nanosecond times, UTIME_NOW and UTIME_OMIT, and never following a
// symlink in the cipher dir (AT_SYMLINK_NOFOLLOW).

#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

static napi_value Utimensat(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[4097]; size_t len = 0;
  double as, ms; uint32_t an, mn;
  if (argc < 5 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1 ||
      napi_get_value_double(env, argv[1], &as) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &an) != napi_ok ||
      napi_get_value_double(env, argv[3], &ms) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &mn) != napi_ok) {
    napi_throw_type_error(env, NULL, "utimensat: bad arguments");
    return NULL;
  }
  struct timespec ts[2] = {{(time_t)as, (long)an}, {(time_t)ms, (long)mn}};
  int rc = utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
  napi_value res;
  napi_create_int32(env, rc == 0 ? 0 : -errno, &res);
  return res;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"utimensat", NULL, Utimensat, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 1, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
