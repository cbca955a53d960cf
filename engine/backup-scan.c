/* cbtfs engine: what the store already has for a disk, and what this
 * run builds on: finish incomplete layers whose snapshot still has its
 * data, find the newest layer, and decide baseline or delta.
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

#include "../chain/manifests.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "backup-int.h"
#include "snapshot.h"

/* What became of an incomplete layer this run tried to finish. */
enum resume {
  RESUME_DONE,                  /* complete now */
  RESUME_PENDING,               /* still incomplete; the host keeps its data */
  RESUME_LOST,                  /* its snapshot has no data left: never */
};

/* Finish an incomplete layer whose snapshot still has data. */
static enum resume
resume_layer (struct backup *b, struct disk *d,
              const char *snap, bool lazy)
{
  CLEANUP_FREE char *ref = engine_snapshot_with_data (b->xs, snap);
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
    backup_disk_error (d);
    d->resume_failed = true;
    return RESUME_PENDING;
  }
  log_info ("%s: finishing snapshot %s left incomplete by an earlier run",
            d->label, snap);
  if (backup_fill_layer (b, d, l, ref) == -1) {
    backup_disk_error (d);
    d->resume_failed = true;
  }
  else if (layer_complete (l)) {
    engine_data_destroy (b->xs, b->store, d->live.uuid, ref, snap);
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
    d->max_seq = MAX (d->max_seq, layer_meta (l)->seq);
    memcpy (links[nlinks].snapshot, layer_meta (l)->snapshot, UUID_LEN + 1);
    memcpy (links[nlinks++].parent, layer_meta (l)->parent, UUID_LEN + 1);
    r = layer_complete (l) ? RESUME_DONE
      : resume_layer (b, d, snaps[i], layer_meta (l)->lazy);
    if (r == RESUME_DONE)
      d->last_complete = MAX (d->last_complete, layer_meta (l)->time);
    if (layer_meta (l)->seq > newest) {
      newest = layer_meta (l)->seq;
      layer_meta_clear (&d->prev);
      /* A delta may build on a layer not yet finished while the host
       * keeps its snapshot's data (a later run finishes it): a flaky
       * night must not cost a full copy.  A lost one needs a baseline. */
      d->have_prev = r != RESUME_LOST
        && meta_copy (&d->prev, layer_meta (l)) == 0;
      /* Only cbtfs fetch reduces a --no-copy snapshot (it may be kept). */
      prev_complete = r == RESUME_DONE && !layer_meta (l)->lazy;
    }
    layer_close (l);
  }
  if (d->have_prev)
    held_in_chain (b->store, d, links, nlinks);
  if (d->have_prev && prev_complete) {
    /* A crash between commit and data_destroy leaves the newest
     * snapshot holding data the store already has. */
    CLEANUP_FREE char *ref = engine_snapshot_with_data (b->xs,
                                                        d->prev.snapshot);
    if (ref)
      engine_data_destroy (b->xs, b->store, d->live.uuid, ref,
                           d->prev.snapshot);
  }
  ret = 0;
 out:
  store_names_free (snaps, n);
  return ret;
}

/* Decide baseline or delta, and make sure CBT is on. */
int
backup_prepare_disk (struct backup *b, struct disk *d)
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
