/* cbtfs engine: prune, the points of a store that a retention policy
 * (retention.h) keeps, disk by disk.
 *
 * Today this is the plan alone, what `cbtfs prune --dry-run` reports:
 * it reads the catalog and the disks' verdicts and changes nothing.
 * Removing the points it drops (merging their layers) comes later, on
 * top of the same plan.
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

#include <stddef.h>
#include <stdint.h>

#include "../chain/catalog.h"
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

#endif /* CBTFS_ENGINE_PRUNE_H */
