/* cbtfs: a layer's index records (index.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "index.h"

static const char index_magic[8] = "CBTFSIX1";

void
index_rec_encode (const struct index_rec *r, uint8_t out[INDEX_REC_SIZE])
{
  put_le64 (out, r->block);
  put_le32 (out + 8, r->count);
  put_le32 (out + 12, r->kind);
  memcpy (out + 16, r->sum, SUM_LEN);
  put_le64 (out + 32, XXH3_64bits (out, 32));
}

bool
index_rec_decode (const uint8_t in[INDEX_REC_SIZE], struct index_rec *r)
{
  if (get_le64 (in + 32) != XXH3_64bits (in, 32))
    return false;
  r->block = get_le64 (in);
  r->count = get_le32 (in + 8);
  r->kind = get_le32 (in + 12);
  memcpy (r->sum, in + 16, SUM_LEN);
  return true;
}

void
index_header (uint8_t out[INDEX_REC_SIZE])
{
  memset (out, 0, INDEX_REC_SIZE);
  memcpy (out, index_magic, sizeof index_magic);
  put_le64 (out + 32, XXH3_64bits (out, 32));
}

int
index_check_header (struct store_layer *h)
{
  uint8_t hdr[INDEX_REC_SIZE], want[INDEX_REC_SIZE];
  ssize_t r;

  index_header (want);
  r = store_index_read (h, hdr, INDEX_REC_SIZE, 0);
  if (r == -1)
    return -1;
  if (r != INDEX_REC_SIZE || memcmp (hdr, want, INDEX_REC_SIZE) != 0) {
    err_set (EPROTO, "%s/index: not a cbtfs index", store_layer_where (h));
    return -1;
  }
  return 0;
}

static bool
rec_valid (uint64_t nblocks, const struct index_rec *r)
{
  if (r->count == 0 || r->block >= nblocks || r->count > nblocks - r->block)
    return false;
  if (r->kind == INDEX_DATA)
    return r->count == 1;
  return r->kind == INDEX_ZERO;
}

int
index_scan (struct store_layer *h, uint64_t nblocks, uint64_t from,
            index_fn fn, void *opaque, uint64_t *end, uint64_t *damaged)
{
  enum { CHUNK = INDEX_REC_SIZE * 1024 };
  CLEANUP_FREE uint8_t *buf = malloc (CHUNK);
  uint64_t off = from, bad = 0;
  ssize_t r, i;

  if (buf == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  *end = from;
  do {
    r = store_index_read (h, buf, CHUNK, off);
    if (r == -1)
      return -1;
    for (i = 0; i + INDEX_REC_SIZE <= r; i += INDEX_REC_SIZE) {
      struct index_rec rec;
      if (!index_rec_decode (buf + i, &rec)) {
        bad++;
        continue;
      }
      if (!rec_valid (nblocks, &rec)) {
        err_set (EPROTO, "%s/index: damaged record at byte %" PRIu64,
                 store_layer_where (h), off + i);
        return -1;
      }
      if (fn (opaque, &rec, (off + i) / INDEX_REC_SIZE) == -1)
        return -1;
      *damaged += bad;
      bad = 0;
      *end = off + i + INDEX_REC_SIZE;
    }
    off += i;
  } while (r == CHUNK);
  return 0;
}
