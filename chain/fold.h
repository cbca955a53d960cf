/* cbtfs: dropping a layer from a disk without changing what any other
 * point reads (prune's merge; FORMAT.md, "Dropping a point").
 *
 * A point reads block b from the newest layer of its path that holds
 * b.  To drop layer P whose one child is C, C is replaced by C' with
 * C's blocks and those of P's that C lacks, and P's parent: point C
 * reads the same bytes, and every point above C is unchanged since it
 * reads through C.  Then P goes.  A point of P's own is gone.
 *
 * Cost: C' starts with the blocks of whichever of P and C stores more
 * (store_layer_stage shares them: a hard link in a directory store)
 * and the blocks of the other are written into it.  So a merge writes
 * the smaller side and an index, never a whole disk.
 *
 * Crash: C' is built aside and swapped in atomically
 * (store_layer_replace), after the disk's manifests note has been
 * rewritten without P and C (so no cached copy of the old C is taken
 * for C'), then P is removed.  Writing C' may change P's stored blocks
 * (when C' starts from P's), so once a fold has started, P's own point
 * may fail its checks: the caller records durably that P goes before
 * calling fold_drop, and an interrupted fold is finished by calling
 * fold_drop again, never undone.  It starts over from what is there:
 * the blocks it reads from P are those C lacks, which it never writes.
 *
 * Thread model: one thread; the caller holds the store lock, so no
 * other process creates or removes layers meanwhile.  Other processes
 * may read (a mount: each read is checked against the index it read
 * the block's record from, so it gets the right bytes or EIO) or want
 * to fill C or P (a mount fetching blocks): fold_drop waits for them.
 */
#ifndef CBTFS_CHAIN_FOLD_H
#define CBTFS_CHAIN_FOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

/* What fold_drop did. */
struct fold_stats {
  bool started;                 /* something changed: on failure, P's own
                                   point may no longer read (fold.h), or
                                   C was replaced; false when C' started
                                   from C's blocks and failed unswapped */
  bool merged;                  /* P was folded into a child */
  uint64_t blocks_written;      /* blocks copied into C' */
  uint64_t bytes_freed;         /* what P and the old C took, less C' */
};

/* Drop layer DROP of DISK from S: when CHILD is not NULL (then the one
 * layer whose parent is DROP), fold DROP into it first.  DROP must be
 * complete when it has a child (its blocks are the only copy the child
 * would read).  Waits up to WAIT seconds for a process filling DROP or
 * CHILD.  0 with *ST filled, or -1 with err_*: ENODATA (DROP is not
 * complete), EWOULDBLOCK (another process fills one of them), EINVAL
 * (CHILD's parent is not DROP), EOPNOTSUPP (the store cannot swap a
 * layer atomically), or the store's errors; then DROP is still there,
 * and CHILD reads as before. */
extern int fold_drop (struct store *s, const char *disk, const char *drop,
                      const char *child, double wait, struct fold_stats *st)
  __attribute__ ((__nonnull__ (1, 2, 3, 6)));

/* Remove layer SNAP of DISK as its one writer (store.h: nobody may be
 * filling a layer that goes), waiting up to WAIT seconds for a process
 * filling it; *FREED gets what it took.  0, or -1 with err_* (errno
 * ENOENT: the layer is not there). */
extern int fold_remove (struct store *s, const char *disk, const char *snap,
                        double wait, uint64_t *freed)
  __attribute__ ((__nonnull__ (1, 2, 3, 5)));

#endif /* CBTFS_CHAIN_FOLD_H */
