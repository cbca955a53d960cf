/* cbtfs engine: finding points in time in a store.
 *
 * Thread model: see points.h (no shared state).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../chain/store/store.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "points.h"

struct catalog *
engine_catalog (const char *path, unsigned flags)
{
  return catalog_open (path, flags);
}

void
engine_load_verdicts (const struct catalog_disk *d, struct verdicts *vs)
{
  vs->v = NULL;
  vs->n = 0;
  if (d->npoints && verdicts_load (layer_store (d->points[0].layer), d->uuid,
                                   vs) == -1)
    log_warn ("%s", err_get ());
}

bool
engine_vm_named (const struct catalog_vm *vm, const char *name)
{
  return strcmp (vm->name, name) == 0 || strcasecmp (vm->uuid, name) == 0;
}

bool
engine_disk_named (const struct catalog_disk *d, const char *name)
{
  return strcmp (d->name, name) == 0 || strcasecmp (d->uuid, name) == 0;
}

char *
engine_point_label (const struct catalog_disk *d,
                    const struct catalog_point *p)
{
  char *s;

  if (asprintf (&s, "by-vm/%s/%s/%s.img", d->vm->name, d->name, p->name) == -1)
    return NULL;
  return s;
}
