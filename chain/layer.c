/* cbtfs: one layer of a chain: the blocks one snapshot changed.
 *
 * Thread model: see layer.h.  Readers take l->lock shared; putting a
 * block takes it exclusively only to queue the record; layer_sync holds
 * l->sync_lock across the store's commit and takes l->lock exclusively
 * only to swap the pending queue out and, at the end, to mark blocks
 * present.  layer_load holds l->load_lock while it reads the set and
 * index, and l->lock exclusively while it fills the in-memory state.
 * Everything the layer keeps goes through the store (store/store.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "index.h"
#include "layer.h"
#include "manifests.h"

/* ---- pending records -------------------------------------------------- */

struct pending {
  struct index_rec *v;
  size_t len, cap;
};

static int
pending_add (struct layer *l, const struct index_rec *r)
{
  struct pending *p = l->pending;

  if (p->len == p->cap) {
    size_t ncap = p->cap ? p->cap * 2 : 256;
    struct index_rec *nv = realloc (p->v, ncap * sizeof *nv);
    if (nv == NULL)
      return -1;
    p->v = nv;
    p->cap = ncap;
  }
  p->v[p->len++] = *r;
  return 0;
}

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
  pthread_mutex_init (&l->resolve_lock, NULL);
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
  pthread_mutex_destroy (&l->resolve_lock);
  if (l->resolve_cache_free)
    l->resolve_cache_free (l->resolve_cache);
  free (l);
}

const char *
layer_where (const struct layer *l)
{
  return store_layer_where (l->obj);
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

/* The place of block B (in the set) among the blocks of the set. */
static inline uint64_t
set_rank (const struct layer *l, uint64_t b)
{
  if (l->rank == NULL)
    return b;
  return l->rank[b >> 6] + __builtin_popcountll (
    l->changed.words[b >> 6] & ((UINT64_C (1) << (b & 63)) - 1));
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

/* Apply one durable record, number N in the index, to the in-memory
 * state.  Called with l->lock held exclusively (or before the layer is
 * shared). */
static int
apply_rec (void *opaque, const struct index_rec *r, uint64_t n)
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
    was_data = bitmap_get (&l->present, b) && l->recno[set_rank (l, b)];
    bitmap_set (&l->ready, b);
    if (!bitmap_get (&l->present, b)) {
      bitmap_set (&l->present, b);
      l->npresent++;
    }
    l->recno[set_rank (l, b)] = r->kind == INDEX_DATA ? n : 0;
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
  if (index_scan (l->obj, l->nblocks, from, apply_rec, l, &l->index_len,
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

/* ---- blocks ----------------------------------------------------------- */

/* Whether ready block B is stored (not all zeros).  Called with
 * l->lock held. */
static bool
is_data (const struct layer *l, uint64_t b)
{
  if (sums_get (&l->unsynced, b))
    return true;
  return bitmap_get (&l->present, b) && l->recno[set_rank (l, b)] != 0;
}

/* Records a thread read last, so that reading blocks in order costs
 * one pread of the index per 102 records, not one per block.  Records
 * a layer's map points to are durable and never rewritten. */
#define RCACHE_RECS 102
static _Thread_local struct {
  uint64_t layer;               /* the layer's id, 0 when empty */
  uint64_t first;               /* number of the first record held */
  size_t len;                   /* bytes held */
  uint8_t buf[RCACHE_RECS * INDEX_REC_SIZE];
} rcache;

/* Read block B's checksum from its record, number N of the index: the
 * record must still be what the index said.  0, or -1 with err_* and
 * errno EIO. */
static int
record_sum (const struct layer *l, uint64_t b, uint64_t n,
            uint8_t sum[SUM_LEN])
{
  uint64_t first = n / RCACHE_RECS * RCACHE_RECS;
  struct index_rec r;
  ssize_t got;

  if (rcache.layer != l->id || rcache.first != first
      || (n - first + 1) * INDEX_REC_SIZE > rcache.len) {
    rcache.layer = 0;
    got = store_index_read (l->obj, rcache.buf, sizeof rcache.buf,
                            first * INDEX_REC_SIZE);
    if (got > 0) {
      rcache.layer = l->id;
      rcache.first = first;
      rcache.len = got;
    }
  }
  if (rcache.layer != l->id || (n - first + 1) * INDEX_REC_SIZE > rcache.len
      || !index_rec_decode (rcache.buf + (n - first) * INDEX_REC_SIZE, &r)
      || r.kind != INDEX_DATA || r.block != b || r.count != 1) {
    err_set (EIO, "block %" PRIu64 " of snapshot %s: its index record "
             "cannot be read back", b, l->meta.snapshot);
    return -1;
  }
  memcpy (sum, r.sum, SUM_LEN);
  return 0;
}

enum layer_block
layer_block_state (struct layer *l, uint64_t b)
{
  enum layer_block st;

  if (layer_load (l) == -1)
    return LAYER_MISSING;
  if (!bitmap_get (&l->changed, b))
    return LAYER_ABSENT;
  pthread_rwlock_rdlock (&l->lock);
  if (!bitmap_get (&l->ready, b))
    st = LAYER_MISSING;
  else
    st = is_data (l, b) ? LAYER_DATA : LAYER_ZERO;
  pthread_rwlock_unlock (&l->lock);
  return st;
}

int
layer_read_block (struct layer *l, uint64_t b, void *buf)
{
  uint8_t want[SUM_LEN], got[SUM_LEN];
  const uint8_t *s;
  uint64_t n = 0;
  bool present;
  ssize_t r;

  if (layer_load (l) == -1) {
    errno = EIO;
    return -1;
  }
  pthread_rwlock_rdlock (&l->lock);
  present = bitmap_get (&l->ready, b);
  s = sums_get (&l->unsynced, b);
  if (s)
    memcpy (want, s, SUM_LEN);
  else if (present && bitmap_get (&l->present, b))
    n = l->recno[set_rank (l, b)];
  pthread_rwlock_unlock (&l->lock);

  if (!present) {
    err_set (ENODATA, "block %" PRIu64 " of snapshot %s is not stored",
             b, l->meta.snapshot);
    return -1;
  }
  if (s == NULL && n == 0) {
    memset (buf, 0, CHAIN_BLOCK_SIZE);
    return 0;
  }
  if (s == NULL && record_sum (l, b, n, want) == -1)
    return -1;
  r = store_block_read (l->obj, b, buf);
  if (r == -1) {
    err_prefix ("block %" PRIu64 " of snapshot %s", b, l->meta.snapshot);
    errno = EIO;
    return -1;
  }
  /* A short read (truncated data file) reads as zeros and then fails
   * the checksum, as it should. */
  memset ((char *) buf + r, 0, CHAIN_BLOCK_SIZE - r);
  sums_compute (buf, CHAIN_BLOCK_SIZE, got);
  if (memcmp (want, got, SUM_LEN) != 0) {
    err_set (EIO, "block %" PRIu64 " (offset %" PRIu64 ") of snapshot %s "
             "fails its checksum", b, b << CHAIN_BLOCK_SHIFT,
             l->meta.snapshot);
    return -1;
  }
  return 0;
}

int
layer_put_block (struct layer *l, uint64_t b, const void *buf)
{
  return layer_put_run (l, b, 1, buf);
}

/* Write blocks [FIRST+I, FIRST+J) of BUF to the store in one go. */
static int
write_blocks (struct layer *l, uint64_t first, unsigned i, unsigned j,
              const uint8_t *buf)
{
  return store_blocks_write (l->obj, first + i,
                             buf + ((size_t) i << CHAIN_BLOCK_SHIFT),
                             (size_t) (j - i) << CHAIN_BLOCK_SHIFT);
}

/* Count a writer in, if this process fills L: its files then stay open
 * until it leaves (layer_put_run).  0, or -1 with err_* (EBADF). */
static int
join_writers (struct layer *l)
{
  bool filling, failed;

  pthread_rwlock_rdlock (&l->lock);
  filling = l->writing && !l->write_failed;
  if (filling)
    __atomic_add_fetch (&l->writers, 1, __ATOMIC_ACQUIRE);
  failed = l->write_failed;
  pthread_rwlock_unlock (&l->lock);
  if (failed) {
    err_set (EIO, "snapshot %s: a write to the store failed; keeping no "
             "more blocks in it until it is opened again", l->meta.snapshot);
    return -1;
  }
  if (!filling) {
    err_set (EBADF, "snapshot %s is not being filled by this process",
             l->meta.snapshot);
    return -1;
  }
  return 0;
}

int
layer_put_run (struct layer *l, uint64_t first, unsigned n, const void *buf)
{
  const uint8_t *p = buf;
  CLEANUP_FREE struct index_rec *r = calloc (n ? n : 1, sizeof *r);
  unsigned i, j;
  int ret = 0;

  if (r == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (i = 0; i < n; i++)
    if (!bitmap_get (&l->changed, first + i)) {
      err_set (EINVAL, "block %" PRIu64 " is not in snapshot %s's set",
               first + i, l->meta.snapshot);
      return -1;
    }
  if (join_writers (l) == -1)
    return -1;
  for (i = 0; i < n; i++) {
    const uint8_t *blk = p + ((size_t) i << CHAIN_BLOCK_SHIFT);
    r[i].block = first + i;
    r[i].count = 1;
    if (is_zero (blk, CHAIN_BLOCK_SIZE))
      r[i].kind = INDEX_ZERO;
    else {
      r[i].kind = INDEX_DATA;
      sums_compute (blk, CHAIN_BLOCK_SIZE, r[i].sum);
    }
  }
  /* Stored blocks next to each other go in one write; zeros in none. */
  for (i = 0; i < n; i = j) {
    for (j = i + 1; j < n && r[j].kind == r[i].kind; j++)
      ;
    if (r[i].kind == INDEX_DATA && write_blocks (l, first, i, j, p) == -1) {
      ret = -1;
      break;
    }
  }
  pthread_rwlock_wrlock (&l->lock);
  /* A sync that failed meanwhile may have lost these bytes too. */
  if (ret == 0 && l->write_failed) {
    err_set (EIO, "snapshot %s: a write to the store failed; block %"
             PRIu64 " given up", l->meta.snapshot, first);
    ret = -1;
  }
  /* Ready now: the bytes are written and the checksums are known. */
  for (i = 0; i < n && ret == 0; i++) {
    ret = pending_add (l, &r[i]);
    if (ret == 0 && r[i].kind == INDEX_DATA)
      ret = sums_put (&l->unsynced, first + i, r[i].sum);
    else if (ret == 0)
      sums_del (&l->unsynced, first + i);
    if (ret == 0)
      bitmap_set (&l->ready, first + i);
    if (ret == -1)
      err_set (ENOMEM, "out of memory");
  }
  /* Left under the lock, with the records queued: layer_release sees
   * either a writer or pending records, never neither too early. */
  __atomic_sub_fetch (&l->writers, 1, __ATOMIC_RELEASE);
  pthread_rwlock_unlock (&l->lock);
  return ret;
}

uint64_t
layer_pending_bytes (struct layer *l)
{
  uint64_t n;

  pthread_rwlock_rdlock (&l->lock);
  n = (uint64_t) ((struct pending *) l->pending)->len * CHAIN_BLOCK_SIZE;
  pthread_rwlock_unlock (&l->lock);
  return n;
}

static int
cmp_rec (const void *a, const void *b)
{
  const struct index_rec *x = a, *y = b;

  return x->block < y->block ? -1 : x->block > y->block;
}

/* Encode V (sorted) into OUT, merging runs of zero blocks into one
 * record; AT[i] gets the number of the record that holds V[i] among
 * those written.  Returns the number of bytes. */
static size_t
encode_runs (struct index_rec *v, size_t n, uint8_t *out, size_t *at)
{
  size_t i, o = 0;

  for (i = 0; i < n;) {
    struct index_rec r = v[i];
    at[i++] = o / INDEX_REC_SIZE;
    if (r.kind == INDEX_ZERO)
      while (i < n && v[i].kind == INDEX_ZERO && v[i].block == r.block + r.count
             && r.count < UINT32_MAX) {
        r.count++;
        at[i++] = o / INDEX_REC_SIZE;
      }
    index_rec_encode (&r, out + o);
    o += INDEX_REC_SIZE;
  }
  return o;
}

/* After a failed sync: forget every block of BATCH and of the queue
 * that is not present, and refuse puts until the layer is released or
 * reopened.  Linux reports a failed writeback once, and the pages it
 * could not write count as clean afterwards: another fsync would
 * succeed, and records would vouch for data that never reached the
 * disk.  Blocks written before the failure may have been among them,
 * so every one not yet durable goes; they are fetched or copied again.
 * Their bytes are dropped too (store_blocks_drop: on ext4, a range
 * whose first writeback failed reads back as zeros when rewritten
 * through the page cache).  Called with sync_lock held. */
static void
give_up (struct layer *l, struct pending *batch)
{
  struct pending *q;

  pthread_rwlock_wrlock (&l->lock);
  l->write_failed = true;
  q = l->pending;
  for (int k = 0; k < 2; k++) {
    struct pending *p = k == 0 ? batch : q;
    for (size_t i = 0; i < p->len; i++) {
      const struct index_rec *r = &p->v[i];
      for (uint64_t b = r->block; b < r->block + r->count; b++)
        if (!bitmap_get (&l->present, b)) {
          bitmap_clear (&l->ready, b);
          sums_del (&l->unsynced, b);
        }
      if (r->kind == INDEX_DATA && !bitmap_get (&l->present, r->block))
        store_blocks_drop (l->obj, r->block, 1);
    }
  }
  q->len = 0;
  pthread_rwlock_unlock (&l->lock);
}

int
layer_sync (struct layer *l)
{
  struct pending batch = { 0 }, *p;
  CLEANUP_FREE uint8_t *out = NULL;
  CLEANUP_FREE size_t *at = NULL;
  uint64_t first;
  size_t len, i;
  int ret = -1;

  pthread_mutex_lock (&l->sync_lock);
  pthread_rwlock_wrlock (&l->lock);
  p = l->pending;
  batch = *p;
  memset (p, 0, sizeof *p);
  pthread_rwlock_unlock (&l->lock);

  if (batch.len == 0) {
    ret = 0;
    goto out;
  }
  qsort (batch.v, batch.len, sizeof *batch.v, cmp_rec);
  out = malloc (batch.len * INDEX_REC_SIZE);
  at = malloc (batch.len * sizeof *at);
  if (out == NULL || at == NULL) {
    err_set (ENOMEM, "out of memory");
    goto fail;
  }
  len = encode_runs (batch.v, batch.len, out, at);
  /* The store makes the data durable before the records (store.h). */
  if (store_commit (l->obj, out, len, l->index_len) == -1)
    goto fail;
  first = l->index_len / INDEX_REC_SIZE;
  l->index_len += len;

  pthread_rwlock_wrlock (&l->lock);
  for (i = 0; i < batch.len; i++)
    if (apply_rec (l, &batch.v[i], first + at[i]) == -1)
      break;
  pthread_rwlock_unlock (&l->lock);
  ret = i == batch.len ? 0 : -1;
  goto out;

 fail:
  give_up (l, &batch);
 out:
  free (batch.v);
  pthread_mutex_unlock (&l->sync_lock);
  return ret;
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
  if (l->resolve_cache_free)
    l->resolve_cache_free (l->resolve_cache);
  l->resolve_cache = NULL;
  l->resolve_tried = false;
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
