// sealfs name cipher: the SIV construction of src/crypto/name-cipher.ts in one native call.
//   tag = HMAC-SHA256(macKey, domain || dirId || name)[0..16]
//   ct  = AES-256-CTR(encKey, iv = tag, name)
// Every lookup encrypts a name. node:crypto builds an Hmac and a Cipheriv object per name;
// here one keyed HMAC and one keyed AES-CTR context live as long as the volume's NameCipher,
// and a call only resets them: about 1 µs with warm caches, and 2-3 µs when the daemon wakes
// for a request with cold caches (fetching and keying new OpenSSL contexts per call cost 10-13).
// Used on the JS thread only (sync), so the contexts are never shared between threads.
// Built against Node's own OpenSSL headers; the node binary exports the symbols.

#define OPENSSL_SUPPRESS_DEPRECATED  // HMAC_CTX: still exported by OpenSSL 3, and cheap to reset
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES 32
#define DIR_ID_BYTES 16
#define TAG_BYTES 16
#define NAME_MAX_BYTES 255

// Results: bytes written to out, or
#define ERR_ARGS -1
#define ERR_AUTH -2
#define ERR_OPENSSL -3

typedef struct {
  HMAC_CTX *mac;        // keyed with the MAC key
  EVP_CIPHER_CTX *ctr;  // keyed with the encryption key
} keys_t;

static void keys_free(keys_t *k) {
  if (!k) return;
  HMAC_CTX_free(k->mac);        // cleanses the keyed state
  EVP_CIPHER_CTX_free(k->ctr);  // cleanses the key schedule
  k->mac = NULL;
  k->ctr = NULL;
}

static void finalize(napi_env env, void *data, void *hint) {
  keys_free(data);
  free(data);
}

static int buffer_arg(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

static napi_value int_result(napi_env env, int32_t n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

// keys(encKey, macKey) -> a handle holding both contexts (freed by free() or by the GC)
static napi_value Keys(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2]; uint8_t *enc, *mac; size_t el, ml;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || !buffer_arg(env, argv[0], &enc, &el) || el != KEY_BYTES || !buffer_arg(env, argv[1], &mac, &ml) || ml != KEY_BYTES) {
    napi_throw_type_error(env, NULL, "name cipher: bad keys");
    return NULL;
  }
  keys_t *k = calloc(1, sizeof(keys_t));
  if (k) { k->mac = HMAC_CTX_new(); k->ctr = EVP_CIPHER_CTX_new(); }
  if (!k || !k->mac || !k->ctr || HMAC_Init_ex(k->mac, mac, KEY_BYTES, EVP_sha256(), NULL) != 1 ||
      EVP_EncryptInit_ex(k->ctr, EVP_aes_256_ctr(), NULL, enc, NULL) != 1) {
    keys_free(k);
    free(k);
    napi_throw_error(env, NULL, "name cipher: OpenSSL failure");
    return NULL;
  }
  napi_value handle;
  napi_create_external(env, k, finalize, NULL, &handle);
  return handle;
}

static napi_value Free(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1]; void *k = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1 && napi_get_value_external(env, argv[0], &k) == napi_ok) keys_free(k);
  return NULL;
}

static int tag_of(keys_t *k, uint32_t domain, const uint8_t *dir_id, const uint8_t *name, size_t name_len, uint8_t tag[TAG_BYTES]) {
  uint8_t d = (uint8_t)domain, md[32];
  unsigned int md_len = 0;
  int ok = HMAC_Init_ex(k->mac, NULL, 0, NULL, NULL) == 1 && HMAC_Update(k->mac, &d, 1) == 1 &&
           HMAC_Update(k->mac, dir_id, DIR_ID_BYTES) == 1 && HMAC_Update(k->mac, name, name_len) == 1 &&
           HMAC_Final(k->mac, md, &md_len) == 1 && md_len == 32;
  if (ok) memcpy(tag, md, TAG_BYTES);
  OPENSSL_cleanse(md, sizeof md);
  return ok;
}

static int ctr(keys_t *k, const uint8_t *iv, const uint8_t *in, size_t len, uint8_t *out) {
  int outl = 0, fin = 0;
  return EVP_EncryptInit_ex(k->ctr, NULL, NULL, NULL, iv) == 1 &&
         EVP_EncryptUpdate(k->ctr, out, &outl, in, (int)len) == 1 &&
         EVP_EncryptFinal_ex(k->ctr, out + outl, &fin) == 1;
}

// args: keys, domain, dirId, input, out
static int parse(napi_env env, napi_callback_info info, keys_t **k, uint32_t *domain, uint8_t **dir, uint8_t **in, size_t *in_len, uint8_t **out, size_t *out_len) {
  size_t argc = 5; napi_value argv[5]; size_t l; void *p = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) return 0;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) return 0;
  *k = p;
  if (!(*k)->mac || !(*k)->ctr) return 0;  // freed
  if (napi_get_value_uint32(env, argv[1], domain) != napi_ok) return 0;
  if (!buffer_arg(env, argv[2], dir, &l) || l != DIR_ID_BYTES) return 0;
  if (!buffer_arg(env, argv[3], in, in_len)) return 0;
  return buffer_arg(env, argv[4], out, out_len);
}

// out = tag || ct; out must hold TAG_BYTES + name length.
static napi_value Encrypt(napi_env env, napi_callback_info info) {
  keys_t *k; uint8_t *dir, *name, *out; size_t name_len, out_len; uint32_t domain;
  if (!parse(env, info, &k, &domain, &dir, &name, &name_len, &out, &out_len)) return int_result(env, ERR_ARGS);
  if (name_len > NAME_MAX_BYTES || out_len < TAG_BYTES + name_len) return int_result(env, ERR_ARGS);
  if (!tag_of(k, domain, dir, name, name_len, out)) return int_result(env, ERR_OPENSSL);
  if (!ctr(k, out, name, name_len, out + TAG_BYTES)) return int_result(env, ERR_OPENSSL);
  return int_result(env, (int32_t)(TAG_BYTES + name_len));
}

// input = tag || ct; out must hold the ct length. Nothing is left in out unless the tag verifies.
static napi_value Decrypt(napi_env env, napi_callback_info info) {
  keys_t *k; uint8_t *dir, *raw, *out; size_t raw_len, out_len; uint32_t domain;
  if (!parse(env, info, &k, &domain, &dir, &raw, &raw_len, &out, &out_len)) return int_result(env, ERR_ARGS);
  if (raw_len <= TAG_BYTES || raw_len > TAG_BYTES + NAME_MAX_BYTES || out_len < raw_len - TAG_BYTES) return int_result(env, ERR_ARGS);
  size_t n = raw_len - TAG_BYTES;
  uint8_t expect[TAG_BYTES];
  if (!ctr(k, raw, raw + TAG_BYTES, n, out)) return int_result(env, ERR_OPENSSL);
  if (!tag_of(k, domain, dir, out, n, expect)) { OPENSSL_cleanse(out, n); return int_result(env, ERR_OPENSSL); }
  if (CRYPTO_memcmp(expect, raw, TAG_BYTES) != 0) { OPENSSL_cleanse(out, n); return int_result(env, ERR_AUTH); }
  return int_result(env, (int32_t)n);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "keys", NULL, Keys, NULL, NULL, NULL, napi_default, NULL },
    { "free", NULL, Free, NULL, NULL, NULL, napi_default, NULL },
    { "encrypt", NULL, Encrypt, NULL, NULL, NULL, napi_default, NULL },
    { "decrypt", NULL, Decrypt, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
