/* cbtfs engine: prune's execution, and its journal (prune.h).
 *
 * A point goes by fold_drop (chain/fold.h), which may change the
 * dropped layer's own blocks before it is gone: so before a drop
 * starts, a line "<snapshot> <time> drop <check>" is appended durably
 * to the disk's note "prune", and "done" (or "kept": it failed before
 * changing anything) follows it.  A drop with neither after it was
 * interrupted; the next prune or backup, holding the store lock,
 * finishes it before anything else (engine_prune_resume).  A disk's
 * note is emptied once nothing in it is pending.
 *
 * Thread model: one thread (prune.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../chain/fold.h"
#include "../chain/layer-meta.h"
#include "../chain/noteline.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "hostclean.h"
#include "prune.h"

#define JOURNAL "prune"
#define JOURNAL_MAX (64 * 1024 * 1024)

/* How long a drop waits for a process filling its layers (a mount
 * fetching gives a layer back within about two seconds of idling). */
#define FILL_WAIT 10.0

/* The place of SNAP in P, or P->n. */
static size_t
pending_find (const struct engine_pending *p, const char *snap)
{
  size_t i;

  for (i = 0; i < p->n; i++)
    if (strcmp (p->snap[i], snap) == 0)
      break;
  return i;
}

bool
engine_pending_has (const struct engine_pending *p, const char *snap)
{
  return pending_find (p, snap) < p->n;
}

static int
take_line (void *opaque, const struct noteline *l)
{
  struct engine_pending *p = opaque;
  size_t i = pending_find (p, l->snapshot);

  p->lines++;
  if (strcmp (l->word, "drop") == 0) {
    if (i == p->n) {
      void *nv = realloc (p->snap, (p->n + 1) * sizeof *p->snap);
      if (nv == NULL) {
        err_set (ENOMEM, "out of memory");
        return -1;
      }
      p->snap = nv;
      memcpy (p->snap[p->n++], l->snapshot, UUID_LEN + 1);
    }
  }
  else if (i < p->n)            /* "done" or "kept" */
    memmove (p->snap[i], p->snap[i + 1], (--p->n - i) * sizeof *p->snap);
  return 0;
}

int
engine_prune_pending (struct store *s, const char *disk,
                      struct engine_pending *p)
{
  p->snap = NULL;
  p->n = p->lines = 0;
  if (noteline_each (s, disk, JOURNAL, JOURNAL_MAX, take_line, p) == -1) {
    free (p->snap);
    p->snap = NULL;
    return -1;
  }
  return 0;
}

/* The one layer of DISK whose manifest names PARENT, into CHILD ("" if
 * none).  -1 with err_* when there are several (a fork prune cannot
 * fold) or the layers cannot be listed. */
static int
child_in_store (struct store *s, const char *disk, const char *parent,
                char child[UUID_LEN + 1])
{
  char **names;
  size_t n, found = 0;

  child[0] = '\0';
  if (store_list (s, disk, &names, &n) == -1)
    return -1;
  for (size_t i = 0; i < n; i++) {
    CLEANUP_FREE char *text = NULL;
    struct layer_meta m;
    size_t len;

    text = store_manifest_read (s, disk, names[i], 1 << 20, &len);
    if (text == NULL || layer_meta_parse (text, len, &m) == -1)
      continue;
    if (strcmp (m.parent, parent) == 0) {
      memcpy (child, m.snapshot, UUID_LEN + 1);
      found++;
    }
    layer_meta_clear (&m);
  }
  store_names_free (names, n);
  if (found > 1) {
    err_set (EINVAL, "snapshot %s has %zu layers built on it; prune "
             "cannot fold it", parent, found);
    return -1;
  }
  return 0;
}

/* Say WORD ("drop", "done", "kept") about SNAP in DISK's journal. */
static int
journal (struct store *s, const char *disk, const char *snap,
         const char *word, bool durable)
{
  return noteline_append (s, disk, JOURNAL, snap, time (NULL), word, durable);
}

/* Drop layer SNAP of DISK under the journal; CHILD as fold_drop's. */
static int
drop_journalled (struct store *s, const char *disk, const char *snap,
                 const char *child, struct fold_stats *st)
{
  if (journal (s, disk, snap, "drop", true) == -1)
    return -1;
  if (fold_drop (s, disk, snap, child, FILL_WAIT, st) == -1) {
    CLEANUP_FREE char *why = strdup (err_get ());
    int err = errno;
    /* Nothing changed yet: the point stays as it was, not pending. */
    if (!st->started)
      journal (s, disk, snap, "kept", false);
    err_set (err, "%s", why ? why : "out of memory");
    return -1;
  }
  /* Not durable: a lost "done" makes the next run find the layer gone
   * and say it again. */
  journal (s, disk, snap, "done", false);
  return 0;
}

/* Empty DISK's journal when nothing in it is pending. */
static void
journal_tidy (struct store *s, const char *disk)
{
  struct engine_pending p;

  if (engine_prune_pending (s, disk, &p) == 0 && p.n == 0
      && store_note_replace (s, disk, JOURNAL, "", 0) == -1)
    log_warn ("%s", err_get ());
  free (p.snap);
}

int
engine_prune_resume_disk (struct store *s, const char *disk,
                          size_t *finished)
{
  struct engine_pending p;
  int ret = 0;

  if (engine_prune_pending (s, disk, &p) == -1)
    return -1;
  for (size_t i = 0; i < p.n; i++) {
    char child[UUID_LEN + 1];
    struct fold_stats st;
    int there = store_has_layer (s, disk, p.snap[i]);

    if (there == 0) {
      journal (s, disk, p.snap[i], "done", false);
      continue;
    }
    if (there == -1
        || child_in_store (s, disk, p.snap[i], child) == -1
        || fold_drop (s, disk, p.snap[i], child[0] ? child : NULL,
                      FILL_WAIT, &st) == -1) {
      log_error ("finishing an interrupted prune of snapshot %s: %s",
                 p.snap[i], err_get ());
      ret = -1;
      continue;
    }
    journal (s, disk, p.snap[i], "done", false);
    (*finished)++;
  }
  /* Also a journal whose drops were all done: a kill came between the
   * last one's line and the journal's removal. */
  if (p.lines > 0 && ret == 0)
    journal_tidy (s, disk);
  free (p.snap);
  return ret;
}

int
engine_prune_resume (struct store *s, size_t *finished)
{
  char **disks;
  size_t n;
  int ret = 0;

  *finished = 0;
  if (store_list (s, NULL, &disks, &n) == -1)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (engine_prune_resume_disk (s, disks[i], finished) == -1)
      ret = -1;
  store_names_free (disks, n);
  if (ret == -1)
    err_set (EIO, "an interrupted prune could not be finished (see above)");
  return ret;
}

/* The point of PD whose layer's parent is SNAP now (PARENTS: each
 * point's parent as the drops so far left it), or -1 (none); -2 when
 * there are several. */
static ssize_t
child_of (const struct engine_prune_disk *pd, char (*parents)[UUID_LEN + 1],
          const char *snap)
{
  ssize_t found = -1;

  for (size_t k = 0; k < pd->disk->npoints; k++)
    if (strcmp (parents[k], snap) == 0) {
      if (found >= 0)
        return -2;
      found = k;
    }
  return found;
}

/* Point SNAP of disk DISK is gone from the store: remove its snapshot
 * from the host through XS, or, without a session, say what may stay
 * there (a snapshot holding data: HOST_ONLY). */
static void
drop_on_host (xapi_session *xs, const char *disk, const char *snap,
              bool host_only, struct engine_prune_result *res)
{
  bool removed;

  if (xs == NULL) {
    if (host_only)
      log_warn ("snapshot %s: its point is dropped, but its snapshot on "
                "the host may still hold its data; remove it there (xe "
                "vdi-destroy uuid=%s), or prune with --server", snap, snap);
    return;
  }
  if (engine_destroy_dropped (xs, disk, snap, &removed) == -1)
    log_warn ("snapshot %s: its point is dropped, but removing its snapshot "
              "from the host failed (%s); remove it there (xe vdi-destroy "
              "uuid=%s)", snap, err_get (), snap);
  else if (removed) {
    log_debug ("snapshot %s: removed from the host", snap);
    res->host_removed++;
  }
}

static int
run_disk (struct store *s, xapi_session *xs, const struct engine_prune_disk *pd,
          engine_prune_cb cb, void *opaque, struct engine_prune_result *res)
{
  const struct catalog_disk *d = pd->disk;
  CLEANUP_FREE char (*parents)[UUID_LEN + 1] =
    calloc (d->npoints ? d->npoints : 1, sizeof *parents);
  size_t drops = 0;
  int ret = 0;

  for (size_t k = 0; k < d->npoints; k++)
    drops += !pd->points[k].keep;
  if (drops == 0)
    return 0;
  if (parents == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (size_t k = 0; k < d->npoints; k++)
    memcpy (parents[k], layer_meta (d->points[k].layer)->parent,
            sizeof *parents);
  /* Names the tree gave stay when points beside them go. */
  if (catalog_record_names (d) == -1) {
    err_prefix ("disk %s: recording its points' names", d->uuid);
    return -1;
  }
  for (size_t k = 0; k < d->npoints; k++) {
    const char *snap = layer_meta (d->points[k].layer)->snapshot;
    struct fold_stats st = { .merged = false };
    ssize_t child;
    int r;

    if (pd->points[k].keep)
      continue;
    child = child_of (pd, parents, snap);
    if (child == -2) {
      err_set (EINVAL, "snapshot %s has several layers built on it; prune "
               "cannot fold it", snap);
      r = -1;
    }
    else
      r = drop_journalled (s, d->uuid, snap,
                           child >= 0
                           ? layer_meta (d->points[child].layer)->snapshot
                           : NULL, &st);
    if (r == 0) {
      drop_on_host (xs, d->uuid, snap, pd->points[k].host_only, res);
      if (child >= 0)
        memcpy (parents[child], parents[k], sizeof *parents);
      parents[k][0] = '\0';
      res->dropped++;
      res->merged += st.merged;
      res->blocks_written += st.blocks_written;
      res->bytes_freed += st.bytes_freed;
    }
    else {
      res->failed++;
      ret = -1;
    }
    if (cb)
      cb (opaque, d, &d->points[k], r == 0 ? &st : NULL,
          r == 0 ? NULL : err_get ());
  }
  journal_tidy (s, d->uuid);
  return ret;
}

int
engine_prune_run (struct store *s, xapi_session *xs,
                  const struct engine_prune_plan *plan,
                  engine_prune_cb cb, void *opaque,
                  struct engine_prune_result *res)
{
  int ret = 0;

  memset (res, 0, sizeof *res);
  if (plan->dropped == 0)
    return 0;
  /* Replacing layers is format 2's: older cbtfs must not read on. */
  if (store_upgrade (s) == -1)
    return -1;
  for (size_t i = 0; i < plan->ndisks; i++)
    if (run_disk (s, xs, &plan->disks[i], cb, opaque, res) == -1)
      ret = -1;
  return ret;
}
