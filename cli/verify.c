/* cbtfs verify: prove the store still holds what was backed up.
 *
 * Re-reads every stored block against the checksum recorded when it
 * was copied, and names each point in time a damaged block shows
 * through.  With --server, also compares the md5 of each image whose
 * snapshot still holds data on the host with the host's own
 * VDI.checksum: the one check that proves the chain reproduces the
 * source.  Reads only; the store is not changed.
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
#include "../chain/verify.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "cli.h"

/* VDI.checksum reads the whole disk on the host: give it time. */
#define CHECKSUM_TIMEOUT 3600

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

/* Compare point P with the host; 1 matched, 0 not comparable, -1 bad. */
static int
against_host (xapi_session *xs, struct fetcher *f, struct catalog_point *p,
              const char *label)
{
  const char *snap = p->layer->meta.snapshot;
  CLEANUP_FREE char *ref = cli_snapshot_with_data (xs, snap);
  CLEANUP_FREE char *host = NULL;
  char mine[33];

  if (ref == NULL)
    return 0;
  host = xapi_vdi_checksum (xs, ref);
  if (host == NULL) {
    log_warn ("%s: cannot compare with the host: %s", label, err_get ());
    return 0;
  }
  if (verify_point_md5 (p->layer, f, mine) == -1) {
    log_error ("%s: cannot read the image: %s", label, err_get ());
    return -1;
  }
  if (strcasecmp (mine, host) != 0) {
    log_error ("differs from the host: %s (snapshot %s): md5 %s, the host "
               "says %s", label, snap, mine, host);
    return -1;
  }
  log_info ("%s: matches the host (md5 %s)", label, mine);
  return 1;
}

int
cmd_verify (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
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
  uint64_t checked = 0, n;
  size_t points = 0, damaged = 0, matched = 0, incomplete = 0;
  int c, r, status = 0;

  log_set_verbose (isatty (STDERR_FILENO) ? 1 : 0);
  while ((c = getopt_long (argc, argv, "qvh", longopts, NULL)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'q': log_set_verbose (0); break;
    case 'v': log_set_verbose (2); break;
    case 'h': cli_usage ("verify"); return 0;
    default: return cli_usage ("verify");
    }
  }
  if (optind + 1 != argc)
    return cli_usage ("verify");
  cat = cli_catalog (argv[optind], 0);
  if (cat == NULL)
    return cli_fail ();

  for (size_t i = 0; i < cat->ndisks; i++)
    for (size_t j = 0; j < cat->disks[i].npoints; j++) {
      if (verify_layer (cat->disks[i].points[j].layer, on_damage, &rep,
                        &n) == -1) {
        log_error ("%s", err_get ());
        status = 1;
      }
      checked += n;
    }
  if (rep.oom) {
    log_error ("out of memory listing damaged blocks");
    status = 1;
  }

  if (so.server) {
    fo.timeout = so.timeout;
    so.timeout = MAX (so.timeout, CHECKSUM_TIMEOUT);
    if (xapi_global_init () == -1 || (xs = cli_login (&so)) == NULL
        || (f = fetcher_new (cli_fetch_target, xs, &fo)) == NULL) {
      cli_fail ();
      status = 1;
      goto out;
    }
  }
  for (size_t i = 0; i < cat->ndisks; i++) {
    struct catalog_disk *d = &cat->disks[i];
    for (size_t j = 0; j < d->npoints; j++) {
      struct catalog_point *p = &d->points[j];
      CLEANUP_FREE char *label = cli_point_label (d, p);

      if (label == NULL) {
        log_error ("out of memory");
        status = 1;
        break;
      }
      points++;
      n = damage_seen (&rep, p->layer);
      if (n > 0) {
        log_error ("damaged: %s (snapshot %s): %" PRIu64 " blocks fail "
                   "their checksum", label, p->layer->meta.snapshot, n);
        damaged++;
        status = 1;
        continue;
      }
      if (!chain_readable (p->layer))
        incomplete++;
      if (xs) {
        r = against_host (xs, f, p, label);
        if (r == -1)
          status = 1;
        matched += r == 1;
      }
    }
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
