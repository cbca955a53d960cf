/* cbtfs: reading a point in time.
 *
 * A point in time is its newest layer plus that layer's parents down to
 * the baseline.  Block b of the point comes from the newest layer whose
 * set holds b; zeros where none does (past an older, smaller size, or
 * blocks a sparse baseline never had).
 *
 * Thread model: reentrant; any number of threads may read the same or
 * different points at once (layers lock themselves).
 */
#ifndef CBTFS_CHAIN_READ_H
#define CBTFS_CHAIN_READ_H

#include <stddef.h>
#include <stdint.h>

#include "fetch.h"
#include "layer.h"

/* The layer supplying block B of the point whose newest layer is TOP,
 * or NULL for zeros.  Loads the layers it needs (layer_load).  *BROKEN
 * is set, with err_* saying why, when a missing parent or a layer that
 * cannot be loaded came before B was found (the block cannot be known;
 * reading it must fail). */
extern struct layer *chain_resolve (struct layer *top, uint64_t b,
                                    bool *broken)
  __attribute__ ((__nonnull__ (1, 3)));

/* True when every block of the point TOP can be read from the store:
 * its layer and every layer below are complete and present. */
extern bool chain_readable (struct layer *top)
  __attribute__ ((__nonnull__ (1)));

/* How blocks from B on read, without reading them: returns how many
 * (at least 1, at most MAX) read alike, and sets *ZERO when they read
 * as zeros because no layer of TOP's chain holds them or the layer
 * that does holds them as zeros (the store keeps nothing for either),
 * or clears it when they hold data or cannot be known without a read
 * (not stored yet, a broken chain).  0 when B is past the point's
 * last block or MAX is 0.  Loads the layers it needs; never fails. */
extern uint64_t chain_extent (struct layer *top, uint64_t b, uint64_t max,
                              bool *zero)
  __attribute__ ((__nonnull__ (1, 4)));

/* Read COUNT bytes at OFFSET of the point TOP into BUF; the range must
 * lie within top->meta.size.  Every stored block is checked against its
 * checksum first.  Blocks not stored are fetched through FETCH, if not
 * NULL.  0, or -1 with err_* naming the snapshot and offset and errno
 * EIO (damaged, or not stored and not fetchable). */
extern int chain_read (struct layer *top, void *buf, size_t count,
                       uint64_t offset, struct fetcher *fetch)
  __attribute__ ((__nonnull__ (1, 2)));

/* chain_read, leaving blocks fetched into BUF in LATER (if not NULL) for
 * the caller to keep with fetcher_keep_later once it has used BUF, also
 * when this fails. */
extern int chain_read_later (struct layer *top, void *buf, size_t count,
                             uint64_t offset, struct fetcher *fetch,
                             struct fetch_later *later)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_CHAIN_READ_H */
