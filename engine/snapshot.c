/* cbtfs engine: what the host holds of a snapshot, through XAPI.
 *
 * Thread model: see snapshot.h (no shared state).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../chain/layer.h"
#include "../chain/verdict.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "snapshot.h"

int
engine_nbd_target (xapi_session *xs, const char *snap_ref,
                   const char *snap_uuid, struct nbdsrc_target *t)
{
  struct xapi_nbd_info *info = NULL;
  size_t n;

  if (xapi_vdi_get_nbd_info (xs, snap_ref, &info, &n) == -1)
    return -1;
  if (n == 0) {
    err_set (ENXIO, "VDI.get_nbd_info gave no NBD server for snapshot %s: "
             "is a network's purpose set to nbd?", snap_uuid);
    return -1;
  }
  /* XAPI lists a host's IPv4 address first. */
  t->address = info[0].address;
  t->cert = info[0].cert;
  t->subject = info[0].subject;
  t->exportname = info[0].exportname;
  t->port = info[0].port;
  info[0].address = info[0].cert = info[0].subject = info[0].exportname = NULL;
  xapi_nbd_info_free (info, n);
  if (t->port <= 0 || t->port > 65535 || t->address == NULL
      || t->exportname == NULL) {
    err_set (EPROTO, "VDI.get_nbd_info for snapshot %s: unusable record",
             snap_uuid);
    nbdsrc_target_clear (t);
    return -1;
  }
  return 0;
}

char *
engine_snapshot_with_data (xapi_session *xs, const char *uuid)
{
  struct xapi_vdi rec = { 0 };
  char *ref = xapi_vdi_by_uuid (xs, uuid);

  /* Backups destroy their older CBT-metadata snapshots (hostclean.h):
   * for a point whose data is in the store, that is the normal end. */
  if (ref == NULL && xapi_failed_with (xs, "UUID_INVALID"))
    err_set (ENOENT, "snapshot %s is no longer on the host", uuid);
  if (ref == NULL)
    return NULL;
  if (xapi_vdi_get (xs, ref, &rec) == -1) {
    free (ref);
    return NULL;
  }
  if (strcmp (rec.type, "cbt_metadata") == 0) {
    err_set (ENODATA, "snapshot %s holds only CBT metadata", uuid);
    free (ref);
    ref = NULL;
  }
  xapi_vdi_clear (&rec);
  return ref;
}

/* How often, and how far apart, to retry data_destroy while the host
 * still holds the snapshot. */
#define DATA_DESTROY_TRIES 5
#define DATA_DESTROY_PAUSE 2

int
engine_data_destroy (xapi_session *xs, struct store *s, const char *disk,
                     const char *ref, const char *uuid)
{
  int v;

  /* What this process believes is not enough: only what is in the
   * store survives it. */
  if (layer_check_complete (s, disk, uuid) == -1) {
    log_warn ("snapshot %s keeps its data on the host: %s", uuid, err_get ());
    return -1;
  }
  v = verdict_latest (s, disk, uuid);
  if (v == -1 || verdict_holds (v)) {
    if (v == -1)
      log_warn ("snapshot %s keeps its data on the host: %s", uuid,
                err_get ());
    else
      log_warn ("snapshot %s keeps its data on the host: its point was "
                "found %s (cbtfs verify --server checks it again; cbtfs "
                "verify --accept %s lets it go)", uuid, verdict_name (v),
                uuid);
    return -1;
  }
  return engine_reduce (xs, ref, uuid);
}

int
engine_reduce (xapi_session *xs, const char *ref, const char *uuid)
{
  for (int i = 1;; i++) {
    if (xapi_vdi_data_destroy (xs, ref) == 0) {
      log_info ("snapshot %s reduced to CBT metadata", uuid);
      return 0;
    }
    if (!xapi_failed_with (xs, "VDI_IN_USE") || i == DATA_DESTROY_TRIES)
      break;
    sleep (DATA_DESTROY_PAUSE);
  }
  log_warn ("snapshot %s keeps its data on the host: %s", uuid, err_get ());
  return -1;
}

long
engine_checksum_timeout (uint64_t size, long at_least)
{
  uint64_t t = 60 + size / (20 << 20);

  return t > (uint64_t) at_least ? (long) MIN (t, (uint64_t) LONG_MAX)
    : at_least;
}
