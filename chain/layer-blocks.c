/* cbtfs: a layer's blocks: their state, reads checked against their
 * checksums, puts, and syncs that make them present (layer.h).
 *
 * Thread model: see layer.h.  Readers take l->lock shared; putting a
 * block takes it exclusively only to queue the record; layer_sync holds
 * l->sync_lock across the store's commit and takes l->lock exclusively
 * only to swap the pending queue out and, at the end, to mark blocks
 * present.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "layer-impl.h"

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

/* ---- blocks ----------------------------------------------------------- */

/* Whether ready block B is stored (not all zeros).  Called with
 * l->lock held. */
static bool
is_data (const struct layer *l, uint64_t b)
{
  if (sums_get (&l->unsynced, b))
    return true;
  return bitmap_get (&l->present, b) && l->recno[layer_set_rank (l, b)] != 0;
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

void
layer_claim_words (struct layer *l, uint64_t w0, size_t n, uint64_t *left,
                   uint64_t *data)
{
  uint64_t nw = (l->nblocks + 63) / 64;

  if (w0 >= nw)
    return;
  n = MIN (n, nw - w0);
  pthread_rwlock_rdlock (&l->lock);
  for (size_t i = 0; i < n; i++) {
    uint64_t w = w0 + i, mine = l->changed.words[w] & left[i], zero;

    if (mine == 0)
      continue;
    left[i] &= ~mine;
    /* Not ready: the host has it, whatever it holds. */
    zero = mine & l->ready.words[w];
    for (uint64_t z = zero; z; z &= z - 1) {
      uint64_t bit = z & -z;
      if (is_data (l, (w << 6) + __builtin_ctzll (z)))
        zero &= ~bit;
    }
    data[i] |= mine & ~zero;
  }
  pthread_rwlock_unlock (&l->lock);
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
    n = l->recno[layer_set_rank (l, b)];
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
layer_block_sum (struct layer *l, uint64_t b, uint8_t sum[SUM_LEN])
{
  const uint8_t *s;
  uint64_t n = 0;
  bool found;

  if (layer_load (l) == -1) {
    errno = EIO;
    return -1;
  }
  pthread_rwlock_rdlock (&l->lock);
  s = sums_get (&l->unsynced, b);
  found = s != NULL;
  if (s)
    memcpy (sum, s, SUM_LEN);
  else if (bitmap_get (&l->ready, b) && bitmap_get (&l->present, b))
    n = l->recno[layer_set_rank (l, b)];
  pthread_rwlock_unlock (&l->lock);

  if (found)
    return 0;
  if (n == 0) {
    err_set (ENODATA, "block %" PRIu64 " of snapshot %s is not stored as "
             "data", b, l->meta.snapshot);
    return -1;
  }
  return record_sum (l, b, n, sum);
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
layer_sync_bytes (const struct layer *l)
{
  return store_commit_bytes (l->obj->store);
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
    if (layer_apply_rec (l, &batch.v[i], first + at[i]) == -1)
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

