/* cbtfs: an object store's leases: the store lock and the layers'
 * writer locks (s3store.h, FORMAT.md "Object stores", Leases).
 *
 * A lease is an object made with If-None-Match: * (create-only), so
 * that of two takers exactly one succeeds.  It holds the taker's
 * record (holder.h) with the seconds it lasts unrenewed (`ttl`), and
 * its holder puts it again (s3_rewrite: only while it still holds our
 * record) every quarter of that.  A taker judges its age by the
 * server's clock alone, the object's Last-Modified against the Date of
 * the same server's answer, so that no host's wrong clock matters.  A
 * lease older than its ttl, or whose holder surely died on this host,
 * is taken over; one without a ttl (an older cbtfs's) only when its
 * holder surely died.
 *
 * The holder's side, by its own monotonic clock: a lease counts as
 * held for half the ttl after the last renewal that was *sent* then
 * and answered within that half (LEASE_HELD).  Any request of ours
 * sent while it counts so lands, unless delayed by more than the other
 * half, before the server can call the lease expired; after, the
 * holder makes nothing visible (s3store_lease_check) and lets the
 * object be.
 *
 * Thread model: each lease held has a thread of its own that renews it
 * (renewer) until s3store_lease_end; `lock` guards what it shares with
 * the holder's threads (renewed, why, stop), and `wake` ends its
 * waits early.  Requests run without the lock, through the store's
 * client pool.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "holder.h"
#include "s3store.h"

/* Seconds a lease lasts without a renewal, unless CBTFS_S3_LEASE_SECONDS
 * says otherwise (tests shorten it). */
#define LEASE_TTL_DEFAULT 120
#define LEASE_TTL_MIN 2

/* The part of the ttl a lease counts as held after a renewal was sent:
 * the rest is the margin for a request of ours still on its way. */
#define LEASE_HELD 0.5

/* How a lease was lost: a holder's description (256) and a few words. */
#define LEASE_WHY 320

struct s3store_lease {
  struct s3_store *ss;
  char *key, *what;             /* owned; WHAT names it in messages */
  char rec[384];                /* our record, as put (sealed in an
                                   encrypted store) */
  size_t n;
  long ttl;

  pthread_mutex_t lock;
  pthread_cond_t wake;
  double renewed;               /* monotonic: when the last renewal that
                                   counts (or the take) was sent */
  char why[LEASE_WHY];          /* "" while held; else how it was lost */
  bool stop;
  pthread_t thread;
  bool running;
  bool own;                     /* its key is this process's alone */
};

/* The ttl this process promises: CBTFS_S3_LEASE_SECONDS or the
 * default.  -1 with err_* (a configuration error) for a bad value. */
static long
lease_ttl (void)
{
  const char *v = getenv ("CBTFS_S3_LEASE_SECONDS");
  char *end;
  long t;

  if (v == NULL || *v == '\0')
    return LEASE_TTL_DEFAULT;
  errno = 0;
  t = strtol (v, &end, 10);
  if (errno || *end || end == v || t < LEASE_TTL_MIN
      || t > STORE_LEASE_TTL_MAX) {
    err_set (EINVAL, "CBTFS_S3_LEASE_SECONDS=%s: expected whole seconds "
             "from %d to %d", v, LEASE_TTL_MIN, STORE_LEASE_TTL_MAX);
    err_set_class (ERR_CONFIG);
    return -1;
  }
  return t;
}

/* ---- requests ----------------------------------------------------------
 * Straight through the S3 client, so that a renewal puts the very bytes
 * the take put (s3_rewrite matches them by their MD5): in an encrypted
 * store the record is sealed once, when the lease is taken (REC holds
 * what goes to the bucket), and opened by who reads it. */

static int
lease_put (struct s3_store *ss, const char *key, const char *rec, size_t n)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_put (c, key, rec, n, true) : -1;

  s3store_release (ss, c);
  return r;
}

static int
lease_rewrite (struct s3_store *ss, const char *key, const char *rec,
               size_t n)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_rewrite (c, key, rec, n) : -1;

  s3store_release (ss, c);
  return r;
}

/* The record KEY holds into *H, and whether it is REC (N bytes). */
static int
lease_read (struct s3_store *ss, const char *key, struct store_holder *h,
            const char *rec, size_t n, bool *ours)
{
  s3_client *c = s3store_client (ss);
  void *text;
  size_t len;
  int r = c ? s3_get (c, key, 0, 0, &text, &len) : -1;

  s3store_release (ss, c);
  if (r == -1)
    return -1;
  *ours = rec && len == n && memcmp (text, rec, n) == 0;
  if (ss->crypt) {
    void *plain;
    size_t plen;
    r = s3store_unseal (ss, key, text, len, &plain, &plen);
    free (text);
    if (r == -1)
      return -1;
    text = plain;
    len = plen;
  }
  store_holder_parse (text, len, h);
  free (text);
  return 0;
}

static int
lease_stat (struct s3_store *ss, const char *key, struct s3_stat *st)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_stat (c, key, st) : -1;

  s3store_release (ss, c);
  return r;
}

/* Seal L's record in place (an encrypted store's lease). */
static int
seal_record (struct s3store_lease *l)
{
  void *sealed;
  size_t n;

  if (s3store_seal (l->ss, l->key, l->rec, l->n, &sealed, &n) == -1)
    return -1;
  if (n > sizeof l->rec) {
    free (sealed);
    err_set (EOVERFLOW, "%s: its lease record is too long", l->what);
    return -1;
  }
  memcpy (l->rec, sealed, n);
  l->n = n;
  free (sealed);
  return 0;
}

/* ---- taking ------------------------------------------------------------ */

/* EWOULDBLOCK: WHAT is held by H, for LEFT more seconds by the
 * server's clock unless renewed (0: not said). */
static void
in_use (const char *what, const struct store_holder *h, long long left,
        struct s3_store *ss, const char *key)
{
  char held[256], until[64] = "";
  time_t t;
  struct tm tm;

  store_holder_describe (h, held, sizeof held);
  /* One of this host is taken over once its process is gone. */
  if (h->ttl == 0 && store_holder_elsewhere (h)) {
    err_set (EWOULDBLOCK, "%s is in use by %s; its lease does not expire "
             "(an older cbtfs took it): if that process is gone, delete "
             "s3://%s/%s", what, held, ss->o.bucket, key);
    return;
  }
  /* When, by this host's clock, the server will call it expired (LEFT
   * may be huge for a lease that never expires: no sum then). */
  if (left > 0 && left < STORE_LEASE_TTL_MAX + 2) {
    t = time (NULL) + (time_t) left;
    if (gmtime_r (&t, &tm))
      strftime (until, sizeof until, " until %H:%M:%S UTC unless renewed",
                &tm);
  }
  err_set (EWOULDBLOCK, "%s is in use by %s%s", what, held, until);
}

/* After taking over a lease: another taker that judged the same record
 * may have deleted ours and put its own (S3 has no delete-if-
 * unchanged).  Look again a moment later; 0 if it still holds our
 * record, else EWOULDBLOCK naming who has it. */
static int
still_ours (struct s3store_lease *l)
{
  struct store_holder h;
  bool ours;

  sleep_seconds (0.5);
  if (lease_read (l->ss, l->key, &h, l->rec, l->n, &ours) == -1) {
    if (errno != ENOENT)
      return -1;
    err_set (EWOULDBLOCK, "%s: its lease was taken over by another "
             "process at the same time", l->what);
    return -1;
  }
  if (ours)
    return 0;
  in_use (l->what, &h, 0, l->ss, l->key);
  return -1;
}

/* Whether the lease KEY of WHAT, holding H, is over: its holder surely
 * died, or the server says it outlived its ttl.  1 yes (saying why at
 * info level, as DOING, when DOING is not NULL), 0 no (EWOULDBLOCK
 * with err_* naming the holder), -1 on failure (ENOENT: it went
 * meanwhile). */
static int
lease_over (struct s3_store *ss, const char *key, const char *what,
            const struct store_holder *h, const char *doing)
{
  char held[256];
  struct s3_stat st;
  long long left;

  store_holder_describe (h, held, sizeof held);
  if (store_holder_gone (h)) {
    if (doing)
      log_info ("%s: %s is gone; %s", what, held, doing);
    return 1;
  }
  if (lease_stat (ss, key, &st) == -1)
    return -1;
  left = store_lease_left (st.modified, st.date, h->ttl);
  if (left > 0) {
    in_use (what, h, left, ss, key);
    return 0;
  }
  if (doing)
    log_info ("%s: %s has not renewed its lease for more than %ld s "
              "(by the server's clock); %s", what, held, h->ttl, doing);
  return 1;
}

static int
may_take_over (struct s3store_lease *l, const struct store_holder *h)
{
  return lease_over (l->ss, l->key, l->what, h, "taking its lease over");
}

void
s3store_lease_own (struct s3store_lease *l)
{
  l->own = true;
}

int
s3store_lease_busy (struct s3_store *ss, const char *key, const char *what,
                    const char *doing)
{
  struct store_holder h;
  bool ours;
  int r;

  if (lease_read (ss, key, &h, NULL, 0, &ours) == -1)
    return errno == ENOENT ? 0 : -1;
  r = lease_over (ss, key, what, &h, doing);
  if (r == -1)
    return errno == ENOENT ? 0 : -1;
  return !r;
}

/* Make L's object ours: create-only, taking over a dead or expired
 * holder's.  *SENT gets when the put that made it was sent. */
static int
acquire (struct s3store_lease *l, double *sent)
{
  struct store_holder h;
  bool ours;
  int r;

  for (int tries = 0; tries < 3; tries++) {
    *sent = now_monotonic ();
    if (lease_put (l->ss, l->key, l->rec, l->n) == 0)
      return tries == 0 ? 0 : still_ours (l);
    if (errno != EEXIST)
      return -1;
    if (lease_read (l->ss, l->key, &h, NULL, 0, &ours) == -1) {
      if (errno == ENOENT)
        continue;               /* let go meanwhile */
      return -1;
    }
    r = may_take_over (l, &h);
    if (r == -1 && errno == ENOENT)
      continue;
    if (r != 1)
      return -1;
    /* Two takers may both delete it; only one of them then creates it. */
    if (s3store_delete (l->ss, l->key) == -1)
      return -1;
  }
  err_set (EWOULDBLOCK, "%s is in use (its lease changes hands too often)",
           l->what);
  return -1;
}

static void *renewer (void *arg);

static void
lease_free (struct s3store_lease *l)
{
  pthread_cond_destroy (&l->wake);
  pthread_mutex_destroy (&l->lock);
  free (l->key);
  free (l->what);
  free (l);
}

struct s3store_lease *
s3store_lease_take (struct s3_store *ss, const char *key, const char *who,
                    const char *what)
{
  struct s3store_lease *l;
  pthread_condattr_t ca;
  long ttl = lease_ttl ();
  size_t n;

  if (ttl == -1)
    return NULL;
  if ((l = calloc (1, sizeof *l)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init (&l->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&l->wake, &ca);
  pthread_condattr_destroy (&ca);
  l->ss = ss;
  l->ttl = ttl;
  l->key = strdup (key);
  l->what = strdup (what);
  if (l->key == NULL || l->what == NULL) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  n = store_holder_format (who, l->rec, sizeof l->rec);
  l->n = n + snprintf (l->rec + n, sizeof l->rec - n, "ttl %ld\n", ttl);
  if (ss->crypt && seal_record (l) == -1)
    goto err;
  if (acquire (l, &l->renewed) == -1)
    goto err;
  if (pthread_create (&l->thread, NULL, renewer, l) != 0) {
    err_set (EAGAIN, "%s: cannot start the thread that renews its lease",
             what);
    s3store_delete (ss, key);
    goto err;
  }
  l->running = true;
  return l;

 err:
  lease_free (l);
  return NULL;
}

/* ---- holding ----------------------------------------------------------- */

/* Whether L still counts as held at NOW (by the monotonic clock); if
 * not, why is set.  Called with l->lock held. */
static bool
held (struct s3store_lease *l, double now)
{
  if (l->why[0] == '\0' && now - l->renewed >= LEASE_HELD * l->ttl)
    snprintf (l->why, sizeof l->why, "could not renew it for %.0f s",
              now - l->renewed);
  return l->why[0] == '\0';
}

/* Renew every quarter of the ttl, a failed renewal again after a
 * sixteenth, until stopped or lost. */
static void *
renewer (void *arg)
{
  struct s3store_lease *l = arg;
  double next = l->renewed + l->ttl / 4.0, sent, answered;
  bool warned = false;
  struct store_holder h;
  bool ours;
  int r, e;

  pthread_mutex_lock (&l->lock);
  while (!l->stop) {
    if (next > now_monotonic ()) {
      /* wake's clock is the monotonic one (s3store_lease_take). */
      struct timespec ts = {
        .tv_sec = (time_t) next,
        .tv_nsec = (long) ((next - (double) (time_t) next) * 1e9),
      };
      pthread_cond_timedwait (&l->wake, &l->lock, &ts);
      continue;               /* stopped, or it is time */
    }
    if (!held (l, now_monotonic ()))
      break;
    pthread_mutex_unlock (&l->lock);
    sent = now_monotonic ();
    r = lease_rewrite (l->ss, l->key, l->rec, l->n);
    e = errno;
    answered = now_monotonic ();
    if (r == -1 && (e == ESTALE || e == ENOENT)) {
      /* Someone else's now, or nobody's: lost for good. */
      char who[256] = "nobody (it was deleted)";
      if (e == ESTALE
          && lease_read (l->ss, l->key, &h, NULL, 0, &ours) == 0)
        store_holder_describe (&h, who, sizeof who);
      pthread_mutex_lock (&l->lock);
      snprintf (l->why, sizeof l->why, "%s holds it now", who);
      break;
    }
    if (r == -1 && !warned) {
      log_warn ("%s: cannot renew its lease: %s (trying again)", l->what,
                err_get ());
      warned = true;
    }
    pthread_mutex_lock (&l->lock);
    if (r == 0 && held (l, answered)) {
      l->renewed = sent;
      warned = false;
    }
    next = r == 0 ? sent + l->ttl / 4.0 : answered + l->ttl / 16.0;
  }
  pthread_mutex_unlock (&l->lock);
  return NULL;
}

/* Whether L still counts as held now; if not, why into WHY. */
static bool
held_now (struct s3store_lease *l, char why[LEASE_WHY])
{
  bool ok;

  pthread_mutex_lock (&l->lock);
  ok = held (l, now_monotonic ());
  memcpy (why, l->why, sizeof l->why);
  pthread_mutex_unlock (&l->lock);
  return ok;
}

int
s3store_lease_check (struct s3store_lease *l)
{
  char why[LEASE_WHY];

  if (held_now (l, why))
    return 0;
  err_set (ENOLCK, "lost the lease on %s: %s", l->what, why);
  return -1;
}

int
s3store_lease_end (struct s3store_lease *l)
{
  char why[LEASE_WHY];
  int ret = 0;

  if (l == NULL)
    return 0;
  pthread_mutex_lock (&l->lock);
  l->stop = true;
  pthread_cond_signal (&l->wake);
  pthread_mutex_unlock (&l->lock);
  if (l->running)
    pthread_join (l->thread, NULL);
  /* Held: nobody else can have it, and the delete lands before the
   * server could call it expired.  Lost: it may be another's now,
   * unless nobody else ever puts that key. */
  if (held_now (l, why) || l->own)
    ret = s3store_delete (l->ss, l->key);
  lease_free (l);
  return ret;
}
