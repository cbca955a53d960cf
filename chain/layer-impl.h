/* cbtfs: what layer.c and layer-blocks.c share about a layer, and
 * nothing outside them sees (white-box unit tests aside). */
#ifndef CBTFS_CHAIN_LAYER_IMPL_H
#define CBTFS_CHAIN_LAYER_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "index.h"
#include "layer.h"
#include "sums.h"

/* Thread model: layer.h. */
struct layer {
  struct layer_meta meta;       /* immutable after open */
  uint64_t nblocks;
  struct bitmap changed;        /* the set (all ones when meta.full); valid
                                   once loaded, then immutable */
  uint64_t nchanged;            /* blocks in the set, once loaded */
  struct store *store;          /* borrowed: outlives the layer */
  struct store_layer *obj;      /* the store's handle (owned) */
  uint64_t id;                  /* unique in the process, never reused */
  struct layer *parent;         /* borrowed; linked by the catalog */
  bool parent_missing;          /* meta.parent names a layer not loaded */

  struct layer_resolve resolve;  /* read.c's */

  pthread_mutex_t load_lock;    /* serialises layer_load */
  int load_state;               /* enum layer_load; atomic */
  char *load_error;             /* why it is LAYER_DAMAGED (owned) */

  pthread_rwlock_t lock;
  struct bitmap ready;          /* blocks this process may serve */
  struct bitmap present;        /* blocks with a durable record */
  uint64_t npresent;            /* present blocks of the set */
  uint64_t nstored;             /* present blocks stored as DATA */
  /* Where a stored block's checksum is: in its DATA record, read from
   * the index when the block is read, so that memory grows by 4 bytes
   * per block of the set, not by a table of every checksum. */
  uint32_t *recno;              /* per block of the set, in order: its
                                   DATA record's number, 0 if none */
  uint32_t *rank;               /* blocks of the set before each 64-block
                                   word of changed (NULL when full) */
  struct sums unsynced;         /* checksums of ready DATA blocks whose
                                   records are not durable yet */
  void *pending;                /* records not yet durable (layer.c) */

  pthread_mutex_t sync_lock;
  bool writing;                 /* this process is the store's writer of
                                   it; set under sync_lock and lock, atomic */
  bool held;                    /* opened to be filled (layer_open,
                                   layer_create): writes until closed */
  unsigned writers;             /* layer_put_run calls writing data now;
                                   joined under lock (shared), atomic */
  uint64_t index_len;           /* bytes up to the last good record read */
  uint64_t damaged_records;     /* index records skipped as damaged */
  bool counts_kept;             /* unloaded, with the counts above kept */
  bool write_failed;            /* a sync failed: no puts until released */
};

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
