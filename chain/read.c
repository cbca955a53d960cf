/* cbtfs: reading a point in time.
 *
 * Thread model: reentrant (see read.h); the bounce buffer is per call.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "read.h"

struct layer *
chain_resolve (struct layer *top, uint64_t b, bool *broken)
{
  struct layer *l;

  *broken = false;
  for (l = top; l; l = l->parent) {
    if (bitmap_get (&l->changed, b))
      return l;
    if (l->parent_missing) {
      *broken = true;
      return NULL;
    }
  }
  return NULL;
}

bool
chain_readable (struct layer *top)
{
  for (struct layer *l = top; l; l = l->parent)
    if (!layer_complete (l) || l->parent_missing)
      return false;
  return true;
}

/* How many blocks, from B on and at most MAX, the point TOP takes from
 * layer L while L is missing them: one fetch for the whole run. */
static unsigned
missing_run (struct layer *top, struct layer *l, uint64_t b, unsigned max)
{
  unsigned k = 1;
  bool broken;

  while (k < max && chain_resolve (top, b + k, &broken) == l
         && layer_block_state (l, b + k) == LAYER_MISSING)
    k++;
  return k;
}

/* Fill OUT (N whole blocks, N >= 1) from block B of point TOP; *DONE
 * gets how many blocks were filled (>= 1). */
static int
read_blocks (struct layer *top, uint64_t b, unsigned n, uint8_t *out,
             struct fetcher *fetch, unsigned *done)
{
  bool broken;
  struct layer *l = chain_resolve (top, b, &broken);

  *done = 1;
  if (broken) {
    err_set (EIO, "snapshot %s: offset %" PRIu64 " needs a layer that is "
             "missing from the store", top->meta.snapshot,
             b << CHAIN_BLOCK_SHIFT);
    return -1;
  }
  if (l == NULL) {
    memset (out, 0, CHAIN_BLOCK_SIZE);
    return 0;
  }
  if (layer_block_state (l, b) == LAYER_MISSING) {
    if (fetch == NULL) {
      err_set (EIO, "snapshot %s: offset %" PRIu64 " is not in the store "
               "(its layer %s is incomplete)", top->meta.snapshot,
               b << CHAIN_BLOCK_SHIFT, l->meta.snapshot);
      return -1;
    }
    *done = missing_run (top, l, b, n);
    return fetcher_read (fetch, l, b, *done, out);
  }
  if (layer_read_block (l, b, out) == -1) {
    errno = EIO;
    return -1;
  }
  return 0;
}

/* Fetch at most this many blocks in one go (1 MiB). */
#define RUN_MAX 16

int
chain_read (struct layer *top, void *buf, size_t count, uint64_t offset,
            struct fetcher *fetch)
{
  CLEANUP_FREE uint8_t *bounce = NULL;
  uint8_t *out = buf;

  if (offset > top->meta.size || count > top->meta.size - offset) {
    err_set (EINVAL, "read past the end of snapshot %s", top->meta.snapshot);
    return -1;
  }
  while (count > 0) {
    uint64_t b = offset >> CHAIN_BLOCK_SHIFT;
    size_t skip = offset & (CHAIN_BLOCK_SIZE - 1);
    size_t whole = skip ? 0 : count >> CHAIN_BLOCK_SHIFT;
    unsigned done;
    size_t n;

    if (whole > 0) {
      /* Whole blocks: straight into the caller's buffer. */
      if (read_blocks (top, b, MIN (whole, RUN_MAX), out, fetch, &done) == -1)
        return -1;
      n = (size_t) done << CHAIN_BLOCK_SHIFT;
    }
    else {
      /* Part of a block: the checksum covers the whole block. */
      if (bounce == NULL && (bounce = malloc (CHAIN_BLOCK_SIZE)) == NULL) {
        err_set (ENOMEM, "out of memory");
        return -1;
      }
      if (read_blocks (top, b, 1, bounce, fetch, &done) == -1)
        return -1;
      n = MIN (count, CHAIN_BLOCK_SIZE - skip);
      memcpy (out, bounce + skip, n);
    }
    out += n;
    offset += n;
    count -= n;
  }
  return 0;
}
