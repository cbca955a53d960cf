/* cbtfs engine: keeping the host clean of old CBT-metadata snapshots.
 *
 * Thread model: see hostclean.h (no shared state).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../chain/layer.h"
#include "../chain/store/store.h"
#include "../chain/verdict.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "hostclean.h"
#include "snapshot.h"

/* Whether snapshot VDI (not KEEP) still holds data that S has whole
 * and lets go: its layer is complete as read back from S, no check
 * holds it, and it is not a --no-copy point (whose data cbtfs fetch
 * --keep may keep on purpose).  Says nothing when not: a layer being
 * finished, or held, has its own messages. */
static bool
reducible (struct store *s, const char *disk, const char *keep,
           const struct xapi_vdi *vdi)
{
  struct layer *l;
  bool lazy;
  int v;

  if (strcmp (vdi->type, "cbt_metadata") == 0 || !is_uuid (vdi->uuid)
      || strcmp (vdi->uuid, keep) == 0
      || store_has_layer (s, disk, vdi->uuid) != 1)
    return false;
  l = layer_open_lazy (s, disk, vdi->uuid);
  if (l == NULL)
    return false;
  lazy = layer_meta (l)->lazy;
  layer_close (l);
  if (lazy || layer_check_complete (s, disk, vdi->uuid) == -1)
    return false;
  v = verdict_latest (s, disk, vdi->uuid);
  return v != -1 && !verdict_holds (v);
}

/* Whether snapshot VDI is this store's to destroy (see hostclean.h). */
static bool
destroyable (struct store *s, const char *disk, const char *keep,
             const struct xapi_vdi *vdi)
{
  /* Data on the host may be the only copy of a point's blocks
   * (--no-copy, an interrupted copy, a point a check holds back). */
  if (strcmp (vdi->type, "cbt_metadata") != 0)
    return false;
  if (!is_uuid (vdi->uuid) || strcmp (vdi->uuid, keep) == 0)
    return false;
  /* The user's own snapshots and another store's have no layer here;
   * a store that cannot tell (-1) keeps the snapshot. */
  return store_has_layer (s, disk, vdi->uuid) == 1;
}

size_t
engine_clean_host (xapi_session *xs, struct store *s, const char *disk,
                   const char *live_ref, const char *keep, const char *label)
{
  char **refs = NULL;
  size_t n = 0, removed = 0;

  if (xapi_vdi_get_snapshots (xs, live_ref, &refs, &n) == -1) {
    log_warn ("%s: cannot list the disk's snapshots on the host (%s); older "
              "CBT-metadata snapshots stay until the next backup", label,
              err_get ());
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    struct xapi_vdi vdi = { 0 };

    if (xapi_vdi_get (xs, refs[i], &vdi) == -1) {
      /* Gone since the list was made: nothing to do. */
      if (!xapi_failed_with (xs, "HANDLE_INVALID"))
        log_warn ("%s: cannot read snapshot %s on the host (%s); if it is "
                  "an old CBT-metadata one, the next backup removes it",
                  label, refs[i], err_get ());
      continue;
    }
    /* A run that was killed, or could not reduce an older point's
     * snapshot while something held it, left its data on the host;
     * only the newest point's is retried by the store scan. */
    if (reducible (s, disk, keep, &vdi)
        && engine_reduce (xs, refs[i], vdi.uuid) == 0) {
      free (vdi.type);
      vdi.type = strdup ("cbt_metadata");
    }
    if (vdi.type && destroyable (s, disk, keep, &vdi)) {
      if (xapi_vdi_destroy (xs, refs[i]) == 0)
        removed++;
      else
        log_warn ("%s: could not remove old CBT-metadata snapshot %s from "
                  "the host (%s); the next backup tries again", label,
                  vdi.uuid, err_get ());
    }
    xapi_vdi_clear (&vdi);
  }
  xapi_refs_free (refs, n);
  if (removed)
    log_info ("%s: removed %zu older CBT-metadata snapshot%s from the host",
              label, removed, removed == 1 ? "" : "s");
  return removed;
}

/* Whether the snapshot VDI belongs to disk DISK: the snapshot of that
 * VDI, or of one that is gone (a destroyed disk's snapshots stay). */
static int
snapshot_of_disk (xapi_session *xs, const struct xapi_vdi *vdi,
                  const char *disk)
{
  CLEANUP_FREE char *live = NULL;

  if (!vdi->is_a_snapshot)
    return 0;
  live = xapi_vdi_by_uuid (xs, disk);
  if (live == NULL)
    return xapi_failed_with (xs, "UUID_INVALID") ? 1 : -1;
  return strcmp (live, vdi->snapshot_of) == 0;
}

int
engine_destroy_dropped (xapi_session *xs, const char *disk, const char *snap,
                        bool *removed)
{
  CLEANUP_FREE char *ref = NULL;
  struct xapi_vdi vdi = { 0 };
  int r, mine;

  *removed = false;
  ref = xapi_vdi_by_uuid (xs, snap);
  if (ref == NULL)
    return xapi_failed_with (xs, "UUID_INVALID") ? 0 : -1;
  if (xapi_vdi_get (xs, ref, &vdi) == -1)
    return xapi_failed_with (xs, "HANDLE_INVALID") ? 0 : -1;
  mine = snapshot_of_disk (xs, &vdi, disk);
  xapi_vdi_clear (&vdi);
  if (mine <= 0) {
    if (mine == 0)
      log_warn ("VDI %s is not a snapshot of disk %s: left on the host",
                snap, disk);
    return mine;
  }
  r = xapi_vdi_destroy (xs, ref);
  if (r == -1 && xapi_failed_with (xs, "HANDLE_INVALID"))
    return 0;
  *removed = r == 0;
  return r;
}
