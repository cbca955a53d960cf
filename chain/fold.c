/* cbtfs: dropping a layer, folding it into its child (fold.h).
 *
 * Thread model: one thread (fold.h), which hands the blocks to copy to
 * COPIERS threads a batch at a time (run_jobs) and waits for them: a
 * copy is a random read and a random write, and several in flight hide
 * the disk's latency.  While they run, they share only f->next (atomic)
 * and f->failed and f->why (under f->lock); each writes its jobs'
 * records into slots of f->recs reserved for them, which the main
 * thread reads only after joining them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "fold.h"
#include "index.h"
#include "layer.h"
#include "manifests.h"

/* Blocks copied at once, blocks in a batch of copies, and what is
 * written before a commit makes it durable with its records: as a
 * backup's copy does, in batches. */
#define COPIERS 16
#define JOBS_MAX 1024
#define COMMIT_BYTES ((uint64_t) 64 << 20)
#define COMMIT_RECS 65536

/* A block to copy, and the place of its record in f->recs. */
struct job {
  uint64_t b;
  size_t slot;
};

struct fold {
  struct layer *base, *other;   /* C' starts as BASE; OTHER's are written */
  struct store_layer *stage;    /* C', being built (owned) */
  uint8_t *recs;                /* encoded records not yet committed */
  size_t nrecs;
  uint64_t at;                  /* where they go in the stage's index */
  struct job *jobs;             /* copies not made yet (JOBS_MAX) */
  size_t njobs;
  size_t next;                  /* the next job a copier takes; atomic */
  pthread_mutex_t lock;         /* guards failed and why */
  bool failed;
  int err;
  char *why;                    /* the first copy's failure (owned) */
  uint64_t unsynced;            /* bytes written since the last commit */
  uint64_t zero_first, zero_n;  /* a run of ZERO blocks, not yet recorded */
  uint64_t drop_first, drop_n;  /* a run of blocks to punch out of BASE's */
  uint64_t written;
};

static void
rec_add (struct fold *f, enum index_kind kind, uint64_t b, uint32_t n,
         const uint8_t *sum)
{
  struct index_rec r = { .block = b, .count = n, .kind = kind };

  if (sum)
    memcpy (r.sum, sum, SUM_LEN);
  index_rec_encode (&r, f->recs + f->nrecs++ * INDEX_REC_SIZE);
}

static void
zero_flush (struct fold *f)
{
  if (f->zero_n)
    rec_add (f, INDEX_ZERO, f->zero_first, f->zero_n, NULL);
  f->zero_n = 0;
}

/* Copy OTHER's block J->b (checked against its checksum) into C', and
 * encode its record in its slot. */
static int
copy_one (struct fold *f, const struct job *j, uint8_t *buf)
{
  struct index_rec r = { .block = j->b, .count = 1, .kind = INDEX_DATA };

  if (layer_read_block (f->other, j->b, buf) == -1
      || layer_block_sum (f->other, j->b, r.sum) == -1
      || store_blocks_write (f->stage, j->b, buf, CHAIN_BLOCK_SIZE) == -1)
    return -1;
  index_rec_encode (&r, f->recs + j->slot * INDEX_REC_SIZE);
  return 0;
}

static void *
copier (void *opaque)
{
  struct fold *f = opaque;
  uint8_t *buf = aligned_alloc (4096, CHAIN_BLOCK_SIZE);
  size_t i;

  while ((i = __atomic_fetch_add (&f->next, 1, __ATOMIC_RELAXED))
         < f->njobs) {
    bool failed;

    pthread_mutex_lock (&f->lock);
    failed = f->failed;
    pthread_mutex_unlock (&f->lock);
    if (failed)
      break;
    if (buf == NULL)
      err_set (ENOMEM, "out of memory");
    if (buf == NULL || copy_one (f, &f->jobs[i], buf) == -1) {
      pthread_mutex_lock (&f->lock);
      if (!f->failed) {
        f->failed = true;
        f->err = errno;
        f->why = strdup (err_get ());
      }
      pthread_mutex_unlock (&f->lock);
      break;
    }
  }
  free (buf);
  return NULL;
}

/* Make the copies queued, COPIERS at a time (this thread one of them). */
static int
run_jobs (struct fold *f)
{
  pthread_t t[COPIERS - 1];
  size_t n = 0;

  if (f->njobs == 0)
    return 0;
  f->next = 0;
  while (n < COPIERS - 1 && n + 1 < f->njobs
         && pthread_create (&t[n], NULL, copier, f) == 0)
    n++;
  copier (f);
  while (n > 0)
    pthread_join (t[--n], NULL);
  if (f->failed) {
    err_set (f->err, "%s", f->why ? f->why : "out of memory");
    return -1;
  }
  f->written += f->njobs;
  f->unsynced += (uint64_t) f->njobs << CHAIN_BLOCK_SHIFT;
  f->njobs = 0;
  return 0;
}

static void
drop_flush (struct fold *f)
{
  if (f->drop_n)
    store_blocks_drop (f->stage, f->drop_first, f->drop_n);
  f->drop_n = 0;
}

/* Make what was written durable, then the records vouching for it. */
static int
commit (struct fold *f)
{
  size_t len;

  if (run_jobs (f) == -1)
    return -1;
  zero_flush (f);
  drop_flush (f);
  if (f->nrecs == 0)
    return 0;
  len = f->nrecs * INDEX_REC_SIZE;
  if (store_commit (f->stage, f->recs, len, f->at) == -1)
    return -1;
  f->at += len;
  f->nrecs = 0;
  f->unsynced = 0;
  return 0;
}

/* Room for the records a block may add (a ZERO run's, then its own),
 * and for a copy. */
static int
make_room (struct fold *f)
{
  if (f->nrecs + 2 >= COMMIT_RECS || f->unsynced >= COMMIT_BYTES)
    return commit (f);
  return f->njobs < JOBS_MAX ? 0 : run_jobs (f);
}

static void
zero_add (struct fold *f, uint64_t b)
{
  if (f->zero_n && (b != f->zero_first + f->zero_n || f->zero_n == UINT32_MAX))
    zero_flush (f);
  if (f->zero_n++ == 0)
    f->zero_first = b;
}

static void
drop_add (struct fold *f, uint64_t b)
{
  if (f->drop_n && b != f->drop_first + f->drop_n)
    drop_flush (f);
  if (f->drop_n++ == 0)
    f->drop_first = b;
}

/* Queue the copy of OTHER's block B into C', its record's slot kept. */
static void
copy_block (struct fold *f, uint64_t b)
{
  f->jobs[f->njobs++] = (struct job) { .b = b, .slot = f->nrecs++ };
}

/* Give C' block B from OWN, the layer point C reads it from. */
static int
take_block (struct fold *f, struct layer *own, uint64_t b)
{
  enum layer_block st = layer_block_state (own, b);
  uint8_t sum[SUM_LEN];

  if (make_room (f) == -1)
    return -1;
  if (st == LAYER_DATA) {
    if (own == f->other) {
      copy_block (f, b);
      return 0;
    }
    if (layer_block_sum (own, b, sum) == -1)
      return -1;
    rec_add (f, INDEX_DATA, b, 1, sum);
    return 0;
  }
  if (st == LAYER_ZERO)
    zero_add (f, b);
  /* What BASE stored at B is no block of C' now. */
  if (own == f->other)
    drop_add (f, b);
  return 0;
}

/* A layer of DISK opened as its one writer, waiting up to WAIT seconds
 * for another process filling it. */
static struct layer *
open_writer (struct store *s, const char *disk, const char *snap, double wait)
{
  struct layer *l = layer_open (s, disk, snap, false);

  if (l && layer_make_writable_wait (l, wait) == -1) {
    layer_close (l);
    return NULL;
  }
  return l;
}

/* C's set and P's, in UNION (C's size). */
static int
union_of (struct layer *c, struct layer *p, struct bitmap *u)
{
  const struct bitmap *cs = layer_set (c), *ps = layer_set (p);
  uint64_t nb = layer_nblocks (c);

  if (bitmap_init (u, nb) == -1)
    return -1;
  memcpy (u->words, cs->words, (nb + 63) / 64 * sizeof *u->words);
  for (uint64_t b = bitmap_next_set (ps, 0); b < ps->nbits && b < nb;
       b = bitmap_next_set (ps, b + 1))
    bitmap_set (u, b);
  return 0;
}

/* P's stored blocks that C lacks: what C' would copy from P. */
static uint64_t
count_only_p (struct layer *p, struct layer *c)
{
  const struct bitmap *ps = layer_set (p), *cs = layer_set (c);
  uint64_t nb = layer_nblocks (c), n = 0;

  for (uint64_t b = bitmap_next_set (ps, 0); b < ps->nbits && b < nb;
       b = bitmap_next_set (ps, b + 1))
    n += !bitmap_get (cs, b) && layer_block_state (p, b) == LAYER_DATA;
  return n;
}

/* Stage C' (the manifest of C with P's parent, the union of their sets)
 * starting from BASE's blocks; *TEXT gets C''s manifest (malloc'd). */
static struct store_layer *
stage_merged (struct store *s, struct layer *p, struct layer *c,
              const struct bitmap *u, struct layer *base, char **text)
{
  struct layer_meta m = *layer_meta (c);  /* strings borrowed */
  CLEANUP_FREE uint8_t *bits = NULL;
  uint8_t hdr[INDEX_REC_SIZE];

  memcpy (m.parent, layer_meta (p)->parent, sizeof m.parent);
  m.full = bitmap_count (u) == u->nbits;
  if ((*text = layer_meta_format (&m)) == NULL
      || (!m.full && (bits = malloc (cbt_bitmap_bytes (u->nbits) + 1))
          == NULL)) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (bits)
    cbt_bitmap_encode (u, bits);
  index_header (hdr);
  return store_layer_stage (s, m.disk, m.snapshot, layer_meta (base)->snapshot,
                            *text, strlen (*text), bits,
                            bits ? cbt_bitmap_bytes (u->nbits) : 0, hdr,
                            sizeof hdr, u->nbits);
}

/* Bytes layer L takes now, 0 when that cannot be told.  L's own handle
 * asks: in an object store, a handle that has read its index needs one
 * listing where a fresh one reads the root and the index again. */
static uint64_t
usage_of (struct layer *l)
{
  uint64_t bytes;

  return layer_usage (l, &bytes) == 0 ? bytes : 0;
}

/* 0 if P holds every block of its set that C's point reads from it:
 * C' will hold the only copy of those.  A block P lacks (a --no-copy
 * or interrupted point) that C changed again is not needed. */
static int
check_complete (struct layer *p, struct layer *c)
{
  uint64_t present, stored, needed = 0, n;

  if (layer_load (p) == -1 || layer_load (c) == -1)
    return -1;
  if (layer_complete (p))
    return 0;
  n = MIN (layer_nblocks (p), layer_nblocks (c));
  for (uint64_t b = 0; b < n; b++)
    if (layer_block_state (p, b) == LAYER_MISSING
        && layer_block_state (c, b) == LAYER_ABSENT)
      needed++;
  if (needed == 0)
    return 0;
  layer_counts (p, &present, &stored);
  err_set (ENODATA, "snapshot %s: %" PRIu64 " of %" PRIu64 " blocks are "
           "not in the store, and the point after it needs %" PRIu64
           " of them", layer_meta (p)->snapshot,
           layer_nchanged (p) - present, layer_nchanged (p), needed);
  return -1;
}

/* Put the built C' (whose manifest is TEXT) in place of C: no cached
 * copy of the old C may stand for C', even after a crash, so the
 * manifests note loses both first; C' is noted after. */
static int
swap_in (struct store *s, struct fold *f, const char *disk, const char *p,
         const char *c, const char *text)
{
  if (manifests_forget (s, disk, p, c) == -1
      || store_layer_replace (f->stage) == -1)
    return -1;
  if (manifests_append (s, disk, text, strlen (text)) == -1)
    log_warn ("%s", err_get ());  /* only a cache */
  return 0;
}

/* Build C' and swap it in for C. */
static int
merge (struct store *s, struct layer *p, struct layer *c,
       struct fold_stats *st)
{
  const char *disk = layer_meta (c)->disk;
  struct fold f = { .at = INDEX_REC_SIZE, .lock = PTHREAD_MUTEX_INITIALIZER };
  struct bitmap u = { 0 };
  CLEANUP_FREE char *text = NULL;
  uint64_t before, after, present, stored;
  int ret = -1;

  if (check_complete (p, c) == -1 || union_of (c, p, &u) == -1)
    return -1;
  before = usage_of (p) + usage_of (c);
  /* Start from the side that stores more: the other is written. */
  layer_counts (c, &present, &stored);
  f.base = count_only_p (p, c) > stored ? p : c;
  f.other = f.base == p ? c : p;
  f.recs = malloc (COMMIT_RECS * INDEX_REC_SIZE);
  f.jobs = malloc (JOBS_MAX * sizeof *f.jobs);
  if (f.recs == NULL || f.jobs == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  f.stage = stage_merged (s, p, c, &u, f.base, &text);
  if (f.stage == NULL)
    goto out;
  /* Only a stage that starts from P's blocks writes where P's point
   * reads (C's blocks over P's).  One that starts from C's writes P's
   * blocks where C's point never reads (outside C's set): should it
   * fail (a block of P's fails its checksum), both points read as they
   * did and the drop is not pending. */
  st->started = f.base == p;
  for (uint64_t b = bitmap_next_set (&u, 0); b < u.nbits;
       b = bitmap_next_set (&u, b + 1))
    if (take_block (&f, bitmap_get (layer_set (c), b) ? c : p, b) == -1)
      goto out;
  if (commit (&f) == -1)
    goto out;
  /* What C' takes, asked of the stage: once swapped in, a directory
   * store's stage is the old C. */
  if (store_layer_usage (f.stage, &after) == -1)
    after = 0;
  if (swap_in (s, &f, disk, layer_meta (p)->snapshot,
               layer_meta (c)->snapshot, text) == -1)
    goto out;
  st->started = true;           /* C' is in: only P's removal is left */
  st->merged = true;
  st->blocks_written = f.written;
  st->bytes_freed = before > after ? before - after : 0;
  ret = 0;

 out:
  store_layer_close (f.stage);
  bitmap_free (&u);
  free (f.recs);
  free (f.jobs);
  free (f.why);
  return ret;
}

int
fold_drop (struct store *s, const char *disk, const char *drop,
           const char *child, double wait, struct fold_stats *st)
{
  struct layer *p = NULL, *c = NULL;
  int ret = -1;

  memset (st, 0, sizeof *st);
  if (child == NULL)
    return fold_remove (s, disk, drop, wait, &st->bytes_freed);
  if ((p = open_writer (s, disk, drop, wait)) == NULL
      || (c = open_writer (s, disk, child, wait)) == NULL)
    goto out;
  if (strcmp (layer_meta (c)->parent, drop) != 0) {
    err_set (EINVAL, "snapshot %s: its parent is not %s", child, drop);
    goto out;
  }
  if (merge (s, p, c, st) == -1)
    goto out;
  layer_close (c);
  c = NULL;
  /* P goes as its writer still: nobody may be filling it (store.h). */
  ret = store_layer_remove (s, disk, drop);

 out:
  layer_close (c);
  layer_close (p);
  return ret;
}

int
fold_remove (struct store *s, const char *disk, const char *snap,
             double wait, uint64_t *freed)
{
  struct store_layer *h = store_layer_open (s, disk, snap);
  double until = now_monotonic () + wait;
  int ret;

  *freed = 0;
  if (h == NULL)
    return -1;
  if (store_layer_usage (h, freed) == -1)
    *freed = 0;
  /* 0 blocks: only the lock is wanted, not a data file sized for
   * writing. */
  while ((ret = store_writer_open (h, 0)) == -1 && errno == EWOULDBLOCK
         && now_monotonic () < until)
    /* flock(2) has no timed wait. */
    usleep (100 * 1000);
  /* A damaged layer may have no index to lock: then nobody can be
   * filling it either. */
  if (ret == -1 && errno == ENOENT)
    ret = 0;
  if (ret == 0)
    ret = store_layer_remove (s, disk, snap);
  store_layer_close (h);
  return ret;
}
