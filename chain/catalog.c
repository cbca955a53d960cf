/* cbtfs: what a store holds, as people browse it.
 *
 * Thread model: see catalog.h (single-threaded build, then read-only).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "catalog.h"

#define NAME_MAX_BYTES 200

char *
catalog_safe_name (const char *name)
{
  size_t n = strlen (name), i, cut;
  char *out;

  if (n == 0)
    return strdup ("unnamed");
  cut = n > NAME_MAX_BYTES ? NAME_MAX_BYTES : n;
  /* Back off continuation bytes so a multi-byte character is not split. */
  if (cut < n)
    while (cut > 0 && ((unsigned char) name[cut] & 0xC0) == 0x80)
      cut--;
  out = malloc (cut + 2);
  if (out == NULL)
    return NULL;
  if (strncmp (name, ".", cut) == 0 || strncmp (name, "..", cut) == 0) {
    out[0] = '_';
    memcpy (out + 1, name, cut);
    out[cut + 1] = '\0';
    return out;
  }
  for (i = 0; i < cut; i++) {
    unsigned char c = name[i];
    out[i] = (c == '/' || c < 0x20 || c == 0x7f) ? '_' : c;
  }
  out[cut] = '\0';
  return out;
}

void
catalog_time_name (int64_t t, char *buf, size_t len)
{
  time_t tt = t;
  struct tm tm;

  if (gmtime_r (&tt, &tm) == NULL)
    snprintf (buf, len, "time-%" PRId64, t);
  else
    strftime (buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Give NAMES[i] (for i < n, in priority order) unique values by adding
 * ".2", ".3", … to later duplicates.  Each entry is replaced in place. */
static int
uniquify (char **names, size_t n)
{
  for (size_t i = 1; i < n; i++) {
    unsigned k = 2;
    bool clash;
    do {
      clash = false;
      for (size_t j = 0; j < i; j++)
        if (strcmp (names[i], names[j]) == 0) {
          clash = true;
          break;
        }
      if (clash) {
        char *base = names[i], *nn;
        /* Strip a suffix this loop added, so we get "a.3" not "a.2.3". */
        if (k > 2) {
          char *dot = strrchr (base, '.');
          if (dot)
            *dot = '\0';
        }
        if (asprintf (&nn, "%s.%u", base, k++) == -1)
          return -1;
        free (base);
        names[i] = nn;
      }
    } while (clash);
  }
  return 0;
}

/* Order of points: snapshot time, then the disk's sequence number. */
static int
cmp_layer_age (const struct layer *x, const struct layer *y)
{
  if (x->meta.time != y->meta.time)
    return x->meta.time < y->meta.time ? -1 : 1;
  return x->meta.seq < y->meta.seq ? -1 : x->meta.seq > y->meta.seq;
}

static int
cmp_point (const void *a, const void *b)
{
  return cmp_layer_age (((const struct catalog_point *) a)->layer,
                        ((const struct catalog_point *) b)->layer);
}

/* Link each layer to its parent: same chain, older seq (so damaged
 * manifests cannot make a cycle).  A missing parent leaves the layer
 * marked, and reads that need it fail. */
static void
link_parents (struct catalog_disk *d)
{
  for (size_t i = 0; i < d->npoints; i++) {
    struct layer *l = d->points[i].layer;
    l->parent = NULL;
    l->parent_missing = false;
    if (l->meta.parent[0] == '\0')
      continue;
    for (size_t j = 0; j < d->npoints; j++) {
      struct layer *p = d->points[j].layer;
      if (strcmp (p->meta.snapshot, l->meta.parent) == 0
          && strcmp (p->meta.chain, l->meta.chain) == 0
          && p->meta.seq < l->meta.seq) {
        l->parent = p;
        break;
      }
    }
    if (l->parent == NULL) {
      l->parent_missing = true;
      log_warn ("snapshot %s of disk %s: its parent %s is missing or "
                "damaged; blocks it would supply cannot be read",
                l->meta.snapshot, d->uuid, l->meta.parent);
    }
  }
}

static int
name_points (struct catalog_disk *d)
{
  CLEANUP_FREE char **names = calloc (d->npoints ? d->npoints : 1,
                                      sizeof *names);
  size_t i;
  int ret = -1;

  if (names == NULL)
    return -1;
  for (i = 0; i < d->npoints; i++) {
    char buf[64];
    catalog_time_name (d->points[i].layer->meta.time, buf, sizeof buf);
    if ((names[i] = strdup (buf)) == NULL)
      goto out;
  }
  if (uniquify (names, d->npoints) == -1)
    goto out;
  for (i = 0; i < d->npoints; i++) {
    d->points[i].name = names[i];
    names[i] = NULL;
  }
  ret = 0;
 out:
  for (i = 0; i < d->npoints; i++)
    free (names[i]);
  return ret;
}

static int
load_disk (struct store *s, const char *uuid, struct catalog_disk *d,
           size_t *nskipped)
{
  CLEANUP_FREE char *dir = store_disk_dir (s, uuid, false);
  char **snaps = NULL;
  size_t nsnaps, i;

  memset (d, 0, sizeof *d);
  memcpy (d->uuid, uuid, UUID_LEN + 1);
  if (dir == NULL || store_list (dir, &snaps, &nsnaps) == -1)
    return -1;
  d->points = calloc (nsnaps ? nsnaps : 1, sizeof *d->points);
  if (d->points == NULL) {
    store_names_free (snaps, nsnaps);
    return -1;
  }
  for (i = 0; i < nsnaps; i++) {
    CLEANUP_FREE char *ldir = NULL;
    struct layer *l;
    if (asprintf (&ldir, "%s/%s", dir, snaps[i]) == -1)
      continue;
    l = layer_open (ldir, false);
    if (l == NULL) {
      log_warn ("skipping damaged layer %s: %s", ldir, err_get ());
      (*nskipped)++;
      continue;
    }
    if (strcmp (l->meta.snapshot, snaps[i]) || strcmp (l->meta.disk, uuid)) {
      log_warn ("skipping layer %s: its manifest names another snapshot "
                "or disk", ldir);
      layer_close (l);
      (*nskipped)++;
      continue;
    }
    d->points[d->npoints++].layer = l;
  }
  store_names_free (snaps, nsnaps);
  qsort (d->points, d->npoints, sizeof *d->points, cmp_point);
  link_parents (d);
  return name_points (d);
}

/* Per VM: the newest layer across its disks gives its current name;
 * the oldest gives its place in the naming order. */
struct vm_info {
  struct catalog_vm *vm;
  const struct layer *newest, *oldest;
};

static int
cmp_vm_age (const void *a, const void *b)
{
  const struct vm_info *x = a, *y = b;
  int c = cmp_layer_age (x->oldest, y->oldest);

  return c ? c : strcmp (x->vm->uuid, y->vm->uuid);
}

static const struct layer *
newest_layer (const struct catalog_disk *d)
{
  return d->points[d->npoints - 1].layer;
}

/* Disk folder names within one VM: the VDI name, with "-<userdevice>"
 * where two disks share a name, then ".2" for whatever still clashes. */
static int
name_disks (struct catalog_vm *vm)
{
  size_t n = vm->ndisks, i, j;
  CLEANUP_FREE char **base = calloc (n ? n : 1, sizeof *base);
  CLEANUP_FREE char **names = calloc (n ? n : 1, sizeof *names);
  int ret = -1;

  if (base == NULL || names == NULL)
    return -1;
  for (i = 0; i < n; i++)
    if ((base[i] = catalog_safe_name (newest_layer (vm->disks[i])->meta.disk_name)) == NULL)
      goto out;
  for (i = 0; i < n; i++) {
    const char *dev = newest_layer (vm->disks[i])->meta.userdevice;
    bool shared = false;
    for (j = 0; j < n; j++)
      shared |= i != j && strcmp (base[i], base[j]) == 0;
    if (shared && dev[0]) {
      if (asprintf (&names[i], "%s-%s", base[i], dev) == -1) {
        names[i] = NULL;
        goto out;
      }
    }
    else if ((names[i] = strdup (base[i])) == NULL)
      goto out;
  }
  if (uniquify (names, n) == -1)
    goto out;
  for (i = 0; i < n; i++) {
    vm->disks[i]->name = names[i];
    names[i] = NULL;
  }
  ret = 0;
 out:
  for (i = 0; i < n; i++) {
    free (base[i]);
    free (names[i]);
  }
  return ret;
}

/* Disks of a VM in device order (xvda before xvdb), as in XenCenter. */
static int
cmp_disk_device (const void *a, const void *b)
{
  const struct catalog_disk *x = *(struct catalog_disk *const *) a;
  const struct catalog_disk *y = *(struct catalog_disk *const *) b;
  const char *dx = newest_layer (x)->meta.userdevice;
  const char *dy = newest_layer (y)->meta.userdevice;
  size_t lx = strlen (dx), ly = strlen (dy);

  /* Numeric order of decimal strings: shorter first, then by digits. */
  if (lx != ly)
    return lx < ly ? -1 : 1;
  if (strcmp (dx, dy))
    return strcmp (dx, dy);
  return strcmp (x->uuid, y->uuid);
}

static int
build_vms (struct catalog *c)
{
  CLEANUP_FREE struct vm_info *info = NULL;
  CLEANUP_FREE char **names = NULL;
  size_t i, j, nvms = 0;
  int ret = -1;

  c->vms = calloc (c->ndisks ? c->ndisks : 1, sizeof *c->vms);
  info = calloc (c->ndisks ? c->ndisks : 1, sizeof *info);
  if (c->vms == NULL || info == NULL)
    return -1;
  for (i = 0; i < c->ndisks; i++) {
    struct catalog_disk *d = &c->disks[i];
    const struct layer *newest, *oldest;
    if (d->npoints == 0)
      continue;
    newest = newest_layer (d);
    oldest = d->points[0].layer;
    for (j = 0; j < nvms; j++)
      if (strcmp (c->vms[j].uuid, newest->meta.vm) == 0)
        break;
    if (j == nvms) {
      memcpy (c->vms[j].uuid, newest->meta.vm, UUID_LEN + 1);
      info[j].vm = &c->vms[j];
      info[j].newest = newest;
      info[j].oldest = oldest;
      c->vms[j].disks = calloc (c->ndisks, sizeof *c->vms[j].disks);
      if (c->vms[j].disks == NULL)
        return -1;
      nvms++;
    }
    if (cmp_layer_age (newest, info[j].newest) > 0)
      info[j].newest = newest;
    if (cmp_layer_age (oldest, info[j].oldest) < 0)
      info[j].oldest = oldest;
    c->vms[j].disks[c->vms[j].ndisks++] = d;
    d->vm = &c->vms[j];
  }
  c->nvms = nvms;

  /* Name VMs oldest first so first comers keep their names. */
  qsort (info, nvms, sizeof *info, cmp_vm_age);
  names = calloc (nvms ? nvms : 1, sizeof *names);
  if (names == NULL)
    return -1;
  for (i = 0; i < nvms; i++)
    if ((names[i] = catalog_safe_name (info[i].newest->meta.vm_name)) == NULL)
      goto out;
  if (uniquify (names, nvms) == -1)
    goto out;
  for (i = 0; i < nvms; i++) {
    info[i].vm->name = names[i];
    names[i] = NULL;
  }
  for (i = 0; i < nvms; i++) {
    struct catalog_vm *vm = &c->vms[i];
    qsort (vm->disks, vm->ndisks, sizeof *vm->disks, cmp_disk_device);
    if (name_disks (vm) == -1)
      goto out;
  }
  ret = 0;
 out:
  for (i = 0; i < nvms; i++)
    free (names[i]);
  return ret;
}

struct catalog *
catalog_load (struct store *s)
{
  struct catalog *c = calloc (1, sizeof *c);
  char **disks = NULL;
  size_t ndisks = 0, i;

  if (c == NULL)
    return NULL;
  if (store_list (s->disks_dir, &disks, &ndisks) == -1)
    goto err;
  c->disks = calloc (ndisks ? ndisks : 1, sizeof *c->disks);
  if (c->disks == NULL)
    goto nomem;
  for (i = 0; i < ndisks; i++) {
    if (load_disk (s, disks[i], &c->disks[c->ndisks], &c->nskipped) == -1) {
      err_prefix ("disk %s", disks[i]);
      goto err;
    }
    c->ndisks++;
  }
  if (build_vms (c) == -1)
    goto nomem;
  store_names_free (disks, ndisks);
  return c;

 nomem:
  err_set (ENOMEM, "out of memory");
 err:
  store_names_free (disks, ndisks);
  catalog_free (c);
  return NULL;
}

void
catalog_free (struct catalog *c)
{
  size_t i, j;

  if (c == NULL)
    return;
  for (i = 0; i < c->ndisks; i++) {
    struct catalog_disk *d = &c->disks[i];
    for (j = 0; j < d->npoints; j++) {
      layer_close (d->points[j].layer);
      free (d->points[j].name);
    }
    free (d->points);
    free (d->name);
  }
  free (c->disks);
  for (i = 0; i < c->nvms; i++) {
    free (c->vms[i].name);
    free (c->vms[i].disks);
  }
  free (c->vms);
  free (c);
}

struct catalog_point *
catalog_find (const struct catalog *c, const char *snapshot,
              struct catalog_disk **disk)
{
  for (size_t i = 0; i < c->ndisks; i++)
    for (size_t j = 0; j < c->disks[i].npoints; j++)
      if (strcmp (c->disks[i].points[j].layer->meta.snapshot, snapshot) == 0) {
        if (disk)
          *disk = &c->disks[i];
        return &c->disks[i].points[j];
      }
  return NULL;
}
