/* cbtfs: one layer of a chain: the blocks one snapshot changed.
 *
 * A layer lives in a store (store/store.h) as a manifest (layer-meta.h),
 * a set of blocks (absent for a full layer), an index of records
 * vouching for blocks (index.h) and the blocks.  It is created with its
 * description and then filled; it is complete when every block in its
 * set has an index record.  One process at a time may fill a layer:
 * it is the store's writer of it.
 *
 * A block put into a layer is "ready" at once (this process may serve
 * it: its bytes are written and its checksum is known) and "present"
 * only once its data and index record are durable (layer_sync).  Only
 * present blocks survive a crash; ready ones are fetched again.
 *
 * A process that fills a layer only while it needs to (a mount) gives
 * the writer's place back when idle (layer_release); a process reading
 * a layer another fills learns what it added with layer_catch_up.
 *
 * A layer opened with layer_open_lazy has only its manifest in memory;
 * its set and index are read by layer_load, once, when something first
 * needs them (a mount of thousands of layers reads only manifests).
 *
 * Thread model: any number of threads may read blocks and put blocks
 * at once.  l->lock (rwlock) guards the in-memory state (bits,
 * checksums, pending records, whether this process writes); l->sync_lock
 * serialises layer_sync, layer_make_writable and layer_release, so that
 * records reach the index in one writer's order and the store's writer
 * calls are serialised as store.h asks.  l->load_lock serialises
 * layer_load, which publishes the set and index by storing
 * l->load_state with release semantics; readers that see LAYER_LOADED
 * (acquire) read the set without a lock.  Lock order: load_lock, then
 * sync_lock, then lock.  Block I/O happens outside all of them
 * (l->writers counts the writers, so that layer_release never stops
 * writing under one); index appends under sync_lock only.
 */
#ifndef CBTFS_CHAIN_LAYER_H
#define CBTFS_CHAIN_LAYER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/util.h"
#include "bitmap.h"
#include "layer-meta.h"
#include "sums.h"
#include "store/store.h"

#define CHAIN_BLOCK_SHIFT 16
#define CHAIN_BLOCK_SIZE (1u << CHAIN_BLOCK_SHIFT)

/* Blocks needed for SIZE bytes. */
static inline uint64_t
chain_nblocks (uint64_t size)
{
  return (size + CHAIN_BLOCK_SIZE - 1) >> CHAIN_BLOCK_SHIFT;
}

/* Whether a layer's set and index are in memory (l->load_state). */
enum layer_load {
  LAYER_UNLOADED = 0,           /* opened lazily, not needed yet */
  LAYER_LOADED = 1,             /* set, index and counts are valid */
  LAYER_DAMAGED = 2,            /* its set or index is damaged: never serve */
};

/* What a layer knows about one block. */
enum layer_block {
  LAYER_ABSENT = 0,             /* not in this layer's set: look further down */
  LAYER_MISSING = 1,            /* in the set, not (yet) stored */
  LAYER_ZERO = 2,               /* in the set, all zeros (ready) */
  LAYER_DATA = 3,               /* in the set, stored with a checksum (ready) */
};

struct layer;                   /* opaque: layer-impl.h */

/* What the resolver (read.c) keeps with a layer: the block -> layer
 * index of the point the layer tops.  The layer frees it (cache_free)
 * when it is closed or unloaded. */
struct layer_resolve {
  pthread_mutex_t lock;         /* serialises building it */
  void *cache;                  /* atomic */
  void (*cache_free) (void *);
  bool tried;                   /* atomic: built, or failed for good */
  uint64_t data_blocks;         /* atomic: holes.c's count of the point's
                                   blocks that hold data, plus one, once
                                   its chain is complete; 0 before */
};

/* What L is (its manifest); borrowed, immutable while L is open. */
extern const struct layer_meta *layer_meta (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* Blocks of L's disk. */
extern uint64_t layer_nblocks (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* L's set of blocks (all of them for a full layer); L must be loaded
 * (layer_load), after which the set never changes. */
extern const struct bitmap *layer_set (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* Blocks in L's set, once loaded (or from counts layer_unload kept). */
extern uint64_t layer_nchanged (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* The store L lives in (borrowed). */
extern struct store *layer_store (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* Index records of L skipped as damaged when it was read. */
extern uint64_t layer_damaged_records (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* The layer below L in its chain (NULL for a baseline or when it is
 * missing), and whether its manifest names a parent that is missing or
 * damaged; set by the catalog with layer_link. */
extern struct layer *layer_parent (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));
extern bool layer_parent_missing (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));
extern void layer_link (struct layer *l, struct layer *parent, bool missing)
  __attribute__ ((__nonnull__ (1)));

/* The resolver's slot in L. */
extern struct layer_resolve *layer_resolve (struct layer *l)
  __attribute__ ((__nonnull__ (1)));


/* Create layer META->snapshot of disk META->disk in STORE atomically
 * (store_layer_create), holding META and CHANGED (NULL when
 * meta->full), note its manifest (manifests.h), and open it for
 * writing.  CHANGED must have chain_nblocks (meta->size) bits.  Returns
 * the layer (caller closes; STORE must outlive it) or NULL with err_*. */
extern struct layer *layer_create (struct store *store,
                                   const struct layer_meta *meta,
                                   const struct bitmap *changed)
  __attribute__ ((__nonnull__ (1, 2)));

/* Open layer SNAPSHOT of DISK, for reading or (WRITABLE) also for
 * filling: then this process becomes its writer and a torn index tail
 * is cut off first.  NULL with err_* when the manifest, set or index
 * is damaged, or (errno EWOULDBLOCK) another process is filling the
 * layer. */
extern struct layer *layer_open (struct store *store, const char *disk,
                                 const char *snapshot, bool writable)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Open layer SNAPSHOT of DISK for reading, with only its manifest read:
 * the set and index are read by layer_load when first needed.  NULL
 * with err_* when the manifest is damaged or cannot be read. */
extern struct layer *layer_open_lazy (struct store *store, const char *disk,
                                      const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* As layer_open_lazy, for the layer of DISK whose manifest is TEXT
 * (LEN bytes, a copy from manifests.h) instead of read from the store.
 * The caller checks that the layer is there.  NULL with err_* when
 * TEXT is not a good manifest. */
extern struct layer *layer_open_lazy_text (struct store *store,
                                           const char *disk,
                                           const char *text, size_t len)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Bytes L takes in its store (store_layer_usage).  0 or -1 with err_*. */
extern int layer_usage (const struct layer *l, uint64_t *bytes)
  __attribute__ ((__nonnull__ (1, 2)));

/* Where L lives, for messages; borrowed from L. */
extern const char *layer_where (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* Make sure L's set and index are in memory, reading them the first
 * time.  Thread-safe; cheap once loaded.  0, or -1 with err_* and errno
 * EIO when they are damaged (remembered: every later call fails the
 * same way, and the damage is logged once), or another errno when they
 * cannot be read now (ENOMEM, EMFILE, …: a later call tries again).
 * Every function below that looks at blocks loads the layer first;
 * code that reads l->changed or l->nchanged directly must call this. */
extern int layer_load (struct layer *l) __attribute__ ((__nonnull__ (1)));

/* Free L's set, index and resolver cache, keeping its counts (then
 * layer_complete and layer_counts answer from them without reading),
 * so that a command walking a whole store holds one disk's layers at a
 * time, not the store's.  The next call that needs L's blocks loads it
 * again.  Only for a process that does not fill L and does not use it
 * from another thread meanwhile.  0, or -1 with errno EBUSY (L is
 * being filled). */
extern int layer_unload (struct layer *l) __attribute__ ((__nonnull__ (1)));

/* Make a layer opened for reading fillable: take the writer lock, read
 * the records other writers added since, cut a torn tail.  Idempotent.
 * 0, or -1 with err_* (EWOULDBLOCK: another process fills it). */
extern int layer_make_writable (struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* As layer_make_writable, waiting up to SECONDS while another process
 * fills the layer (a mount lets go within about two seconds of its last
 * read from it); says once, at info level, that it waits. */
extern int layer_make_writable_wait (struct layer *l, double seconds)
  __attribute__ ((__nonnull__ (1)));

/* Give the writer lock back if this process holds it through
 * layer_make_writable and nothing is queued or being written, so that
 * another process may fill the layer; layer_make_writable takes it
 * again.  0 when released or not held, -1 with errno EBUSY otherwise
 * (also for layers from layer_open or layer_create, held until closed). */
extern int layer_release (struct layer *l) __attribute__ ((__nonnull__ (1)));

/* Learn the blocks another process made present since L was read, if
 * this process is not the one filling it (then there is nothing to
 * learn).  Cheap when it is.  0, or -1 with err_*. */
extern int layer_catch_up (struct layer *l) __attribute__ ((__nonnull__ (1)));

/* Close files and free; NULL is a no-op.  Pending blocks are dropped:
 * call layer_sync first to keep them. */
extern void layer_close (struct layer *l);

/* The state of block B.  L must be loaded (layer_load); a layer that
 * cannot be loaded reads as LAYER_MISSING, never as ABSENT (which would
 * let an older layer's block show through). */
extern enum layer_block layer_block_state (struct layer *l, uint64_t b)
  __attribute__ ((__nonnull__ (1)));

/* Read block B (LAYER_DATA or LAYER_ZERO) into BUF (CHAIN_BLOCK_SIZE
 * bytes) and check it against its checksum.  0, or -1 with err_* and
 * errno EIO when the stored bytes do not match (never returns wrong
 * data), ENODATA when the block is not stored. */
extern int layer_read_block (struct layer *l, uint64_t b, void *buf)
  __attribute__ ((__nonnull__ (1, 3)));

/* The checksum of block B of L, a LAYER_DATA block, into SUM (what its
 * record says; the block is not read).  0, or -1 with err_* (ENODATA
 * when B is not stored as data, EIO when its record cannot be read
 * back). */
extern int layer_block_sum (struct layer *l, uint64_t b,
                            uint8_t sum[SUM_LEN])
  __attribute__ ((__nonnull__ (1, 3)));

/* Store block B of a writable layer from BUF (CHAIN_BLOCK_SIZE bytes,
 * zero past the disk's end): data is written (unless all zero) and its
 * record queued; it is ready at once and becomes present at the next
 * layer_sync.  B must be in the set.  Thread-safe.  0 or -1 with err_*
 * (EBADF when this process does not fill L, e.g. after layer_release). */
extern int layer_put_block (struct layer *l, uint64_t b, const void *buf)
  __attribute__ ((__nonnull__ (1, 3)));

/* Store N adjacent blocks from FIRST, as layer_put_block does for one,
 * with one write for each stretch of stored blocks.  0 or -1. */
extern int layer_put_run (struct layer *l, uint64_t first, unsigned n,
                          const void *buf)
  __attribute__ ((__nonnull__ (1, 4)));

/* Make every queued block durable: data fsynced, then records appended
 * to the index and fsynced; only then are they marked present.
 * Thread-safe.  0, or -1 with err_*: then every block not yet present
 * is given up (no longer ready: fetched or copied again), since Linux
 * reports a failed writeback once and a retry would vouch for lost
 * data; puts fail with EIO until the layer is released or reopened. */
extern int layer_sync (struct layer *l) __attribute__ ((__nonnull__ (1)));

/* How many bytes of puts to gather before a layer_sync, as the store
 * prefers (store_commit_bytes). */
extern uint64_t layer_sync_bytes (const struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* Bytes queued by layer_put_block and not yet synced. */
extern uint64_t layer_pending_bytes (struct layer *l)
  __attribute__ ((__nonnull__ (1)));

/* True when every block of the set is present (false when the layer
 * cannot be loaded). */
extern bool layer_complete (struct layer *l) __attribute__ ((__nonnull__ (1)));

/* 0 if layer SNAPSHOT of DISK, read afresh from the store (not from
 * any layer object's memory), has every block of its set present; else
 * -1 with err_* (errno ENODATA: "snapshot …: N of M blocks are not in
 * the store").  The only test to pass before a snapshot's data may go. */
extern int layer_check_complete (struct store *store, const char *disk,
                                 const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* For the 64-block words [W0, W0 + N) of L's disk: the blocks of
 * L's set among those in LEFT[i] are L's to answer for, so they leave
 * LEFT[i]; those of them that L does not hold as zeros (stored data,
 * or not stored yet) are added to DATA[i].  Words past L's disk hold
 * none of its blocks.  L must be loaded (layer_load).  Thread-safe. */
extern void layer_claim_words (struct layer *l, uint64_t w0, size_t n,
                               uint64_t *left, uint64_t *data)
  __attribute__ ((__nonnull__ (1, 4, 5)));

/* Blocks of the set that are present, and stored (non-zero) blocks
 * (0 and 0 when the layer cannot be loaded). */
extern void layer_counts (struct layer *l, uint64_t *present, uint64_t *stored)
  __attribute__ ((__nonnull__ (1, 2, 3)));

#endif /* CBTFS_CHAIN_LAYER_H */
