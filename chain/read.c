/* cbtfs: reading a point in time.
 *
 * Thread model: reentrant (see read.h); the bounce buffer is per call.
 * A point's index is built once, under its top layer's resolve lock, and
 * published with an atomic store; readers after that take no lock.
 * Layers are loaded (layer_load, thread-safe) as resolution reaches
 * them: a layer's set is only looked at after layer_load succeeded.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "read.h"

/* The source of every block of a point, as runs: a point built from a
 * long chain would otherwise walk every layer for every block (the cost
 * grows with depth, as in VHD and qcow2 readers: docs/performance.md,
 * "Chain depth").  Built on the first read of the point, kept while its
 * top layer lives.  Sets never change once written, so neither does the
 * index. */
struct chain_index {
  size_t nruns;
  uint64_t *start;              /* first block of each run; start[0] = 0 */
  struct layer **src;           /* its layer, NULL for zeros, or BROKEN */
};

/* Points this shallow walk their layers; an index would not pay. */
#define INDEX_MIN_DEPTH 8
#define NONE 0xFFFF
#define GAP 0xFFFE                /* below a missing parent: unknowable */

/* An address no layer has: the run's blocks are unknowable. */
static max_align_t broken_marker;      /* aligned for any type */
#define BROKEN ((struct layer *) &broken_marker)

static void
index_free (void *p)
{
  struct chain_index *ix = p;

  if (ix) {
    free (ix->start);
    free (ix->src);
    free (ix);
  }
}

/* Build TOP's index, loading every layer of its chain.  A layer that
 * is damaged ends the chain there: blocks no layer above it holds are
 * unknowable (GAP).  NULL to walk instead: the chain is too shallow or
 * too deep for an index, or (*RETRY set) a layer could not be loaded
 * now or memory ran out, and the next read should try again. */
static struct chain_index *
index_build (struct layer *top, bool *retry)
{
  CLEANUP_FREE uint16_t *owner = NULL;
  CLEANUP_FREE struct layer **chain = NULL;
  struct chain_index *ix = NULL;
  uint64_t n = layer_nblocks (top), b;
  size_t depth = 0, i, r;
  struct layer *l;
  bool cut;

  *retry = false;
  for (l = top; l; l = layer_parent (l))
    depth++;
  if (depth < INDEX_MIN_DEPTH || depth >= GAP)
    return NULL;
  *retry = true;
  chain = malloc (depth * sizeof *chain);
  owner = malloc ((n ? n : 1) * sizeof *owner);
  if (chain == NULL || owner == NULL)
    return NULL;
  for (i = 0, l = top; l; l = layer_parent (l))
    chain[i++] = l;
  cut = layer_parent_missing (chain[depth - 1]);
  for (i = 0; i < depth; i++)
    if (layer_load (chain[i]) == -1) {
      if (errno != EIO)
        return NULL;
      depth = i;                /* damaged: nothing below it counts */
      cut = true;
      break;
    }
  memset (owner, 0xff, n * sizeof *owner);
  /* Newest first: a block belongs to the first layer whose set has it. */
  for (i = 0; i < depth; i++) {
    /* Older layers may be smaller (the disk grew since). */
    uint64_t m = MIN (n, layer_set (chain[i])->nbits);
    for (b = bitmap_next_set (layer_set (chain[i]), 0); b < m;
         b = bitmap_next_set (layer_set (chain[i]), b + 1))
      if (owner[b] == NONE)
        owner[b] = i;
  }
  if (cut)
    for (b = 0; b < n; b++)
      if (owner[b] == NONE)
        owner[b] = GAP;

  ix = calloc (1, sizeof *ix);
  for (b = 0, r = 0; b < n; b++)
    r += b == 0 || owner[b] != owner[b - 1];
  if (ix == NULL || (ix->start = malloc ((r + 1) * sizeof *ix->start)) == NULL
      || (ix->src = malloc ((r + 1) * sizeof *ix->src)) == NULL) {
    index_free (ix);
    return NULL;
  }
  for (b = 0, r = 0; b < n; b++)
    if (b == 0 || owner[b] != owner[b - 1]) {
      ix->start[r] = b;
      ix->src[r] = owner[b] == NONE ? NULL
        : owner[b] == GAP ? BROKEN : chain[owner[b]];
      r++;
    }
  ix->nruns = r;
  *retry = false;
  return ix;
}

/* TOP's index, building it on first use; NULL to walk instead. */
static const struct chain_index *
index_of (struct layer *top)
{
  struct layer_resolve *r = layer_resolve (top);
  struct chain_index *ix = __atomic_load_n (&r->cache, __ATOMIC_ACQUIRE);

  if (ix || __atomic_load_n (&r->tried, __ATOMIC_ACQUIRE))
    return ix;
  pthread_mutex_lock (&r->lock);
  if (!r->tried) {
    bool retry;
    ix = index_build (top, &retry);
    r->cache_free = index_free;
    __atomic_store_n (&r->cache, ix, __ATOMIC_RELEASE);
    __atomic_store_n (&r->tried, !retry, __ATOMIC_RELEASE);
  }
  ix = r->cache;
  pthread_mutex_unlock (&r->lock);
  return ix;
}

/* Resolve B layer by layer, loading each as it is reached. */
static struct layer *
walk (struct layer *top, uint64_t b, bool *broken)
{
  for (struct layer *l = top; l; l = layer_parent (l)) {
    if (layer_load (l) == -1) {
      *broken = true;
      return NULL;
    }
    if (bitmap_get (layer_set (l), b))
      return l;
    if (layer_parent_missing (l)) {
      err_set (EIO, "needs a layer that is missing from the store");
      *broken = true;
      return NULL;
    }
  }
  return NULL;
}

struct layer *
chain_resolve (struct layer *top, uint64_t b, bool *broken)
{
  const struct chain_index *ix;
  size_t lo, hi;

  *broken = false;
  if (b >= layer_nblocks (top) || (ix = index_of (top)) == NULL)
    return walk (top, b, broken);
  /* The last run starting at or before B. */
  for (lo = 0, hi = ix->nruns; hi - lo > 1;) {
    size_t mid = lo + (hi - lo) / 2;
    if (ix->start[mid] <= b)
      lo = mid;
    else
      hi = mid;
  }
  if (ix->src[lo] == BROKEN)
    return walk (top, b, broken);     /* rare: it says why */
  return ix->src[lo];
}

bool
chain_readable (struct layer *top)
{
  for (struct layer *l = top; l; l = layer_parent (l))
    if (!layer_complete (l) || layer_parent_missing (l))
      return false;
  return true;
}

bool
chain_readable_now (struct layer *top)
{
  for (struct layer *l = top; l; l = layer_parent (l))
    if (layer_parent_missing (l)
        || (!layer_complete (l)
            && (layer_catch_up (l) == -1 || !layer_complete (l))))
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
             struct fetcher *fetch, struct fetch_later *later,
             unsigned *done)
{
  bool broken;
  struct layer *l = chain_resolve (top, b, &broken);
  enum layer_block st;

  *done = 1;
  if (broken) {
    err_prefix ("snapshot %s: offset %" PRIu64, layer_meta (top)->snapshot,
                b << CHAIN_BLOCK_SHIFT);
    errno = EIO;
    return -1;
  }
  if (l == NULL) {
    memset (out, 0, CHAIN_BLOCK_SIZE);
    return 0;
  }
  st = layer_block_state (l, b);
  if (st == LAYER_MISSING) {
    /* Another process (cbtfs fetch, a backup) may have filled it since. */
    if (layer_catch_up (l) == -1)
      log_debug ("%s", err_get ());  /* then it is fetched, or EIO */
    st = layer_block_state (l, b);
  }
  if (st == LAYER_MISSING) {
    if (fetch == NULL) {
      err_set (EIO, "snapshot %s: offset %" PRIu64 " is not in the store "
               "(its layer %s is incomplete)", layer_meta (top)->snapshot,
               b << CHAIN_BLOCK_SHIFT, layer_meta (l)->snapshot);
      return -1;
    }
    *done = missing_run (top, l, b, n);
    return fetcher_read (fetch, l, b, *done, out, later);
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
  return chain_read_later (top, buf, count, offset, fetch, NULL);
}

int
chain_read_later (struct layer *top, void *buf, size_t count,
                  uint64_t offset, struct fetcher *fetch,
                  struct fetch_later *later)
{
  const struct layer_meta *m = layer_meta (top);
  CLEANUP_FREE uint8_t *bounce = NULL;
  uint8_t *out = buf;

  if (offset > m->size || count > m->size - offset) {
    err_set (EINVAL, "read past the end of snapshot %s", m->snapshot);
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
      if (read_blocks (top, b, MIN (whole, RUN_MAX), out, fetch, later,
                       &done) == -1)
        return -1;
      n = (size_t) done << CHAIN_BLOCK_SHIFT;
    }
    else {
      /* Part of a block: the checksum covers the whole block. */
      if (bounce == NULL && (bounce = malloc (CHAIN_BLOCK_SIZE)) == NULL) {
        err_set (ENOMEM, "out of memory");
        return -1;
      }
      /* Kept at once: the bounce buffer is gone when we return. */
      if (read_blocks (top, b, 1, bounce, fetch, NULL, &done) == -1)
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
