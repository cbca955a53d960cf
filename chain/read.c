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

/* Fill OUT (one whole block) with block B of point TOP. */
static int
read_block (struct layer *top, uint64_t b, void *out)
{
  bool broken;
  struct layer *l = chain_resolve (top, b, &broken);

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
  if (layer_read_block (l, b, out) == -1) {
    if (errno == ENODATA)
      err_set (EIO, "snapshot %s: offset %" PRIu64 " is not in the store "
               "(its layer %s is incomplete)", top->meta.snapshot,
               b << CHAIN_BLOCK_SHIFT, l->meta.snapshot);
    else
      errno = EIO;
    return -1;
  }
  return 0;
}

int
chain_read (struct layer *top, void *buf, size_t count, uint64_t offset)
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
    size_t n = MIN (count, CHAIN_BLOCK_SIZE - skip);

    if (skip == 0 && n == CHAIN_BLOCK_SIZE) {
      /* Whole block: straight into the caller's buffer. */
      if (read_block (top, b, out) == -1)
        return -1;
    }
    else {
      /* Part of a block: the checksum covers the whole block. */
      if (bounce == NULL && (bounce = malloc (CHAIN_BLOCK_SIZE)) == NULL) {
        err_set (ENOMEM, "out of memory");
        return -1;
      }
      if (read_block (top, b, bounce) == -1)
        return -1;
      memcpy (out, bounce + skip, n);
    }
    out += n;
    offset += n;
    count -= n;
  }
  return 0;
}
