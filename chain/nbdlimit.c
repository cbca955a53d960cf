/* cbtfs: what all NBD connections of a run share.
 *
 * Thread model: see nbdlimit.h.  lim->lock guards hosts[] and the
 * bucket; lim->cond is broadcast when a slot is given back.  A token
 * wait reserves its bytes under the lock (the bucket may go negative:
 * later readers queue behind it) and sleeps after unlocking.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "nbdlimit.h"

struct host {
  char *name;
  unsigned used;
};

struct nbdlimit {
  unsigned per_host;
  uint64_t rate;                /* bytes per second, 0 = unlimited */
  double burst;                 /* bytes */

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct host *hosts;
  size_t nhosts;
  unsigned peak;
  double tokens;                /* may be negative: reserved ahead */
  double last;                  /* when tokens was last topped up */
};

/* A tenth of a second of traffic, and at least one 64 KiB block: small
 * enough that a run of any length keeps to the rate, large enough that
 * a single request never waits for a whole second. */
static double
burst_of (uint64_t rate)
{
  return MAX ((double) rate / 10, 65536.0);
}

struct nbdlimit *
nbdlimit_new (unsigned per_host, uint64_t rate)
{
  struct nbdlimit *lim = calloc (1, sizeof *lim);

  if (lim == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  lim->per_host = per_host ? per_host : 1;
  lim->rate = rate;
  lim->burst = rate ? burst_of (rate) : 0;
  lim->tokens = lim->burst;
  lim->last = now_monotonic ();
  pthread_mutex_init (&lim->lock, NULL);
  pthread_cond_init (&lim->cond, NULL);
  return lim;
}

void
nbdlimit_free (struct nbdlimit *lim)
{
  if (lim == NULL)
    return;
  for (size_t i = 0; i < lim->nhosts; i++)
    free (lim->hosts[i].name);
  free (lim->hosts);
  pthread_cond_destroy (&lim->cond);
  pthread_mutex_destroy (&lim->lock);
  free (lim);
}

uint64_t
nbdlimit_burst (const struct nbdlimit *lim)
{
  return (uint64_t) lim->burst;
}

/* HOST's entry, added if new; NULL on ENOMEM.  Call with lim->lock. */
static struct host *
host_of (struct nbdlimit *lim, const char *host)
{
  struct host *nv;

  for (size_t i = 0; i < lim->nhosts; i++)
    if (strcmp (lim->hosts[i].name, host) == 0)
      return &lim->hosts[i];
  nv = realloc (lim->hosts, (lim->nhosts + 1) * sizeof *nv);
  if (nv == NULL)
    return NULL;
  lim->hosts = nv;
  nv = &lim->hosts[lim->nhosts];
  if ((nv->name = strdup (host)) == NULL)
    return NULL;
  nv->used = 0;
  lim->nhosts++;
  return nv;
}

int
nbdlimit_acquire (struct nbdlimit *lim, const char *host)
{
  struct host *h;
  SCOPED_LOCK (&lim->lock);

  /* Entries are never removed, but realloc may move them: look again
   * after every wait. */
  while ((h = host_of (lim, host)) != NULL && h->used >= lim->per_host)
    pthread_cond_wait (&lim->cond, &lim->lock);
  if (h == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  h->used++;
  lim->peak = MAX (lim->peak, h->used);
  return 0;
}

void
nbdlimit_release (struct nbdlimit *lim, const char *host)
{
  SCOPED_LOCK (&lim->lock);

  for (size_t i = 0; i < lim->nhosts; i++)
    if (strcmp (lim->hosts[i].name, host) == 0) {
      if (lim->hosts[i].used > 0)
        lim->hosts[i].used--;
      pthread_cond_broadcast (&lim->cond);
      return;
    }
}

void
nbdlimit_take (struct nbdlimit *lim, uint64_t bytes)
{
  double wait = 0, now;

  if (lim->rate == 0)
    return;
  pthread_mutex_lock (&lim->lock);
  now = now_monotonic ();
  lim->tokens = MIN (lim->burst,
                     lim->tokens + (now - lim->last) * (double) lim->rate);
  lim->last = now;
  lim->tokens -= (double) bytes;
  if (lim->tokens < 0)
    wait = -lim->tokens / (double) lim->rate;
  pthread_mutex_unlock (&lim->lock);

  while (wait > 0) {
    struct timespec ts = { .tv_sec = (time_t) wait,
                           .tv_nsec = (long) ((wait - (time_t) wait) * 1e9) };
    double start = now_monotonic ();
    if (nanosleep (&ts, NULL) == 0)
      break;
    wait -= now_monotonic () - start;   /* a signal cut it short */
  }
}

unsigned
nbdlimit_peak (struct nbdlimit *lim)
{
  SCOPED_LOCK (&lim->lock);
  return lim->peak;
}
