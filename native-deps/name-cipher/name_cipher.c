// sealfs name cipher: the SIV construction of src/crypto/name-cipher.ts in one native call.
//   tag = HMAC-SHA256(macKey, domain || dirId || name)[0..16]
//   ct  = AES-256-CTR(encKey, iv = tag, name)
// node:crypto builds an Hmac and a Cipheriv object per name (about 30 µs a name here);
// every lookup encrypts a name, so this runs on the JS thread, in about 2 µs.
// Built against Node's own OpenSSL headers; the node binary exports the symbols.

#define OPENSSL_SUPPRESS_DEPRECATED  // HMAC(): the one-shot MAC, still exported by OpenSSL 3
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <string.h>

#define KEY_BYTES 32
#define DIR_ID_BYTES 16
#define TAG_BYTES 16
#define NAME_MAX_BYTES 255

static int buffer_arg(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

static int tag_of(const uint8_t *mac_key, uint32_t domain, const uint8_t *dir_id, const uint8_t *name, size_t name_len, uint8_t tag[TAG_BYTES]) {
  uint8_t msg[1 + DIR_ID_BYTES + NAME_MAX_BYTES];
  uint8_t md[32];
  unsigned int md_len = 0;
  msg[0] = (uint8_t)domain;
  memcpy(msg + 1, dir_id, DIR_ID_BYTES);
  memcpy(msg + 1 + DIR_ID_BYTES, name, name_len);
  int ok = HMAC(EVP_sha256(), mac_key, KEY_BYTES, msg, 1 + DIR_ID_BYTES + name_len, md, &md_len) != NULL && md_len == 32;
  if (ok) memcpy(tag, md, TAG_BYTES);
  OPENSSL_cleanse(msg, sizeof msg);
  OPENSSL_cleanse(md, sizeof md);
  return ok;
}

static int ctr(const uint8_t *enc_key, const uint8_t *iv, const uint8_t *in, size_t len, uint8_t *out) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return 0;
  int outl = 0, fin = 0;
  int ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_ctr(), NULL, enc_key, iv) == 1 &&
           EVP_EncryptUpdate(ctx, out, &outl, in, (int)len) == 1 &&
           EVP_EncryptFinal_ex(ctx, out + outl, &fin) == 1;
  EVP_CIPHER_CTX_free(ctx);
  return ok;
}

// args: encKey, macKey, domain, dirId, input, out. Returns bytes written to out, or:
#define ERR_ARGS -1
#define ERR_AUTH -2
#define ERR_OPENSSL -3

static napi_value result(napi_env env, int32_t n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

static int parse(napi_env env, napi_callback_info info, uint8_t **enc, uint8_t **mac, uint32_t *domain, uint8_t **dir, uint8_t **in, size_t *in_len, uint8_t **out, size_t *out_len) {
  size_t argc = 6; napi_value argv[6]; size_t l;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6) return 0;
  if (!buffer_arg(env, argv[0], enc, &l) || l != KEY_BYTES) return 0;
  if (!buffer_arg(env, argv[1], mac, &l) || l != KEY_BYTES) return 0;
  if (napi_get_value_uint32(env, argv[2], domain) != napi_ok) return 0;
  if (!buffer_arg(env, argv[3], dir, &l) || l != DIR_ID_BYTES) return 0;
  if (!buffer_arg(env, argv[4], in, in_len)) return 0;
  return buffer_arg(env, argv[5], out, out_len);
}

// out = tag || ct; out must hold TAG_BYTES + name length.
static napi_value Encrypt(napi_env env, napi_callback_info info) {
  uint8_t *enc, *mac, *dir, *name, *out; size_t name_len, out_len; uint32_t domain;
  if (!parse(env, info, &enc, &mac, &domain, &dir, &name, &name_len, &out, &out_len)) return result(env, ERR_ARGS);
  if (name_len > NAME_MAX_BYTES || out_len < TAG_BYTES + name_len) return result(env, ERR_ARGS);
  if (!tag_of(mac, domain, dir, name, name_len, out)) return result(env, ERR_OPENSSL);
  if (!ctr(enc, out, name, name_len, out + TAG_BYTES)) return result(env, ERR_OPENSSL);
  return result(env, (int32_t)(TAG_BYTES + name_len));
}

// input = tag || ct; out must hold the ct length. Nothing is left in out unless the tag verifies.
static napi_value Decrypt(napi_env env, napi_callback_info info) {
  uint8_t *enc, *mac, *dir, *raw, *out; size_t raw_len, out_len; uint32_t domain;
  if (!parse(env, info, &enc, &mac, &domain, &dir, &raw, &raw_len, &out, &out_len)) return result(env, ERR_ARGS);
  if (raw_len <= TAG_BYTES || raw_len > TAG_BYTES + NAME_MAX_BYTES || out_len < raw_len - TAG_BYTES) return result(env, ERR_ARGS);
  size_t n = raw_len - TAG_BYTES;
  uint8_t expect[TAG_BYTES];
  if (!ctr(enc, raw, raw + TAG_BYTES, n, out)) return result(env, ERR_OPENSSL);
  if (!tag_of(mac, domain, dir, out, n, expect)) { OPENSSL_cleanse(out, n); return result(env, ERR_OPENSSL); }
  if (CRYPTO_memcmp(expect, raw, TAG_BYTES) != 0) { OPENSSL_cleanse(out, n); return result(env, ERR_AUTH); }
  return result(env, (int32_t)n);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "encrypt", NULL, Encrypt, NULL, NULL, NULL, napi_default, NULL },
    { "decrypt", NULL, Decrypt, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
