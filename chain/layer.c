/* cbtfs: a layer's life: open, create, load its set and index, become
 * and stop being its writer, close (layer.h; its blocks are in
 * layer-blocks.c).
 *
 * Thread model: see layer.h.  layer_load holds l->load_lock while it
 * reads the set and index, and l->lock exclusively while it fills the
 * in-memory state.  Everything the layer keeps goes through the store
 * (store/store.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "index.h"
#include "layer-impl.h"
#include "layer.h"
#include "manifests.h"

/* ---- open / create ---------------------------------------------------- */

/* Layers' ids: never 0, never reused (a freed layer's address may be). */
static uint64_t next_id;

static struct layer *
layer_alloc (void)
{
  struct layer *l = calloc (1, sizeof *l);

  if (l == NULL)
    return NULL;
  l->pending = calloc (1, sizeof (struct pending));
  if (l->pending == NULL) {
    free (l);
    return NULL;
  }
  pthread_rwlock_init (&l->lock, NULL);
  pthread_mutex_init (&l->sync_lock, NULL);
  pthread_mutex_init (&l->resolve.lock, NULL);
  pthread_mutex_init (&l->load_lock, NULL);
  l->id = __atomic_add_fetch (&next_id, 1, __ATOMIC_RELAXED);
  return l;
}

/* Free what layer_load read: the set, the block states, the record
 * map.  Counts and the index position are the callers' to reset. */
static void
free_blocks (struct layer *l)
{
  bitmap_free (&l->changed);
  bitmap_free (&l->ready);
  bitmap_free (&l->present);
  free (l->recno);
  free (l->rank);
  l->recno = l->rank = NULL;
  sums_free (&l->unsynced);
}

void
layer_close (struct layer *l)
{
  struct pending *p;

  if (l == NULL)
    return;
  p = l->pending;
  if (p)
    free (p->v);
  free (p);
  store_layer_close (l->obj);   /* releases the writer lock */
  free_blocks (l);
  layer_meta_clear (&l->meta);
  free (l->load_error);
  pthread_mutex_destroy (&l->load_lock);
  pthread_rwlock_destroy (&l->lock);
  pthread_mutex_destroy (&l->sync_lock);
  pthread_mutex_destroy (&l->resolve.lock);
  if (l->resolve.cache_free)
    l->resolve.cache_free (l->resolve.cache);
  free (l);
}

const char *
layer_where (const struct layer *l)
{
  return store_layer_where (l->obj);
}

int
layer_usage (const struct layer *l, uint64_t *bytes)
{
  return store_layer_usage (l->obj, bytes);
}

const struct layer_meta *
layer_meta (const struct layer *l)
{
  return &l->meta;
}

uint64_t
layer_nblocks (const struct layer *l)
{
  return l->nblocks;
}

const struct bitmap *
layer_set (const struct layer *l)
{
  return &l->changed;
}

uint64_t
layer_nchanged (const struct layer *l)
{
  return l->nchanged;
}

struct store *
layer_store (const struct layer *l)
{
  return l->store;
}

uint64_t
layer_damaged_records (const struct layer *l)
{
  return l->damaged_records;
}

struct layer *
layer_parent (const struct layer *l)
{
  return l->parent;
}

bool
layer_parent_missing (const struct layer *l)
{
  return l->parent_missing;
}

void
layer_link (struct layer *l, struct layer *parent, bool missing)
{
  l->parent = parent;
  l->parent_missing = missing;
}

struct layer_resolve *
layer_resolve (struct layer *l)
{
  return &l->resolve;
}

/* Build the rank directory of the set and an empty record map. */
static int
make_rank (struct layer *l)
{
  size_t words = (l->nblocks + 63) / 64;
  uint64_t n = 0;

  if (l->nchanged >= UINT32_MAX) {
    err_set (EFBIG, "snapshot %s: too many blocks for one layer",
             l->meta.snapshot);
    return -1;
  }
  l->recno = calloc (l->nchanged ? l->nchanged : 1, sizeof *l->recno);
  if (l->recno == NULL)
    goto nomem;
  if (l->meta.full)
    return 0;
  l->rank = malloc ((words ? words : 1) * sizeof *l->rank);
  if (l->rank == NULL)
    goto nomem;
  for (size_t w = 0; w < words; w++) {
    l->rank[w] = n;
    n += __builtin_popcountll (l->changed.words[w]);
  }
  return 0;
 nomem:
  err_set (ENOMEM, "out of memory");
  return -1;
}

static int
load_changed (struct layer *l)
{
  CLEANUP_FREE uint8_t *buf = NULL;
  size_t len;

  if (bitmap_init (&l->present, l->nblocks) == -1
      || bitmap_init (&l->ready, l->nblocks) == -1)
    return -1;
  if (l->meta.full) {
    if (bitmap_init (&l->changed, l->nblocks) == -1)
      return -1;
    bitmap_set_all (&l->changed);
  }
  else {
    buf = (uint8_t *) store_set_read (l->obj, cbt_bitmap_bytes (l->nblocks),
                                      &len);
    if (buf == NULL)
      return -1;
    if (cbt_bitmap_decode (buf, len, l->nblocks, &l->changed) == -1) {
      err_prefix ("%s/changed", layer_where (l));
      return -1;
    }
  }
  l->nchanged = bitmap_count (&l->changed);
  return 0;
}

int
layer_apply_rec (void *opaque, const struct index_rec *r, uint64_t n)
{
  struct layer *l = opaque;
  uint64_t b;

  if (r->kind == INDEX_DATA && n > UINT32_MAX) {
    err_set (EFBIG, "snapshot %s: its index has too many records",
             l->meta.snapshot);
    return -1;
  }
  for (b = r->block; b < r->block + r->count; b++) {
    const uint8_t *u;
    bool was_data;

    if (!bitmap_get (&l->changed, b))
      continue;                 /* a valid record of a block not in the set */
    was_data = bitmap_get (&l->present, b) && l->recno[layer_set_rank (l, b)];
    bitmap_set (&l->ready, b);
    if (!bitmap_get (&l->present, b)) {
      bitmap_set (&l->present, b);
      l->npresent++;
    }
    l->recno[layer_set_rank (l, b)] = r->kind == INDEX_DATA ? n : 0;
    l->nstored += (r->kind == INDEX_DATA) - was_data;
    /* Its checksum is in the index now (unless a newer put is queued). */
    u = sums_get (&l->unsynced, b);
    if (u && (r->kind != INDEX_DATA || memcmp (u, r->sum, SUM_LEN) == 0))
      sums_del (&l->unsynced, b);
  }
  return 0;
}

/* Read the index from l->index_len (0: from the start, checking the
 * header) and apply its records (index_scan says which count).  Called
 * with l->lock held exclusively, or before l is shared. */
static int
load_index (struct layer *l)
{
  uint64_t from = l->index_len ? l->index_len : INDEX_REC_SIZE, damaged = 0;

  if (l->index_len == 0 && index_check_header (l->obj) == -1)
    return -1;
  if (index_scan (l->obj, l->nblocks, from, layer_apply_rec, l, &l->index_len,
                  &damaged) == -1)
    return -1;
  if (damaged > 0 && l->damaged_records == 0)
    log_warn ("snapshot %s: %" PRIu64 " records of its index are damaged; "
              "the blocks they named count as missing", l->meta.snapshot,
              damaged);
  l->damaged_records += damaged;
  return 0;
}

/* Become the layer's writer in the store and cut a torn tail, so that
 * new records follow the last good one.  Called with l->sync_lock and
 * l->lock held (exclusively), or before l is shared. */
static int
start_writing (struct layer *l)
{
  if (store_writer_open (l->obj, l->nblocks) == -1)
    return -1;
  /* Others may have filled it since we read it: learn what they added
   * before appending after them. */
  if (load_index (l) == -1 || store_index_cut (l->obj, l->index_len) == -1) {
    store_writer_close (l->obj);
    return -1;
  }
  __atomic_store_n (&l->writing, true, __ATOMIC_RELEASE);
  return 0;
}

/* A layer of STORE whose manifest is TEXT (LEN bytes), with nothing
 * else read, in DISK's folder SNAPSHOT, or its own snapshot's when
 * SNAPSHOT is NULL.  NULL with err_*. */
static struct layer *
layer_from_text (struct store *store, const char *disk, const char *snapshot,
                 const char *text, size_t len)
{
  struct layer *l = layer_alloc ();

  if (l == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (layer_meta_parse (text, len, &l->meta) == -1)
    goto err;
  l->obj = store_layer_open (store, disk, snapshot ? snapshot
                             : l->meta.snapshot);
  if (l->obj == NULL)
    goto err;
  l->store = store;
  l->nblocks = chain_nblocks (l->meta.size);
  return l;

 err:
  layer_close (l);
  return NULL;
}

/* A layer for DISK's folder SNAPSHOT with its manifest read and
 * nothing else, or NULL with err_*. */
static struct layer *
open_manifest (struct store *store, const char *disk, const char *snapshot)
{
  CLEANUP_FREE char *text = NULL;
  struct layer *l;
  size_t len;

  text = store_manifest_read (store, disk, snapshot, 1 << 20, &len);
  if (text == NULL)
    return NULL;
  l = layer_from_text (store, disk, snapshot, text, len);
  if (l == NULL)
    err_prefix ("the manifest of snapshot %s (disk %s) in %s", snapshot,
                disk, store->where);
  return l;
}

struct layer *
layer_open_lazy (struct store *store, const char *disk, const char *snapshot)
{
  return open_manifest (store, disk, snapshot);
}

struct layer *
layer_open_lazy_text (struct store *store, const char *disk,
                      const char *text, size_t len)
{
  return layer_from_text (store, disk, NULL, text, len);
}

struct layer *
layer_open (struct store *store, const char *disk, const char *snapshot,
            bool writable)
{
  struct layer *l = open_manifest (store, disk, snapshot);

  if (l == NULL)
    return NULL;
  if (load_changed (l) == -1 || make_rank (l) == -1)
    goto err;
  if (writable) {
    if (start_writing (l) == -1)
      goto err;
    l->held = true;
  }
  else if (load_index (l) == -1)
    goto err;
  l->load_state = LAYER_LOADED;
  return l;

 err:
  layer_close (l);
  return NULL;
}

/* Forget a partly read set and index, so that a later try starts
 * afresh.  Keeps errno. */
static void
unload (struct layer *l)
{
  int e = errno;

  free_blocks (l);
  l->nchanged = l->npresent = l->nstored = 0;
  l->index_len = l->damaged_records = 0;
  l->counts_kept = false;
  errno = e;
}

/* Read the set and the index of a lazily opened layer.  Called with
 * l->load_lock held and l->lock held exclusively.  0, or -1 with err_*
 * and nothing left in memory. */
static int
read_set_and_index (struct layer *l)
{
  unload (l);                   /* counts kept by layer_unload go */
  if (load_changed (l) == -1 || make_rank (l) == -1 || load_index (l) == -1) {
    unload (l);
    return -1;
  }
  return 0;
}

/* Failures that say nothing about the files: the next try may work. */
static bool
is_transient (int e)
{
  return e == ENOMEM || e == EMFILE || e == ENFILE || e == EINTR
    || e == EAGAIN || e == EIO;
}

static int
fail_damaged (struct layer *l)
{
  err_set (EIO, "snapshot %s is damaged: %s", l->meta.snapshot,
           l->load_error ? l->load_error : "(no details: out of memory)");
  return -1;
}

/* Read the set and index once; the new state.  Called with
 * l->load_lock held. */
static int
load_locked (struct layer *l)
{
  int r, e;

  pthread_rwlock_wrlock (&l->lock);
  r = read_set_and_index (l);
  e = errno;
  pthread_rwlock_unlock (&l->lock);
  if (r == 0)
    return LAYER_LOADED;
  if (is_transient (e)) {
    errno = e;
    return LAYER_UNLOADED;
  }
  /* Damage does not heal: remember it and say so once. */
  l->load_error = strdup (err_get ());
  log_error ("damaged layer: %s; reads that need it fail with EIO",
             err_get ());
  return LAYER_DAMAGED;
}

int
layer_load (struct layer *l)
{
  int st = __atomic_load_n (&l->load_state, __ATOMIC_ACQUIRE);

  if (st == LAYER_UNLOADED) {
    pthread_mutex_lock (&l->load_lock);
    st = l->load_state;         /* another thread may have loaded it */
    if (st == LAYER_UNLOADED) {
      st = load_locked (l);
      __atomic_store_n (&l->load_state, st, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock (&l->load_lock);
    if (st == LAYER_UNLOADED)
      return -1;                /* transient: err_* and errno are set */
  }
  if (st == LAYER_DAMAGED)
    return fail_damaged (l);
  return 0;
}

int
layer_make_writable (struct layer *l)
{
  int ret = 0;

  if (layer_load (l) == -1)
    return -1;
  pthread_mutex_lock (&l->sync_lock);
  if (!l->writing) {
    pthread_rwlock_wrlock (&l->lock);
    ret = start_writing (l);
    pthread_rwlock_unlock (&l->lock);
  }
  pthread_mutex_unlock (&l->sync_lock);
  return ret;
}

int
layer_make_writable_wait (struct layer *l, double seconds)
{
  double until = now_monotonic () + seconds;

  for (int tries = 0;; tries++) {
    if (layer_make_writable (l) == 0)
      return 0;
    if (errno != EWOULDBLOCK || now_monotonic () >= until)
      return -1;
    if (tries == 0)
      log_info ("%s; waiting up to %.0f s", err_get (), seconds);
    /* A store's writer lock has no timed wait (flock(2) has none; an
     * object store's lease is an object to look at again). */
    usleep (100 * 1000);
  }
}

int
layer_release (struct layer *l)
{
  bool release = false;
  int ret = 0;

  pthread_mutex_lock (&l->sync_lock);
  pthread_rwlock_wrlock (&l->lock);
  if (l->writing) {
    if (l->held || __atomic_load_n (&l->writers, __ATOMIC_ACQUIRE) > 0
        || ((struct pending *) l->pending)->len > 0) {
      errno = EBUSY;
      ret = -1;
    }
    else {
      __atomic_store_n (&l->writing, false, __ATOMIC_RELEASE);
      l->write_failed = false;  /* fresh files next time */
      release = true;
    }
  }
  pthread_rwlock_unlock (&l->lock);
  /* No writer can join now (join_writers needs l->writing). */
  if (release)
    store_writer_close (l->obj);
  pthread_mutex_unlock (&l->sync_lock);
  return ret;
}

int
layer_catch_up (struct layer *l)
{
  int ret = 0;

  if (layer_load (l) == -1)
    return -1;
  /* Whoever fills the layer knows it all: is it us? */
  if (__atomic_load_n (&l->writing, __ATOMIC_ACQUIRE))
    return 0;
  /* A record another writer is appending now may be torn: load_index
   * stops before it and the next call reads it whole. */
  pthread_mutex_lock (&l->sync_lock);
  if (!l->writing) {
    pthread_rwlock_wrlock (&l->lock);
    ret = load_index (l);
    pthread_rwlock_unlock (&l->lock);
  }
  pthread_mutex_unlock (&l->sync_lock);
  return ret;
}

struct layer *
layer_create (struct store *store, const struct layer_meta *meta,
              const struct bitmap *changed)
{
  CLEANUP_FREE char *text = NULL;
  CLEANUP_FREE uint8_t *bits = NULL;
  uint8_t hdr[INDEX_REC_SIZE];
  uint64_t nblocks = chain_nblocks (meta->size);
  size_t blen = cbt_bitmap_bytes (nblocks);

  if (!is_uuid (meta->snapshot) || !is_uuid (meta->disk)) {
    err_set (EINVAL, "bad snapshot or disk uuid");
    return NULL;
  }
  if (!meta->full && (changed == NULL || changed->nbits != nblocks)) {
    err_set (EINVAL, "changed-block set does not match the disk size");
    return NULL;
  }
  if ((text = layer_meta_format (meta)) == NULL
      || (!meta->full && (bits = malloc (blen + 1)) == NULL)) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (bits)
    cbt_bitmap_encode (changed, bits);
  index_header (hdr);
  if (store_disk_prepare (store, meta->disk) == -1
      || store_layer_create (store, meta->disk, meta->snapshot, text,
                             strlen (text), bits, bits ? blen : 0, hdr,
                             sizeof hdr) == -1)
    return NULL;
  /* Only a cache: without the copy, mounts read the manifest itself. */
  if (manifests_append (store, meta->disk, text, strlen (text)) == -1)
    log_warn ("%s", err_get ());
  return layer_open (store, meta->disk, meta->snapshot, true);
}

/* index_scan's FN for layer_check_complete: presence only, no sums. */
static int
mark_present (void *opaque, const struct index_rec *r, uint64_t n)
{
  struct layer *l = opaque;

  (void) n;
  for (uint64_t b = r->block; b < r->block + r->count; b++)
    if (!bitmap_get (&l->present, b)) {
      bitmap_set (&l->present, b);
      l->npresent += bitmap_get (&l->changed, b);
    }
  return 0;
}

int
layer_check_complete (struct store *store, const char *disk,
                      const char *snapshot)
{
  uint64_t end, damaged = 0;
  struct layer *l;
  int ret = -1;

  /* A new layer object: its own handle, nothing from another's memory. */
  l = open_manifest (store, disk, snapshot);
  if (l == NULL)
    return -1;
  if (load_changed (l) == -1 || index_check_header (l->obj) == -1
      || index_scan (l->obj, l->nblocks, INDEX_REC_SIZE, mark_present, l,
                     &end, &damaged) == -1)
    goto out;
  if (l->npresent != l->nchanged) {
    err_set (ENODATA, "snapshot %s: %" PRIu64 " of %" PRIu64 " blocks are "
             "not in the store", l->meta.snapshot, l->nchanged - l->npresent,
             l->nchanged);
    goto out;
  }
  ret = 0;
 out:
  layer_close (l);
  return ret;
}

int
layer_unload (struct layer *l)
{
  if (__atomic_load_n (&l->load_state, __ATOMIC_ACQUIRE) != LAYER_LOADED)
    return 0;
  if (l->writing || l->held) {
    errno = EBUSY;
    return -1;
  }
  free_blocks (l);
  l->index_len = 0;
  if (l->resolve.cache_free)
    l->resolve.cache_free (l->resolve.cache);
  l->resolve.cache = NULL;
  l->resolve.tried = false;
  l->counts_kept = true;
  __atomic_store_n (&l->load_state, LAYER_UNLOADED, __ATOMIC_RELEASE);
  return 0;
}

/* Whether L answers counts from those layer_unload kept. */
static bool
counts_only (const struct layer *l)
{
  return l->counts_kept
    && __atomic_load_n (&l->load_state, __ATOMIC_ACQUIRE) == LAYER_UNLOADED;
}

bool
layer_complete (struct layer *l)
{
  bool done;

  if (counts_only (l))
    return l->npresent == l->nchanged;
  if (layer_load (l) == -1)
    return false;
  pthread_rwlock_rdlock (&l->lock);
  done = l->npresent == l->nchanged;
  pthread_rwlock_unlock (&l->lock);
  return done;
}

void
layer_counts (struct layer *l, uint64_t *present, uint64_t *stored)
{
  if (counts_only (l)) {
    *present = l->npresent;
    *stored = l->nstored;
    return;
  }
  if (layer_load (l) == -1) {
    *present = *stored = 0;
    return;
  }
  pthread_rwlock_rdlock (&l->lock);
  *present = l->npresent;
  *stored = l->nstored + l->unsynced.len;
  pthread_rwlock_unlock (&l->lock);
}
