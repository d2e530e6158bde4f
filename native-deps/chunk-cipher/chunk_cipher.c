// sealfs chunk cipher: AES-256-GCM over a run of fixed-size chunks in one call.
//
// On-disk chunk:  nonce (12) || ciphertext (n) || tag (16)
// AAD per chunk:  aad_prefix (32: volume ID || file ID) || chunk index (u64 big-endian)
//
// Built against Node's own OpenSSL headers; the node binary exports the EVP_* and
// RAND_bytes symbols, so nothing is linked here. Work on a run can go to the libuv
// thread pool so that the JS thread never spends time in AES.

#define _GNU_SOURCE  // fallocate
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define TAG_BYTES 16
#define PREFIX_BYTES 32
#define OVERHEAD (NONCE_BYTES + TAG_BYTES)

// Results below zero are errors; -(1 + i) names the chunk i (relative to the run)
// that failed to authenticate, so the caller can log which chunk was bad.
#define ERR_ARGS -1000000000LL
#define ERR_OPENSSL -1000000001LL
// The *At variants: the backing file ended before the run did; or an I/O error (-errno).
#define ERR_SHORT_READ -1000000002LL
#define ERR_IO_BASE -2000000000LL

typedef struct {
  const uint8_t *key;
  const uint8_t *prefix;
  uint64_t first_index;
  const uint8_t *in;
  size_t in_len;
  uint8_t *out;
  size_t out_len;
  size_t chunk_size;
  int zero_is_hole;  // open only: an all-zero stored chunk reads as zeros (files marked sparse)
} run_t;

static void put_u64_be(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)(v & 0xff); v >>= 8; }
}

static int64_t seal_run(const run_t *r) {
  size_t n_chunks = (r->in_len + r->chunk_size - 1) / r->chunk_size;
  if (r->in_len == 0) return 0;
  if (r->out_len < r->in_len + n_chunks * OVERHEAD) return ERR_ARGS;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return ERR_OPENSSL;
  int64_t result = ERR_OPENSSL;
  uint8_t *nonces = NULL;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, r->key, NULL) != 1) goto done;
  uint8_t aad[PREFIX_BYTES + 8];
  memcpy(aad, r->prefix, PREFIX_BYTES);
  // A fresh random nonce for every chunk sealed: a (key, nonce) pair is never reused by
  // design. One RAND_bytes call draws the nonces of the whole run (it costs per call).
  nonces = malloc(n_chunks * NONCE_BYTES);
  if (!nonces || RAND_bytes(nonces, (int)(n_chunks * NONCE_BYTES)) != 1) goto done;
  size_t in_off = 0, out_off = 0;
  for (size_t i = 0; i < n_chunks; i++) {
    size_t len = r->in_len - in_off < r->chunk_size ? r->in_len - in_off : r->chunk_size;
    uint8_t *nonce = r->out + out_off;
    memcpy(nonce, nonces + i * NONCE_BYTES, NONCE_BYTES);
    put_u64_be(aad + PREFIX_BYTES, r->first_index + i);
    int outl = 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) goto done;
    if (EVP_EncryptUpdate(ctx, NULL, &outl, aad, sizeof aad) != 1) goto done;
    if (EVP_EncryptUpdate(ctx, nonce + NONCE_BYTES, &outl, r->in + in_off, (int)len) != 1) goto done;
    int fin = 0;
    if (EVP_EncryptFinal_ex(ctx, nonce + NONCE_BYTES + outl, &fin) != 1) goto done;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, nonce + NONCE_BYTES + len) != 1) goto done;
    in_off += len;
    out_off += len + OVERHEAD;
  }
  result = (int64_t)out_off;
done:
  free(nonces);
  EVP_CIPHER_CTX_free(ctx);
  return result;
}

static int all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

static int64_t open_run(const run_t *r) {
  if (r->in_len == 0) return 0;
  size_t stride = r->chunk_size + OVERHEAD;
  size_t n_chunks = (r->in_len + stride - 1) / stride;
  size_t last = r->in_len - (n_chunks - 1) * stride;
  if (last <= OVERHEAD) return -(int64_t)n_chunks;  // a truncated final chunk cannot authenticate
  if (r->out_len < r->in_len - n_chunks * OVERHEAD) return ERR_ARGS;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return ERR_OPENSSL;
  int64_t result = ERR_OPENSSL;
  if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, r->key, NULL) != 1) goto done;
  uint8_t aad[PREFIX_BYTES + 8];
  memcpy(aad, r->prefix, PREFIX_BYTES);
  size_t in_off = 0, out_off = 0;
  for (size_t i = 0; i < n_chunks; i++) {
    size_t clen = (i == n_chunks - 1 ? last : stride) - OVERHEAD;
    const uint8_t *nonce = r->in + in_off;
    if (r->zero_is_hole && all_zero(nonce, clen + OVERHEAD)) {
      memset(r->out + out_off, 0, clen);
      in_off += clen + OVERHEAD;
      out_off += clen;
      continue;
    }
    put_u64_be(aad + PREFIX_BYTES, r->first_index + i);
    int outl = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) goto done;
    if (EVP_DecryptUpdate(ctx, NULL, &outl, aad, sizeof aad) != 1) goto done;
    if (EVP_DecryptUpdate(ctx, r->out + out_off, &outl, nonce + NONCE_BYTES, (int)clen) != 1) goto done;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, (void *)(nonce + NONCE_BYTES + clen)) != 1) goto done;
    int fin = 0;
    if (EVP_DecryptFinal_ex(ctx, r->out + out_off + outl, &fin) != 1) {
      // Never hand back plaintext of a chunk that did not verify, nor of the run.
      OPENSSL_cleanse(r->out, out_off + clen);
      result = -(int64_t)(i + 1);
      goto done;
    }
    in_off += clen + OVERHEAD;
    out_off += clen;
  }
  result = (int64_t)out_off;
done:
  EVP_CIPHER_CTX_free(ctx);
  return result;
}

// ---- N-API glue ----

typedef int64_t (*run_fn)(const run_t *);

static int get_buffer(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) != napi_ok || !is_buf) return 0;
  void *d; size_t l;
  if (napi_get_buffer_info(env, v, &d, &l) != napi_ok) return 0;
  *data = d; *len = l;
  return 1;
}

// args: key, prefix, firstIndex, input, chunkSize, output
static int parse_run(napi_env env, napi_value *argv, run_t *r) {
  uint8_t *key, *prefix, *in, *out; size_t key_len, prefix_len, in_len, out_len;
  double first; uint32_t chunk;
  if (!get_buffer(env, argv[0], &key, &key_len) || key_len != KEY_BYTES) return 0;
  if (!get_buffer(env, argv[1], &prefix, &prefix_len) || prefix_len != PREFIX_BYTES) return 0;
  if (napi_get_value_double(env, argv[2], &first) != napi_ok || first < 0 || first > 9007199254740991.0) return 0;
  if (!get_buffer(env, argv[3], &in, &in_len)) return 0;
  if (napi_get_value_uint32(env, argv[4], &chunk) != napi_ok || chunk == 0 || chunk > (1u << 24)) return 0;
  if (!get_buffer(env, argv[5], &out, &out_len)) return 0;
  r->key = key; r->prefix = prefix; r->first_index = (uint64_t)first;
  r->in = in; r->in_len = in_len; r->out = out; r->out_len = out_len; r->chunk_size = chunk;
  r->zero_is_hole = 0;
  return 1;
}

static void parse_hole_flag(napi_env env, napi_value v, run_t *r) {
  bool b = false;
  if (napi_get_value_bool(env, v, &b) == napi_ok) r->zero_is_hole = b ? 1 : 0;
}

// args: key, prefix, firstIndex, input, chunkSize, output[, zeroIsHole]
static napi_value run_sync(napi_env env, napi_callback_info info, run_fn fn) {
  size_t argc = 7; napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  run_t r;
  if (argc < 6 || !parse_run(env, argv, &r)) {
    napi_throw_type_error(env, NULL, "chunk cipher: bad arguments");
    return NULL;
  }
  if (argc >= 7) parse_hole_flag(env, argv[6], &r);
  napi_value res;
  napi_create_int64(env, fn(&r), &res);
  return res;
}

static napi_value Seal(napi_env env, napi_callback_info info) { return run_sync(env, info, seal_run); }
static napi_value Open(napi_env env, napi_callback_info info) { return run_sync(env, info, open_run); }

typedef struct {
  run_t run;
  run_fn fn;
  int fd;          // -1, or the backing file to read the run from (open) / write it to (seal)
  off_t position;
  // Read-modify-write (rewriteAsync): the input holds the new bytes at [data_start, data_end)
  // of the run; the old bytes of the first and last chunks outside it (the run had old_len
  // bytes) are read from fd, opened and merged before the run is sealed.
  int merge;
  size_t data_start, data_end, old_len;
  // The old sealed bytes of the merged edge chunks (first, last), kept to be written back if
  // the run's write fails part-way: a full disk or an I/O error must not tear a chunk that
  // held data the write did not cover.
  uint8_t *saved[2];
  size_t saved_len[2];
  off_t saved_pos[2];
  // -1, or where in the sealed run the bytes past the old end of the file begin: the old
  // bytes before them are kept, to be written back if the write fails (see write_run).
  int64_t new_from;
  // Allocate the run's space (fallocate, size kept) before writing anything: a run over holes
  // of a sparse file needs new blocks anywhere in it.
  int reserve;
  // Bytes after the run (a file's end tag, docs/FORMAT.md §6.3): open reads them with the run
  // into the input buffer without opening them; seal writes the output's bytes after the
  // sealed run with it, in the same pwrite.
  size_t tail;
  // The write journal (docs/FORMAT.md §8): jfd is -1, or the journal file, and jrec a slot's
  // record of jrec_len bytes whose head (magic, file ID, old size and end tag) and extents so
  // far the caller wrote. The old sealed bytes of the edge chunks the run keeps part of
  // (saved[]) are appended, the new nonces filled in, and the record written at jpos before
  // the run goes over them; once the run is written, the record's magic is zeroed. A crash
  // inside the run's pwrite then leaves what the next mount needs to put those chunks back.
  // On return jrec's magic says whether the record is on disk (a failure after it was written).
  int jfd;
  off_t jpos;
  uint8_t *jrec;
  size_t jrec_len;
  int jkeep;  // the record outlives the run (a truncate cuts the file after it): not zeroed here
  int64_t result;
  int here;          // run on the calling thread (a null callback), not queued
  napi_async_work work;
  napi_ref refs[5];  // key, prefix, input, output (and the journal record) stay alive while the pool thread uses them
  napi_ref callback;
} job_t;

static int64_t read_full(int fd, uint8_t *buf, size_t len, off_t pos) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, pos + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ERR_IO_BASE - errno;
    if (n == 0) return ERR_SHORT_READ;
    done += (size_t)n;
  }
  return 0;
}

static int64_t write_full(int fd, const uint8_t *buf, size_t len, off_t pos) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, pos + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ERR_IO_BASE - errno;
    done += (size_t)n;
  }
  return 0;
}

// Opens the old chunk c of the run into `scratch` and copies its bytes that the new data does
// not cover into the input; its sealed bytes stay in job->saved[slot]. 0, or an error as from
// open_run (chunk numbers relative to the run).
static int64_t merge_chunk(job_t *job, size_t c, uint8_t *scratch, int slot) {
  run_t *r = &job->run;
  size_t C = r->chunk_size, stride = C + OVERHEAD;
  size_t c_start = c * C;
  size_t old_end = c_start + C < job->old_len ? c_start + C : job->old_len;
  if (c_start >= old_end) return 0;
  if (job->data_start <= c_start && job->data_end >= old_end) return 0;  // all covered
  size_t old_n = old_end - c_start;
  uint8_t *sealed = malloc(old_n + OVERHEAD);
  if (!sealed) return ERR_OPENSSL;
  job->saved[slot] = sealed;
  int64_t rc = read_full(job->fd, sealed, old_n + OVERHEAD, job->position + (off_t)(c * stride));
  if (rc < 0) return rc;
  job->saved_len[slot] = old_n + OVERHEAD;
  job->saved_pos[slot] = job->position + (off_t)(c * stride);
  run_t one = { r->key, r->prefix, r->first_index + c, sealed, old_n + OVERHEAD, scratch, C, C, r->zero_is_hole };
  rc = open_run(&one);
  if (rc < 0) return rc > -1000000000LL ? rc - (int64_t)c : rc;
  uint8_t *in = (uint8_t *)r->in;
  if (job->data_start > c_start) {
    size_t head_end = job->data_start < old_end ? job->data_start : old_end;
    memcpy(in + c_start, scratch, head_end - c_start);
  }
  if (job->data_end < old_end) {
    size_t tail_start = job->data_end > c_start ? job->data_end : c_start;
    memcpy(in + tail_start, scratch + (tail_start - c_start), old_end - tail_start);
  }
  return 0;
}

static int64_t merge_old(job_t *job) {
  size_t C = job->run.chunk_size;
  size_t n_chunks = (job->run.in_len + C - 1) / C;
  uint8_t *scratch = malloc(C);
  int64_t rc = scratch ? 0 : ERR_OPENSSL;
  if (rc == 0) rc = merge_chunk(job, 0, scratch, 0);
  if (rc == 0 && n_chunks > 1) rc = merge_chunk(job, n_chunks - 1, scratch, 1);
  if (scratch) { OPENSSL_cleanse(scratch, C); free(scratch); }
  return rc;
}

// Allocates [pos, pos + len) of fd without changing its size. 0 where the filesystem cannot
// (network filesystems, some FUSE ones): the write goes ahead unreserved, as before.
static int64_t reserve_space(int fd, off_t pos, off_t len) {
  for (;;) {
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, pos, len) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG || errno == EIO) return ERR_IO_BASE - errno;
    return 0;
  }
}

// Writes the sealed run in one pwrite where it can (a kill between two writes of one run
// would leave a chunk half old, half new). A run that rewrites old bytes and extends the file
// ([0, new_from) of it was there before) may fail in its extension on a full disk after its
// old bytes were overwritten: those are kept first (the merge's copy of the first chunk when
// that is all of them, else read) and written back, which needs no new space except on
// copy-on-write stores. Any other failure part-way puts the saved edge chunks back. Either
// way the caller cuts off what the run added past the old end.
static int64_t write_run(job_t *job, size_t len) {
  int64_t rc;
  if (job->reserve && (rc = reserve_space(job->fd, job->position, (off_t)len)) < 0) return rc;
  uint8_t *old = NULL, *own = NULL;
  size_t old_len = job->new_from > 0 && (size_t)job->new_from <= len ? (size_t)job->new_from : 0;
  if (old_len > 0) {
    // The merge's copy of the first chunk, when it starts the old bytes: only what follows it
    // (the old end tag) is read.
    size_t have = job->saved[0] != NULL && job->saved_pos[0] == job->position && job->saved_len[0] <= old_len ? job->saved_len[0] : 0;
    if (have == old_len) {
      old = job->saved[0];
    } else {
      old = own = malloc(old_len);
      if (own == NULL) return ERR_OPENSSL;
      if (have > 0) memcpy(own, job->saved[0], have);
      if ((rc = read_full(job->fd, own + have, old_len - have, job->position + (off_t)have)) < 0) { free(own); return rc; }
    }
  }
  rc = write_full(job->fd, job->run.out, len, job->position);
  if (rc < 0) {
    if (old != NULL) (void)write_full(job->fd, old, old_len, job->position);
    else
      for (int i = 0; i < 2; i++)
        if (job->saved_len[i] > 0) (void)write_full(job->fd, job->saved[i], job->saved_len[i], job->saved_pos[i]);
  }
  free(own);
  return rc;
}

// Record layout (docs/FORMAT.md §8): magic (4) || used (u32) || file ID (16) || old backing
// size (u64) || new backing size (u64) || old end tag (20) || run position (u64) || run nonce
// (12) || count (u32) || extents, each position (u64) || length (u32) || new nonce (12) || old
// sealed bytes.
#define JOURNAL_HEAD 84
#define JOURNAL_RUN_AT 60
#define JOURNAL_COUNT_AT 80
#define JOURNAL_EXTENT_HEAD 24
#define JOURNAL_MAX_EXTENTS 2

static uint32_t get_u32_be(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_u64_be(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static void put_u32_be(uint8_t *p, uint32_t v) {
  for (int i = 3; i >= 0; i--) { p[i] = (uint8_t)(v & 0xff); v >>= 8; }
}

// The nonce the sealed run (`len` bytes at job->position) gives the chunk at `pos`, into `to`
// (zeros if the run does not start a chunk there): what tells a reader that a torn chunk on
// disk is this write's.
static void new_nonce_at(const job_t *job, size_t len, uint64_t pos, uint8_t *to) {
  uint64_t from = (uint64_t)job->position;
  if (pos >= from && pos - from + NONCE_BYTES <= len) memcpy(to, job->run.out + (pos - from), NONCE_BYTES);
  else memset(to, 0, NONCE_BYTES);
}

// Completes the journal record and writes it: the extents the caller put in it (a truncate's
// old chunk) and the saved edge chunks get the new nonces the run gives their chunks, the
// head the run's position and first nonce. 0, or an error (nothing of the run written yet).
static int64_t write_journal(job_t *job, size_t len) {
  uint8_t *r = job->jrec;
  uint32_t n = get_u32_be(r + JOURNAL_COUNT_AT);
  size_t used = get_u32_be(r + 4);
  if (n > JOURNAL_MAX_EXTENTS || used < JOURNAL_HEAD || used > job->jrec_len) return ERR_ARGS;
  size_t at = JOURNAL_HEAD;
  for (uint32_t i = 0; i < n; i++) {
    if (used - at < JOURNAL_EXTENT_HEAD) return ERR_ARGS;
    size_t ext = get_u32_be(r + at + 8);
    if (ext > used - at - JOURNAL_EXTENT_HEAD) return ERR_ARGS;
    new_nonce_at(job, len, get_u64_be(r + at), r + at + 12);
    at += JOURNAL_EXTENT_HEAD + ext;
  }
  if (at != used) return ERR_ARGS;
  for (int i = 0; i < 2; i++) {
    if (job->saved_len[i] == 0) continue;
    size_t need = JOURNAL_EXTENT_HEAD + job->saved_len[i];
    if (n >= JOURNAL_MAX_EXTENTS || need > job->jrec_len - used) return ERR_ARGS;
    put_u64_be(r + used, (uint64_t)job->saved_pos[i]);
    put_u32_be(r + used + 8, (uint32_t)job->saved_len[i]);
    new_nonce_at(job, len, (uint64_t)job->saved_pos[i], r + used + 12);
    memcpy(r + used + JOURNAL_EXTENT_HEAD, job->saved[i], job->saved_len[i]);
    used += need;
    n++;
  }
  put_u64_be(r + JOURNAL_RUN_AT, (uint64_t)job->position);
  new_nonce_at(job, len, (uint64_t)job->position, r + JOURNAL_RUN_AT + 8);
  put_u32_be(r + 4, (uint32_t)used);
  put_u32_be(r + JOURNAL_COUNT_AT, n);
  return write_full(job->jfd, r, used, job->jpos);
}

static void free_saved(job_t *job) {
  for (int i = 0; i < 2; i++) { free(job->saved[i]); job->saved[i] = NULL; job->saved_len[i] = 0; }
}

// With a file: open reads the sealed run first, seal writes it after (a rewrite merges the
// old edge chunks before sealing); one pool job either way, so a request costs one hand-off
// to the pool and back, not two.
static void job_execute(napi_env env, void *data) {
  job_t *job = data;
  if (job->merge) {
    int64_t rc = merge_old(job);
    if (rc < 0) {
      job->result = rc;
      free_saved(job);
      if (job->jfd >= 0) memset(job->jrec, 0, 4);  // not written (see below)
      return;
    }
  }
  if (job->fd >= 0 && job->fn == open_run) {
    int64_t rc = read_full(job->fd, (uint8_t *)job->run.in, job->run.in_len + job->tail, job->position);
    if (rc < 0) { job->result = rc; return; }
  }
  job->result = job->fn(&job->run);
  int journaled = 0;
  if (job->fd >= 0 && job->fn == seal_run && job->result >= 0) {
    size_t len = (size_t)job->result + job->tail;
    int64_t rc = job->jfd >= 0 ? write_journal(job, len) : 0;
    journaled = job->jfd >= 0 && rc == 0;
    if (rc == 0) rc = write_run(job, len);
    // Written: the record is spent. If it cannot be zeroed, the write fails: the caller keeps
    // the record (as after any failure once it is on disk), and a reader settles it.
    if (rc == 0 && journaled && !job->jkeep) {
      static const uint8_t zeros[4] = { 0, 0, 0, 0 };
      rc = write_full(job->jfd, zeros, sizeof zeros, job->jpos);
      if (rc == 0) journaled = 0;
    }
    if (rc < 0) job->result = rc;
  }
  // The caller learns from the record's magic whether it is (still) on disk.
  if (job->jfd >= 0 && !journaled) memset(job->jrec, 0, 4);
  free_saved(job);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  job_t *job = data;
  napi_value cb, global, argv[1], ret;
  napi_get_reference_value(env, job->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int64(env, status == napi_ok ? job->result : ERR_OPENSSL, &argv[0]);
  for (int i = 0; i < 5; i++) if (job->refs[i] != NULL) napi_delete_reference(env, job->refs[i]);
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, cb, 1, argv, &ret);
}

// args: key, prefix, firstIndex, input, chunkSize, output, zeroIsHole, callback
//   or: key, prefix, firstIndex, input, chunkSize, output, zeroIsHole, fd, position, callback
// A callback of null runs the job here, on the calling thread (small runs on a local disk:
// the hand-off to the pool costs more than the work), and the call returns its result.
// A job ready to run, or NULL (a TypeError is pending).
static job_t *parse_job(napi_env env, napi_value *argv, size_t argc, run_fn fn) {
  job_t *job = calloc(1, sizeof(job_t));
  size_t cb_at = argc >= 10 ? 9 : 7;
  napi_valuetype cbt = napi_undefined;
  if (argc >= 8) napi_typeof(env, argv[cb_at], &cbt);
  if (cbt == napi_null) { cbt = napi_function; if (job) job->here = 1; }
  int32_t fd = -1; double position = 0;
  if (argc >= 10 && (napi_get_value_int32(env, argv[7], &fd) != napi_ok || napi_get_value_double(env, argv[8], &position) != napi_ok ||
      fd < 0 || position < 0 || position > 9007199254740991.0)) cbt = napi_undefined;
  if (!job || argc < 8 || cbt != napi_function || !parse_run(env, argv, &job->run)) {
    free(job);
    napi_throw_type_error(env, NULL, "chunk cipher: bad arguments");
    return NULL;
  }
  parse_hole_flag(env, argv[6], &job->run);
  job->fn = fn;
  job->fd = fd;
  job->position = (off_t)position;
  job->new_from = -1;
  job->jfd = -1;
  return job;
}

// Keeps the buffers and the callback (argv as for parse_job; `jrec`, the journal record, or
// NULL) alive and queues the job.
static napi_value queue_job(napi_env env, job_t *job, napi_value *argv, size_t argc, napi_value jrec) {
  if (jrec != NULL) napi_create_reference(env, jrec, 1, &job->refs[4]);
  napi_create_reference(env, argv[0], 1, &job->refs[0]);
  napi_create_reference(env, argv[1], 1, &job->refs[1]);
  napi_create_reference(env, argv[3], 1, &job->refs[2]);
  napi_create_reference(env, argv[5], 1, &job->refs[3]);
  napi_create_reference(env, argv[argc >= 10 ? 9 : 7], 1, &job->callback);
  napi_value name;
  napi_create_string_utf8(env, "sealfs.chunkCipher", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, job_execute, job_complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return NULL;
}

// Runs a job on this thread; returns its result as the call's value.
static napi_value run_here(napi_env env, job_t *job) {
  job_execute(env, job);
  napi_value res;
  napi_create_int64(env, job->result, &res);
  free(job);
  return res;
}

static napi_value run_async(napi_env env, napi_callback_info info, run_fn fn) {
  size_t argc = 10; napi_value argv[10];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  job_t *job = parse_job(env, argv, argc, fn);
  if (job == NULL) return NULL;
  return job->here ? run_here(env, job) : queue_job(env, job, argv, argc, NULL);
}

// The tail (see job_t): a whole number of bytes that fits the job's buffers. Open: the input
// holds the run and then the tail; seal: the output has room for the sealed run and the tail.
static int get_tail(napi_env env, napi_value v, job_t *job) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d <= 4096) || d != (double)(size_t)d) return 0;
  size_t tail = (size_t)d;
  run_t *r = &job->run;
  if (job->fn == open_run) {
    if (tail > r->in_len) return 0;
    r->in_len -= tail;
  } else {
    size_t n_chunks = (r->in_len + r->chunk_size - 1) / r->chunk_size;
    if (r->out_len < r->in_len + n_chunks * OVERHEAD + tail) return 0;
  }
  job->tail = tail;
  return 1;
}

// A job with a file (sealAsync, openAsync, rewriteAsync): the call's first nine arguments as
// parse_job takes them and its callback, the last of `want`; the arguments between are the
// caller's to check. `args` (10) gets what queue_job keeps alive. NULL with a TypeError pending.
static job_t *parse_file_job(napi_env env, napi_value *argv, size_t argc, size_t want, run_fn fn, napi_value *args) {
  if (argc < want) {
    napi_throw_type_error(env, NULL, "chunk cipher: bad arguments");
    return NULL;
  }
  for (int i = 0; i < 9; i++) args[i] = argv[i];
  args[9] = argv[want - 1];
  return parse_job(env, args, 10, fn);
}

// A job whose own arguments failed their checks: freed, and a TypeError thrown.
static napi_value refuse_job(napi_env env, job_t *job) {
  free(job);
  napi_throw_type_error(env, NULL, "chunk cipher: bad arguments");
  return NULL;
}

// A write placement (see job_t): newFrom, -1 (none) or a whole number of bytes, and reserve.
static int get_placement(napi_env env, napi_value new_from, napi_value reserve, job_t *job) {
  double d;
  bool b;
  if (napi_get_value_double(env, new_from, &d) != napi_ok || !(d >= -1 && d <= 9007199254740991.0) || d != (double)(int64_t)d ||
      napi_get_value_bool(env, reserve, &b) != napi_ok) return 0;
  job->new_from = (int64_t)d;
  job->reserve = b ? 1 : 0;
  return 1;
}

// The journal arguments (see job_t), argv[0..3]: fd (-1: none), position, the record (a buffer
// with room for the head and every edge chunk the run may keep), and keep. `*jrec` is set to the record's
// value when there is one (for queue_job).
static int get_journal(napi_env env, napi_value *argv, job_t *job, napi_value *jrec) {
  napi_value fdv = argv[0], posv = argv[1], recv = argv[2];
  int32_t fd;
  double pos;
  bool keep;
  *jrec = NULL;
  if (napi_get_value_int32(env, fdv, &fd) != napi_ok || fd < -1 || napi_get_value_bool(env, argv[3], &keep) != napi_ok) return 0;
  if (fd == -1) return 1;
  uint8_t *rec; size_t rec_len;
  size_t stride = job->run.chunk_size + OVERHEAD;
  if (napi_get_value_double(env, posv, &pos) != napi_ok || !(pos >= 0 && pos <= 9007199254740991.0) || pos != (double)(int64_t)pos ||
      !get_buffer(env, recv, &rec, &rec_len) || rec_len < JOURNAL_HEAD + JOURNAL_MAX_EXTENTS * (JOURNAL_EXTENT_HEAD + stride) || rec_len > (64u << 20)) return 0;
  job->jfd = fd;
  job->jpos = (off_t)pos;
  job->jrec = rec;
  job->jrec_len = rec_len;
  job->jkeep = keep ? 1 : 0;
  *jrec = recv;
  return 1;
}

// args: key, prefix, firstIndex, input, chunkSize, output, zeroIsHole, fd, position, dataStart, dataEnd, oldLen, newFrom, reserve, tail, journalFd, journalPos, journalRecord, journalKeep, callback
static napi_value RewriteAsync(napi_env env, napi_callback_info info) {
  size_t argc = 20; napi_value argv[20];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  double v[3];
  for (int i = 0; i < 3; i++)
    if (argc < 20 || napi_get_value_double(env, argv[9 + i], &v[i]) != napi_ok || v[i] < 0 || v[i] > 9007199254740991.0) {
      napi_throw_type_error(env, NULL, "chunk cipher: bad arguments");
      return NULL;
    }
  napi_value args[10];
  job_t *job = parse_file_job(env, argv, argc, 20, seal_run, args);
  if (!job) return NULL;
  napi_value jrec;
  if (v[0] > v[1] || v[1] > job->run.in_len || v[2] > job->run.in_len || !get_placement(env, argv[12], argv[13], job) || !get_tail(env, argv[14], job) ||
      !get_journal(env, argv + 15, job, &jrec)) return refuse_job(env, job);
  // Set before queueing: the job can reach a pool thread as soon as it is queued.
  job->merge = 1;
  job->data_start = (size_t)v[0];
  job->data_end = (size_t)v[1];
  job->old_len = (size_t)v[2];
  return job->here ? run_here(env, job) : queue_job(env, job, args, 10, jrec);
}

// args: key, prefix, firstIndex, input, chunkSize, output, false, callback
//   or: key, prefix, firstIndex, input, chunkSize, output, reserve, fd, position, newFrom, tail, journalFd, journalPos, journalRecord, journalKeep, callback
static napi_value SealAsync(napi_env env, napi_callback_info info) {
  size_t argc = 16; napi_value argv[16];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc <= 8) return run_async(env, info, seal_run);
  napi_value args[10];
  job_t *job = parse_file_job(env, argv, argc, 16, seal_run, args);
  if (job == NULL) return NULL;
  job->run.zero_is_hole = 0;
  napi_value jrec;
  if (!get_placement(env, argv[9], argv[6], job) || !get_tail(env, argv[10], job) || !get_journal(env, argv + 11, job, &jrec)) return refuse_job(env, job);
  return job->here ? run_here(env, job) : queue_job(env, job, args, 10, jrec);
}
// args: key, prefix, firstIndex, input, chunkSize, output, zeroIsHole, callback
//   or: key, prefix, firstIndex, input, chunkSize, output, zeroIsHole, fd, position, tail, callback
static napi_value OpenAsync(napi_env env, napi_callback_info info) {
  size_t argc = 11; napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc <= 8) return run_async(env, info, open_run);
  napi_value args[10];
  job_t *job = parse_file_job(env, argv, argc, 11, open_run, args);
  if (job == NULL) return NULL;
  if (!get_tail(env, argv[9], job)) return refuse_job(env, job);
  return job->here ? run_here(env, job) : queue_job(env, job, args, 10, NULL);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"seal", NULL, Seal, NULL, NULL, NULL, napi_default, NULL},
    {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
    {"sealAsync", NULL, SealAsync, NULL, NULL, NULL, napi_default, NULL},
    {"openAsync", NULL, OpenAsync, NULL, NULL, NULL, napi_default, NULL},
    {"rewriteAsync", NULL, RewriteAsync, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
