/* cbtfs backup: snapshot VMs, copy what changed, commit layers.
 *
 * Per VM: look at what the store has for each disk (finishing layers a
 * crashed or failed run left incomplete), take one VM.snapshot so all
 * disks share a point in time, describe a layer per disk (its changed
 * set from VDI.list_changed_blocks, or everything for a baseline),
 * destroy the VM snapshot object, copy the blocks over NBD, and only
 * when a layer is complete reduce its snapshot to CBT metadata with
 * VDI.data_destroy.  A snapshot that is not yet copied keeps its data
 * on the host, so the next run can finish it.
 *
 * Thread model: the main thread drives everything; copy_layer's workers
 * call back into cli_copy_target (one at a time: under the lock of the
 * snapshot's details, nbdsrc_known) for connection details, so the
 * XAPI session is used by one thread at a time.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../chain/bitmap.h"
#include "../chain/catalog.h"
#include "../chain/copy.h"
#include "../chain/fetch.h"
#include "../chain/layer.h"
#include "../chain/manifests.h"
#include "../chain/store/store.h"
#include "../chain/verdict.h"
#include "../chain/verify.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "cli.h"

/* VM snapshots cbtfs takes are named SNAP_NAME and the store's id, set
 * atomically with the snapshot (VM.snapshot's new_name; other_config
 * could only be set after it returns, and a crash in between would
 * leave an untagged snapshot), so that a store removes only its own
 * leftovers.  Older versions named them SNAP_NAME alone. */
#define SNAP_NAME "cbtfs backup"

struct backup {
  struct store *store;
  char snap_name[sizeof SNAP_NAME + UUID_LEN + 1];  /* "cbtfs backup <id>" */
  xapi_session *xs;
  struct copy_opts copy;
  bool no_copy;                 /* describe layers only (lazy) */
  bool verify;                  /* compare with VDI.checksum before data_destroy */
  char **vm_args;
  size_t nvm_args;
};

struct disk {
  char *label;                  /* "VM 'web' disk 'root' (0)", safe to print */
  char userdevice[16];
  struct xapi_vdi live;
  bool prepared;                /* its place in the store is made */
  uint64_t max_seq;
  struct layer_meta prev;       /* the newest layer, if have_prev */
  bool have_prev;
  char *prev_ref;               /* its snapshot on the host */
  bool baseline;
  char *snap_ref;
  struct xapi_vdi snap;
  struct layer *layer;          /* this run's layer */
  bool failed;                  /* this run's backup of the disk failed */
  bool resume_failed;           /* an earlier incomplete layer stays so */
  char held[UUID_LEN + 1];      /* a point of prev's chain that failed a
                                   check (verdict.h), or "" */
  enum verdict held_as;
};

static int
fill_layer (struct backup *b, struct layer *l, const char *ref,
            const char *label)
{
  struct cli_target ctx = { b->xs, ref, l->meta.snapshot };
  struct copy_stats st;
  struct copy_opts o = b->copy;
  uint64_t present, stored;
  bool baseline = layer_is_baseline (&l->meta);

  o.label = label;
  if (copy_layer (l, cli_copy_target, &ctx, &o, &st) == -1)
    return -1;
  layer_counts (l, &present, &stored);
  log_info ("%s: %s %s: %" PRIu64 " of %" PRIu64 " blocks %s, %"
            PRIu64 " stored, %.1f MiB read over NBD in %.1f s", label,
            baseline ? "baseline" : "delta", l->meta.snapshot,
            l->nchanged, l->nblocks, baseline ? "with data" : "changed",
            stored, st.bytes / 1048576.0, st.seconds);
  return 0;
}

/* ---- what the store already has --------------------------------------- */

/* What became of an incomplete layer this run tried to finish. */
enum resume {
  RESUME_DONE,                  /* complete now */
  RESUME_PENDING,               /* still incomplete; the host keeps its data */
  RESUME_LOST,                  /* its snapshot has no data left: never */
};

/* Finish an incomplete layer whose snapshot still has data. */
static enum resume
resume_layer (struct backup *b, struct disk *d, const char *snap, bool lazy)
{
  CLEANUP_FREE char *ref = cli_snapshot_with_data (b->xs, snap);
  struct layer *l;
  enum resume r = RESUME_PENDING;

  if (ref == NULL) {
    log_warn ("%s: snapshot %s cannot be finished (%s); its blocks not yet "
              "copied stay unreadable", d->label, snap, err_get ());
    return RESUME_LOST;
  }
  if (lazy)
    return RESUME_PENDING;      /* --no-copy: fetch or a mount fills it */
  /* The host still has the data: failing to copy it now is an error
   * the run reports, though it goes on to take today's backup. */
  l = layer_open (b->store, d->live.uuid, snap, true);
  if (l == NULL) {
    if (errno == EWOULDBLOCK) {
      log_warn ("%s: %s; leaving it to that process", d->label, err_get ());
      return RESUME_PENDING;
    }
    log_error ("%s: %s", d->label, err_get ());
    d->resume_failed = true;
    return RESUME_PENDING;
  }
  log_info ("%s: finishing snapshot %s left incomplete by an earlier run",
            d->label, snap);
  if (fill_layer (b, l, ref, d->label) == -1) {
    log_error ("%s: %s", d->label, err_get ());
    d->resume_failed = true;
  }
  else if (layer_complete (l)) {
    cli_data_destroy (b->xs, b->store, d->live.uuid, ref, snap);
    r = RESUME_DONE;
  }
  layer_close (l);
  return r;
}

/* Copy M into *OUT, duplicating its strings.  0 or -1. */
static int
meta_copy (struct layer_meta *out, const struct layer_meta *m)
{
  *out = *m;
  out->vm_name = strdup (m->vm_name);
  out->disk_name = strdup (m->disk_name);
  if (out->vm_name == NULL || out->disk_name == NULL) {
    layer_meta_clear (out);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

/* One layer's place in its chain, for held_in_chain. */
struct link {
  char snapshot[UUID_LEN + 1];
  char parent[UUID_LEN + 1];
};

/* Set D->held to the newest point of the chain under D->prev (itself
 * included) whose verdict holds it back: a delta must not be built on
 * a point verify found damaged or different from the host, unseen. */
static void
held_in_chain (struct store *s, struct disk *d, const struct link *links,
               size_t n)
{
  struct verdicts vs;
  const char *at = d->prev.snapshot;

  if (verdicts_load (s, d->live.uuid, &vs) == -1) {
    log_warn ("%s: %s", d->label, err_get ());
    return;
  }
  for (size_t hops = 0; at[0] && hops <= n; hops++) {
    enum verdict v = verdicts_of (&vs, at);
    size_t i;
    if (verdict_holds (v)) {
      snprintf (d->held, sizeof d->held, "%s", at);
      d->held_as = v;
      break;
    }
    for (i = 0; i < n && strcmp (links[i].snapshot, at) != 0; i++)
      ;
    at = i < n ? links[i].parent : "";
  }
  verdicts_free (&vs);
}

/* Read what the store holds for disk D: finish incomplete layers where
 * the host still has their data, and find the newest layer, which the
 * next delta builds on unless it can never be finished. */
static int
scan_store (struct backup *b, struct disk *d)
{
  char **snaps = NULL;
  size_t n, i;
  uint64_t newest = 0;
  bool prev_complete = false;
  enum resume r;
  int ret = -1;

  CLEANUP_FREE struct link *links = NULL;
  size_t nlinks = 0;

  if (!d->prepared && store_disk_prepare (b->store, d->live.uuid) == -1)
    return -1;
  d->prepared = true;
  if (store_list (b->store, d->live.uuid, &snaps, &n) == -1)
    return -1;
  links = calloc (n ? n : 1, sizeof *links);
  if (links == NULL)
    goto out;
  /* Copies of manifests this disk's mounts lack (an older store). */
  if (manifests_refresh (b->store, d->live.uuid) == -1)
    log_warn ("%s: %s", d->label, err_get ());
  for (i = 0; i < n; i++) {
    struct layer *l = layer_open (b->store, d->live.uuid, snaps[i], false);

    if (l == NULL) {
      log_warn ("%s: ignoring damaged layer: %s", d->label, err_get ());
      continue;
    }
    d->max_seq = MAX (d->max_seq, l->meta.seq);
    memcpy (links[nlinks].snapshot, l->meta.snapshot, UUID_LEN + 1);
    memcpy (links[nlinks++].parent, l->meta.parent, UUID_LEN + 1);
    r = layer_complete (l) ? RESUME_DONE
      : resume_layer (b, d, snaps[i], l->meta.lazy);
    if (l->meta.seq > newest) {
      newest = l->meta.seq;
      layer_meta_clear (&d->prev);
      /* A delta may build on a layer not yet finished while the host
       * keeps its snapshot's data (a later run finishes it): a flaky
       * night must not cost a full copy.  A lost one needs a baseline. */
      d->have_prev = r != RESUME_LOST && meta_copy (&d->prev, &l->meta) == 0;
      /* Only cbtfs fetch reduces a --no-copy snapshot (it may be kept). */
      prev_complete = r == RESUME_DONE && !l->meta.lazy;
    }
    layer_close (l);
  }
  if (d->have_prev)
    held_in_chain (b->store, d, links, nlinks);
  if (d->have_prev && prev_complete) {
    /* A crash between commit and data_destroy leaves the newest
     * snapshot holding data the store already has. */
    CLEANUP_FREE char *ref = cli_snapshot_with_data (b->xs, d->prev.snapshot);
    if (ref)
      cli_data_destroy (b->xs, b->store, d->live.uuid, ref,
                        d->prev.snapshot);
  }
  ret = 0;
 out:
  store_names_free (snaps, n);
  return ret;
}

/* ---- one VM ----------------------------------------------------------- */

static void
disk_clear (struct disk *d)
{
  free (d->label);
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

/* The VM's disks cbtfs can back up: Disk VBDs with a user/system VDI. */
static int
find_disks (struct backup *b, const struct xapi_vm *vm, struct disk **out,
            size_t *nout)
{
  struct disk *v = calloc (vm->nvbds ? vm->nvbds : 1, sizeof *v);
  size_t n = 0, i;

  if (v == NULL)
    return -1;
  for (i = 0; i < vm->nvbds; i++) {
    struct xapi_vbd vbd = { 0 };
    struct disk *d = &v[n];

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

/* Decide baseline or delta, and make sure CBT is on. */
static int
prepare_disk (struct backup *b, struct disk *d)
{
  if (scan_store (b, d) == -1)
    return -1;
  d->baseline = true;
  if (!d->have_prev)
    log_info ("%s: first backup, taking a baseline", d->label);
  else if (!d->live.cbt_enabled)
    log_warn ("%s: CBT was switched off (a host crash does that); taking a "
              "new baseline, older points stay readable", d->label);
  else if (d->held[0])
    log_warn ("%s: snapshot %s, which the next delta would build on, was "
              "found %s by a check; taking a new baseline rather than "
              "building on it (cbtfs verify --accept %s allows it)",
              d->label, d->held, verdict_name (d->held_as), d->held);
  else if ((d->prev_ref = xapi_vdi_by_uuid (b->xs, d->prev.snapshot)) == NULL)
    log_warn ("%s: the previous snapshot %s is gone from the host (%s); "
              "taking a new baseline", d->label, d->prev.snapshot, err_get ());
  else
    d->baseline = false;
  if (!d->live.cbt_enabled && xapi_vdi_enable_cbt (b->xs, d->live.ref) == -1)
    return -1;
  return 0;
}


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
static void
remove_leftovers (struct backup *b, const struct xapi_vm *vm,
                  const struct disk *v, size_t n)
{
  for (size_t i = 0; i < vm->nsnapshots; i++) {
    struct xapi_vm svm = { 0 };
    char **refs, **uuids;
    size_t norphans = 0;

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
      if (xapi_vm_destroy (b->xs, svm.ref) == -1)
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

/* One VM.snapshot for all disks; per-VDI snapshots if that fails. */
static int
take_snapshots (struct backup *b, const struct xapi_vm *vm, struct disk *v,
                size_t n, char **snap_vm)
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
    for (i = 0; i < n; i++)
      if (v[i].snap_ref == NULL && strcmp (vdi.snapshot_of, v[i].live.ref) == 0) {
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

  if (cli_nbd_target (b->xs, d->snap_ref, d->snap.uuid, &t) == -1)
    return 0;
  c = nbdsrc_connect (&t, b->copy.timeout);
  nbdsrc_target_clear (&t);
  if (c == NULL)              /* not the host XAPI named, or no TLS */
    return errno == EKEYREJECTED || errno == ENOTSUP ? -1 : 0;
  r = nbdsrc_check_size (c, d->snap.uuid, d->snap.virtual_size);
  nbdsrc_close (c);
  return r;
}

/* A baseline need not read what holds no data.  XenServer's NBD server
 * cannot say which blocks do, but the head of the snapshot's VHD
 * export can (vhd-export.md): its block table.  Sets *SET to the
 * blocks to copy and returns 1, or returns 0 to copy every block (the
 * host could not tell us; one warning says why). */
static int
allocated_blocks (struct backup *b, struct disk *d, uint64_t nblocks,
                  struct bitmap *set)
{
  CLEANUP_FREE uint8_t *head = NULL;
  struct vhd_head h;
  uint64_t per, first, last;

  if ((uint64_t) d->snap.virtual_size > VHD_EXPORT_MAX) {
    log_warn ("%s: copying every block: the disk is larger than XAPI's "
              "VHD export (2040 GiB) can describe", d->label);
    return 0;
  }
  if (xapi_vdi_vhd_head (b->xs, d->snap.uuid, d->snap.virtual_size,
                         &head, &h) == -1) {
    log_warn ("%s: copying every block: %s", d->label, err_get ());
    return 0;
  }
  if (bitmap_init (set, nblocks) == -1) {
    log_warn ("%s: copying every block: out of memory", d->label);
    return 0;
  }
  /* VHD blocks (2 MiB from XAPI) cover whole CBT blocks, or a part. */
  per = h.block_size;
  for (uint32_t i = 0; i < h.nentries; i++) {
    if (!vhd_allocated (&h, i))
      continue;
    first = i * per >> CHAIN_BLOCK_SHIFT;
    last = MIN (nblocks, ((i + 1) * per + CHAIN_BLOCK_SIZE - 1)
                >> CHAIN_BLOCK_SHIFT);
    for (uint64_t k = first; k < last; k++)
      bitmap_set (set, k);
  }
  log_info ("%s: %" PRIu64 " of %" PRIu64 " blocks hold data", d->label,
            bitmap_count (set), nblocks);
  return 1;
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
  if (d->baseline && allocated_blocks (b, d, nblocks, &changed) == 1)
    sparse = true;

  /* After list_changed_blocks: an open NBD connection would make the
   * host refuse it (VDI_IN_USE, xapi-cbt.md §6). */
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
  d->layer = layer_create (b->store, &m,
                           m.full ? NULL : &changed);
  bitmap_free (&changed);
  return d->layer ? 0 : -1;
}

static void
disk_failed (struct disk *d)
{
  log_error ("%s: %s", d->label, err_get ());
  d->failed = true;
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
  struct catalog *cat = cli_catalog (b->store->where, CATALOG_LAZY);
  struct catalog_point *p = cat ? catalog_find (cat, d->snap.uuid, NULL) : NULL;
  /* Older lazy layers of the chain are read from the host, not kept. */
  struct fetch_opts fo = { .max_conns = 2, .timeout = b->copy.timeout,
                           .retry_after = 10 };
  struct fetcher *f = fetcher_new (cli_fetch_target, b->xs, &fo);
  long wait = cli_checksum_timeout (d->snap.virtual_size, b->copy.timeout);
  CLEANUP_FREE char *host = NULL;
  char mine[33];
  bool ok = false;

  if (p == NULL || f == NULL)
    err_set (ENOENT, "cannot verify (%s); the snapshot keeps its data",
             cat ? "not in the store" : err_get ());
  else if (verify_point_md5 (p->layer, f, mine) == -1)
    err_prefix ("cannot verify (the snapshot keeps its data)");
  else if ((host = xapi_vdi_checksum (b->xs, d->snap_ref, wait)) == NULL)
    err_prefix ("cannot verify (the snapshot keeps its data)");
  else if (strcasecmp (mine, host) != 0) {
    if (verdict_record (b->store, d->live.uuid, d->snap.uuid, VERDICT_DIFFERS) == -1)
      log_warn ("%s: %s", d->label, err_get ());
    err_set (EIO, "the stored image differs from the host's (md5 %s, the "
             "host says %s); the snapshot keeps its data until cbtfs "
             "verify --server finds them equal or cbtfs verify --accept "
             "lets it go", mine, host);
  }
  else if (verdict_record (b->store, d->live.uuid, d->snap.uuid, VERDICT_MATCH) == -1)
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

static int
backup_vm (struct backup *b, const struct xapi_vm *vm)
{
  struct disk *v = NULL;
  size_t n = 0, i, ok = 0;
  char *snap_vm = NULL;
  CLEANUP_FREE char *vmname = catalog_safe_name (vm->name);
  double snapped = 0;
  bool vm_snap_gone = true;
  int failures = 0;

  if (vmname == NULL)
    return 1;
  if (find_disks (b, vm, &v, &n) == -1) {
    log_error ("VM '%s': %s", vmname, err_get ());
    return 1;
  }
  if (n == 0) {
    log_info ("VM '%s' has no disks to back up", vmname);
    free (v);
    return 0;
  }
  /* Leftovers go first: a VM snapshot an interrupted run left holds
   * VBDs that would make finishing its layers end in VDI_IN_USE. */
  for (i = 0; i < n; i++)
    v[i].prepared = store_disk_prepare (b->store, v[i].live.uuid) == 0;
  remove_leftovers (b, vm, v, n);
  for (i = 0; i < n; i++)
    if (prepare_disk (b, &v[i]) == -1)
      disk_failed (&v[i]);
    else
      ok++;
  if (ok == 0)
    goto out;
  if (take_snapshots (b, vm, v, n, &snap_vm) == -1) {
    log_error ("VM '%s': snapshot failed: %s", vmname, err_get ());
    for (i = 0; i < n; i++)
      v[i].failed = true;
    goto cleanup;
  }
  snapped = now_monotonic ();
  for (i = 0; i < n; i++)
    if (!v[i].failed && describe_layer (b, vm, &v[i]) == -1)
      disk_failed (&v[i]);
  /* The VM snapshot object holds VBDs to the snapshots, which would
   * block data_destroy; its VDIs outlive it. */
  vm_snap_gone = destroy_snap_vm (b, &snap_vm, vmname);
  for (i = 0; i < n; i++) {
    struct disk *d = &v[i];
    if (d->failed || d->layer == NULL)
      continue;
    if (b->no_copy) {
      log_info ("%s: snapshot %s recorded; its data stays on the host "
                "(mount with --server to read it, cbtfs fetch to copy it)",
                d->label, d->snap.uuid);
      continue;
    }
    if (fill_layer (b, d->layer, d->snap_ref, d->label) == -1) {
      disk_failed (d);
      log_info ("%s: the snapshot keeps its data; the next backup copies "
                "only what is missing", d->label);
      continue;
    }
    if (layer_complete (d->layer) && vm_snap_gone
        && (!b->verify || verified (b, d)))
      cli_data_destroy (b->xs, b->store, d->live.uuid, d->snap_ref,
                        d->snap.uuid);
    log_info ("%s: done %.3f s after the snapshot", d->label,
              now_monotonic () - snapped);
  }

 cleanup:
  destroy_snap_vm (b, &snap_vm, vmname);
  /* A snapshot no layer describes would only leak space on the host;
   * destroying it folds its CBT log into the next one (xapi-cbt.md §5). */
  for (i = 0; i < n; i++)
    if (v[i].snap_ref && v[i].layer == NULL && unrecorded (b->store, &v[i])
        && xapi_vdi_destroy (b->xs, v[i].snap_ref) == -1)
      log_warn ("%s: could not remove the unused snapshot: %s", v[i].label,
                err_get ());
 out:
  for (i = 0; i < n; i++) {
    failures += v[i].failed || v[i].resume_failed;
    disk_clear (&v[i]);
  }
  free (v);
  return failures ? 1 : 0;
}

/* ---- which VMs -------------------------------------------------------- */

/* A real VM (not a template, snapshot or dom0) that ARG names. */
static bool
matches (const char *arg, const struct xapi_vm *vm)
{
  if (vm->is_a_template || vm->is_a_snapshot || vm->is_control_domain)
    return false;
  return arg == NULL || strcmp (arg, vm->uuid) == 0
    || strcmp (arg, vm->name) == 0;
}

static bool
wanted (const struct backup *b, const struct xapi_vm *vm)
{
  if (b->nvm_args == 0)
    return matches (NULL, vm);
  for (size_t i = 0; i < b->nvm_args; i++)
    if (matches (b->vm_args[i], vm))
      return true;
  return false;
}

static int
run (struct backup *b)
{
  struct xapi_vm *vms = NULL;
  size_t n, i, j;
  int status = 0;

  if (xapi_vm_get_all (b->xs, &vms, &n) == -1)
    return cli_fail ();
  for (j = 0; j < b->nvm_args; j++) {
    bool found = false;
    for (i = 0; i < n; i++)
      found |= matches (b->vm_args[j], &vms[i]);
    if (!found) {
      err_set (ENOENT, "--vm %s: no VM has that name or uuid", b->vm_args[j]);
      xapi_vms_free (vms, n);
      return cli_fail ();
    }
  }
  for (i = 0; i < n; i++)
    if (wanted (b, &vms[i]) && backup_vm (b, &vms[i]) != 0)
      status = 1;
  xapi_vms_free (vms, n);
  return status;
}

int
cmd_backup (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "vm", required_argument, NULL, 'm' },
    { "nbd-connections", required_argument, NULL, 'n' },
    { "no-copy", no_argument, NULL, 'N' },
    { "verify", no_argument, NULL, 'V' },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct server_opts so = CLI_SERVER_OPTS_INIT;
  struct backup b = {
    .copy = { .conns = 4, .request_blocks = 16, .depth = 4,
              .retries = 4 },
  };
  /* From cron: only warnings and errors; on a terminal: what it does. */
  int c, r, verbose = isatty (STDERR_FILENO) ? 1 : 0, status = 2;
  char *end;

  b.vm_args = calloc (argc, sizeof *b.vm_args);
  if (b.vm_args == NULL)
    return 1;
  while ((c = getopt_long (argc, argv, "qvh", longopts, NULL)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        goto out;
      continue;
    }
    switch (c) {
    case 'm': b.vm_args[b.nvm_args++] = optarg; break;
    case 'n':
      b.copy.conns = strtoul (optarg, &end, 10);
      if (*end || b.copy.conns < 1 || b.copy.conns > 16) {
        log_error ("--nbd-connections must be 1 to 16 (XenServer's limit)");
        goto out;
      }
      break;
    case 'N': b.no_copy = true; break;
    case 'V': b.verify = true; break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': cli_usage ("backup"); status = 0; goto out;
    default: cli_usage ("backup"); goto out;
    }
  }
  log_set_verbose (verbose);
  if (optind + 1 != argc) {
    cli_usage ("backup");
    goto out;
  }
  b.copy.timeout = so.timeout;
  b.copy.progress = verbose >= 1 && isatty (STDERR_FILENO);

  status = 1;
  b.store = store_open (argv[optind], true);
  if (b.store == NULL || store_lock (b.store) == -1) {
    cli_fail ();
    goto out;
  }
  snprintf (b.snap_name, sizeof b.snap_name, "%s %s", SNAP_NAME, b.store->id);
  if (xapi_global_init () == -1) {
    cli_fail ();
    goto out;
  }
  b.xs = cli_login (&so);
  if (b.xs == NULL)
    cli_fail ();
  else {
    status = run (&b);
    xapi_logout (b.xs);
  }
  xapi_global_cleanup ();
 out:
  store_close (b.store);
  free (b.vm_args);
  return status;
}
