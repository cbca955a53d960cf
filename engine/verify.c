/* cbtfs engine: proving a store still holds what was backed up.
 *
 * Thread model: see verify.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../chain/catalog.h"
#include "../chain/fetch.h"
#include "../chain/read.h"
#include "../chain/verdict.h"
#include "../chain/verify.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "points.h"
#include "prune.h"
#include "snapshot.h"
#include "targets.h"
#include "verify.h"

struct damage {
  struct layer *l;
  uint64_t b;
};

struct report {
  struct damage *v;
  size_t n, cap;
  bool oom;
};

static void
on_damage (void *opaque, struct layer *l, uint64_t b)
{
  struct report *r = opaque;

  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 64;
    struct damage *nv = realloc (r->v, cap * sizeof *nv);
    if (nv == NULL) {
      r->oom = true;
      return;
    }
    r->v = nv;
    r->cap = cap;
  }
  r->v[r->n++] = (struct damage) { l, b };
  log_debug ("%s", err_get ());
}

/* Damaged blocks point P shows (not hidden by a newer layer). */
static uint64_t
damage_seen (const struct report *r, struct layer *top)
{
  uint64_t n = 0;
  bool broken;

  for (size_t i = 0; i < r->n; i++)
    if (chain_resolve (top, r->v[i].b, &broken) == r->v[i].l)
      n++;
  return n;
}

/* Record V for point P.  Callers record only changes, so the file
 * grows only when a verdict does. */
static void
note (struct catalog_point *p, enum verdict v)
{
  const struct layer *l = p->layer;

  if (verdict_record (layer_store (l), layer_meta (l)->disk,
                      layer_meta (l)->snapshot, v) == -1)
    log_warn ("snapshot %s: cannot record that it is %s: %s",
              layer_meta (l)->snapshot, verdict_name (v), err_get ());
}

/* Compare point P with the host; 1 matched, 0 not comparable (the
 * snapshot has no data left), -1 differs or could not be compared. */
static int
against_host (xapi_session *xs, struct fetcher *f, struct catalog_point *p,
              const struct verdicts *vs, const char *label, long timeout)
{
  const char *snap = layer_meta (p->layer)->snapshot;
  CLEANUP_FREE char *ref = engine_snapshot_with_data (xs, snap);
  CLEANUP_FREE char *host = NULL;
  char mine[33];

  if (ref == NULL)
    return 0;
  host = xapi_vdi_checksum (xs, ref,
                            engine_checksum_timeout (
                              layer_meta (p->layer)->size, timeout));
  if (host == NULL) {
    log_error ("%s: cannot compare with the host: %s", label, err_get ());
    return -1;
  }
  if (verify_point_md5 (p->layer, f, mine) == -1) {
    log_error ("%s: cannot read the image: %s", label, err_get ());
    return -1;
  }
  /* Compared: the host's word is kept for the mount's MD5SUMS, once
   * per value. */
  if ((verdicts_md5 (vs, snap) == NULL
       || strcasecmp (verdicts_md5 (vs, snap), host) != 0)
      && verdict_record_md5 (layer_store (p->layer),
                             layer_meta (p->layer)->disk, snap, host) == -1)
    log_warn ("%s: cannot record the host's checksum: %s", label, err_get ());
  if (strcasecmp (mine, host) != 0) {
    log_error ("differs from the host: %s (snapshot %s): md5 %s, the host "
               "says %s", label, snap, mine, host);
    if (verdicts_of (vs, snap) != VERDICT_DIFFERS)
      note (p, VERDICT_DIFFERS);
    return -1;
  }
  log_info ("%s: matches the host (md5 %s)", label, mine);
  if (verdicts_of (vs, snap) != VERDICT_MATCH)
    note (p, VERDICT_MATCH);
  return 1;
}

/* Damaged blocks of layer L itself. */
static uint64_t
damage_in (const struct report *r, const struct layer *l)
{
  uint64_t n = 0;

  for (size_t i = 0; i < r->n; i++)
    n += r->v[i].l == l;
  return n;
}

/* Index records of P's layer that were damaged, when that left blocks
 * missing: an error (1) naming the point.  Records whose blocks were
 * stored again since cost nothing (0). */
static int
lost_records (struct catalog_point *p, const char *label)
{
  struct layer *l = p->layer;

  if (layer_damaged_records (l) == 0)
    return 0;
  if (layer_complete (l)) {
    log_info ("%s: %" PRIu64 " damaged index records, all their blocks "
              "stored again", label, layer_damaged_records (l));
    return 0;
  }
  log_error ("damaged: %s (snapshot %s): %" PRIu64 " index records are "
             "damaged; the blocks they named are missing (cbtfs fetch "
             "copies them again while the host keeps the snapshot's data)",
             label, layer_meta (l)->snapshot, layer_damaged_records (l));
  return 1;
}

int
engine_verify_accept (const char *path, char *const *snaps, size_t n)
{
  struct catalog *cat = engine_catalog (path, CATALOG_LAZY);

  if (cat == NULL)
    return -1;
  for (size_t i = 0; i < n; i++) {
    struct catalog_point *p = catalog_find (cat, snaps[i], NULL);
    if (p == NULL) {
      err_set (ENOENT, "no snapshot %s in the store", snaps[i]);
      goto err;
    }
    if (verdict_record (layer_store (p->layer), layer_meta (p->layer)->disk,
                        snaps[i], VERDICT_ACCEPTED) == -1)
      goto err;
    log_info ("snapshot %s accepted: backups may reduce it and build on "
              "it", snaps[i]);
  }
  catalog_free (cat);
  return 0;

 err:
  catalog_free (cat);
  return -1;
}

int
engine_verify (const char *path, const struct engine_server *server,
               struct engine_verify_stats *st)
{
  struct fetch_opts fo = { .max_conns = 4, .retry_after = 10 };
  struct report rep = { 0 };
  struct engine_creds *creds = NULL;
  xapi_session *xs = NULL;
  struct engine_targets *et = NULL;
  struct fetcher *f = NULL;
  struct catalog *cat;
  uint64_t n;
  int r, status = 0;

  memset (st, 0, sizeof *st);
  cat = engine_catalog (path, CATALOG_COUNTS);
  if (cat == NULL)
    return -1;
  /* A layer too damaged to be listed is damage verify must not pass. */
  st->skipped = cat->nskipped;
  if (cat->nskipped > 0)
    status = 1;
  if (server) {
    fo.timeout = server->timeout;
    if (xapi_global_init () == -1
        || (creds = engine_creds_new (server)) == NULL
        || (xs = engine_login (creds)) == NULL
        || (et = engine_targets_new (xs)) == NULL
        || (f = fetcher_new (engine_targets_chain (et), &fo)) == NULL) {
      status = -1;
      goto out;
    }
    st->compared = true;
  }

  /* One disk at a time, whose layers are then unloaded: memory grows
   * with the largest disk, not with the store. */
  for (size_t i = 0; i < cat->ndisks; i++) {
    struct catalog_disk *d = &cat->disks[i];
    struct verdicts vs;
    struct engine_pending going = { NULL, 0, 0 };

    rep.n = 0;
    if (d->npoints
        && engine_prune_pending (layer_store (d->points[0].layer), d->uuid,
                                 &going) == -1)
      log_warn ("%s", err_get ());
    for (size_t j = 0; j < d->npoints; j++) {
      if (verify_layer (d->points[j].layer, on_damage, &rep, &n) == -1) {
        log_error ("%s", err_get ());
        status = 1;
      }
      st->checked += n;
    }
    if (rep.oom) {
      log_error ("out of memory listing damaged blocks");
      status = 1;
    }
    engine_load_verdicts (d, &vs);
    for (size_t j = 0; j < d->npoints; j++) {
      struct catalog_point *p = &d->points[j];
      CLEANUP_FREE char *label = engine_point_label (d, p);
      enum verdict now;
      bool bad;

      if (label == NULL) {
        log_error ("out of memory");
        status = 1;
        break;
      }
      st->points++;
      /* A point an interrupted prune is dropping may have had blocks
       * written over (FORMAT.md, Dropping a point): it is going, and
       * no point that stays reads them. */
      if (engine_pending_has (&going, layer_meta (p->layer)->snapshot)) {
        log_warn ("%s (snapshot %s) is being dropped by a prune that was "
                  "interrupted; the next prune or backup finishes it, and "
                  "it is not checked", label,
                  layer_meta (p->layer)->snapshot);
        st->dropping++;
        continue;
      }
      /* The layer's own state decides its verdict (a plain check cannot
       * clear what the host comparison found); what shows through it
       * from below is reported too. */
      bad = damage_in (&rep, p->layer) > 0 || lost_records (p, label);
      now = verdicts_of (&vs, layer_meta (p->layer)->snapshot);
      if (bad && !verdict_holds (now))
        note (p, VERDICT_DAMAGED);
      else if (!bad && now == VERDICT_DAMAGED)
        note (p, VERDICT_SOUND);
      n = damage_seen (&rep, p->layer);
      if (n > 0 || bad) {
        if (n > 0)
          log_error ("damaged: %s (snapshot %s): %" PRIu64 " blocks fail "
                     "their checksum", label,
                     layer_meta (p->layer)->snapshot, n);
        st->damaged++;
        status = 1;
        continue;
      }
      if (!chain_readable (p->layer))
        st->incomplete++;
      if (xs) {
        r = against_host (xs, f, p, &vs, label, server->timeout);
        if (r == -1)
          status = 1;
        st->matched += r == 1;
      }
    }
    verdicts_free (&vs);
    free (going.snap);
    for (size_t j = 0; j < d->npoints; j++)
      layer_unload (d->points[j].layer);
  }
 out:
  {
    /* Cleaning up must not replace why the run could not start. */
    char msg[1024];
    int e = errno;
    enum err_class k = err_class ();

    snprintf (msg, sizeof msg, "%s", err_get ());
    fetcher_free (f);
    engine_targets_free (et);
    if (xs)
      xapi_logout (xs);
    engine_creds_free (creds);
    if (server)
      xapi_global_cleanup ();
    free (rep.v);
    catalog_free (cat);
    if (status == -1) {
      err_set (e, "%s", msg);
      err_set_class (k);
    }
  }
  return status;
}
