/* cbtfs: what layer.c and layer-blocks.c share about a layer, and
 * nothing outside them sees. */
#ifndef CBTFS_CHAIN_LAYER_IMPL_H
#define CBTFS_CHAIN_LAYER_IMPL_H

#include <stdint.h>

#include "index.h"
#include "layer.h"

/* Records queued by puts, not yet durable (l->pending). */
struct pending {
  struct index_rec *v;
  size_t len, cap;
};

/* The place of block B (in the set) among the blocks of the set. */
static inline uint64_t
layer_set_rank (const struct layer *l, uint64_t b)
{
  if (l->rank == NULL)
    return b;
  return l->rank[b >> 6] + __builtin_popcountll (
    l->changed.words[b >> 6] & ((UINT64_C (1) << (b & 63)) - 1));
}

/* Apply one durable record R, number N in the index, to layer OPAQUE's
 * in-memory state (an index_fn).  Called with l->lock held exclusively
 * (or before the layer is shared).  0 or -1 with err_*. */
extern int layer_apply_rec (void *opaque, const struct index_rec *r,
                            uint64_t n);

#endif /* CBTFS_CHAIN_LAYER_IMPL_H */
