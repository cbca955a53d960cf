/* cbtfs engine: finishing lazy or interrupted points from the host.
 *
 * Thread model: see fetch.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../chain/catalog.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "fetch.h"
#include "points.h"
#include "snapshot.h"
#include "targets.h"

/* A mount lets go of a layer within about two seconds of its last read
 * from it: wait this long (seconds) for the layer before skipping it. */
#define LOCK_WAIT 5

/* Fetch what point P's layer lacks; then reduce its snapshot unless
 * KEEP.  0 or -1 (after logging why). */
static int
fetch_one (xapi_session *xs, struct engine_targets *et,
           struct catalog_disk *d, struct catalog_point *p,
           struct copy_opts *o, bool keep)
{
  struct layer *l = p->layer;
  const char *snap = layer_meta (l)->snapshot;
  CLEANUP_FREE char *label = engine_point_label (d, p);
  CLEANUP_FREE char *ref = engine_snapshot_with_data (xs, snap);
  struct copy_stats st;

  if (ref == NULL) {
    if (layer_complete (l))
      return 0;                 /* nothing to fetch, nothing to reduce */
    log_error ("%s: cannot fetch: %s", label ? label : snap, err_get ());
    return -1;
  }
  if (!layer_complete (l)) {
    o->label = label ? label : snap;
    if (layer_make_writable_wait (l, LOCK_WAIT) == -1
        || engine_targets_note (et, snap, ref) == -1
        || copy_layer (l, engine_targets_chain (et), o, &st) == -1) {
      log_error ("%s: %s", o->label, err_get ());
      return -1;
    }
    log_info ("%s: fetched %.1f MiB in %.1f s", o->label,
              st.bytes / 1048576.0, st.seconds);
  }
  if (!keep && layer_complete (l))
    engine_data_destroy (xs, layer_store (l), layer_meta (l)->disk, ref, snap);
  /* Done with it: let others fill it, and free its blocks' map. */
  if (layer_release (l) == 0)
    layer_unload (l);
  return 0;
}

/* Named snapshots, or without names everything still incomplete and
 * every lazy layer (whose snapshot the host may still keep). */
static bool
selected (struct layer *l, char *const *names, size_t n)
{
  if (n == 0)
    return !layer_complete (l) || layer_meta (l)->lazy;
  for (size_t i = 0; i < n; i++)
    if (strcmp (names[i], layer_meta (l)->snapshot) == 0)
      return true;
  return false;
}

int
engine_fetch (const char *path, const struct engine_server *server,
              const struct engine_fetch_opts *o)
{
  struct copy_opts co = o->copy;
  struct catalog *cat;
  struct engine_creds *creds = NULL;
  xapi_session *xs = NULL;
  struct engine_targets *et;
  int status = 0;

  cat = engine_catalog (path, CATALOG_COUNTS);
  if (cat == NULL)
    return -1;
  /* Unknown snapshots are an error before anything is fetched. */
  for (size_t i = 0; i < o->nsnapshots; i++)
    if (catalog_find (cat, o->snapshots[i], NULL) == NULL) {
      err_set (ENOENT, "no snapshot %s in the store", o->snapshots[i]);
      catalog_free (cat);
      return -1;
    }
  if (xapi_global_init () == -1 || (creds = engine_creds_new (server)) == NULL
      || (xs = engine_login (creds)) == NULL) {
    engine_creds_free (creds);
    catalog_free (cat);
    return -1;
  }
  engine_creds_free (creds);
  if ((et = engine_targets_new (xs)) == NULL) {
    xapi_logout (xs);
    catalog_free (cat);
    return -1;
  }
  for (size_t i = 0; i < cat->ndisks; i++)
    for (size_t j = 0; j < cat->disks[i].npoints; j++) {
      struct catalog_point *p = &cat->disks[i].points[j];
      if (selected (p->layer, o->snapshots, o->nsnapshots)
          && fetch_one (xs, et, &cat->disks[i], p, &co, o->keep_data) == -1)
        status = 1;
    }
  engine_targets_free (et);
  xapi_logout (xs);
  xapi_global_cleanup ();
  catalog_free (cat);
  return status;
}
