/* cbtfs engine: backing up one VM: its disks, one snapshot for all of
 * them, a layer each, the copy, reducing the snapshots, and removing
 * the older ones from the host.
 *
 * Thread model: one thread per struct backup (backup-int.h);
 * copy_layer's workers call back for NBD details (targets.h) while
 * this thread waits for them.
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
#include "../chain/verify.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "backup-int.h"
#include "hostclean.h"
#include "points.h"
#include "snapshot.h"
#include "targets.h"

/* A list of XAPI refs (owned strings). */
struct refs {
  char **v;
  size_t n;
};

static int
refs_add (struct refs *r, const char *ref)
{
  char **nv = realloc (r->v, (r->n + 1) * sizeof *nv);

  if (nv == NULL)
    return -1;
  r->v = nv;
  if ((r->v[r->n] = strdup (ref)) == NULL)
    return -1;
  r->n++;
  return 0;
}

static bool
refs_has (const struct refs *r, const char *ref)
{
  for (size_t i = 0; i < r->n; i++)
    if (strcmp (r->v[i], ref) == 0)
      return true;
  return false;
}

static void
refs_free (struct refs *r)
{
  for (size_t i = 0; i < r->n; i++)
    free (r->v[i]);
  free (r->v);
  r->v = NULL;
  r->n = 0;
}

/* Whether --exclude-disk names VDI (by name_label or uuid). */
static bool
excluded (const struct backup *b, const struct xapi_vdi *vdi)
{
  for (size_t i = 0; i < b->nexclude; i++)
    if (strcmp (b->exclude[i], vdi->uuid) == 0
        || strcmp (b->exclude[i], vdi->name) == 0) {
      /* For the warning about names that named nothing (backup.c). */
      __atomic_store_n (&b->exclude_used[i], true, __ATOMIC_RELAXED);
      return true;
    }
  return false;
}

int
backup_fill_layer (struct backup *b, struct disk *d, struct layer *l,
                   const char *ref)
{
  const char *label = d->label;
  struct copy_stats st;
  struct copy_opts o = b->copy;
  uint64_t present, stored;
  bool baseline = layer_is_baseline (layer_meta (l));

  o.label = label;
  /* The copy's asks then skip VDI.get_by_uuid. */
  if (engine_targets_note (b->targets, layer_meta (l)->snapshot, ref) == -1
      || copy_layer (l, engine_targets_chain (b->targets), &o, &st) == -1)
    return -1;
  d->bytes_read += st.bytes;
  layer_counts (l, &present, &stored);
  log_info ("%s: %s %s: %" PRIu64 " of %" PRIu64 " blocks %s, %"
            PRIu64 " stored, %.1f MiB read over NBD in %.1f s", label,
            baseline ? "baseline" : "delta", layer_meta (l)->snapshot,
            layer_nchanged (l), layer_nblocks (l),
            baseline ? "with data" : "changed",
            stored, st.bytes / 1048576.0, st.seconds);
  return 0;
}

/* This run is done filling D's layer (or never will). */
static void
filling_end (struct backup *b, struct disk *d)
{
  if (!d->filling)
    return;
  engine_filling_end (b->store, d->live.uuid, d->snap.uuid);
  d->filling = false;
}

static void
disk_clear (struct disk *d)
{
  free (d->label);
  free (d->error);
  xapi_vdi_clear (&d->live);
  layer_meta_clear (&d->prev);
  free (d->prev_ref);
  free (d->snap_ref);
  xapi_vdi_clear (&d->snap);
  layer_close (d->layer);
}

static char *
make_label (const char *vm, const char *disk, const char *dev)
{
  CLEANUP_FREE char *v = catalog_safe_name (vm);
  CLEANUP_FREE char *n = catalog_safe_name (disk);
  char *s;

  if (v == NULL || n == NULL
      || asprintf (&s, "VM '%s' disk '%s' (%s)", v, n, dev) == -1)
    return NULL;
  return s;
}

/* The VM's disks cbtfs can back up: Disk VBDs with a user/system VDI
 * that --exclude-disk does not name; the refs of those it names go to
 * SKIPPED. */
static int
find_disks (struct backup *b, const struct xapi_vm *vm, struct disk **out,
            size_t *nout, struct refs *skipped)
{
  struct disk *v = calloc (vm->nvbds ? vm->nvbds : 1, sizeof *v);
  size_t n = 0, i;

  if (v == NULL)
    return -1;
  for (i = 0; i < vm->nvbds; i++) {
    struct xapi_vbd vbd = { 0 };
    struct disk *d = &v[n];

    d->last_complete = -1;
    if (xapi_vbd_get (b->xs, vm->vbds[i], &vbd) == -1)
      goto err;
    if (strcmp (vbd.type, "Disk") != 0 || vbd.empty
        || strcmp (vbd.vdi, "OpaqueRef:NULL") == 0) {
      xapi_vbd_clear (&vbd);
      continue;
    }
    if (xapi_vdi_get (b->xs, vbd.vdi, &d->live) == -1) {
      xapi_vbd_clear (&vbd);
      goto err;
    }
    snprintf (d->userdevice, sizeof d->userdevice, "%s", vbd.userdevice);
    xapi_vbd_clear (&vbd);
    if (excluded (b, &d->live)) {
      CLEANUP_FREE char *vmn = catalog_safe_name (vm->name);
      CLEANUP_FREE char *dn = catalog_safe_name (d->live.name);
      log_info ("VM '%s' disk '%s' (%s): skipped (--exclude-disk)",
                vmn ? vmn : vm->uuid, dn ? dn : d->live.uuid, d->userdevice);
      backup_report (b, vm, d, ENGINE_DISK_SKIPPED, NULL);
      if (refs_add (skipped, d->live.ref) == -1) {
        err_set (ENOMEM, "out of memory");
        xapi_vdi_clear (&d->live);
        goto err;
      }
      xapi_vdi_clear (&d->live);
      continue;
    }
    if (strcmp (d->live.type, "user") && strcmp (d->live.type, "system")) {
      log_info ("VM %s: skipping VDI %s of type %s (CBT needs user or "
                "system)", vm->uuid, d->live.uuid, d->live.type);
      xapi_vdi_clear (&d->live);
      continue;
    }
    if (!is_uuid (d->live.uuid)) {
      err_set (EPROTO, "VM %s: XAPI gave a VDI uuid that is not a uuid",
               vm->uuid);
      xapi_vdi_clear (&d->live);
      goto err;
    }
    d->label = make_label (vm->name, d->live.name, d->userdevice);
    if (d->label == NULL) {
      xapi_vdi_clear (&d->live);
      goto err;
    }
    n++;
  }
  *out = v;
  *nout = n;
  return 0;
 err:
  for (i = 0; i < n; i++)
    disk_clear (&v[i]);
  free (v);
  return -1;
}

/* One VM.snapshot for all disks; per-VDI snapshots if that fails.
 * VM.snapshot takes the disks in SKIPPED too: their snapshots go to
 * DROP, to be destroyed once the VM snapshot is. */
static int
take_snapshots (struct backup *b, const struct xapi_vm *vm, struct disk *v,
                size_t n, char **snap_vm, const struct refs *skipped,
                struct refs *drop)
{
  struct xapi_vm svm = { 0 };
  size_t i, k;

  *snap_vm = xapi_vm_snapshot (b->xs, vm->ref, b->snap_name);
  if (*snap_vm == NULL) {
    log_warn ("VM %s: VM.snapshot failed (%s); snapshotting disks one by "
              "one", vm->uuid, err_get ());
    for (i = 0; i < n; i++)
      if (!v[i].failed
          && (v[i].snap_ref = xapi_vdi_snapshot (b->xs, v[i].live.ref)) == NULL)
        return -1;
    return 0;
  }
  if (xapi_vm_get (b->xs, *snap_vm, &svm) == -1)
    return -1;
  for (k = 0; k < svm.nvbds; k++) {
    struct xapi_vbd vbd = { 0 };
    struct xapi_vdi vdi = { 0 };
    if (xapi_vbd_get (b->xs, svm.vbds[k], &vbd) == -1)
      goto err;
    if (strcmp (vbd.vdi, "OpaqueRef:NULL") == 0
        || xapi_vdi_get (b->xs, vbd.vdi, &vdi) == -1) {
      bool empty = strcmp (vbd.vdi, "OpaqueRef:NULL") == 0;
      xapi_vbd_clear (&vbd);
      if (empty)
        continue;
      goto err;
    }
    if (refs_has (skipped, vdi.snapshot_of) && refs_add (drop, vbd.vdi) == -1) {
      xapi_vbd_clear (&vbd);
      xapi_vdi_clear (&vdi);
      err_set (ENOMEM, "out of memory");
      goto err;
    }
    for (i = 0; i < n; i++)
      if (v[i].snap_ref == NULL
          && strcmp (vdi.snapshot_of, v[i].live.ref) == 0) {
        v[i].snap_ref = strdup (vbd.vdi);
        break;
      }
    xapi_vbd_clear (&vbd);
    xapi_vdi_clear (&vdi);
  }
  xapi_vm_clear (&svm);
  for (i = 0; i < n; i++)
    if (v[i].snap_ref == NULL && !v[i].failed) {
      err_set (EPROTO, "%s: VM.snapshot made no snapshot of this disk",
               v[i].label);
      return -1;
    }
  return 0;
 err:
  xapi_vm_clear (&svm);
  return -1;
}

/* Before a layer is committed: is the snapshot's NBD export the disk
 * XAPI describes, served over TLS by the host XAPI names (its
 * certificate)?  A mismatch is an answer no retry will change, so the
 * disk fails now and nothing is committed.  A server that cannot be
 * reached now (or XAPI not saying where it is) is left to the copier,
 * which retries and reports. */
static int
probe_export (struct backup *b, struct disk *d)
{
  struct nbdsrc_target t = { 0 };
  struct nbdsrc_conn *c;
  int r;

  if (engine_nbd_target (b->xs, d->snap_ref, d->snap.uuid, &t) == -1)
    return 0;
  c = nbdsrc_connect_shared (&t, b->copy.timeout, b->copy.limit);
  nbdsrc_target_clear (&t);
  if (c == NULL)              /* not the host XAPI named, or no TLS */
    return errno == EKEYREJECTED || errno == ENOTSUP ? -1 : 0;
  r = nbdsrc_check_size (c, d->snap.uuid, d->snap.virtual_size);
  nbdsrc_close (c);
  return r;
}

/* Describe this run's layer: its changed set and metadata. */
static int
describe_layer (struct backup *b, const struct xapi_vm *vm, struct disk *d)
{
  CLEANUP_FREE char *b64 = NULL;
  CLEANUP_FREE uint8_t *bits = NULL;
  struct bitmap changed = { 0 };
  struct layer_meta m = { 0 };
  size_t len;
  uint64_t nblocks;
  bool sparse = false;

  if (xapi_vdi_get (b->xs, d->snap_ref, &d->snap) == -1)
    return -1;
  if (!is_uuid (d->snap.uuid)) {
    err_set (EPROTO, "XAPI gave snapshot uuid that is not a uuid");
    return -1;
  }
  if (d->snap.virtual_size <= 0 || d->snap.virtual_size % 512) {
    err_set (EPROTO, "snapshot %s has virtual size %" PRId64 ", not a "
             "positive multiple of 512", d->snap.uuid, d->snap.virtual_size);
    return -1;
  }
  /* Values the store cannot hold (layer.c refuses them on reading):
   * committed, they would make a layer no reader accepts. */
  if (d->snap.virtual_size > INT64_C (1) << 62) {
    err_set (EPROTO, "snapshot %s has virtual size %" PRId64 ", more than "
             "the store's limit of 2^62 bytes", d->snap.uuid,
             d->snap.virtual_size);
    return -1;
  }
  if (d->snap.snapshot_time < 0) {
    err_set (EPROTO, "snapshot %s has snapshot_time %" PRId64 ", before "
             "1970", d->snap.uuid, d->snap.snapshot_time);
    return -1;
  }
  nblocks = chain_nblocks (d->snap.virtual_size);
  if (!d->baseline) {
    b64 = xapi_vdi_list_changed_blocks (b->xs, d->prev_ref, d->snap_ref);
    if (b64 == NULL) {
      if (!xapi_failed_with (b->xs, "SR_BACKEND_FAILURE_460"))
        return -1;
      log_warn ("%s: the CBT chain is broken (%s); taking a new baseline, "
                "older points stay readable", d->label, err_get ());
      d->baseline = true;
    }
    else {
      bits = base64_decode (b64, &len);
      if (bits == NULL) {
        err_set (EPROTO, "VDI.list_changed_blocks: the bitmap is not "
                 "valid base64");
        return -1;
      }
      if (cbt_bitmap_decode (bits, len, nblocks, &changed) == -1) {
        err_prefix ("VDI.list_changed_blocks");
        return -1;
      }
    }
  }

  /* A baseline of only the blocks with data is a set like a delta's,
   * with nothing below it: the rest reads as zeros (FORMAT.md). */
  if (d->baseline && backup_allocated_blocks (b, d, nblocks, &changed) == 1)
    sparse = true;

  /* After list_changed_blocks: an open NBD connection would make the
   * host refuse it (VDI_IN_USE, docs/xapi.md, "Errors cbtfs tells
   * apart"). */
  if (!b->no_copy && probe_export (b, d) == -1) {
    bitmap_free (&changed);
    return -1;
  }
  memcpy (m.snapshot, d->snap.uuid, UUID_LEN + 1);
  memcpy (m.disk, d->live.uuid, UUID_LEN + 1);
  memcpy (m.chain, d->baseline ? d->snap.uuid : d->prev.chain, UUID_LEN + 1);
  if (!d->baseline)
    memcpy (m.parent, d->prev.snapshot, UUID_LEN + 1);
  if (is_uuid (vm->uuid))
    memcpy (m.vm, vm->uuid, UUID_LEN + 1);
  m.seq = d->max_seq + 1;
  m.time = d->snap.snapshot_time;
  m.size = d->snap.virtual_size;
  m.full = d->baseline && !sparse;
  m.lazy = b->no_copy;
  m.vm_name = vm->name;
  m.disk_name = d->live.name;
  snprintf (m.userdevice, sizeof m.userdevice, "%s",
            strspn (d->userdevice, "0123456789") == strlen (d->userdevice)
            ? d->userdevice : "");
  /* Mounts show the point once this run is done filling it. */
  if (!b->no_copy) {
    if (store_filling_begin (b->store, m.disk, m.snapshot) == -1) {
      bitmap_free (&changed);
      return -1;
    }
    d->filling = true;
  }
  d->layer = layer_create (b->store, &m,
                           m.full ? NULL : &changed);
  bitmap_free (&changed);
  return d->layer ? 0 : -1;
}

void
backup_disk_error (struct disk *d)
{
  log_error ("%s: %s", d->label, err_get ());
  if (d->error == NULL)
    d->error = strdup (err_get ());
}

static void
disk_failed (struct disk *d)
{
  backup_disk_error (d);
  d->failed = true;
}

/* The host's VDI.checksum of D's snapshot (malloc'd), waiting up to
 * WAIT seconds, or NULL with err_*.  It is kept in the store whatever
 * the comparison finds, for the mount's MD5SUMS; only a warning when it
 * cannot be: the verdict is what backups act on. */
static char *
host_checksum (struct backup *b, struct disk *d, long wait)
{
  char *host = xapi_vdi_checksum (b->xs, d->snap_ref, wait);

  if (host
      && verdict_record_md5 (b->store, d->live.uuid, d->snap.uuid, host) == -1)
    log_warn ("%s: cannot record the host's checksum: %s", d->label,
              err_get ());
  return host;
}

/* --verify: does the new point's image in the store have the md5 the
 * host computes for the snapshot?  Only then may its data go.  The
 * answer is recorded in the store (verdict.h): a point that differs
 * keeps its snapshot's data on later runs too.  A point that cannot be
 * compared is a failure of the run, and keeps its data as well. */
static bool
verified (struct backup *b, struct disk *d)
{
  /* Only the point's own chain is read: load the rest lazily. */
  struct catalog *cat = engine_catalog (b->store->where, CATALOG_LAZY);
  struct catalog_point *p = cat ? catalog_find (cat, d->snap.uuid, NULL) : NULL;
  /* Older lazy layers of the chain are read from the host, not kept. */
  struct fetch_opts fo = { .max_conns = 2, .timeout = b->copy.timeout,
                           .retry_after = 10, .limit = b->copy.limit };
  struct fetcher *f = fetcher_new (engine_targets_chain (b->targets), &fo);
  long wait = engine_checksum_timeout (d->snap.virtual_size, b->copy.timeout);
  CLEANUP_FREE char *host = NULL;
  char mine[33];
  bool ok = false;

  if (p == NULL || f == NULL)
    err_set (ENOENT, "cannot verify (%s); the snapshot keeps its data",
             cat ? "not in the store" : err_get ());
  else if (verify_point_md5 (p->layer, f, mine) == -1)
    err_prefix ("cannot verify (the snapshot keeps its data)");
  else if ((host = host_checksum (b, d, wait)) == NULL)
    err_prefix ("cannot verify (the snapshot keeps its data)");
  else if (strcasecmp (mine, host) != 0) {
    if (verdict_record (b->store, d->live.uuid, d->snap.uuid,
                        VERDICT_DIFFERS) == -1)
      log_warn ("%s: %s", d->label, err_get ());
    err_set (EIO, "the stored image differs from the host's (md5 %s, the "
             "host says %s); the snapshot keeps its data until cbtfs "
             "verify --server finds them equal or cbtfs verify --accept "
             "lets it go", mine, host);
  }
  else if (verdict_record (b->store, d->live.uuid, d->snap.uuid,
                             VERDICT_MATCH) == -1)
    err_prefix ("verified, but cannot record it (the snapshot keeps its "
                "data)");
  else {
    log_info ("%s: verified against the host (md5 %s)", d->label, mine);
    ok = true;
  }
  if (!ok)
    disk_failed (d);
  fetcher_free (f);
  catalog_free (cat);
  return ok;
}

/* Destroy the VM snapshot object once (its VDIs stay).  False when
 * it is still there: its VBDs would make data_destroy fail. */
static bool
destroy_snap_vm (struct backup *b, char **snap_vm, const char *vmname)
{
  bool ok = true;

  if (*snap_vm && xapi_vm_destroy (b->xs, *snap_vm) == -1) {
    log_warn ("VM '%s': could not destroy the VM snapshot (%s); its disk "
              "snapshots keep their data until the next backup removes it",
              vmname, err_get ());
    ok = false;
  }
  free (*snap_vm);
  *snap_vm = NULL;
  return ok;
}

/* Whether D's snapshot of this run has no layer in the store.  A
 * layer that became visible but then failed to open is there: its
 * snapshot must stay (the next run finishes it). */
static bool
unrecorded (struct store *store, const struct disk *d)
{
  if (d->snap.uuid == NULL || !is_uuid (d->snap.uuid))
    return true;                /* never described */
  return d->prepared
    && store_has_layer (store, d->live.uuid, d->snap.uuid) == 0;
}

int
backup_vm (struct backup *b, const struct xapi_vm *vm)
{
  struct disk *v = NULL;
  size_t n = 0, i, ok = 0;
  char *snap_vm = NULL;
  CLEANUP_FREE char *vmname = catalog_safe_name (vm->name);
  double snapped = 0;
  bool vm_snap_gone = true;
  int failures = 0;
  struct refs skipped = { 0 }, drop = { 0 };

  if (vmname == NULL) {
    backup_report (b, vm, NULL, ENGINE_DISK_FAILED, "out of memory");
    return 1;
  }
  if (find_disks (b, vm, &v, &n, &skipped) == -1) {
    log_error ("VM '%s': %s", vmname, err_get ());
    backup_report (b, vm, NULL, ENGINE_DISK_FAILED, err_get ());
    refs_free (&skipped);
    return 1;
  }
  if (n == 0) {
    log_info ("VM '%s' has no disks to back up", vmname);
    refs_free (&skipped);
    free (v);
    return 0;
  }
  if (backup_claim_disks (b, v, n) == -1) {
    log_error ("VM '%s': %s", vmname, err_get ());
    backup_report (b, vm, NULL, ENGINE_DISK_FAILED, err_get ());
    for (i = 0; i < n; i++)
      disk_clear (&v[i]);
    free (v);
    refs_free (&skipped);
    return 1;
  }
  /* Leftovers go first: a VM snapshot an interrupted run left holds
   * VBDs that would make finishing its layers end in VDI_IN_USE. */
  for (i = 0; i < n; i++)
    v[i].prepared = store_disk_prepare (b->store, v[i].live.uuid) == 0;
  backup_remove_leftovers (b, vm, v, n);
  for (i = 0; i < n; i++) {
    double t = now_monotonic ();
    if (backup_prepare_disk (b, &v[i]) == -1)
      disk_failed (&v[i]);
    else
      ok++;
    v[i].seconds += now_monotonic () - t;
  }
  if (ok == 0)
    goto out;
  if (take_snapshots (b, vm, v, n, &snap_vm, &skipped, &drop) == -1) {
    log_error ("VM '%s': snapshot failed: %s", vmname, err_get ());
    for (i = 0; i < n; i++) {
      if (v[i].error == NULL && asprintf (&v[i].error, "snapshot failed: %s",
                                          err_get ()) == -1)
        v[i].error = NULL;
      v[i].failed = true;
    }
    goto cleanup;
  }
  snapped = now_monotonic ();
  for (i = 0; i < n; i++) {
    double t = now_monotonic ();
    if (!v[i].failed && describe_layer (b, vm, &v[i]) == -1)
      disk_failed (&v[i]);
    v[i].seconds += now_monotonic () - t;
  }
  /* The VM snapshot object holds VBDs to the snapshots, which would
   * block data_destroy; its VDIs outlive it. */
  vm_snap_gone = destroy_snap_vm (b, &snap_vm, vmname);
  for (i = 0; i < n; i++) {
    struct disk *d = &v[i];
    double t = now_monotonic ();
    if (d->failed || d->layer == NULL)
      continue;
    if (b->no_copy) {
      log_info ("%s: snapshot %s recorded; its data stays on the host "
                "(mount with --server to read it, cbtfs fetch to copy it)",
                d->label, d->snap.uuid);
      continue;
    }
    if (backup_fill_layer (b, d, d->layer, d->snap_ref) == -1) {
      disk_failed (d);
      filling_end (b, d);
      log_info ("%s: the snapshot keeps its data; the next backup copies "
                "only what is missing", d->label);
      d->seconds += now_monotonic () - t;
      continue;
    }
    filling_end (b, d);
    /* Only once this run's point is whole in the store and its own
     * snapshot reduced is it the one the next delta starts from: then
     * the older metadata snapshots have served (hostclean.h). */
    if (layer_complete (d->layer) && vm_snap_gone
        && (!b->verify || verified (b, d))
        && engine_data_destroy (b->xs, b->store, d->live.uuid, d->snap_ref,
                                d->snap.uuid) == 0)
      engine_clean_host (b->xs, b->store, d->live.uuid, d->live.ref,
                         d->snap.uuid, d->label);
    log_info ("%s: done %.3f s after the snapshot", d->label,
              now_monotonic () - snapped);
    d->seconds += now_monotonic () - t;
  }

 cleanup:
  vm_snap_gone = destroy_snap_vm (b, &snap_vm, vmname) && vm_snap_gone;
  /* Snapshots of excluded disks: no layer will ever describe them.
   * While the VM snapshot is still there, the next run's leftover
   * cleanup removes them with it. */
  for (i = 0; vm_snap_gone && i < drop.n; i++)
    if (xapi_vdi_destroy (b->xs, drop.v[i]) == -1)
      log_warn ("VM '%s': could not remove the snapshot of an excluded "
                "disk: %s", vmname, err_get ());
  /* A snapshot no layer describes would only leak space on the host;
   * destroying it folds its CBT log into the next one (docs/xapi.md,
   * "Snapshots on the host"). */
  for (i = 0; i < n; i++)
    if (v[i].snap_ref && v[i].layer == NULL && unrecorded (b->store, &v[i])
        && xapi_vdi_destroy (b->xs, v[i].snap_ref) == -1)
      log_warn ("%s: could not remove the unused snapshot: %s", v[i].label,
                err_get ());
 out:
  for (i = 0; i < n; i++)
    filling_end (b, &v[i]);
  refs_free (&skipped);
  refs_free (&drop);
  backup_release_disks (b, v, n);
  for (i = 0; i < n; i++) {
    bool failed = v[i].failed || v[i].resume_failed;
    failures += failed;
    backup_report (b, vm, &v[i], failed ? ENGINE_DISK_FAILED : ENGINE_DISK_OK,
                   v[i].error);
    disk_clear (&v[i]);
  }
  free (v);
  return failures ? 1 : 0;
}
