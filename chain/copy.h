/* cbtfs: filling a layer from its snapshot over NBD.
 *
 * Copies every block of a layer's set that is not yet present, over
 * several NBD connections at once (xapi-nbd serves each connection one
 * request at a time, so parallelism needs connections), with a few
 * reads in flight on each (which hides the round trip), coalescing
 * adjacent blocks into larger requests.  Blocks become present in
 * batches (layer_sync), so a crash or a lost connection costs only the
 * last unsynced batch; the next run copies just what is missing.
 *
 * Thread model: copy_layer starts opts->conns worker threads, each
 * with its own NBD connection, and waits for them, printing progress.
 * Workers share one cursor (a mutex) over the layer's blocks; they ask
 * the targets (targets.h) for the snapshot's details one at a time
 * (under its nbdsrc_known lock), once for all of them unless the
 * details stop working.
 */
#ifndef CBTFS_CHAIN_COPY_H
#define CBTFS_CHAIN_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "layer.h"
#include "nbdsrc.h"
#include "targets.h"

struct copy_opts {
  unsigned conns;               /* NBD connections (1..16; xapi-nbd's limit) */
  unsigned request_blocks;      /* blocks per NBD request (coalescing) */
  unsigned depth;               /* reads in flight per connection */
  unsigned retries;             /* reconnects per connection before giving up */
  int timeout;                  /* seconds for any one NBD wait */
  bool progress;                /* print progress to stderr (a terminal) */
  const char *label;            /* what the progress line names */
  struct nbdlimit *limit;       /* shared budget and rate (nbdlimit.h), or NULL */
};

struct copy_stats {
  uint64_t bytes;               /* read over NBD */
  uint64_t blocks;              /* blocks put into the layer */
  uint64_t requests;            /* NBD read requests */
  double seconds;
};

/* Fill L (writable) from its snapshot (l->meta.snapshot), reached as
 * TG says; L's meta.size must equal the export's size.  On return every
 * copied block is durable.  0, or -1 with err_* (the first worker's
 * failure). */
extern int copy_layer (struct layer *l, const struct chain_targets *tg,
                       const struct copy_opts *opts, struct copy_stats *st)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

#endif /* CBTFS_CHAIN_COPY_H */
