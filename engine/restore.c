/* cbtfs engine: restoring a point in time into a VDI on the host.
 *
 * Thread model: see restore.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../chain/catalog.h"
#include "../chain/fetch.h"
#include "../chain/read.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "points.h"
#include "restore-int.h"
#include "restore.h"
#include "snapshot.h"
#include "targets.h"

/* Every layer the point reads from is whole in the store, or its
 * snapshot still holds its data on the host (its missing blocks are
 * fetched from there).  0, or -1 with err_* naming what is lost. */
static int
check_readable (xapi_session *xs, struct layer *top, const char *label)
{
  if (chain_readable (top))
    return 0;
  for (struct layer *l = top; l; l = layer_parent (l)) {
    const char *snap = layer_meta (l)->snapshot;
    char *ref;

    if (layer_parent_missing (l)) {
      err_set (EIO, "%s cannot be read completely: a layer below snapshot "
               "%s is missing from the store", label, snap);
      return -1;
    }
    if (layer_complete (l))
      continue;
    ref = engine_snapshot_with_data (xs, snap);
    if (ref == NULL) {
      err_prefix ("%s cannot be read completely: blocks of snapshot %s "
                  "are not in the store, and the host cannot give them",
                  label, snap);
      return -1;
    }
    free (ref);
  }
  return 0;
}

/* Refuse VDI REF while a VBD has it attached (a running VM's disk): the
 * host would not stop an import into it (docs/restore.md). */
static int
check_detached (xapi_session *xs, const char *ref, const char *uuid)
{
  char **vbds = NULL;
  size_t n = 0;
  int r = 0;

  if (xapi_vdi_get_vbds (xs, ref, &vbds, &n) == -1)
    return -1;
  for (size_t i = 0; i < n && r == 0; i++) {
    struct xapi_vbd vbd;
    struct xapi_vm vm;

    if (xapi_vbd_get (xs, vbds[i], &vbd) == -1) {
      r = -1;
      break;
    }
    if (vbd.currently_attached) {
      if (xapi_vm_get (xs, vbd.vm, &vm) == 0) {
        err_set (EBUSY, "VDI %s is attached to VM '%s' (%s, %s): shut the "
                 "VM down or unplug the disk first; nothing was written",
                 uuid, vm.name, vm.uuid, vm.power_state);
        xapi_vm_clear (&vm);
      }
      else
        err_set (EBUSY, "VDI %s is attached (VBD %s): unplug it first; "
                 "nothing was written", uuid, vbds[i]);
      r = -1;
    }
    xapi_vbd_clear (&vbd);
  }
  xapi_refs_free (vbds, n);
  return r;
}

/* The VDI to write: O->vdi checked, or a new one on O->sr.  Its ref
 * (caller frees) with R->vdi, R->vdi_size and R->created set, and *VHD
 * whether a VHD stream may leave out blocks of zeros: a new VDI on an
 * SR that zeroes new VDIs (docs/restore.md); or NULL with err_*. */
static char *
target (xapi_session *xs, const struct engine_restore_opts *o,
        struct engine_restore_result *r, bool *vhd)
{
  struct xapi_vdi rec;
  char *ref, *sr;

  if (o->vdi) {
    ref = xapi_vdi_by_uuid (xs, o->vdi);
    if (ref == NULL) {
      if (xapi_failed_with (xs, "UUID_INVALID"))
        err_set (ENOENT, "no VDI %s on the host", o->vdi);
      return NULL;
    }
  }
  else {
    sr = xapi_sr_by_uuid (xs, o->sr);
    if (sr == NULL) {
      if (xapi_failed_with (xs, "UUID_INVALID"))
        err_set (ENOENT, "no SR %s on the host", o->sr);
      return NULL;
    }
    if (xapi_sr_prezeroed (xs, sr, vhd) == -1) {
      free (sr);
      return NULL;
    }
    ref = xapi_vdi_create (xs, sr, o->name, r->size);
    free (sr);
    if (ref == NULL)
      return NULL;
    r->created = true;
  }
  if (xapi_vdi_get (xs, ref, &rec) == -1)
    goto err;
  snprintf (r->vdi, sizeof r->vdi, "%s", rec.uuid);
  r->vdi_size = rec.virtual_size;
  if (!r->created) {
    if (rec.is_a_snapshot || strcmp (rec.type, "cbt_metadata") == 0) {
      err_set (EINVAL, "VDI %s is a snapshot: restore into a disk, or "
               "with --sr into a new one", o->vdi);
      goto err_rec;
    }
    if ((uint64_t) rec.virtual_size < r->size) {
      err_set (ENOSPC, "VDI %s is too small: %" PRId64 " bytes, the point "
               "has %" PRIu64 " (resize it, or restore with --sr)", o->vdi,
               rec.virtual_size, r->size);
      goto err_rec;
    }
    if (check_detached (xs, ref, o->vdi) == -1)
      goto err_rec;
  }
  xapi_vdi_clear (&rec);
  return ref;

 err_rec:
  xapi_vdi_clear (&rec);
 err:
  free (ref);
  return NULL;
}

/* Send B into the VDI (uuid R->vdi) as FORMAT and wait for the host's
 * task.  0, or -1 with err_*. */
static int
upload (xapi_session *xs, struct restore_body *b, const char *format,
        struct engine_restore_result *r, long timeout)
{
  CLEANUP_FREE char *task = xapi_task_create (xs, "cbtfs restore");
  CLEANUP_FREE char *path = NULL;
  double start = now_monotonic ();
  int ret = -1;

  if (task == NULL)
    return -1;
  if (asprintf (&path, "/import_raw_vdi?vdi=%s&format=%s&task_id=%s",
                r->vdi, format, task) == -1) {
    path = NULL;
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  if (xapi_put (xs, path, restore_body_len (b), restore_body_fill, b)
      == -1) {
    /* Why the host stopped reading is in its task. */
    CLEANUP_FREE char *why = strdup (err_get ()), *host = NULL;
    if (xapi_task_wait (xs, task, 5) == -1)
      host = strdup (err_get ());
    err_set (EIO, "%s%s%s%s", why ? why : "the upload failed",
             host ? " (" : "", host ? host : "", host ? ")" : "");
    goto out;
  }
  r->seconds = now_monotonic () - start;
  r->sent = restore_body_len (b);
  if (restore_body_finish (b, r->md5) == -1
      || xapi_task_wait (xs, task, timeout) == -1)
    goto out;
  ret = 0;
 out:
  if (xapi_task_destroy (xs, task) == -1)
    log_debug ("task.destroy: %s", err_get ());
  return ret;
}

int
engine_restore (const char *store, const struct engine_server *server,
                const struct engine_restore_opts *o,
                struct engine_restore_result *r)
{
  struct fetch_opts fo = { .max_conns = 4, .retry_after = 10,
                           .timeout = server->timeout };
  struct engine_creds *creds = NULL;
  xapi_session *xs = NULL;
  struct engine_targets *et = NULL;
  struct fetcher *f = NULL;
  struct catalog *cat;
  struct catalog_disk *d;
  struct catalog_point *p;
  CLEANUP_FREE char *ref = NULL, *sum = NULL;
  struct restore_body *b = NULL;
  bool vhd = false;
  char msg[1024];               /* an error kept across cleaning up */
  int status = -1;

  memset (r, 0, sizeof *r);
  cat = engine_catalog (store, CATALOG_LAZY | CATALOG_SHOWN);
  if (cat == NULL)
    return -1;
  p = engine_point_find (cat, o->point, &d);
  if (p == NULL) {
    err_set (ENOENT, "no point %s in the store (a snapshot uuid, or a path "
             "such as by-vm/VM/DISK/latest)", o->point);
    goto out;
  }
  r->label = engine_point_label (d, p);
  snprintf (r->snapshot, sizeof r->snapshot, "%s",
            layer_meta (p->layer)->snapshot);
  r->size = layer_meta (p->layer)->size;
  if (r->label == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  if (xapi_global_init () == -1)
    goto out;
  if ((creds = engine_creds_new (server)) == NULL
      || (xs = engine_login (creds)) == NULL
      /* Its own session: the reader thread asks for NBD details while
       * this one uploads through XS (targets.h). */
      || (et = engine_targets_new_lazy (creds)) == NULL
      || (f = fetcher_new (engine_targets_chain (et), &fo)) == NULL
      || check_readable (xs, p->layer, r->label) == -1
      || (ref = target (xs, o, r, &vhd)) == NULL)
    goto cleanup;
  if (r->created)
    log_info ("created VDI %s (%" PRIu64 " bytes) on SR %s", r->vdi,
              r->vdi_size, o->sr);
  r->format = vhd ? "vhd" : "raw";
  b = restore_body_new (p->layer, f, r->vdi_size, vhd, o->progress);
  if (b == NULL
      || upload (xs, b, r->format, r,
                 engine_checksum_timeout (r->vdi_size, server->timeout))
      == -1)
    goto undo;
  sum = xapi_vdi_checksum (xs, ref, engine_checksum_timeout (r->vdi_size,
                                                             server->timeout));
  if (sum == NULL) {
    err_prefix ("the VDI was written, but its checksum cannot be had");
    goto cleanup;
  }
  snprintf (r->host_md5, sizeof r->host_md5, "%s", sum);
  if (strcasecmp (sum, r->md5) != 0) {
    log_error ("VDI %s differs from %s (snapshot %s): the host's md5 is "
               "%s, what was sent %s", r->vdi, r->label, r->snapshot, sum,
               r->md5);
    status = 1;
  }
  else
    status = 0;
  goto cleanup;

 undo:
  snprintf (msg, sizeof msg, "%s", err_get ());
  if (!r->created)
    err_set (EIO, "%s; VDI %s may be partly overwritten", msg, r->vdi);
  else if (xapi_vdi_destroy (xs, ref) == 0)
    err_set (EIO, "%s; the VDI it created was destroyed again", msg);
  else
    err_set (EIO, "%s; the VDI it created (%s) is left on the host", msg,
             r->vdi);
 cleanup:
  {
    /* Cleaning up must not replace why it failed. */
    int e = errno;
    enum err_class k = err_class ();

    snprintf (msg, sizeof msg, "%s", err_get ());
    restore_body_free (b);
    fetcher_free (f);
    engine_targets_free (et);
    if (xs)
      xapi_logout (xs);
    engine_creds_free (creds);
    xapi_global_cleanup ();
    if (status == -1) {
      err_set (e, "%s", msg);
      err_set_class (k);
    }
  }
 out:
  catalog_free (cat);
  return status;
}

void
engine_restore_result_free (struct engine_restore_result *r)
{
  free (r->label);
  r->label = NULL;
}
