/* cbtfs: fetching missing blocks on demand, for lazy layers.
 *
 * A point in time whose layer is not complete still reads: a missing
 * block is fetched over NBD from the snapshot that owns it, served, and
 * (when the store can take it) kept, becoming durable in batches (a
 * flusher thread syncs fetched blocks about once a second, and gives a
 * layer's writer lock back once no block was kept in it for a whole
 * round, so that cbtfs fetch or a backup can finish it; it also closes
 * connections idle for 2 s, which keep their snapshots in use on the
 * host).  Readers of
 * the same missing blocks at the same time cause one fetch.  Every wait
 * is bounded, and after a snapshot's source fails, reads of it fail
 * fast for a while instead of each waiting out the timeout again.
 *
 * Thread model: any number of reader threads.  f->lock guards the
 * in-flight table, the connection pool, the failure memo and the dirty
 * list; it is never held across NBD I/O, the target callback or layer
 * I/O.  The flusher thread (started on the first stored block or
 * connection) takes f->lock only to swap out the dirty list and to take
 * idle connections out of the pool (closed after); the list of layers
 * it holds the writer lock of is its own.  Lock order: f->lock is not
 * held while taking layer locks.  A reader holding runs in a
 * fetch_later holds their in-flight entries until fetcher_keep_later;
 * it never waits for another reader's entry meanwhile (it keeps its own
 * first), so no two readers wait for each other.  f->tlock guards the
 * list of snapshots' connection details alone; each entry's own lock
 * (nbdsrc_known) is held across an ask of the targets (targets.h), so
 * one reader asks while the others that need that snapshot wait.
 */
#ifndef CBTFS_CHAIN_FETCH_H
#define CBTFS_CHAIN_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "layer.h"
#include "nbdsrc.h"
#include "targets.h"

struct fetch_opts {
  unsigned max_conns;           /* NBD connections in all (xapi-nbd: 16) */
  int timeout;                  /* seconds for any one NBD wait */
  int retry_after;              /* seconds a failed snapshot fails fast */
  bool store;                   /* keep fetched blocks in the store */
  struct nbdlimit *limit;       /* shared budget and rate (nbdlimit.h), or NULL */
};

struct fetcher;

/* A fetcher reaching snapshots as TG (copied; its opaque must outlive
 * the fetcher) says.  NULL on ENOMEM. */
extern struct fetcher *fetcher_new (const struct chain_targets *tg,
                                    const struct fetch_opts *o)
  __attribute__ ((__nonnull__ (1, 2)));

/* Make every fetched block durable, stop the flusher, close
 * connections and free.  0, or -1 with err_* if a sync failed.  NULL
 * is a no-op. */
extern int fetcher_free (struct fetcher *f);

/* Runs one reader fetched and served but has not kept yet, so that a
 * FUSE reader can reply before the store's write (which then no longer
 * delays the reply).  Other readers of those blocks wait until they are
 * kept.  Owned by one thread; zero-initialise; the buffers named stay
 * the reader's and must not change until fetcher_keep_later. */
#define FETCH_LATER_MAX 16
struct fetch_later_run {
  struct layer *l;
  uint64_t first;
  unsigned n;
  const void *buf;
};
struct fetch_later {
  unsigned n;
  struct fetch_later_run v[FETCH_LATER_MAX];
};

/* Fill OUT (N whole blocks) with blocks [FIRST, FIRST+N) of layer L
 * (all in L's set): ready blocks from the store (checked), missing ones
 * fetched.  Fetched blocks are kept at once, or, when LATER is not NULL
 * and has room, by fetcher_keep_later.  0, or -1 with err_* naming the
 * snapshot and offset (errno EIO). */
extern int fetcher_read (struct fetcher *f, struct layer *l, uint64_t first,
                         unsigned n, void *out, struct fetch_later *later)
  __attribute__ ((__nonnull__ (1, 2, 5)));

/* Keep the runs LATER holds (when the store can) and empty it. */
extern void fetcher_keep_later (struct fetcher *f, struct fetch_later *later)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_CHAIN_FETCH_H */
