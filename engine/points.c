/* cbtfs engine: finding points in time in a store.
 *
 * Thread model: see points.h (no shared state).
 */
#include <errno.h>
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

/* Split PATH at '/' into at most N components of COPY (a copy of PATH
 * the caller frees), skipping empty ones; how many, or N + 1 if more. */
static size_t
split_path (const char *path, char **copy, char **parts, size_t n)
{
  size_t k = 0;
  char *save = NULL, *c;

  *copy = strdup (path);
  if (*copy == NULL)
    return 0;
  for (c = strtok_r (*copy, "/", &save); c; c = strtok_r (NULL, "/", &save)) {
    if (k == n)
      return n + 1;
    parts[k++] = c;
  }
  return k;
}

/* The point of D whose tree name is NAME ("TIME.img" or "latest"). */
static struct catalog_point *
point_named (const struct catalog_disk *d, const char *name)
{
  size_t len = strlen (name);

  if (d->npoints == 0)
    return NULL;
  if (strcmp (name, "latest") == 0)
    return &d->points[d->npoints - 1];
  if (len < 4 || strcmp (name + len - 4, ".img") != 0)
    return NULL;
  for (size_t i = 0; i < d->npoints; i++)
    if (strlen (d->points[i].name) == len - 4 &&
        memcmp (d->points[i].name, name, len - 4) == 0)
      return &d->points[i];
  return NULL;
}

/* "by-vm/VM/DISK/NAME": folder names only, as the tree shows them. */
static struct catalog_point *
find_by_vm (const struct catalog *c, char **parts, struct catalog_disk **disk)
{
  for (size_t i = 0; i < c->nvms; i++) {
    const struct catalog_vm *vm = &c->vms[i];
    if (strcmp (vm->name, parts[0]) != 0)
      continue;
    for (size_t j = 0; j < vm->ndisks; j++)
      if (strcmp (vm->disks[j]->name, parts[1]) == 0) {
        *disk = vm->disks[j];
        return point_named (vm->disks[j], parts[2]);
      }
  }
  return NULL;
}

/* "by-uuid/DISK/SNAPSHOT.img". */
static struct catalog_point *
find_by_uuid (const struct catalog *c, char **parts,
              struct catalog_disk **disk)
{
  size_t len = strlen (parts[1]);
  struct catalog_point *p;
  char snap[UUID_LEN + 1];

  if (len != UUID_LEN + 4 || strcmp (parts[1] + UUID_LEN, ".img") != 0)
    return NULL;
  memcpy (snap, parts[1], UUID_LEN);
  snap[UUID_LEN] = '\0';
  p = catalog_find (c, snap, disk);
  return p && strcmp ((*disk)->uuid, parts[0]) == 0 ? p : NULL;
}

struct catalog_point *
engine_point_find (const struct catalog *c, const char *point,
                   struct catalog_disk **disk)
{
  CLEANUP_FREE char *copy = NULL;
  struct catalog_disk *d = NULL;
  struct catalog_point *p = NULL;
  char *parts[4];
  size_t n;

  if (strchr (point, '/') == NULL)
    return catalog_find (c, point, disk);
  n = split_path (point, &copy, parts, 4);
  if (n == 4 && strcmp (parts[0], "by-vm") == 0)
    p = find_by_vm (c, parts + 1, &d);
  else if (n == 3 && strcmp (parts[0], "by-uuid") == 0)
    p = find_by_uuid (c, parts + 1, &d);
  if (p && disk)
    *disk = d;
  return p;
}

void
engine_filling_end (struct store *s, const char *disk, const char *snapshot)
{
  char msg[1024];
  int e = errno;

  snprintf (msg, sizeof msg, "%s", err_get ());
  if (store_filling_end (s, disk, snapshot) == -1)
    log_warn ("snapshot %s: %s (mounts show it once the next backup, "
              "prune or copy has taken the store's lock)", snapshot,
              err_get ());
  err_set (e, "%s", msg);
}
