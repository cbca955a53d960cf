/* cbtfs: one bit per 64 KiB block, in memory, and XAPI's CBT bitmap. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "bitmap.h"

static uint64_t
nwords (uint64_t nbits)
{
  return (nbits + 63) / 64;
}

int
bitmap_init (struct bitmap *bm, uint64_t nbits)
{
  uint64_t n = nwords (nbits);

  bm->nbits = 0;
  /* calloc (0) may return NULL; keep one word so words is never NULL. */
  if (n > SIZE_MAX / sizeof (uint64_t)
      || (bm->words = calloc (n ? n : 1, sizeof (uint64_t))) == NULL) {
    err_set (ENOMEM, "bitmap of %llu bits: out of memory",
             (unsigned long long) nbits);
    return -1;
  }
  bm->nbits = nbits;
  return 0;
}

void
bitmap_free (struct bitmap *bm)
{
  free (bm->words);
  bm->words = NULL;
  bm->nbits = 0;
}

void
bitmap_set_all (struct bitmap *bm)
{
  uint64_t n = nwords (bm->nbits);

  if (n == 0)
    return;
  memset (bm->words, 0xff, n * sizeof (uint64_t));
  /* Keep bits past the end clear so counts and scans stay exact. */
  if (bm->nbits & 63)
    bm->words[n - 1] = (UINT64_C (1) << (bm->nbits & 63)) - 1;
}

uint64_t
bitmap_count (const struct bitmap *bm)
{
  uint64_t i, n = nwords (bm->nbits), c = 0;

  for (i = 0; i < n; i++)
    c += __builtin_popcountll (bm->words[i]);
  return c;
}

uint64_t
bitmap_next_set (const struct bitmap *bm, uint64_t i)
{
  uint64_t w, n = nwords (bm->nbits);

  if (i >= bm->nbits)
    return bm->nbits;
  w = bm->words[i >> 6] & (~UINT64_C (0) << (i & 63));
  for (uint64_t wi = i >> 6;;) {
    if (w) {
      i = (wi << 6) + __builtin_ctzll (w);
      return i < bm->nbits ? i : bm->nbits;
    }
    if (++wi >= n)
      return bm->nbits;
    w = bm->words[wi];
  }
}

int
cbt_bitmap_decode (const uint8_t *buf, size_t len, uint64_t nblocks,
                   struct bitmap *out)
{
  uint64_t want = cbt_bitmap_bytes (nblocks), i;

  if (len != want) {
    err_set (EPROTO, "changed-block bitmap is %zu bytes, expected %llu for "
             "%llu blocks", len, (unsigned long long) want,
             (unsigned long long) nblocks);
    return -1;
  }
  if (bitmap_init (out, nblocks) == -1)
    return -1;
  for (i = 0; i < nblocks; i++)
    if ((buf[i >> 3] >> (7 - (i & 7))) & 1)
      bitmap_set (out, i);
  return 0;
}

void
cbt_bitmap_encode (const struct bitmap *bm, uint8_t *buf)
{
  uint64_t i;

  memset (buf, 0, cbt_bitmap_bytes (bm->nbits));
  for (i = bitmap_next_set (bm, 0); i < bm->nbits;
       i = bitmap_next_set (bm, i + 1))
    buf[i >> 3] |= 0x80 >> (i & 7);
}
