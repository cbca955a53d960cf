/* cbtfs engine: what interrupted backups left on the host.
 *
 * A run killed between VM.snapshot and destroying the VM snapshot
 * leaves it behind, and if killed before recording its layers, disk
 * snapshots nothing in the store describes.  This store's own (named
 * with its id) are removed; another store's are left alone.
 *
 * Thread model: one thread per struct backup (backup-int.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/error.h"
#include "../common/log.h"
#include "backup-int.h"

/* True if some disk of the VM has a layer for snapshot VDI UUID, or
 * the store cannot tell (then the snapshot stays). */
static bool
in_store (struct store *store, const struct disk *v, size_t n,
          const char *uuid)
{
  for (size_t i = 0; i < n; i++)
    if (v[i].prepared && store_has_layer (store, v[i].live.uuid, uuid) != 0)
      return true;
  return false;
}

/* Whether the VM snapshot SVM is this store's to clean up: named with
 * its id; or, named as older versions did, holding a disk snapshot this
 * store has a layer for (another store's would then lose its point). */
static bool
ours (struct backup *b, const struct xapi_vm *svm, const struct disk *v,
      size_t n, char **vdi_uuids)
{
  if (strcmp (svm->name, b->snap_name) == 0)
    return true;
  if (strcmp (svm->name, SNAP_NAME) != 0)
    return false;               /* not cbtfs's, or another store's */
  for (size_t k = 0; k < svm->nvbds; k++)
    if (vdi_uuids[k] && in_store (b->store, v, n, vdi_uuids[k]))
      return true;
  log_warn ("leaving VM snapshot %s alone: it is named '%s' as an older "
            "cbtfs named its snapshots, and none of its disks is in this "
            "store (another store's?); remove it by hand if no backup "
            "needs it", svm->uuid, SNAP_NAME);
  return false;
}

/* A run killed between VM.snapshot and destroying the VM snapshot
 * leaves it behind, and if killed before recording its layers, disk
 * snapshots nothing in the store describes: remove both, so an
 * interrupted run does not eat the SR.  Snapshots a layer describes
 * stay (a later run finishes or reduces them), and so does everything
 * another store's backups left (ours). */
void
backup_remove_leftovers (struct backup *b, const struct xapi_vm *vm,
                         const struct disk *v, size_t n)
{
  for (size_t i = 0; i < vm->nsnapshots; i++) {
    struct xapi_vm svm = { 0 };
    char **refs, **uuids;
    size_t norphans = 0, unread = 0;

    if (xapi_vm_get (b->xs, vm->snapshots[i], &svm) == -1)
      continue;
    if (strncmp (svm.name, SNAP_NAME, strlen (SNAP_NAME)) != 0) {
      xapi_vm_clear (&svm);
      continue;
    }
    refs = calloc (svm.nvbds + 1, sizeof *refs);
    uuids = calloc (svm.nvbds + 1, sizeof *uuids);
    for (size_t k = 0; refs && uuids && k < svm.nvbds; k++) {
      struct xapi_vbd vbd = { 0 };
      struct xapi_vdi vdi = { 0 };
      if (xapi_vbd_get (b->xs, svm.vbds[k], &vbd) == 0
          && strcmp (vbd.vdi, "OpaqueRef:NULL") != 0
          && xapi_vdi_get (b->xs, vbd.vdi, &vdi) == 0) {
        refs[k] = strdup (vbd.vdi);
        uuids[k] = strdup (vdi.uuid);
      }
      /* A disk snapshot we could not read may be one nothing in the
       * store describes: only the VM snapshot leads a later run to it. */
      else if (!xapi_failed_with (b->xs, "HANDLE_INVALID")
               && (vbd.vdi == NULL || strcmp (vbd.vdi, "OpaqueRef:NULL") != 0))
        unread++;
      xapi_vbd_clear (&vbd);
      xapi_vdi_clear (&vdi);
    }
    if (refs && uuids && ours (b, &svm, v, n, uuids)) {
      for (size_t k = 0; k < svm.nvbds; k++)
        norphans += refs[k] && uuids[k] && !in_store (b->store, v, n, uuids[k]);
      log_warn ("VM %s: removing a snapshot left by an interrupted backup "
                "(%zu disk snapshots not in the store)", vm->uuid, norphans);
      /* Disks first: killed in between, the VM snapshot still leads the
       * next run to what is left. */
      for (size_t k = 0; k < svm.nvbds; k++)
        if (refs[k] && uuids[k] && !in_store (b->store, v, n, uuids[k])
            && xapi_vdi_destroy (b->xs, refs[k]) == -1)
          log_warn ("VM %s: %s", vm->uuid, err_get ());
      if (unread > 0)
        log_warn ("VM %s: keeping the snapshot an interrupted backup left, "
                  "as %zu of its disks could not be read; the next backup "
                  "removes it", vm->uuid, unread);
      else if (xapi_vm_destroy (b->xs, svm.ref) == -1)
        log_warn ("VM %s: %s", vm->uuid, err_get ());
    }
    for (size_t k = 0; k < svm.nvbds; k++) {
      free (refs ? refs[k] : NULL);
      free (uuids ? uuids[k] : NULL);
    }
    free (refs);
    free (uuids);
    xapi_vm_clear (&svm);
  }
}
