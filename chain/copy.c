/* cbtfs: filling a layer from its snapshot over NBD.
 *
 * Thread model: see copy.h.  Locks: job.lock guards the cursor, the
 * counters and the first error; it is never held across NBD I/O or an
 * ask of the targets (job.known's own lock is).  Layer locks are taken
 * inside layer_* calls only.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "copy.h"


struct job {
  struct layer *l;
  struct chain_targets tg;
  const struct copy_opts *o;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct nbdsrc_known known;     /* the snapshot's connection details */
  uint64_t cursor;              /* next block to consider */
  uint64_t todo;                /* blocks missing at the start */
  unsigned running;             /* workers still going */
  bool failed;
  int err;
  char errmsg[1024];
  struct copy_stats st;
  double synced_at;             /* when blocks were last made durable */
};

/* Make blocks durable at least this often as well, whatever the store's
 * preferred batch (store_commit_bytes): a crash costs at most this much
 * copying, also where batches are large (object stores). */
#define SYNC_SECONDS 2.0

static void
job_fail (struct job *j)
{
  SCOPED_LOCK (&j->lock);
  if (!j->failed) {
    j->failed = true;
    j->err = errno ? errno : EIO;
    snprintf (j->errmsg, sizeof j->errmsg, "%s", err_get ());
  }
}

/* Claim the next run of missing blocks: [*first, *first + *n). */
static bool
claim (struct job *j, uint64_t *first, unsigned *n)
{
  struct layer *l = j->l;
  uint64_t b;

  SCOPED_LOCK (&j->lock);
  if (j->failed)
    return false;
  for (b = bitmap_next_set (layer_set (l), j->cursor); b < layer_nblocks (l);
       b = bitmap_next_set (layer_set (l), b + 1))
    if (layer_block_state (l, b) == LAYER_MISSING)
      break;
  if (b >= layer_nblocks (l)) {
    j->cursor = layer_nblocks (l);
    return false;
  }
  *first = b;
  *n = 1;
  while (*n < j->o->request_blocks && b + *n < layer_nblocks (l)
         && layer_block_state (l, b + *n) == LAYER_MISSING)
    ++*n;
  j->cursor = b + *n;
  return true;
}

/* A new connection with fresh details.  *PERMANENT is set when
 * retrying cannot help: XAPI refused the details, the server is not
 * the one XAPI named, or the export is not the disk XAPI describes. */
static struct nbdsrc_conn *
connect_fresh (struct job *j, bool *permanent)
{
  bool ask_failed;
  struct nbdsrc_conn *c = nbdsrc_connect_known (&j->known, &j->tg,
                                                layer_meta (j->l)->snapshot,
                                                j->o->timeout, j->o->limit,
                                                &ask_failed);

  /* A server that will not speak TLS, or not with the key of the
   * certificate XAPI gave, will not on a retry. */
  if (c == NULL && (ask_failed || errno == ENOTSUP || errno == EKEYREJECTED))
    *permanent = true;
  if (c && nbdsrc_check_size (c, layer_meta (j->l)->snapshot,
                              layer_meta (j->l)->size) == -1) {
    nbdsrc_close (c);
    *permanent = true;
    return NULL;
  }
  return c;
}

static bool
job_failed (struct job *j)
{
  SCOPED_LOCK (&j->lock);
  return j->failed;
}

/* One read in flight on a worker's connection. */
struct run {
  bool busy;
  uint64_t first;               /* first block */
  unsigned n;                   /* blocks */
  size_t len;                   /* bytes to read (the disk's tail is short) */
  int64_t cookie;
  uint8_t *buf;                 /* n blocks */
};

/* Connect if need be and (re)start every busy run.  0, or -1 with
 * err_* (*PERMANENT when retrying cannot help). */
static int
start_all (struct job *j, struct nbdsrc_conn **c, struct run *runs,
           unsigned depth, bool *permanent)
{
  if (*c == NULL && (*c = connect_fresh (j, permanent)) == NULL)
    return -1;
  for (unsigned i = 0; i < depth; i++)
    if (runs[i].busy
        && (runs[i].cookie = nbdsrc_start_read (*c, runs[i].buf, runs[i].len,
                                                runs[i].first
                                                << CHAIN_BLOCK_SHIFT)) == -1)
      return -1;
  return 0;
}

/* After a failure: drop the connection, wait (1, 2, 4 … s: a host that
 * dropped us needs a moment) and start everything in flight again on a
 * new one (xapi-nbd drops a connection after any error).  0, or -1
 * when retries are used up or cannot help. */
static int
recover (struct job *j, struct nbdsrc_conn **c, struct run *runs,
         unsigned depth, unsigned *attempt, bool permanent)
{
  for (;;) {
    nbdsrc_close (*c);
    *c = NULL;
    if (permanent || *attempt >= j->o->retries || job_failed (j))
      return -1;
    log_warn ("%s (retrying)", err_get ());
    sleep (1u << MIN (*attempt, 4u));
    ++*attempt;
    if (start_all (j, c, runs, depth, &permanent) == 0)
      return 0;
  }
}

/* A read finished: its blocks go into the layer. */
static int
finish_run (struct job *j, struct run *r)
{
  double now;
  bool due;

  /* The tail block is short; the layer stores whole blocks. */
  memset (r->buf + r->len, 0, ((size_t) r->n << CHAIN_BLOCK_SHIFT) - r->len);
  if (layer_put_run (j->l, r->first, r->n, r->buf) == -1)
    return -1;
  pthread_mutex_lock (&j->lock);
  j->st.bytes += r->len;
  j->st.requests++;
  j->st.blocks += r->n;
  now = now_monotonic ();
  due = now - j->synced_at >= SYNC_SECONDS;
  if (due)
    j->synced_at = now;         /* one worker syncs for all */
  pthread_mutex_unlock (&j->lock);
  r->busy = false;
  /* Durable every so often, as the store prefers: bounds what a crash
   * can cost without a commit per block. */
  if ((due || layer_pending_bytes (j->l) >= layer_sync_bytes (j->l))
      && layer_sync (j->l) == -1)
    return -1;
  return 0;
}

/* Claim runs into free slots and start them on C (if connected).
 * Returns the number in flight, or -1 when starting one failed. */
static int
fill_pipe (struct job *j, struct nbdsrc_conn *c, struct run *runs,
           unsigned depth, bool *more)
{
  unsigned i, inflight = 0;
  int ret = 0;

  for (i = 0; i < depth; i++) {
    struct run *r = &runs[i];
    if (!r->busy && *more) {
      if (!claim (j, &r->first, &r->n))
        *more = false;
      else {
        uint64_t off = r->first << CHAIN_BLOCK_SHIFT;
        r->busy = true;
        r->len = MIN ((uint64_t) r->n << CHAIN_BLOCK_SHIFT,
                      layer_meta (j->l)->size - off);
        if (c && ret == 0
            && (r->cookie = nbdsrc_start_read (c, r->buf, r->len, off)) == -1)
          ret = -1;
      }
    }
    inflight += r->busy;
  }
  return ret == -1 ? -1 : (int) inflight;
}

static void *
worker (void *arg)
{
  struct job *j = arg;
  unsigned depth = MAX (j->o->depth, 1u), attempt = 0, i;
  struct run *runs = calloc (depth, sizeof *runs);
  struct nbdsrc_conn *c = NULL;
  bool more = true, permanent = false;

  for (i = 0; runs && i < depth; i++)
    /* Page-aligned for O_DIRECT writes into the store. */
    if ((runs[i].buf = aligned_alloc (4096, (size_t) j->o->request_blocks
                                      << CHAIN_BLOCK_SHIFT)) == NULL)
      break;
  if (runs == NULL || i < depth) {
    err_set (ENOMEM, "out of memory");
    goto fail;
  }
  for (;;) {
    int inflight = fill_pipe (j, c, runs, depth, &more);
    int64_t cookie;

    if (inflight == 0)
      break;
    if (inflight == -1 || c == NULL) {
      /* Not connected yet, or a start failed: (re)start everything. */
      if (start_all (j, &c, runs, depth, &permanent) == -1
          && recover (j, &c, runs, depth, &attempt, permanent) == -1)
        goto fail;
      continue;
    }
    cookie = nbdsrc_wait_any (c, j->o->timeout);
    if (cookie == -1) {
      /* Name the oldest read that was lost with the connection. */
      uint64_t first = UINT64_MAX;
      for (i = 0; i < depth; i++)
        if (runs[i].busy)
          first = MIN (first, runs[i].first);
      err_prefix ("read at offset %" PRIu64, first << CHAIN_BLOCK_SHIFT);
      if (recover (j, &c, runs, depth, &attempt, false) == -1)
        goto fail;
      continue;
    }
    for (i = 0; i < depth; i++)
      if (runs[i].busy && runs[i].cookie == cookie)
        break;
    if (i == depth) {
      err_set (EPROTO, "NBD: a read finished that was never started");
      goto fail;
    }
    attempt = 0;
    if (finish_run (j, &runs[i]) == -1)
      goto fail;
  }
  goto out;

 fail:
  job_fail (j);
 out:
  nbdsrc_close (c);
  for (i = 0; runs && i < depth; i++)
    free (runs[i].buf);
  free (runs);
  pthread_mutex_lock (&j->lock);
  j->running--;
  pthread_cond_signal (&j->cond);
  pthread_mutex_unlock (&j->lock);
  return NULL;
}

static void
show_progress (struct job *j, double start, bool last)
{
  double secs = now_monotonic () - start;
  double mib = j->st.bytes / 1048576.0;
  double todo = j->todo * (CHAIN_BLOCK_SIZE / 1048576.0);

  fprintf (stderr, "\r%s: %.1f of %.1f MiB (%.0f%%), %.1f MiB/s%s",
           j->o->label, mib, todo, todo > 0 ? 100.0 * mib / todo : 100.0,
           secs > 0 ? mib / secs : 0.0, last ? "\n" : "   ");
}

int
copy_layer (struct layer *l, const struct chain_targets *tg,
            const struct copy_opts *o, struct copy_stats *st)
{
  struct job j = { .l = l, .tg = *tg, .o = o };
  pthread_t *tids;
  unsigned i, started = 0;
  double start = now_monotonic ();

  uint64_t present, stored;

  memset (st, 0, sizeof *st);
  if (layer_complete (l))
    return 0;
  layer_counts (l, &present, &stored);
  j.todo = layer_nchanged (l) - present;
  tids = calloc (o->conns, sizeof *tids);
  if (tids == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  pthread_mutex_init (&j.lock, NULL);
  pthread_cond_init (&j.cond, NULL);
  j.synced_at = start;
  nbdsrc_known_init (&j.known);

  pthread_mutex_lock (&j.lock);
  for (i = 0; i < o->conns; i++) {
    if (pthread_create (&tids[i], NULL, worker, &j) != 0)
      break;
    started++;
    j.running++;
  }
  while (j.running > 0) {
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    /* Once a second; a worker finishing only wakes us to count it. */
    if (pthread_cond_timedwait (&j.cond, &j.lock, &ts) == ETIMEDOUT
        && o->progress && j.running > 0)
      show_progress (&j, start, false);
  }
  pthread_mutex_unlock (&j.lock);
  for (i = 0; i < started; i++)
    pthread_join (tids[i], NULL);
  free (tids);

  if (started == 0) {
    err_set (EAGAIN, "cannot start copy threads");
    j.failed = true;
    j.err = EAGAIN;
    snprintf (j.errmsg, sizeof j.errmsg, "%s", err_get ());
  }
  /* Keep what arrived even when a worker failed: the next run then
   * copies only the rest. */
  if (layer_sync (l) == -1 && !j.failed) {
    j.failed = true;
    j.err = errno;
    snprintf (j.errmsg, sizeof j.errmsg, "%s", err_get ());
  }
  j.st.seconds = now_monotonic () - start;
  if (o->progress)
    show_progress (&j, start, true);
  *st = j.st;
  pthread_cond_destroy (&j.cond);
  nbdsrc_known_clear (&j.known);
  pthread_mutex_destroy (&j.lock);
  if (j.failed) {
    err_set (j.err, "%s", j.errmsg);
    return -1;
  }
  return 0;
}
