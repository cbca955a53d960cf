/* cbtfs engine: forget (forget.h).
 *
 * Thread model: see forget.h (no shared state).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../chain/fold.h"
#include "../chain/catalog.h"
#include "../chain/store/store.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "forget.h"
#include "points.h"

/* A mount filling an incomplete point lets go of it within about two
 * seconds of its last read from it: wait this long (seconds) for a
 * layer's writer lock before giving up on the layer (as fetch does). */
#define WRITER_WAIT 5

struct engine_forget {
  struct store *store;          /* owned */
  struct catalog *cat;          /* owned; borrows STORE */
  char **extra;                 /* owned: names of layers the catalog
                                 * left out, which the plan borrows */
  size_t nextra;
  bool one_disk;                /* a disk was named: only it must be gone */
  struct engine_forget_plan plan;
};

/* Plan disk D into FD: the layers of D's folder that the catalog left
 * out (damaged; they are D's all the same, and unreadable), then its
 * points newest first.  The names of the former are kept in F. */
static int
plan_disk (struct engine_forget *f, const struct catalog_disk *d,
           struct engine_forget_disk *fd)
{
  char **names = NULL;
  size_t n = 0, k = 0;
  int ret = -1;

  if (store_list (f->store, d->uuid, &names, &n) == -1)
    return -1;
  fd->disk = d;
  fd->points = calloc (n + d->npoints + 1, sizeof *fd->points);
  if (fd->points == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    char **v;

    if (catalog_find (f->cat, names[i], NULL) != NULL)
      continue;
    v = realloc (f->extra, (f->nextra + 1) * sizeof *v);
    if (v == NULL) {
      err_set (ENOMEM, "out of memory");
      goto out;
    }
    f->extra = v;
    f->extra[f->nextra++] = names[i];
    fd->points[k++].snapshot = names[i];
    names[i] = NULL;
  }
  for (size_t i = d->npoints; i-- > 0;) {
    fd->points[k].point = &d->points[i];
    fd->points[k++].snapshot = layer_meta (d->points[i].layer)->snapshot;
  }
  fd->npoints = k;
  ret = 0;

 out:
  store_names_free (names, n);
  return ret;
}

static int
plan (struct engine_forget *f, const char *vm, const char *disk)
{
  struct engine_forget_plan *p = &f->plan;
  const struct catalog *c = f->cat;

  for (size_t i = 0; i < c->nvms; i++) {
    if (!engine_vm_named (&c->vms[i], vm))
      continue;
    if (p->vm) {
      err_set (EINVAL, "--vm %s names two VMs of the store (%s and %s): "
               "name it by its uuid", vm, p->vm->uuid, c->vms[i].uuid);
      return -1;
    }
    p->vm = &c->vms[i];
  }
  if (p->vm == NULL) {
    err_set (ENOENT, "--vm %s: no VM of that name or uuid in the store", vm);
    return -1;
  }
  p->disks = calloc (p->vm->ndisks + 1, sizeof *p->disks);
  if (p->disks == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (size_t j = 0; j < p->vm->ndisks; j++) {
    const struct catalog_disk *d = p->vm->disks[j];

    if (disk && !engine_disk_named (d, disk))
      continue;
    if (plan_disk (f, d, &p->disks[p->ndisks]) == -1)
      return -1;
    p->npoints += p->disks[p->ndisks++].npoints;
  }
  if (p->ndisks == 0) {
    err_set (ENOENT, "--disk %s: VM '%s' has no disk of that name or uuid "
             "in the store", disk, p->vm->name);
    return -1;
  }
  return 0;
}

int
engine_forget_open (const char *path, bool lock, double lock_wait,
                    const char *vm, const char *disk,
                    struct engine_forget **out)
{
  struct engine_forget *f = calloc (1, sizeof *f);

  if (f == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  f->one_disk = disk != NULL;
  /* The lock before the catalog: no backup adds a point meanwhile. */
  if ((f->store = store_open (path, false)) == NULL
      || (lock && store_lock (f->store, "forget", lock_wait) == -1)
      /* Manifests are all forget reads: a layer whose set or index is
       * damaged goes like any other. */
      || (f->cat = catalog_load (f->store, CATALOG_LAZY)) == NULL
      || plan (f, vm, disk) == -1) {
    int e = errno;
    engine_forget_close (f);
    errno = e;
    return -1;
  }
  *out = f;
  return 0;
}

const struct engine_forget_plan *
engine_forget_plan (const struct engine_forget *f)
{
  return &f->plan;
}

/* 0 if the object UUID is gone from the host (LOOKUP fails with
 * UUID_INVALID), else -1 with err_*: errno EEXIST when it is there,
 * with WHAT naming it. */
static int
host_lacks (xapi_session *xs, char *(*lookup) (xapi_session *, const char *),
            const char *uuid, const char *what)
{
  CLEANUP_FREE char *ref = lookup (xs, uuid);

  if (ref == NULL) {
    if (xapi_failed_with (xs, "UUID_INVALID"))
      return 0;
    err_prefix ("cannot tell whether %s is still on the host", what);
    return -1;
  }
  err_set (EEXIST, "%s still exists on the host: forget removes only what "
           "is no longer backed up (use prune to thin its points)", what);
  return -1;
}

/* Whether the host still has what P plans to forget. */
static int
check_gone (xapi_session *xs, const struct engine_forget_plan *p,
            bool one_disk)
{
  char what[512];

  if (!one_disk) {
    snprintf (what, sizeof what, "VM '%s' (%s)", p->vm->name, p->vm->uuid);
    if (host_lacks (xs, xapi_vm_by_uuid, p->vm->uuid, what) == -1)
      return -1;
  }
  /* A VM destroyed with its disks kept: the disks may live on in
   * another VM, backed up under it. */
  for (size_t i = 0; i < p->ndisks; i++) {
    const struct catalog_disk *d = p->disks[i].disk;
    snprintf (what, sizeof what, "disk '%s' (%s) of VM '%s'", d->name,
              d->uuid, p->vm->name);
    if (host_lacks (xs, xapi_vdi_by_uuid, d->uuid, what) == -1)
      return -1;
  }
  return 0;
}

/* Destroy snapshot SNAP of point LABEL on the host if it is there and
 * no VBD uses it; what became of it. */
static enum engine_forget_host
destroy_snapshot (xapi_session *xs, const char *snap, const char *label)
{
  CLEANUP_FREE char *ref = xapi_vdi_by_uuid (xs, snap);
  struct xapi_vdi vdi = { 0 };
  char **vbds = NULL;
  size_t nvbds = 0;
  enum engine_forget_host ret = FORGET_HOST_KEPT;

  if (ref == NULL) {
    if (xapi_failed_with (xs, "UUID_INVALID"))
      return FORGET_HOST_GONE;
    log_warn ("%s: cannot look its snapshot %s up on the host (%s); if it "
              "is there, it stays: remove it by hand", label, snap,
              err_get ());
    return FORGET_HOST_KEPT;
  }
  if (xapi_vdi_get (xs, ref, &vdi) == -1
      || xapi_vdi_get_vbds (xs, ref, &vbds, &nvbds) == -1) {
    if (xapi_failed_with (xs, "HANDLE_INVALID"))
      ret = FORGET_HOST_GONE;   /* gone since it was looked up */
    else
      log_warn ("%s: cannot read its snapshot %s on the host (%s); it "
                "stays: remove it by hand", label, snap, err_get ());
    goto out;
  }
  /* A uuid that names a disk, not a snapshot, is no point's snapshot. */
  if (!vdi.is_a_snapshot)
    log_warn ("%s: VDI %s on the host is not a snapshot; left alone",
              label, snap);
  /* VDI.destroy would take the VBD (and so a VM's disk) along with it:
   * someone uses this snapshot (a VM made from it, a restore). */
  else if (nvbds)
    log_warn ("%s: its snapshot %s on the host is attached to a VM (VBD "
              "%s); left alone", label, snap, vbds[0]);
  else if (xapi_vdi_destroy (xs, ref) == 0)
    ret = FORGET_HOST_DESTROYED;
  else if (xapi_failed_with (xs, "HANDLE_INVALID"))
    ret = FORGET_HOST_GONE;
  else
    log_warn ("%s: could not remove its snapshot %s from the host (%s); "
              "it stays: remove it by hand", label, snap, err_get ());

 out:
  xapi_refs_free (vbds, nvbds);
  xapi_vdi_clear (&vdi);
  return ret;
}

/* "by-vm/VM/DISK/TIME.img" of P in D, or its snapshot for a layer the
 * catalog left out, into BUF. */
static const char *
point_label (const struct engine_forget_disk *d,
             const struct engine_forget_point *p, char *buf, size_t len)
{
  if (p->point)
    snprintf (buf, len, "by-vm/%s/%s/%s.img", d->disk->vm->name,
              d->disk->name, p->point->name);
  else
    snprintf (buf, len, "by-vm/%s/%s: damaged layer %s", d->disk->vm->name,
              d->disk->name, p->snapshot);
  return buf;
}

static int
forget_disk (struct engine_forget *f, xapi_session *xs,
             struct engine_forget_disk *d, engine_forget_cb cb, void *opaque)
{
  struct engine_forget_plan *p = &f->plan;

  for (size_t i = 0; i < d->npoints; i++) {
    struct engine_forget_point *pt = &d->points[i];
    char label[1024];
    uint64_t freed;

    point_label (d, pt, label, sizeof label);
    if (xs) {
      pt->host = destroy_snapshot (xs, pt->snapshot, label);
      p->destroyed += pt->host == FORGET_HOST_DESTROYED;
      p->gone += pt->host == FORGET_HOST_GONE;
      p->kept += pt->host == FORGET_HOST_KEPT;
    }
    if (fold_remove (f->store, d->disk->uuid, pt->snapshot, WRITER_WAIT,
                     &freed) == -1
        && errno != ENOENT) {
      /* The older points stay with it: they are its parents. */
      log_error ("%s (snapshot %s): %s; it and the %zu older points of "
                 "the disk stay", label, pt->snapshot, err_get (),
                 d->npoints - i - 1);
      return -1;
    }
    pt->removed = true;
    p->removed++;
    if (cb)
      cb (opaque, d, pt);
  }
  return 0;
}

int
engine_forget_run (struct engine_forget *f,
                   const struct engine_server *server,
                   engine_forget_cb cb, void *opaque)
{
  struct engine_forget_plan *p = &f->plan;
  xapi_session *xs = NULL;
  int status = 0;

  if (server) {
    if (xapi_global_init () == -1)
      return -1;
    xs = engine_login_server (server);
    if (xs == NULL || check_gone (xs, p, f->one_disk) == -1)
      goto fail;
  }
  else
    log_warn ("no --server: the points go from the store only; their "
              "snapshots on the host, if any, stay");

  for (size_t i = 0; i < p->ndisks; i++)
    if (forget_disk (f, xs, &p->disks[i], cb, opaque) == -1)
      status = 1;

  if (xs) {
    xapi_logout (xs);
    xapi_global_cleanup ();
  }
  return status;

 fail:
  if (xs) {
    int e = errno;
    enum err_class k = err_class ();
    char msg[1024];
    /* Logging out must not replace why the run stopped. */
    snprintf (msg, sizeof msg, "%s", err_get ());
    xapi_logout (xs);
    err_set (e, "%s", msg);
    err_set_class (k);
  }
  xapi_global_cleanup ();
  return -1;
}

void
engine_forget_close (struct engine_forget *f)
{
  if (f == NULL)
    return;
  for (size_t i = 0; i < f->plan.ndisks; i++)
    free (f->plan.disks[i].points);
  free (f->plan.disks);
  store_names_free (f->extra, f->nextra);
  catalog_free (f->cat);
  store_close (f->store);
  free (f);
}
