/* cbtfs: fetching missing blocks on demand, for lazy layers.
 *
 * Thread model: see fetch.h.  Locks: f->lock (mutex) with f->cond,
 * broadcast whenever a fetch finishes or a connection is released;
 * f->flush (cond) wakes the flusher.  Nothing blocking runs under
 * f->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "fetch.h"

/* Blocks being fetched by some thread. */
struct flight {
  struct layer *l;
  uint64_t first;
  unsigned n;
};

/* A pooled NBD connection to one snapshot. */
struct slot {
  bool used;
  bool busy;                    /* lent to a reader, or being connected */
  char snap[UUID_LEN + 1];
  struct nbdsrc_conn *c;        /* NULL while connecting */
  double idle_since;            /* when last given back */
};

/* Close a connection idle this long (seconds): an open one keeps its
 * snapshot in use on the host (xapi-nbd plugs a dom0 VBD), and
 * VDI.data_destroy waits only 4 s for that to go. */
#define CONN_IDLE 2.0

/* A snapshot whose source failed recently: fail fast until UNTIL. */
struct failure {
  char snap[UUID_LEN + 1];
  double until;
  int err;
  char msg[512];
};

/* A layer the store could not take blocks for (ENOSPC, a failed
 * sync): blocks fetched for it are served but not kept until UNTIL, so
 * its writer lock goes back and the failure is logged once. */
struct keep_failure {
  struct layer *l;
  double until;
};

/* Connection details of one snapshot. */
struct known_target {
  char snap[UUID_LEN + 1];
  struct nbdsrc_known known;
};

struct fetcher {
  struct chain_targets tg;
  struct fetch_opts o;

  /* One entry per snapshot connected to, kept until freed (nbdsrc.h:
   * details asked once, not per connection).  tlock guards the list
   * alone; it is never held with f->lock, nor across an ask. */
  pthread_mutex_t tlock;
  struct known_target **targets;
  size_t ntargets;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct flight *flights;
  size_t nflights, capflights;
  struct slot *slots;           /* o.max_conns of them */
  struct failure *fails;
  size_t nfails;
  struct layer **dirty;         /* layers with blocks to sync */
  size_t ndirty, capdirty;
  struct layer **held;          /* layers kept in (the flusher's own) */
  size_t nheld, capheld;
  struct keep_failure *kfails;  /* layers the store failed to take */
  size_t nkfails;

  pthread_t flusher;
  bool flusher_started;
  bool stopping;
  pthread_cond_t flush;
};

struct fetcher *
fetcher_new (const struct chain_targets *tg, const struct fetch_opts *o)
{
  struct fetcher *f = calloc (1, sizeof *f);

  if (f == NULL)
    return NULL;
  f->tg = *tg;
  f->o = *o;
  if (f->o.max_conns == 0)
    f->o.max_conns = 1;
  f->slots = calloc (f->o.max_conns, sizeof *f->slots);
  if (f->slots == NULL) {
    free (f);
    return NULL;
  }
  pthread_mutex_init (&f->lock, NULL);
  pthread_mutex_init (&f->tlock, NULL);
  pthread_cond_init (&f->cond, NULL);
  pthread_cond_init (&f->flush, NULL);
  return f;
}

/* ---- in-flight table (call with f->lock held) ------------------------- */

static bool
in_flight (struct fetcher *f, struct layer *l, uint64_t b)
{
  for (size_t i = 0; i < f->nflights; i++)
    if (f->flights[i].l == l && b >= f->flights[i].first
        && b < f->flights[i].first + f->flights[i].n)
      return true;
  return false;
}

static int
flight_add (struct fetcher *f, struct layer *l, uint64_t first, unsigned n)
{
  if (f->nflights == f->capflights) {
    size_t cap = f->capflights ? f->capflights * 2 : 16;
    struct flight *nv = realloc (f->flights, cap * sizeof *nv);
    if (nv == NULL)
      return -1;
    f->flights = nv;
    f->capflights = cap;
  }
  f->flights[f->nflights++] = (struct flight) { l, first, n };
  return 0;
}

static void
flight_remove (struct fetcher *f, struct layer *l, uint64_t first)
{
  for (size_t i = 0; i < f->nflights; i++)
    if (f->flights[i].l == l && f->flights[i].first == first) {
      f->flights[i] = f->flights[--f->nflights];
      return;
    }
}

/* ---- failure memo (call with f->lock held) ---------------------------- */

static struct failure *
failure_of (struct fetcher *f, const char *snap)
{
  for (size_t i = 0; i < f->nfails; i++)
    if (strcmp (f->fails[i].snap, snap) == 0)
      return &f->fails[i];
  return NULL;
}

static void
remember_failure (struct fetcher *f, const char *snap)
{
  struct failure *x = failure_of (f, snap);

  if (x == NULL) {
    struct failure *nv = realloc (f->fails, (f->nfails + 1) * sizeof *nv);
    if (nv == NULL)
      return;                   /* then we just do not fail fast */
    f->fails = nv;
    x = &f->fails[f->nfails++];
    snprintf (x->snap, sizeof x->snap, "%s", snap);
  }
  x->until = now_monotonic () + f->o.retry_after;
  x->err = errno ? errno : EIO;
  snprintf (x->msg, sizeof x->msg, "%s", err_get ());
}

/* ---- connection details ----------------------------------------------- */

/* SNAP's entry, made (knowing nothing) if there is none; NULL on
 * ENOMEM.  Entries stay put until fetcher_free (their lock inside). */
static struct known_target *
known_of (struct fetcher *f, const char *snap)
{
  struct known_target *k, **nv;
  SCOPED_LOCK (&f->tlock);

  for (size_t i = 0; i < f->ntargets; i++)
    if (strcmp (f->targets[i]->snap, snap) == 0)
      return f->targets[i];
  nv = realloc (f->targets, (f->ntargets + 1) * sizeof *nv);
  k = calloc (1, sizeof *k);
  if (nv)
    f->targets = nv;
  if (nv == NULL || k == NULL) {
    free (k);
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  snprintf (k->snap, sizeof k->snap, "%s", snap);
  nbdsrc_known_init (&k->known);
  f->targets[f->ntargets++] = k;
  return k;
}

/* A connection to SNAP for a reader, checked to be SIZE bytes.  NULL
 * with err_*. */
static struct nbdsrc_conn *
connect_snapshot (struct fetcher *f, const char *snap, uint64_t size)
{
  struct known_target *k = known_of (f, snap);
  struct nbdsrc_conn *c;

  if (k == NULL)
    return NULL;
  c = nbdsrc_connect_known (&k->known, &f->tg, k->snap, f->o.timeout,
                            f->o.limit, NULL);
  if (c && nbdsrc_check_size (c, snap, size) == -1) {
    nbdsrc_close (c);
    return NULL;
  }
  return c;
}

/* ---- connection pool -------------------------------------------------- */

static void start_flusher (struct fetcher *f);
static void keep_failed (struct fetcher *f, struct layer *l);

/* A connection to SNAP for the caller's use, or -1 with err_*.  Returns
 * the slot number; give it back with put_slot. */
static int
get_slot (struct fetcher *f, const char *snap, uint64_t size)
{
  struct nbdsrc_conn *c, *old = NULL;
  size_t i, pick;

  pthread_mutex_lock (&f->lock);
  for (;;) {
    struct failure *x = failure_of (f, snap);
    if (x && now_monotonic () < x->until) {
      err_set (x->err, "%s", x->msg);
      pthread_mutex_unlock (&f->lock);
      return -1;
    }
    for (i = 0; i < f->o.max_conns; i++)
      if (f->slots[i].used && !f->slots[i].busy && f->slots[i].c
          && strcmp (f->slots[i].snap, snap) == 0) {
        f->slots[i].busy = true;
        pthread_mutex_unlock (&f->lock);
        return i;
      }
    /* A free slot, or else an idle one of another snapshot to reuse. */
    for (pick = 0; pick < f->o.max_conns && f->slots[pick].used; pick++)
      ;
    if (pick == f->o.max_conns)
      for (pick = 0; pick < f->o.max_conns; pick++)
        if (!f->slots[pick].busy)
          break;
    if (pick < f->o.max_conns)
      break;
    pthread_cond_wait (&f->cond, &f->lock);
  }
  old = f->slots[pick].used ? f->slots[pick].c : NULL;
  f->slots[pick] = (struct slot) { .used = true, .busy = true, .c = NULL };
  snprintf (f->slots[pick].snap, sizeof f->slots[pick].snap, "%s", snap);
  pthread_mutex_unlock (&f->lock);

  nbdsrc_close (old);
  c = connect_snapshot (f, snap, size);

  pthread_mutex_lock (&f->lock);
  if (c == NULL)
    f->slots[pick].used = f->slots[pick].busy = false;
  else {
    f->slots[pick].c = c;
    start_flusher (f);          /* which closes it once idle */
  }
  pthread_cond_broadcast (&f->cond);
  pthread_mutex_unlock (&f->lock);
  return c ? (int) pick : -1;
}

/* Give back slot I; a connection that failed (OK false) is closed:
 * xapi-nbd drops a connection after any error anyway. */
static void
put_slot (struct fetcher *f, int i, bool ok)
{
  struct nbdsrc_conn *dead = NULL;

  pthread_mutex_lock (&f->lock);
  if (ok) {
    f->slots[i].busy = false;
    f->slots[i].idle_since = now_monotonic ();
  }
  else {
    dead = f->slots[i].c;
    f->slots[i].used = f->slots[i].busy = false;
    f->slots[i].c = NULL;
  }
  pthread_cond_broadcast (&f->cond);
  pthread_mutex_unlock (&f->lock);
  nbdsrc_close (dead);
}

/* ---- making fetched blocks durable ------------------------------------ */

static bool
contains (struct layer **v, size_t n, struct layer *l)
{
  for (size_t i = 0; i < n; i++)
    if (v[i] == l)
      return true;
  return false;
}

/* Add L to the list *V (*N of *CAP) unless it is there.  0 or -1. */
static int
add_once (struct layer ***v, size_t *n, size_t *cap, struct layer *l)
{
  if (contains (*v, *n, l))
    return 0;
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 8;
    struct layer **nv = realloc (*v, ncap * sizeof *nv);
    if (nv == NULL)
      return -1;
    *v = nv;
    *cap = ncap;
  }
  (*v)[(*n)++] = l;
  return 0;
}

/* After a round that synced V (N layers): give back the writer lock of
 * every layer that was kept in before but not in this round, so that a
 * mount never stops cbtfs fetch or a backup from finishing a layer it
 * merely read from once.  A layer being written still says EBUSY. */
static void
release_idle (struct fetcher *f, struct layer **v, size_t n)
{
  size_t i, j;

  for (i = j = 0; i < f->nheld; i++) {
    struct layer *l = f->held[i];
    if (!contains (v, n, l) && layer_release (l) == 0)
      log_debug ("snapshot %s: idle, writer lock given back",
                 layer_meta (l)->snapshot);
    else
      f->held[j++] = l;
  }
  f->nheld = j;
  /* Out of memory: a layer left out is held until unmounted. */
  for (i = 0; i < n; i++)
    add_once (&f->held, &f->nheld, &f->capheld, v[i]);
}

/* Close the connections idle for CONN_IDLE seconds, so that the host
 * may reduce their snapshots (cbtfs fetch does); the next read of one
 * connects again. */
static void
close_idle (struct fetcher *f)
{
  struct nbdsrc_conn *idle[16];
  size_t i = 0, n;
  double now = now_monotonic ();

  do {
    n = 0;
    pthread_mutex_lock (&f->lock);
    for (; i < f->o.max_conns && n < ARRAY_SIZE (idle); i++)
      if (f->slots[i].used && !f->slots[i].busy && f->slots[i].c
          && now - f->slots[i].idle_since >= CONN_IDLE) {
        idle[n++] = f->slots[i].c;
        f->slots[i].used = false;
        f->slots[i].c = NULL;
      }
    pthread_mutex_unlock (&f->lock);
    for (size_t j = 0; j < n; j++)
      nbdsrc_close (idle[j]);
  } while (i < f->o.max_conns);
}

static void *
flusher (void *arg)
{
  struct fetcher *f = arg;

  pthread_mutex_lock (&f->lock);
  while (!f->stopping) {
    struct timespec ts;
    struct layer **v;
    size_t n;

    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait (&f->flush, &f->lock, &ts);
    v = f->dirty;
    n = f->ndirty;
    f->dirty = NULL;
    f->ndirty = f->capdirty = 0;
    pthread_mutex_unlock (&f->lock);
    for (size_t i = 0; i < n; i++)
      if (layer_sync (v[i]) == -1)
        keep_failed (f, v[i]);
    release_idle (f, v, n);
    free (v);
    close_idle (f);
    pthread_mutex_lock (&f->lock);
  }
  pthread_mutex_unlock (&f->lock);
  return NULL;
}

/* Start the flusher if it is not running; call with f->lock held.
 * Started on first need, not at creation: a mount forks after creating
 * us. */
static void
start_flusher (struct fetcher *f)
{
  if (!f->flusher_started
      && pthread_create (&f->flusher, NULL, flusher, f) == 0)
    f->flusher_started = true;
}

static void
mark_dirty (struct fetcher *f, struct layer *l)
{
  SCOPED_LOCK (&f->lock);
  if (add_once (&f->dirty, &f->ndirty, &f->capdirty, l) == -1)
    return;                     /* synced at the end instead */
  start_flusher (f);
}

/* Whether blocks of L are not to be kept now (a recent failure). */
static bool
keep_paused (struct fetcher *f, struct layer *l)
{
  SCOPED_LOCK (&f->lock);
  for (size_t i = 0; i < f->nkfails; i++)
    if (f->kfails[i].l == l)
      return now_monotonic () < f->kfails[i].until;
  return false;
}

/* The store failed to take blocks of L (err_* says why): serve without
 * keeping them for a while, log that once per layer, and let the
 * flusher give the writer lock back (a failed sync gave up whatever
 * was queued, so nothing keeps it), so that cbtfs fetch is not shut
 * out until the mount ends. */
static void
keep_failed (struct fetcher *f, struct layer *l)
{
  struct keep_failure *x = NULL;
  bool first = false;

  pthread_mutex_lock (&f->lock);
  for (size_t i = 0; i < f->nkfails && x == NULL; i++)
    if (f->kfails[i].l == l)
      x = &f->kfails[i];
  if (x == NULL) {
    struct keep_failure *nv = realloc (f->kfails,
                                       (f->nkfails + 1) * sizeof *nv);
    if (nv) {
      f->kfails = nv;
      x = &f->kfails[f->nkfails++];
      x->l = l;
      first = true;
    }
  }
  if (x)
    x->until = now_monotonic () + f->o.retry_after;
  pthread_mutex_unlock (&f->lock);
  if (first || x == NULL)
    log_error ("not keeping fetched blocks of snapshot %s for now (they "
               "are still served): %s", layer_meta (l)->snapshot, err_get ());
  else
    log_debug ("not keeping fetched blocks: %s", err_get ());
  mark_dirty (f, l);            /* so that the flusher releases it */
}

/* Keep N fetched blocks at FIRST (in BUF) in L, when the store can. */
static void
keep (struct fetcher *f, struct layer *l, uint64_t first, unsigned n,
      const uint8_t *buf)
{
  int tries;

  if (!f->o.store || keep_paused (f, l))
    return;
  /* The flusher may give the lock back between the two calls (EBADF). */
  for (tries = 0; tries < 3; tries++) {
    if (layer_make_writable (l) == -1) {
      /* Another process fills this layer: serve without keeping. */
      log_debug ("not keeping fetched blocks: %s", err_get ());
      return;
    }
    if (layer_put_run (l, first, n, buf) == 0) {
      mark_dirty (f, l);
      return;
    }
    if (errno != EBADF)
      break;
  }
  keep_failed (f, l);
}

/* ---- reading ---------------------------------------------------------- */

/* The fetch of [FIRST, ...) of L is over: let its waiters look again. */
static void
land (struct fetcher *f, struct layer *l, uint64_t first)
{
  pthread_mutex_lock (&f->lock);
  flight_remove (f, l, first);
  pthread_cond_broadcast (&f->cond);
  pthread_mutex_unlock (&f->lock);
}

void
fetcher_keep_later (struct fetcher *f, struct fetch_later *later)
{
  for (unsigned i = 0; i < later->n; i++) {
    keep (f, later->v[i].l, later->v[i].first, later->v[i].n,
          later->v[i].buf);
    land (f, later->v[i].l, later->v[i].first);
  }
  later->n = 0;
}

/* Fetch blocks [FIRST, FIRST+N) of L into OUT over NBD, trying a fresh
 * connection once if the first fails (sessions expire; xapi-nbd drops
 * connections after any error).  On success the run is kept now or
 * queued in LATER; either way it is landed, now or by
 * fetcher_keep_later. */
static int
fetch_run (struct fetcher *f, struct layer *l, uint64_t first, unsigned n,
           uint8_t *out, struct fetch_later *later)
{
  uint64_t off = first << CHAIN_BLOCK_SHIFT;
  size_t len = MIN ((uint64_t) n << CHAIN_BLOCK_SHIFT,
                    layer_meta (l)->size - off);
  int attempt, s = -1;

  for (attempt = 0; attempt < 2; attempt++) {
    s = get_slot (f, layer_meta (l)->snapshot, layer_meta (l)->size);
    if (s == -1)
      break;
    if (nbdsrc_pread (f->slots[s].c, out, len, off, f->o.timeout) == 0) {
      put_slot (f, s, true);
      memset (out + len, 0, ((size_t) n << CHAIN_BLOCK_SHIFT) - len);
      if (later && later->n < FETCH_LATER_MAX)
        later->v[later->n++] = (struct fetch_later_run) { l, first, n, out };
      else {
        keep (f, l, first, n, out);
        land (f, l, first);
      }
      return 0;
    }
    put_slot (f, s, false);
  }
  pthread_mutex_lock (&f->lock);
  remember_failure (f, layer_meta (l)->snapshot);
  pthread_mutex_unlock (&f->lock);
  land (f, l, first);
  err_prefix ("snapshot %s: offset %" PRIu64 ": cannot fetch",
              layer_meta (l)->snapshot, off);
  errno = EIO;
  return -1;
}

/* Whether block B, which could not be fetched, was stored meanwhile by
 * another process: cbtfs fetch lets the host drop a snapshot's data once
 * it has it all.  Otherwise the fetch's message and errno stay. */
static bool
stored_meanwhile (struct layer *l, uint64_t b)
{
  int e = errno;
  CLEANUP_FREE char *msg = strdup (err_get ());
  bool stored = layer_catch_up (l) == 0
    && layer_block_state (l, b) != LAYER_MISSING;

  if (!stored)
    err_set (e, "%s", msg ? msg : "out of memory");
  return stored;
}

int
fetcher_read (struct fetcher *f, struct layer *l, uint64_t first, unsigned n,
              void *out, struct fetch_later *later)
{
  uint8_t *o = out;
  unsigned i, k;

  for (i = 0; i < n; i += k) {
    uint64_t b = first + i;
    int r;

    k = 1;
    if (layer_block_state (l, b) != LAYER_MISSING) {
      if (layer_read_block (l, b, o + ((size_t) i << CHAIN_BLOCK_SHIFT)) == -1) {
        errno = EIO;
        return -1;
      }
      continue;
    }
    pthread_mutex_lock (&f->lock);
    if (in_flight (f, l, b) && later && later->n > 0) {
      /* Never wait while holding unkept runs: the holder of this one
       * may be waiting for ours. */
      pthread_mutex_unlock (&f->lock);
      fetcher_keep_later (f, later);
      k = 0;
      continue;
    }
    if (in_flight (f, l, b)) {
      /* Someone is fetching it: wait, then take it from the store. */
      pthread_cond_wait (&f->cond, &f->lock);
      pthread_mutex_unlock (&f->lock);
      k = 0;
      continue;
    }
    /* Recheck under the lock: the block may have landed meanwhile. */
    if (layer_block_state (l, b) != LAYER_MISSING) {
      pthread_mutex_unlock (&f->lock);
      k = 0;
      continue;
    }
    while (i + k < n && !in_flight (f, l, b + k)
           && layer_block_state (l, b + k) == LAYER_MISSING)
      k++;
    r = flight_add (f, l, b, k);
    pthread_mutex_unlock (&f->lock);
    if (r == -1) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    r = fetch_run (f, l, b, k, o + ((size_t) i << CHAIN_BLOCK_SHIFT), later);
    if (r == -1 && stored_meanwhile (l, b)) {
      k = 0;
      continue;
    }
    if (r == -1)
      return -1;
  }
  return 0;
}

int
fetcher_free (struct fetcher *f)
{
  int ret = 0;

  if (f == NULL)
    return 0;
  pthread_mutex_lock (&f->lock);
  f->stopping = true;
  pthread_cond_signal (&f->flush);
  pthread_mutex_unlock (&f->lock);
  if (f->flusher_started)
    pthread_join (f->flusher, NULL);
  for (size_t i = 0; i < f->ndirty; i++)
    if (layer_sync (f->dirty[i]) == -1) {
      log_error ("keeping fetched blocks: %s", err_get ());
      ret = -1;
    }
  for (size_t i = 0; i < f->o.max_conns; i++)
    nbdsrc_close (f->slots[i].c);
  free (f->slots);
  free (f->flights);
  free (f->fails);
  free (f->dirty);
  free (f->held);
  free (f->kfails);
  for (size_t i = 0; i < f->ntargets; i++) {
    nbdsrc_known_clear (&f->targets[i]->known);
    free (f->targets[i]);
  }
  free (f->targets);
  pthread_mutex_destroy (&f->tlock);
  pthread_cond_destroy (&f->flush);
  pthread_cond_destroy (&f->cond);
  pthread_mutex_destroy (&f->lock);
  free (f);
  return ret;
}
