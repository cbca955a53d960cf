/* cbtfs: block number → checksum, an open-addressing hash table.
 *
 * XXH3-128 (libxxhash) is the block checksum: it detects bit rot and
 * torn writes at tens of GB/s, so checking every block read from the
 * store costs nothing next to the read itself.  It is not a defence
 * against a deliberate forger, which the store does not claim.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sums.h"

static size_t
slot_of (uint64_t key, size_t cap)
{
  /* Fibonacci hashing spreads sequential block numbers. */
  return (size_t) ((key * UINT64_C (0x9E3779B97F4A7C15)) >> 17) & (cap - 1);
}

static int
grow (struct sums *t)
{
  size_t ncap = t->cap ? t->cap * 2 : 64, i;
  struct sums_slot *ns = calloc (ncap, sizeof *ns);

  if (ns == NULL)
    return -1;
  for (i = 0; i < t->cap; i++) {
    if (t->slots[i].key) {
      size_t j = slot_of (t->slots[i].key, ncap);
      while (ns[j].key)
        j = (j + 1) & (ncap - 1);
      ns[j] = t->slots[i];
    }
  }
  free (t->slots);
  t->slots = ns;
  t->cap = ncap;
  return 0;
}

int
sums_put (struct sums *t, uint64_t b, const uint8_t sum[SUM_LEN])
{
  uint64_t key = b + 1;
  size_t j;

  if ((t->len + 1) * 2 > t->cap && grow (t) == -1) {
    errno = ENOMEM;
    return -1;
  }
  for (j = slot_of (key, t->cap); t->slots[j].key; j = (j + 1) & (t->cap - 1))
    if (t->slots[j].key == key)
      break;
  if (t->slots[j].key == 0)
    t->len++;
  t->slots[j].key = key;
  memcpy (t->slots[j].sum, sum, SUM_LEN);
  return 0;
}

const uint8_t *
sums_get (const struct sums *t, uint64_t b)
{
  uint64_t key = b + 1;
  size_t j;

  if (t->cap == 0)
    return NULL;
  for (j = slot_of (key, t->cap); t->slots[j].key; j = (j + 1) & (t->cap - 1))
    if (t->slots[j].key == key)
      return t->slots[j].sum;
  return NULL;
}

void
sums_del (struct sums *t, uint64_t b)
{
  uint64_t key = b + 1;
  size_t i, j, mask = t->cap - 1;

  if (t->cap == 0)
    return;
  for (i = slot_of (key, t->cap); t->slots[i].key != key; i = (i + 1) & mask)
    if (t->slots[i].key == 0)
      return;
  /* Linear probing keeps no tombstones: move each later member of the
   * run back into the hole unless its home slot lies between the hole
   * and it (then lookups would no longer reach it). */
  for (j = (i + 1) & mask; t->slots[j].key; j = (j + 1) & mask) {
    size_t home = slot_of (t->slots[j].key, t->cap);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      t->slots[i] = t->slots[j];
      i = j;
    }
  }
  t->slots[i].key = 0;
  t->len--;
}

void
sums_free (struct sums *t)
{
  free (t->slots);
  t->slots = NULL;
  t->cap = t->len = 0;
}

void
sums_compute (const void *buf, size_t len, uint8_t out[SUM_LEN])
{
  XXH128_canonical_t c;

  XXH128_canonicalFromHash (&c, XXH3_128bits (buf, len));
  memcpy (out, c.digest, SUM_LEN);
}
