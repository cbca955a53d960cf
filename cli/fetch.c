/* cbtfs fetch: finish lazy or interrupted layers from the host.
 *
 * Copies every block a layer still lacks from its snapshot (the same
 * copier backup uses), then, unless --keep-data, reduces the snapshot
 * to CBT metadata, as backup would have.
 *
 * Thread model: as backup (copy_layer's workers call back for NBD
 * details one at a time).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../chain/catalog.h"
#include "../chain/copy.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../xapi/api.h"
#include "cli.h"

/* A mount lets go of a layer within about two seconds of its last read
 * from it: wait this long (seconds) for the layer before skipping it. */
#define LOCK_WAIT 5

/* Take L's writer lock, waiting up to LOCK_WAIT seconds while another
 * process holds it (LABEL names the point).  0 or -1 with err_*. */
static int
make_writable_waiting (struct layer *l, const char *label)
{
  double until = now_monotonic () + LOCK_WAIT;

  for (int tries = 0;; tries++) {
    if (layer_make_writable (l) == 0)
      return 0;
    if (errno != EWOULDBLOCK || now_monotonic () >= until)
      return -1;
    if (tries == 0)
      log_info ("%s: %s; waiting up to %d s", label, err_get (), LOCK_WAIT);
    usleep (100 * 1000);        /* flock(2) has no timed wait */
  }
}

/* Fetch what point P's layer lacks; then reduce its snapshot unless
 * KEEP.  0 or -1 (after logging why). */
static int
fetch_one (xapi_session *xs, struct catalog_disk *d, struct catalog_point *p,
           struct copy_opts *o, bool keep)
{
  struct layer *l = p->layer;
  const char *snap = l->meta.snapshot;
  CLEANUP_FREE char *label = cli_point_label (d, p);
  CLEANUP_FREE char *ref = cli_snapshot_with_data (xs, snap);
  struct cli_target ctx = { xs, ref, snap };
  struct copy_stats st;

  if (ref == NULL) {
    if (layer_complete (l))
      return 0;                 /* nothing to fetch, nothing to reduce */
    log_error ("%s: cannot fetch: %s", label ? label : snap, err_get ());
    return -1;
  }
  if (!layer_complete (l)) {
    o->label = label ? label : snap;
    if (make_writable_waiting (l, o->label) == -1
        || copy_layer (l, cli_copy_target, &ctx, o, &st) == -1) {
      log_error ("%s: %s", o->label, err_get ());
      return -1;
    }
    log_info ("%s: fetched %.1f MiB in %.1f s", o->label,
              st.bytes / 1048576.0, st.seconds);
  }
  if (!keep && layer_complete (l))
    cli_data_destroy (xs, l->store, l->meta.disk, ref, snap);
  /* Done with it: let others fill it, and free its blocks' map. */
  if (layer_release (l) == 0)
    layer_unload (l);
  return 0;
}

/* Named snapshots, or without names everything still incomplete and
 * every lazy layer (whose snapshot the host may still keep). */
static bool
selected (struct layer *l, char **names, int n)
{
  if (n == 0)
    return !layer_complete (l) || l->meta.lazy;
  for (int i = 0; i < n; i++)
    if (strcmp (names[i], l->meta.snapshot) == 0)
      return true;
  return false;
}

int
cmd_fetch (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "keep-data", no_argument, NULL, 'K' },
    { "nbd-connections", required_argument, NULL, 'n' },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct server_opts so = CLI_SERVER_OPTS_INIT;
  struct copy_opts co = { .conns = 4, .request_blocks = 16, .depth = 4,
              .retries = 4 };
  int c, r, verbose = isatty (STDERR_FILENO) ? 1 : 0, status = 0;
  bool keep = false;
  struct catalog *cat = NULL;
  xapi_session *xs = NULL;
  char *end;

  while ((c = getopt_long (argc, argv, "qvh", longopts, NULL)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'K': keep = true; break;
    case 'n':
      co.conns = strtoul (optarg, &end, 10);
      if (*end || co.conns < 1 || co.conns > 16) {
        log_error ("--nbd-connections must be 1 to 16 (XenServer's limit)");
        return 2;
      }
      break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': cli_usage ("fetch"); return 0;
    default: return cli_usage ("fetch");
    }
  }
  if (optind >= argc)
    return cli_usage ("fetch");
  log_set_verbose (verbose);
  co.timeout = so.timeout;
  co.progress = verbose >= 1 && isatty (STDERR_FILENO);

  cat = cli_catalog (argv[optind], CATALOG_COUNTS);
  if (cat == NULL)
    return cli_fail ();
  /* Unknown snapshots are an error before anything is fetched. */
  for (int i = optind + 1; i < argc; i++)
    if (catalog_find (cat, argv[i], NULL) == NULL) {
      err_set (ENOENT, "no snapshot %s in the store", argv[i]);
      catalog_free (cat);
      return cli_fail ();
    }
  if (xapi_global_init () == -1 || (xs = cli_login (&so)) == NULL) {
    catalog_free (cat);
    return cli_fail ();
  }
  for (size_t i = 0; i < cat->ndisks; i++)
    for (size_t j = 0; j < cat->disks[i].npoints; j++) {
      struct catalog_point *p = &cat->disks[i].points[j];
      if (selected (p->layer, argv + optind + 1, argc - optind - 1)
          && fetch_one (xs, &cat->disks[i], p, &co, keep) == -1)
        status = 1;
    }
  xapi_logout (xs);
  xapi_global_cleanup ();
  catalog_free (cat);
  return status;
}
