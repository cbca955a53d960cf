/* cbtfs engine: prune's plan (prune.h).
 *
 * Thread model: see prune.h (no shared state).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../chain/read.h"
#include "../chain/verdict.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "points.h"
#include "prune.h"

/* Tell the policy what it needs of each point of D into PTS (as
 * d->points). */
static void
describe_points (const struct catalog_disk *d, struct retention_point *pts)
{
  struct verdicts vs;

  engine_load_verdicts (d, &vs);
  for (size_t i = 0; i < d->npoints; i++) {
    struct layer *l = d->points[i].layer, *parent = layer_parent (l);
    const bool held = verdict_holds (verdicts_of (&vs,
                                                  layer_meta (l)->snapshot));
    const bool complete = layer_complete (l);
    bool chain_ok;

    /* chain_readable walks the whole chain; a point's parent is almost
     * always the point before it, whose answer we have, so a disk of
     * thousands of nightly points costs one walk, not thousands.  (The
     * answer for the point before excludes held points, so ask again
     * when it was held.) */
    if (i > 0 && parent == d->points[i - 1].layer && !pts[i - 1].host_only)
      chain_ok = complete && !layer_parent_missing (l) && pts[i - 1].readable;
    else
      chain_ok = chain_readable (l);
    pts[i] = (struct retention_point) {
      .time = layer_meta (l)->time,
      .seq = layer_meta (l)->seq,
      .readable = chain_ok && !held,
      .host_only = !complete || held,
    };
  }
  verdicts_free (&vs);
}

int
engine_prune_plan (const struct catalog *c, const struct retention_policy *p,
                   const char *const *vms, size_t nvms, int64_t now,
                   struct engine_prune_plan **out)
{
  CLEANUP_FREE bool *wanted = calloc (c->nvms ? c->nvms : 1, sizeof *wanted);
  struct engine_prune_plan *plan = NULL;
  size_t ndisks = 0;

  if (wanted == NULL)
    goto nomem;
  for (size_t j = 0; j < nvms; j++) {
    bool found = false;
    for (size_t i = 0; i < c->nvms; i++)
      if (engine_vm_named (&c->vms[i], vms[j]))
        wanted[i] = found = true;
    if (!found) {
      err_set (ENOENT, "--vm %s: no VM of that name or uuid in the store",
               vms[j]);
      return -1;
    }
  }
  for (size_t i = 0; i < c->nvms; i++)
    if (nvms == 0 || wanted[i])
      ndisks += c->vms[i].ndisks;

  plan = calloc (1, sizeof *plan);
  if (plan == NULL
      || (plan->disks = calloc (ndisks ? ndisks : 1,
                                sizeof *plan->disks)) == NULL)
    goto nomem;
  for (size_t i = 0; i < c->nvms; i++) {
    if (nvms && !wanted[i])
      continue;
    for (size_t j = 0; j < c->vms[i].ndisks; j++) {
      const struct catalog_disk *d = c->vms[i].disks[j];
      struct engine_prune_disk *pd;

      if (d->npoints == 0)
        continue;
      pd = &plan->disks[plan->ndisks++];
      pd->disk = d;
      pd->points = calloc (d->npoints, sizeof *pd->points);
      if (pd->points == NULL)
        goto nomem;
      describe_points (d, pd->points);
      if (retention_apply (p, now, pd->points, d->npoints) == -1)
        goto fail;
      pd->reference = retention_reference (pd->points, d->npoints, now);
      for (size_t k = 0; k < d->npoints; k++) {
        if (pd->points[k].keep)
          plan->kept++;
        else
          plan->dropped++;
      }
    }
  }
  *out = plan;
  return 0;

 nomem:
  err_sys (ENOMEM, "prune");
 fail:
  engine_prune_plan_free (plan);
  return -1;
}

void
engine_prune_plan_free (struct engine_prune_plan *plan)
{
  if (plan == NULL)
    return;
  for (size_t i = 0; i < plan->ndisks; i++)
    free (plan->disks[i].points);
  free (plan->disks);
  free (plan);
}
