/* cbtfs: proving a store still holds what was backed up.
 *
 * Thread model: see verify.h; no shared state here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "read.h"
#include "verify.h"

int
verify_layer (struct layer *l, verify_damage_fn fn, void *opaque,
              uint64_t *checked)
{
  CLEANUP_FREE uint8_t *buf = malloc (CHAIN_BLOCK_SIZE);
  uint64_t b;

  *checked = 0;
  if (buf == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (b = bitmap_next_set (layer_set (l), 0); b < layer_nblocks (l);
       b = bitmap_next_set (layer_set (l), b + 1)) {
    if (layer_block_state (l, b) != LAYER_DATA)
      continue;
    ++*checked;
    if (layer_read_block (l, b, buf) == -1) {
      if (errno != EIO)
        return -1;
      fn (opaque, l, b);
    }
  }
  return 0;
}

int
verify_point_md5 (struct layer *top, struct fetcher *fetch, char hex[33])
{
  enum { CHUNK = 1 << 20 };
  CLEANUP_FREE uint8_t *buf = malloc (CHUNK);
  gnutls_hash_hd_t h;
  unsigned char md5[16];
  uint64_t off;

  if (buf == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (gnutls_hash_init (&h, GNUTLS_DIG_MD5) < 0) {
    err_set (ENOTSUP, "md5 is not available");
    return -1;
  }
  for (off = 0; off < layer_meta (top)->size; off += CHUNK) {
    size_t n = MIN ((uint64_t) CHUNK, layer_meta (top)->size - off);
    if (chain_read (top, buf, n, off, fetch) == -1) {
      gnutls_hash_deinit (h, md5);
      return -1;
    }
    gnutls_hash (h, buf, n);
  }
  gnutls_hash_deinit (h, md5);
  for (int i = 0; i < 16; i++) {
    hex[2 * i] = "0123456789abcdef"[md5[i] >> 4];
    hex[2 * i + 1] = "0123456789abcdef"[md5[i] & 15];
  }
  hex[32] = '\0';
  return 0;
}
