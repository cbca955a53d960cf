/* cbtfs engine: prune, the points of a store that a retention policy
 * (retention.h) keeps, disk by disk.
 *
 * The plan (engine_prune_plan) reads the catalog and the disks'
 * verdicts and changes nothing: it is what `cbtfs prune --dry-run`
 * reports.  engine_prune_run then drops the points the plan drops,
 * oldest first, each folded into the point after it (chain/fold.h)
 * under a journal that engine_prune_resume finishes after a crash
 * (prune-run.c).
 *
 * What the policy is told of each point:
 * - readable: the point reads wholly from the store (chain_readable)
 *   and no check holds it (verdict_holds): the point the "newest" rule
 *   keeps must be one that restores without the host.
 * - host_only: its layer is not complete (an interrupted copy, or
 *   --no-copy: the snapshot still holds what the store lacks), or a
 *   check holds it (the snapshot keeps its data until a check passes).
 *   Either way the host's snapshot may hold the only good copy.
 *
 * Thread model: no shared state; the plan belongs to the caller and
 * borrows from the catalog, which must outlive it.
 */
#ifndef CBTFS_ENGINE_PRUNE_H
#define CBTFS_ENGINE_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../chain/catalog.h"
#include "../chain/fold.h"
#include "../xapi/session.h"
#include "retention.h"

struct engine_prune_disk {
  const struct catalog_disk *disk;      /* borrowed from the catalog */
  struct retention_point *points;       /* as disk->points, oldest first */
  int64_t reference;                    /* keep-within's newest point, or
                                         * INT64_MIN (retention.h) */
};

struct engine_prune_plan {
  struct engine_prune_disk *disks;      /* in the tree's order: VMs
                                         * oldest first, then their disks */
  size_t ndisks;
  size_t kept, dropped;                 /* points, over all disks */
};

/* Decide under P every point of the disks of C that belong to a VM
 * named in VMS (NVMS entries, each a VM's folder name in the tree or
 * its uuid; every VM when NVMS is 0), with NOW the current time
 * (retention_apply).  0 with *OUT (caller frees with
 * engine_prune_plan_free), or -1 with err_*: errno ENOENT when an
 * entry of VMS names no VM of C (the message names it), ENOMEM. */
extern int engine_prune_plan (const struct catalog *c,
                              const struct retention_policy *p,
                              const char *const *vms, size_t nvms,
                              int64_t now, struct engine_prune_plan **out)
  __attribute__ ((__nonnull__ (1, 2, 6)));

/* Free PLAN (not the catalog it borrows from); NULL is a no-op. */
extern void engine_prune_plan_free (struct engine_prune_plan *plan);

/* What engine_prune_run did, over all disks. */
struct engine_prune_result {
  size_t dropped;               /* points gone */
  size_t merged;                /* of them, folded into the next point */
  size_t failed;                /* points the plan dropped that stay */
  uint64_t blocks_written;
  uint64_t bytes_freed;
  size_t host_removed;          /* dropped points' snapshots destroyed */
};

/* Called by engine_prune_run after each point PT of disk D it tried to
 * drop: with ST when it went, with WHY (one line) when it stays. */
typedef void (*engine_prune_cb) (void *opaque, const struct catalog_disk *d,
                                 const struct catalog_point *pt,
                                 const struct fold_stats *st,
                                 const char *why);

/* Finish every drop an interrupted prune left pending in S (its
 * journal), before anything else changes a chain: a prune's and a
 * copy's first step once they hold the store lock (a backup's is
 * engine_prune_resume_disk).  *FINISHED counts
 * them.  0, or -1 with err_* when one could not be finished (each
 * logged; the next run tries again). */
extern int engine_prune_resume (struct store *s, size_t *finished)
  __attribute__ ((__nonnull__ (1, 2)));

/* engine_prune_resume of DISK alone, for its holder (store_disk_lock):
 * a backup finishes them before the disk's chain grows.  Logs each
 * drop it could not finish. */
extern int engine_prune_resume_disk (struct store *s, const char *disk,
                                     size_t *finished)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* The snapshots whose drop an interrupted prune left pending. */
struct engine_pending {
  char (*snap)[UUID_LEN + 1];   /* malloc'd (free it), or NULL */
  size_t n;
  size_t lines;                 /* the journal's lines, pending or not */
};

/* Those of DISK, as its journal says, into *P.  Such a point may fail
 * its checks until the next prune or backup finishes the drop.  0, or
 * -1 with err_*. */
extern int engine_prune_pending (struct store *s, const char *disk,
                                 struct engine_pending *p)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Whether SNAP is one of P's. */
extern bool engine_pending_has (const struct engine_pending *p,
                                const char *snap)
  __attribute__ ((__nonnull__ (1, 2)));

/* Drop the points PLAN drops from S, the store its catalog was read
 * from (locked by the caller since before the catalog was read),
 * upgrading S to format 2 first, and with a session XS (or NULL) their
 * snapshots on the host (engine_destroy_dropped; a failure there is a
 * warning).  A point that cannot go (its layer is incomplete and the
 * next point needs it, a mount keeps filling it…) stays, and the
 * others still go.  0, or -1 when some stayed (each told to CB, with
 * RES filled either way). */
extern int engine_prune_run (struct store *s, xapi_session *xs,
                             const struct engine_prune_plan *plan,
                             engine_prune_cb cb, void *opaque,
                             struct engine_prune_result *res)
  __attribute__ ((__nonnull__ (1, 3, 6)));

#endif /* CBTFS_ENGINE_PRUNE_H */
