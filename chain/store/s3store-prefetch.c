/* cbtfs: read-ahead for the object store's readers (s3store.h).
 *
 * The kernel sends a mount a few reads at once, and each waited for a
 * ranged GET of its own: a cold sequential read ran at the speed of a
 * few GETs in flight.  Here each layer handle's reads are a stream:
 * once two of its reads that reached for the bucket follow each other
 * (within SLACK blocks), the runs holding the layer's next WINDOW
 * blocks are fetched ahead of the reader by the store's read-ahead
 * threads and kept in memory until read.  Blocks are followed by
 * number and found through the layer's map, so a pack whose places
 * are not in block order (concurrent writers) or a merged layer's
 * borrowed packs read ahead as well.  A run is an aligned window of
 * RUN places of a pack, so that two plans of it are one run.  A reader
 * whose block is in a run in flight waits for it; in a run not started
 * yet, fetches that run itself.  Fetched runs go into the local cache
 * as a reader's own do.  A read far from the last (random access)
 * stops reading ahead until two follow each other again, and drops the
 * runs not started.
 *
 * Memory: a run counts from its plan until it has been read whole, its
 * reader has gone SLACK blocks past it (or jumped away), another
 * stream needed the room, or its stream ended: at most BYTES per
 * store.
 *
 * Errors are dropped: a run that failed is absent, and the reader's
 * own GET then reports what is wrong.  Blocks read ahead are checked
 * by the core against their records, as any.
 *
 * Thread model: pf->lock guards the list of runs, the byte count,
 * each stream's nruns and every run's state; what a run is of (its
 * stream, pack, places and key) is fixed when it is made.  GETs and
 * copies run without it: a run is freed only when idle (run_idle:
 * nobody fetches it, waits for it or copies from it).  st->lock
 * guards a stream's position and is taken before pf->lock, never
 * after; planning holds it while it looks blocks up in the layer's
 * map (the layer's rwlock, read side, never held while pf->lock is
 * taken).  The threads start with the first run planned and end with
 * the store (s3store_prefetch_end, once no layer is open).  A stream
 * ends (s3store_stream_free) once its layer has no reader: it frees
 * its runs, waiting for those being fetched, so that no thread uses a
 * stream, a layer or their strings after.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/error.h"
#include "../../common/util.h"
#include "s3store.h"

#define BLOCK_SHIFT S3STORE_BLOCK_SHIFT
#define BLOCK_SIZE (1u << BLOCK_SHIFT)
#define RUN 16                  /* places per run (1 MiB), a power of 2 */
#define THREADS 16              /* GETs in flight per store, readers' aside */
#define BYTES ((uint64_t) 128 << 20)  /* runs held per store at most */
#define WINDOW 512              /* blocks read ahead of a reader (32 MiB) */
#define SLACK 256               /* how far apart reads still follow */
#define SWEEP_EVERY 64          /* blocks a reader goes between sweeps */

_Static_assert (RUN <= 64 && (RUN & (RUN - 1)) == 0,
                "a run's places are bits of a uint64_t");

enum state { QUEUED, FETCHING, DONE };

/* A run of places of a pack, planned for one stream. */
struct run {
  struct run *prev, *next;      /* in pf's list, oldest plan first */
  struct s3store_stream *st;
  enum state state;
  uint32_t pack, slot, n;       /* places slot .. slot + n - 1 */
  uint64_t first, last;         /* the blocks planned into it */
  char *key;                    /* the pack's (owned) */
  const char *name;             /* its name, in key (the local cache's) */
  uint8_t *buf;                 /* DONE: got blocks (owned), or NULL */
  uint32_t got;
  uint64_t taken;               /* bit i: place slot + i was read */
  unsigned pins;                /* readers copying from buf */
  unsigned waiters;             /* readers waiting for its GET */
  pthread_cond_t ready;         /* fetched */
  uint64_t used;                /* for eviction, oldest first */
};

struct s3store_prefetch {
  pthread_mutex_t lock;
  pthread_cond_t work;          /* a run queued, or stop */
  pthread_cond_t idle;          /* a run left alone, for a stream's end */
  unsigned ending;              /* streams waiting on idle */
  struct run *head, *tail;
  uint64_t bytes, tick;
  uint64_t frees;               /* runs freed so far (read atomically) */
  bool stop;
  pthread_t threads[THREADS];
  size_t nthreads;
};

struct s3store_stream {
  struct s3store_prefetch *pf;
  struct s3_store *ss;
  const struct s3store_layout *lay;
  void *layer;
  const char *disk;             /* the layer's, for the local cache */
  pthread_mutex_t lock;
  uint64_t next;                /* the block after the furthest read */
  uint64_t ahead;               /* blocks below it are planned */
  uint64_t swept;               /* next at the last sweep */
  unsigned streak;              /* reads that followed each other */
  bool full;                    /* the last plan found no room ... */
  uint64_t full_at;             /* ... when pf->frees was this */
  size_t nruns;                 /* its runs in pf's list (pf->lock) */
};

/* ---- runs (called with pf->lock held) ---------------------------------- */

static void
run_free (struct s3store_prefetch *pf, struct run *r)
{
  if (r->prev)
    r->prev->next = r->next;
  else
    pf->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    pf->tail = r->prev;
  pf->bytes -= (uint64_t) r->n << BLOCK_SHIFT;
  __atomic_store_n (&pf->frees, pf->frees + 1, __ATOMIC_RELAXED);
  __atomic_store_n (&r->st->nruns, r->st->nruns - 1, __ATOMIC_RELAXED);
  pthread_cond_destroy (&r->ready);
  free (r->buf);
  free (r->key);
  free (r);
}

/* Whether R may go now: nobody fetches it, waits for it or copies
 * from it. */
static bool
run_idle (const struct run *r)
{
  return r->state != FETCHING && r->pins == 0 && r->waiters == 0;
}

/* R may have become idle: tell a stream's end that waits. */
static void
left_alone (struct s3store_prefetch *pf)
{
  if (pf->ending)
    pthread_cond_broadcast (&pf->idle);
}

/* ST's run holding PLACE of pack PACK, or NULL. */
static struct run *
run_find (struct s3store_prefetch *pf, const struct s3store_stream *st,
          uint32_t pack, uint32_t place)
{
  for (struct run *r = pf->head; r; r = r->next)
    if (r->st == st && r->pack == pack && place >= r->slot
        && place < r->slot + r->n)
      return r;
  return NULL;
}

/* Free ST's idle runs that its reader has left behind (or, jumped
 * back, far ahead of it), and with ALL_QUEUED every one not started. */
static void
sweep (struct s3store_prefetch *pf, struct s3store_stream *st,
       uint64_t next, bool all_queued)
{
  struct run *r, *nr;

  for (r = pf->head; r; r = nr) {
    nr = r->next;
    if (r->st != st || !run_idle (r))
      continue;
    if ((all_queued && r->state == QUEUED) || r->last + SLACK < next
        || r->first > next + WINDOW + SLACK)
      run_free (pf, r);
  }
}

/* Make room for BYTES more by freeing other streams' idle runs, the
 * least recently used first: whether there is room. */
static bool
make_room (struct s3store_prefetch *pf, const struct s3store_stream *st,
           uint64_t bytes)
{
  while (pf->bytes + bytes > BYTES) {
    struct run *victim = NULL;
    for (struct run *r = pf->head; r; r = r->next)
      if (r->st != st && run_idle (r)
          && (victim == NULL || r->used < victim->used))
        victim = r;
    if (victim == NULL)
      return false;
    run_free (pf, victim);
  }
  return true;
}

/* ---- fetching ----------------------------------------------------------- */

/* Fetch R (FETCHING: this thread's alone), put it into the local cache
 * and hand it to readers.  Called without pf->lock. */
static void
fetch (struct s3store_prefetch *pf, struct run *r)
{
  struct s3_store *ss = r->st->ss;
  void *buf = NULL;
  size_t got = 0;

  if (s3store_pack_get (ss, r->key, r->slot, r->n, &buf, &got) == -1) {
    buf = NULL;
    got = 0;
  }
  got >>= BLOCK_SHIFT;
  if (ss->cache && got > 0)
    s3store_cache_put (ss->cache, r->st->disk, r->name, r->slot,
                       (uint32_t) got, buf);
  pthread_mutex_lock (&pf->lock);
  r->buf = buf;
  r->got = (uint32_t) got;
  r->state = DONE;
  if (r->waiters)
    pthread_cond_broadcast (&r->ready);
  left_alone (pf);
  pthread_mutex_unlock (&pf->lock);
}

static void *
worker (void *arg)
{
  struct s3store_prefetch *pf = arg;

  pthread_mutex_lock (&pf->lock);
  while (!pf->stop) {
    struct run *r = pf->head;
    while (r && r->state != QUEUED)
      r = r->next;
    if (r == NULL) {
      pthread_cond_wait (&pf->work, &pf->lock);
      continue;
    }
    r->state = FETCHING;
    pthread_mutex_unlock (&pf->lock);
    fetch (pf, r);
    pthread_mutex_lock (&pf->lock);
  }
  pthread_mutex_unlock (&pf->lock);
  return NULL;
}

/* Start the threads with the first run (best effort: without them,
 * readers fetch the runs they reach themselves).  Called with
 * pf->lock held. */
static void
start_threads (struct s3store_prefetch *pf)
{
  while (pf->nthreads < THREADS
         && pthread_create (&pf->threads[pf->nthreads], NULL, worker,
                            pf) == 0)
    pf->nthreads++;
}

/* ---- planning ----------------------------------------------------------- */

/* Plan block B, at place SLOT.. of pack PACK (N places), into ST's run
 * there, making it (KEY copied, NAME in KEY) if there is none: 0, or
 * -1 when there is no room (st->full set) or memory.  Called with
 * st->lock held. */
static int
plan_block (struct s3store_stream *st, uint64_t b, uint32_t pack,
            uint32_t slot, uint32_t n, const char *key, const char *name)
{
  struct s3store_prefetch *pf = st->pf;
  struct run *r;
  int ret = 0;

  pthread_mutex_lock (&pf->lock);
  if ((r = run_find (pf, st, pack, slot)) != NULL) {
    r->last = MAX (r->last, b);
    goto out;
  }
  if (!make_room (pf, st, (uint64_t) n << BLOCK_SHIFT)) {
    st->full = true;
    st->full_at = pf->frees;
    ret = -1;
    goto out;
  }
  if ((r = calloc (1, sizeof *r)) == NULL
      || (r->key = strdup (key)) == NULL) {
    free (r);
    ret = -1;
    goto out;
  }
  r->name = r->key + (name - key);
  pthread_cond_init (&r->ready, NULL);
  r->st = st;
  r->state = QUEUED;
  r->pack = pack;
  r->slot = slot;
  r->n = n;
  r->first = r->last = b;
  r->used = ++pf->tick;
  r->prev = pf->tail;
  if (pf->tail)
    pf->tail->next = r;
  else
    pf->head = r;
  pf->tail = r;
  pf->bytes += (uint64_t) n << BLOCK_SHIFT;
  __atomic_store_n (&st->nruns, st->nruns + 1, __ATOMIC_RELAXED);
  if (pf->nthreads == 0)
    start_threads (pf);
  pthread_cond_signal (&pf->work);
 out:
  pthread_mutex_unlock (&pf->lock);
  return ret;
}

/* Plan the blocks up to WINDOW past the reader, as far as there is
 * room.  Called with st->lock held. */
static void
plan (struct s3store_stream *st)
{
  uint64_t to = st->next + WINDOW;
  uint32_t kpack = UINT32_MAX;
  char *key = NULL;
  const char *name = NULL;

  /* No room, and nothing freed since: planning again would find none. */
  if (st->full
      && __atomic_load_n (&st->pf->frees, __ATOMIC_RELAXED) == st->full_at)
    return;
  st->full = false;
  for (; st->ahead < to; st->ahead++) {
    uint32_t pack, place, places, slot;
    if (!st->lay->locate (st->layer, st->ahead, &pack, &place, &places))
      continue;                 /* not this layer's, or not known yet */
    if (pack != kpack) {
      free (key);
      if ((key = st->lay->key (st->layer, pack, &name)) == NULL)
        break;
      kpack = pack;
    }
    slot = place & ~(uint32_t) (RUN - 1);
    if (plan_block (st, st->ahead, pack, slot, MIN (RUN, places - slot),
                    key, name) == -1)
      break;                    /* tried again as the reader goes on */
  }
  free (key);
}

/* The reader of ST reached block B: follow it, and plan. */
static void
note (struct s3store_stream *st, uint64_t b)
{
  bool follows, sweep_now;

  pthread_mutex_lock (&st->lock);
  follows = st->streak > 0 && b + SLACK >= st->next
    && b <= st->next + SLACK;
  if (follows) {
    st->streak += st->streak < 2;
    st->next = MAX (st->next, b + 1);
  }
  else {
    st->streak = 1;
    st->next = b + 1;
    st->ahead = b;
  }
  sweep_now = !follows || st->next >= st->swept + SWEEP_EVERY;
  if (sweep_now) {
    st->swept = st->next;
    pthread_mutex_lock (&st->pf->lock);
    sweep (st->pf, st, st->next, !follows);
    pthread_mutex_unlock (&st->pf->lock);
  }
  if (st->streak >= 2)
    plan (st);
  pthread_mutex_unlock (&st->lock);
}

/* ---- reading ------------------------------------------------------------ */

/* Copy block PLACE of pack PACK into BUF from ST's runs, waiting for
 * one being fetched and fetching one not started: whether it was
 * there. */
static bool
take (struct s3store_stream *st, uint32_t pack, uint32_t place, void *buf)
{
  struct s3store_prefetch *pf = st->pf;
  struct run *r;
  uint32_t i;

  if (__atomic_load_n (&st->nruns, __ATOMIC_RELAXED) == 0)
    return false;
  pthread_mutex_lock (&pf->lock);
  for (;;) {
    if ((r = run_find (pf, st, pack, place)) == NULL) {
      pthread_mutex_unlock (&pf->lock);
      return false;
    }
    if (r->state == DONE)
      break;
    if (r->state == FETCHING) {
      r->waiters++;
      pthread_cond_wait (&r->ready, &pf->lock);
      r->waiters--;
    }
    else {
      /* Its turn has not come: the reader will not wait for it. */
      r->state = FETCHING;
      pthread_mutex_unlock (&pf->lock);
      fetch (pf, r);
      pthread_mutex_lock (&pf->lock);
    }
  }
  i = place - r->slot;
  if (i >= r->got) {
    /* Failed, or the pack ends before: the reader's GET says why. */
    if (run_idle (r))
      run_free (pf, r);
    pthread_mutex_unlock (&pf->lock);
    return false;
  }
  r->pins++;
  r->used = ++pf->tick;
  pthread_mutex_unlock (&pf->lock);
  memcpy (buf, r->buf + ((size_t) i << BLOCK_SHIFT), BLOCK_SIZE);
  pthread_mutex_lock (&pf->lock);
  r->pins--;
  r->taken |= (uint64_t) 1 << i;
  if (r->taken == ((uint64_t) 2 << (r->got - 1)) - 1 && run_idle (r))
    run_free (pf, r);
  else
    left_alone (pf);
  pthread_mutex_unlock (&pf->lock);
  return true;
}

bool
s3store_stream_take (struct s3store_stream *st, uint64_t b, uint32_t pack,
                     uint32_t place, void *buf)
{
  if (!take (st, pack, place, buf))
    return false;
  note (st, b);
  return true;
}

bool
s3store_stream_miss (struct s3store_stream *st, uint64_t b, uint32_t pack,
                     uint32_t place, void *buf)
{
  note (st, b);
  return take (st, pack, place, buf);
}

/* ---- streams and the store's threads ------------------------------------ */

/* The store's read-ahead state, made with its first stream.  Layers
 * open from any thread: pool_lock guards the making. */
static struct s3store_prefetch *
prefetch_of (struct s3_store *ss)
{
  struct s3store_prefetch *pf;

  pthread_mutex_lock (&ss->pool_lock);
  pf = ss->pf;
  if (pf == NULL && (pf = calloc (1, sizeof *pf)) != NULL) {
    pthread_mutex_init (&pf->lock, NULL);
    pthread_cond_init (&pf->work, NULL);
    pthread_cond_init (&pf->idle, NULL);
    ss->pf = pf;
  }
  pthread_mutex_unlock (&ss->pool_lock);
  return pf;
}

struct s3store_stream *
s3store_stream_new (struct s3_store *ss, const struct s3store_layout *lay,
                    void *layer, const char *disk)
{
  struct s3store_prefetch *pf = prefetch_of (ss);
  struct s3store_stream *st;

  if (pf == NULL || (st = calloc (1, sizeof *st)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  st->pf = pf;
  st->ss = ss;
  st->lay = lay;
  st->layer = layer;
  st->disk = disk;
  pthread_mutex_init (&st->lock, NULL);
  return st;
}

void
s3store_stream_free (struct s3store_stream *st)
{
  struct s3store_prefetch *pf;

  if (st == NULL)
    return;
  pf = st->pf;
  pthread_mutex_lock (&pf->lock);
  for (;;) {
    struct run *r, *nr;
    bool busy = false;
    for (r = pf->head; r; r = nr) {
      nr = r->next;
      if (r->st != st)
        continue;
      if (run_idle (r))
        run_free (pf, r);
      else
        busy = true;
    }
    if (!busy)
      break;
    pf->ending++;
    pthread_cond_wait (&pf->idle, &pf->lock);
    pf->ending--;
  }
  pthread_mutex_unlock (&pf->lock);
  pthread_mutex_destroy (&st->lock);
  free (st);
}

void
s3store_prefetch_end (struct s3_store *ss)
{
  struct s3store_prefetch *pf = ss->pf;

  if (pf == NULL)
    return;
  pthread_mutex_lock (&pf->lock);
  pf->stop = true;
  pthread_cond_broadcast (&pf->work);
  pthread_mutex_unlock (&pf->lock);
  for (size_t i = 0; i < pf->nthreads; i++)
    pthread_join (pf->threads[i], NULL);
  pthread_cond_destroy (&pf->idle);
  pthread_cond_destroy (&pf->work);
  pthread_mutex_destroy (&pf->lock);
  free (pf);
  ss->pf = NULL;
}
