/* cbtfs: an object store's lock shared by backups, and the disks they
 * hold (s3store.h, FORMAT.md "Object stores", Leases).
 *
 * Backups of different disks may write one store at once: each holds a
 * share of the store's lock (a lease P/shares/ID of its own) and a
 * lease per disk it writes (P/disklocks/DISK), while prune, forget and
 * copy hold P/lock, the exclusive lock, alone.  A share is taken by
 * putting it, then looking at P/lock: a live P/lock is an exclusive
 * holder's, or a taker's that waits for the shares to go, so the share
 * goes and the backup waits.  An exclusive taker puts P/lock first and
 * then waits until no live share is listed.  The server reads after
 * writes (RGW, S3), so one of two takers always sees the other: the
 * one that looked second saw what the first had put.
 *
 * What a crashed backup left of a disk (filling marks, a sweep it did
 * not finish) is cleared by the next holder of that disk; its share
 * and disk leases, by the next exclusive holder or taker of the disk,
 * once their holder is surely gone or they outlived their ttl.
 *
 * Thread model: store_lock_shared and s3store_lock's waits run on one
 * thread; disk locks are taken and let go from any thread (a backup's
 * jobs), the list of held disks under held_lock.  Each lease renews
 * itself (s3store-lease.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "s3store.h"

/* How often a waiting taker looks again: each look is a request, so
 * less often than a directory store's flock. */
#define LOCK_POLL 1.0

int
s3store_lock_waited (double deadline, double wait, bool *said)
{
  double left = deadline - now_monotonic ();

  if (left <= 0) {
    if (wait > 0) {
      char msg[512];
      snprintf (msg, sizeof msg, "%s", err_get ());
      err_set (EWOULDBLOCK, "%s; gave up after %.9g s", msg, wait);
    }
    return -1;
  }
  if (!*said) {
    log_info ("%s; waiting up to %.9g s", err_get (), wait);
    *said = true;
  }
  sleep_seconds (left < LOCK_POLL ? left : LOCK_POLL);
  return 0;
}

struct s3store_lease *
s3store_lease_wait (struct s3_store *ss, const char *key, const char *who,
                    const char *what, double deadline, double wait,
                    bool *said)
{
  struct s3store_lease *l;

  while ((l = s3store_lease_take (ss, key, who, what)) == NULL)
    if (errno != EWOULDBLOCK
        || s3store_lock_waited (deadline, wait, said) == -1)
      return NULL;
  return l;
}

/* Whether a live lease is listed under PREFIX (a key of the store):
 * 1 with EWOULDBLOCK naming the first one's holder (WHAT being what it
 * guards), 0 if none.  The others, whose holders are gone or that
 * outlived their ttl, are deleted (a crashed backup's). */
static int
live_under (struct s3_store *ss, const char *prefix, const char *what)
{
  CLEANUP_FREE char *dir = s3store_key (ss, "%s", prefix);
  char **names = NULL, first[512] = "";
  size_t n = 0;
  int r = 0;

  if (dir == NULL || s3store_keys (ss, dir, &names, &n) == -1)
    return -1;
  for (size_t i = 0; i < n && r != -1; i++) {
    CLEANUP_FREE char *key = NULL;
    int busy;
    if (asprintf (&key, "%s%s", dir, names[i]) == -1) {
      err_set (ENOMEM, "out of memory");
      r = -1;
      break;
    }
    busy = s3store_lease_busy (ss, key, what, NULL);
    if (busy == 0)
      s3store_delete (ss, key);         /* best effort: it is over */
    else if (busy == -1)
      r = -1;
    else if (r++ == 0)
      snprintf (first, sizeof first, "%s", err_get ());
  }
  store_names_free (names, n);
  if (r > 0)
    err_set (EWOULDBLOCK, "%s", first);
  return r > 0 ? 1 : r;
}

int
s3store_shares_wait (struct s3_store *ss, double deadline, double wait,
                     bool *said)
{
  CLEANUP_FREE char *what = NULL;
  int r;

  if (asprintf (&what, "the store %s", ss->base.where) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  while ((r = live_under (ss, "shares/", what)) == 1)
    if (s3store_lock_waited (deadline, wait, said) == -1)
      return -1;
  if (r == 0 && live_under (ss, "disklocks/", what) == -1)
    log_warn ("%s: %s (a crashed backup's disk leases stay)",
              ss->base.where, err_get ());
  return r;
}

int
s3store_lock_shared (struct store *s, const char *who, double wait)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *share = NULL, *lock = s3store_key (ss, "lock");
  CLEANUP_FREE char *what = NULL;
  double deadline = now_monotonic () + wait;
  char id[UUID_LEN + 1];
  bool said = false;
  int r;

  if (make_uuid (id) == -1)
    return -1;
  share = s3store_key (ss, "shares/%s", id);
  if (lock == NULL || share == NULL
      || asprintf (&what, "the store %s", s->where) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (;;) {
    char msg[512];
    int e;
    if ((ss->share = s3store_lease_take (ss, share, who, what)) == NULL)
      return -1;
    s3store_lease_own (ss->share);
    r = s3store_lease_busy (ss, lock, what, "going on beside it (the next "
                            "prune, forget or copy takes it over)");
    if (r == 0) {
      /* What crashed backups left: their shares, and unfinished
       * uploads (any holder's: only those no live writer may own). */
      if (live_under (ss, "shares/", what) == -1)
        log_warn ("%s: %s", s->where, err_get ());
      s3store_abandoned (ss);
      return 0;
    }
    e = errno;
    snprintf (msg, sizeof msg, "%s", err_get ());
    s3store_lease_end (ss->share);
    ss->share = NULL;
    err_set (e, "%s", msg);
    if (r == -1 || s3store_lock_waited (deadline, wait, &said) == -1)
      return -1;
  }
}

/* The place of DISK in SS's held disks, or -1.  held_lock held. */
static ssize_t
find_held (struct s3_store *ss, const char *disk)
{
  for (size_t i = 0; i < ss->nheld; i++)
    if (strcmp (ss->held[i].disk, disk) == 0)
      return i;
  return -1;
}

static int
add_held (struct s3_store *ss, const char *disk, struct s3store_lease *l)
{
  int r = 0;

  pthread_mutex_lock (&ss->held_lock);
  if (ss->nheld == ss->heldcap) {
    size_t ncap = ss->heldcap ? 2 * ss->heldcap : 8;
    struct s3store_held *nv = realloc (ss->held, ncap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      r = -1;
      goto out;
    }
    ss->held = nv;
    ss->heldcap = ncap;
  }
  snprintf (ss->held[ss->nheld].disk, sizeof ss->held[0].disk, "%s", disk);
  ss->held[ss->nheld].lease = l;
  ss->held[ss->nheld].marked = false;
  ss->nheld++;
 out:
  pthread_mutex_unlock (&ss->held_lock);
  return r;
}

int
s3store_disk_lock (struct store *s, const char *disk, const char *who,
                   double wait)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "disklocks/%s", disk);
  CLEANUP_FREE char *what = NULL;
  struct s3store_lease *l;
  bool said = false;

  if (key == NULL
      || asprintf (&what, "the disk %s of the store %s", disk,
                   s->where) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  l = s3store_lease_wait (ss, key, who, what, now_monotonic () + wait, wait,
                          &said);
  if (l == NULL)
    return -1;
  if (add_held (ss, disk, l) == -1) {
    s3store_lease_end (l);
    return -1;
  }
  /* A sweep of the disk a crashed run did not finish. */
  s3store_sweep (ss, disk);
  return 0;
}

/* Let go of the disk at I of SS's held ones (held_lock held): sweep it
 * first if this process marked it. */
static void
let_go (struct s3_store *ss, size_t i)
{
  struct s3store_held h = ss->held[i];

  ss->held[i] = ss->held[--ss->nheld];
  pthread_mutex_unlock (&ss->held_lock);
  if (h.marked && s3store_lease_check (h.lease) == 0
      && s3store_lease_check (ss->share) == 0)
    s3store_sweep (ss, h.disk);
  if (s3store_lease_end (h.lease) == -1)
    log_warn ("%s: cannot let the disk %s go: %s (it is taken over once "
              "it expires)", ss->base.where, h.disk, err_get ());
  pthread_mutex_lock (&ss->held_lock);
}

void
s3store_disk_unlock (struct store *s, const char *disk)
{
  struct s3_store *ss = s3store_of (s);
  ssize_t i;

  pthread_mutex_lock (&ss->held_lock);
  if ((i = find_held (ss, disk)) >= 0)
    let_go (ss, i);
  pthread_mutex_unlock (&ss->held_lock);
}

void
s3store_share_end (struct s3_store *ss)
{
  pthread_mutex_lock (&ss->held_lock);
  while (ss->nheld > 0)
    let_go (ss, ss->nheld - 1);
  free (ss->held);
  ss->held = NULL;
  ss->heldcap = 0;
  pthread_mutex_unlock (&ss->held_lock);
  if (ss->share && s3store_lease_end (ss->share) == -1)
    log_warn ("%s: cannot let the store's lock go: %s (it is taken over "
              "once it expires)", ss->base.where, err_get ());
  ss->share = NULL;
}

void
s3store_share_marked (struct s3_store *ss, const char *disk)
{
  ssize_t i;

  pthread_mutex_lock (&ss->held_lock);
  if ((i = find_held (ss, disk)) >= 0)
    ss->held[i].marked = true;
  pthread_mutex_unlock (&ss->held_lock);
}

int
s3store_share_check (struct s3_store *ss)
{
  int r = s3store_lease_check (ss->share);

  pthread_mutex_lock (&ss->held_lock);
  for (size_t i = 0; i < ss->nheld && r == 0; i++)
    r = s3store_lease_check (ss->held[i].lease);
  pthread_mutex_unlock (&ss->held_lock);
  return r;
}
