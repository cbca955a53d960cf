/* cbtfs: where a point in time holds data (holes.h).
 *
 * Thread model: reentrant (holes.h); each call works on its own
 * buffers and takes one layer's lock at a time (layer_claim_words).
 * The kept count is published with an atomic store.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "holes.h"
#include "read.h"

/* Words (of 64 blocks) looked at per pass over the chain: 1 GiB of
 * disk, 2 KiB of stack per buffer (frames stay under 5000 bytes). */
#define WINDOW 256

/* The blocks of TOP's words [W0, W0 + N) that may hold data, into
 * DATA.  Each layer, newest first, answers for the blocks of its set
 * that no newer layer answered for; what no layer answers for is a
 * hole, unless the chain is cut (a missing or damaged layer). */
static void
data_words (struct layer *top, uint64_t w0, size_t n, uint64_t *data)
{
  uint64_t left[WINDOW], nb = layer_nblocks (top), any;
  struct layer *l;
  size_t i;

  for (i = 0; i < n; i++) {
    uint64_t first = (w0 + i) << 6;
    left[i] = nb - first >= 64 ? ~UINT64_C (0)
      : (UINT64_C (1) << (nb - first)) - 1;
    data[i] = 0;
  }
  for (l = top; l; l = layer_parent (l)) {
    if (layer_load (l) == -1)
      break;                    /* unknowable: data */
    layer_claim_words (l, w0, n, left, data);
    for (i = 0, any = 0; i < n; i++)
      any |= left[i];
    if (any == 0)
      return;
    if (layer_parent_missing (l))
      break;
  }
  if (l != NULL)
    for (i = 0; i < n; i++)
      data[i] |= left[i];
}

/* The first block at or after B that some layer of TOP's chain has in
 * its set, or B itself when the chain is cut: blocks before it are
 * holes.  A quick skip over the empty part of a sparse disk. */
static uint64_t
first_in_sets (struct layer *top, uint64_t b)
{
  uint64_t first = layer_nblocks (top);

  for (struct layer *l = top; l; l = layer_parent (l)) {
    if (layer_load (l) == -1 || layer_parent_missing (l))
      return b;
    const struct bitmap *set = layer_set (l);
    uint64_t n = bitmap_next_set (set, b);
    /* An older layer may be smaller: its end is not a block. */
    if (n < set->nbits)
      first = MIN (first, n);
  }
  return first;
}

uint64_t
chain_next_extent (struct layer *top, uint64_t b, bool data)
{
  uint64_t nb = layer_nblocks (top), words[WINDOW];

  if (data && b < nb)
    b = first_in_sets (top, b);
  while (b < nb) {
    uint64_t w0 = b >> 6;
    size_t n = MIN ((uint64_t) WINDOW, (nb + 63) / 64 - w0);

    data_words (top, w0, n, words);
    for (size_t i = 0; i < n; i++) {
      uint64_t first = (w0 + i) << 6;
      uint64_t v = data ? words[i] : ~words[i];
      if (i == 0)
        v &= ~UINT64_C (0) << (b & 63);
      if (v)
        return MIN (first + __builtin_ctzll (v), nb);
    }
    b = (w0 + n) << 6;
  }
  return nb;
}

uint64_t
chain_data_blocks (struct layer *top)
{
  struct layer_resolve *r = layer_resolve (top);
  uint64_t kept = __atomic_load_n (&r->data_blocks, __ATOMIC_ACQUIRE);
  uint64_t nb = layer_nblocks (top), words[WINDOW], count = 0;
  bool complete;

  if (kept)
    return kept - 1;
  /* A complete chain has every block present: its count never
   * changes, so it is kept.  Asked before counting, so that a chain
   * completing meanwhile is not kept with an older count. */
  complete = chain_readable (top);
  for (uint64_t w0 = 0; w0 < (nb + 63) / 64; w0 += WINDOW) {
    size_t n = MIN ((uint64_t) WINDOW, (nb + 63) / 64 - w0);
    data_words (top, w0, n, words);
    for (size_t i = 0; i < n; i++)
      count += __builtin_popcountll (words[i]);
  }
  if (complete)
    __atomic_store_n (&r->data_blocks, count + 1, __ATOMIC_RELEASE);
  return count;
}
