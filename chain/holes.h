/* cbtfs: where a point in time holds data, and where it surely reads
 * as zeros (for SEEK_DATA/SEEK_HOLE, st_blocks, block status).
 *
 * Block b of a point is a hole when it is known to read as zeros
 * without being read: no layer of the chain has it in its set (past an
 * older, smaller size, or a block a sparse baseline never had), or the
 * layer that supplies it holds it as zeros (LAYER_ZERO).  Every other
 * block may hold data: a stored block, a block not stored yet (a lazy
 * or interrupted layer: the host has it, whatever it is), and a block
 * under a missing or damaged layer.  So a hole is never claimed where
 * data may be, and a block can only turn from data into a hole, as its
 * layer fills.
 *
 * Thread model: reentrant, as read.h; an answer reflects the layers'
 * state during the call.
 */
#ifndef CBTFS_CHAIN_HOLES_H
#define CBTFS_CHAIN_HOLES_H

#include <stdbool.h>
#include <stdint.h>

#include "layer.h"

/* The first block at or after B of the point whose newest layer is
 * TOP that may hold data (DATA true) or that is a hole (DATA false);
 * layer_nblocks (top) when there is none.  Loads the chain's layers;
 * one that cannot be loaded counts as data.  Costs a pass over the
 * chain's sets per 64 blocks skipped, not per block. */
extern uint64_t chain_next_extent (struct layer *top, uint64_t b, bool data)
  __attribute__ ((__nonnull__ (1)));

/* How many blocks of point TOP may hold data.  Counted once and kept
 * when the point's chain is complete (nothing can change then);
 * counted afresh each call until then. */
extern uint64_t chain_data_blocks (struct layer *top)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_CHAIN_HOLES_H */
