/* cbtfs verify: prove the store still holds what was backed up.
 *
 * Re-reads every stored block against the checksum recorded when it
 * was copied, and names each point in time a damaged block shows
 * through.  With --server, also compares the md5 of each image whose
 * snapshot still holds data on the host with the host's own
 * VDI.checksum: the one check that proves the chain reproduces the
 * source.  What it finds changes a point's verdict (verdict.h), which
 * decides whether its snapshot may be reduced and whether backups build
 * on it; no data in the store is changed.
 *
 * Thread model: single-threaded (the fetcher is used from this thread
 * only, and starts no thread as it does not store).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../chain/catalog.h"
#include "../chain/read.h"
#include "../chain/verdict.h"
#include "../chain/verify.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "cli.h"

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

  if (verdict_record (l->store, l->meta.disk, l->meta.snapshot, v) == -1)
    log_warn ("snapshot %s: cannot record that it is %s: %s",
              l->meta.snapshot, verdict_name (v), err_get ());
}

/* Compare point P with the host; 1 matched, 0 not comparable (the
 * snapshot has no data left), -1 differs or could not be compared. */
static int
against_host (xapi_session *xs, struct fetcher *f, struct catalog_point *p,
              const struct verdicts *vs, const char *label, long timeout)
{
  const char *snap = p->layer->meta.snapshot;
  CLEANUP_FREE char *ref = cli_snapshot_with_data (xs, snap);
  CLEANUP_FREE char *host = NULL;
  char mine[33];

  if (ref == NULL)
    return 0;
  host = xapi_vdi_checksum (xs, ref, cli_checksum_timeout (p->layer->meta.size,
                                                           timeout));
  if (host == NULL) {
    log_error ("%s: cannot compare with the host: %s", label, err_get ());
    return -1;
  }
  if (verify_point_md5 (p->layer, f, mine) == -1) {
    log_error ("%s: cannot read the image: %s", label, err_get ());
    return -1;
  }
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

  if (l->damaged_records == 0)
    return 0;
  if (layer_complete (l)) {
    log_info ("%s: %" PRIu64 " damaged index records, all their blocks "
              "stored again", label, l->damaged_records);
    return 0;
  }
  log_error ("damaged: %s (snapshot %s): %" PRIu64 " index records are "
             "damaged; the blocks they named are missing (cbtfs fetch "
             "copies them again while the host keeps the snapshot's data)",
             label, l->meta.snapshot, l->damaged_records);
  return 1;
}

/* --accept: record that the user lets each named point go. */
static int
accept_points (struct catalog *cat, char **snaps, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    struct catalog_point *p = catalog_find (cat, snaps[i], NULL);
    if (p == NULL) {
      err_set (ENOENT, "no snapshot %s in the store", snaps[i]);
      return cli_fail ();
    }
    if (verdict_record (p->layer->store, p->layer->meta.disk, snaps[i],
                        VERDICT_ACCEPTED) == -1)
      return cli_fail ();
    log_info ("snapshot %s accepted: backups may reduce it and build on "
              "it", snaps[i]);
  }
  return 0;
}

int
cmd_verify (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "accept", required_argument, NULL, 'A' },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct server_opts so = CLI_SERVER_OPTS_INIT;
  struct fetch_opts fo = { .max_conns = 4, .retry_after = 10 };
  struct report rep = { 0 };
  xapi_session *xs = NULL;
  struct fetcher *f = NULL;
  struct catalog *cat;
  CLEANUP_FREE char **accept = calloc (argc, sizeof *accept);
  size_t naccept = 0;
  uint64_t checked = 0, n;
  size_t points = 0, damaged = 0, matched = 0, incomplete = 0;
  int c, r, status = 0;

  if (accept == NULL)
    return 1;
  log_set_verbose (isatty (STDERR_FILENO) ? 1 : 0);
  while ((c = getopt_long (argc, argv, "qvh", longopts, NULL)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'A': accept[naccept++] = optarg; break;
    case 'q': log_set_verbose (0); break;
    case 'v': log_set_verbose (2); break;
    case 'h': cli_usage ("verify"); return 0;
    default: return cli_usage ("verify");
    }
  }
  if (optind + 1 != argc)
    return cli_usage ("verify");
  cat = cli_catalog (argv[optind], naccept ? CATALOG_LAZY : CATALOG_COUNTS);
  if (cat == NULL)
    return cli_fail ();
  if (naccept) {
    status = accept_points (cat, accept, naccept);
    catalog_free (cat);
    return status;
  }
  if (so.server) {
    fo.timeout = so.timeout;
    if (xapi_global_init () == -1 || (xs = cli_login (&so)) == NULL
        || (f = fetcher_new (cli_fetch_target, xs, &fo)) == NULL) {
      cli_fail ();
      status = 1;
      goto out;
    }
  }

  /* One disk at a time, whose layers are then unloaded: memory grows
   * with the largest disk, not with the store. */
  for (size_t i = 0; i < cat->ndisks; i++) {
    struct catalog_disk *d = &cat->disks[i];
    struct verdicts vs;

    rep.n = 0;
    for (size_t j = 0; j < d->npoints; j++) {
      if (verify_layer (d->points[j].layer, on_damage, &rep, &n) == -1) {
        log_error ("%s", err_get ());
        status = 1;
      }
      checked += n;
    }
    if (rep.oom) {
      log_error ("out of memory listing damaged blocks");
      status = 1;
    }
    cli_load_verdicts (d, &vs);
    for (size_t j = 0; j < d->npoints; j++) {
      struct catalog_point *p = &d->points[j];
      CLEANUP_FREE char *label = cli_point_label (d, p);
      enum verdict now;
      bool bad;

      if (label == NULL) {
        log_error ("out of memory");
        status = 1;
        break;
      }
      points++;
      /* The layer's own state decides its verdict (a plain check cannot
       * clear what the host comparison found); what shows through it
       * from below is reported too. */
      bad = damage_in (&rep, p->layer) > 0 || lost_records (p, label);
      now = verdicts_of (&vs, p->layer->meta.snapshot);
      if (bad && !verdict_holds (now))
        note (p, VERDICT_DAMAGED);
      else if (!bad && now == VERDICT_DAMAGED)
        note (p, VERDICT_SOUND);
      n = damage_seen (&rep, p->layer);
      if (n > 0 || bad) {
        if (n > 0)
          log_error ("damaged: %s (snapshot %s): %" PRIu64 " blocks fail "
                     "their checksum", label, p->layer->meta.snapshot, n);
        damaged++;
        status = 1;
        continue;
      }
      if (!chain_readable (p->layer))
        incomplete++;
      if (xs) {
        r = against_host (xs, f, p, &vs, label, so.timeout);
        if (r == -1)
          status = 1;
        matched += r == 1;
      }
    }
    verdicts_free (&vs);
    for (size_t j = 0; j < d->npoints; j++)
      layer_unload (d->points[j].layer);
  }
  log_info ("checked %" PRIu64 " stored blocks of %zu points in time: %zu "
            "damaged, %zu not wholly in the store%s", checked, points,
            damaged, incomplete, xs ? "" : " (no --server: not compared "
            "with the host)");
  if (xs)
    log_info ("%zu points match the host's VDI.checksum; the others' "
              "snapshots hold only CBT metadata", matched);
 out:
  fetcher_free (f);
  if (xs)
    xapi_logout (xs);
  if (so.server)
    xapi_global_cleanup ();
  free (rep.v);
  catalog_free (cat);
  return status;
}
