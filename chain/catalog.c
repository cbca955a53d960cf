/* cbtfs: what a store holds, as people browse it.
 *
 * Thread model: see catalog.h.  catalog_load runs a few loader threads
 * (joined before it returns), each loading whole disks into their own
 * slots; the rest of the build is single-threaded, then read-only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "catalog.h"
#include "manifests.h"
#include "noteline.h"

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

/* A set of borrowed strings (open addressing, at most half full), so
 * that naming thousands of points costs linear time, not quadratic. */
struct nameset {
  const char **slot;
  size_t mask;
};

static int
nameset_init (struct nameset *set, size_t n)
{
  size_t cap = 16;

  while (cap < 2 * n + 2)
    cap <<= 1;
  set->mask = cap - 1;
  set->slot = calloc (cap, sizeof *set->slot);
  return set->slot ? 0 : -1;
}

/* The slot holding NAME, or the empty slot where it would go. */
static const char **
nameset_find (const struct nameset *set, const char *name)
{
  uint64_t h = UINT64_C (14695981039346656037);     /* FNV-1a */
  size_t i;

  for (const unsigned char *p = (const unsigned char *) name; *p; p++)
    h = (h ^ *p) * UINT64_C (1099511628211);
  for (i = h & set->mask; set->slot[i] && strcmp (set->slot[i], name);
       i = (i + 1) & set->mask)
    ;
  return &set->slot[i];
}

/* Give NAMES[i] (for i < n, in priority order) unique values by adding
 * ".2", ".3", … to later duplicates.  Each entry is replaced in place. */
static int
uniquify (char **names, size_t n)
{
  struct nameset seen;

  if (nameset_init (&seen, n) == -1)
    return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned k = 2;
    const char **slot;
    bool clash;
    do {
      slot = nameset_find (&seen, names[i]);
      clash = *slot != NULL;
      if (clash) {
        char *base = names[i], *nn;
        /* Strip a suffix this loop added, so we get "a.3" not "a.2.3". */
        if (k > 2) {
          char *dot = strrchr (base, '.');
          if (dot)
            *dot = '\0';
        }
        if (asprintf (&nn, "%s.%u", base, k++) == -1) {
          free (seen.slot);
          return -1;
        }
        free (base);
        names[i] = nn;
      }
    } while (clash);
    *slot = names[i];
  }
  free (seen.slot);
  return 0;
}

/* Order of points: snapshot time, then the disk's sequence number. */
static int
cmp_layer_age (const struct layer *x, const struct layer *y)
{
  const struct layer_meta *a = layer_meta (x), *b = layer_meta (y);

  if (a->time != b->time)
    return a->time < b->time ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int
cmp_point (const void *a, const void *b)
{
  return cmp_layer_age (((const struct catalog_point *) a)->layer,
                        ((const struct catalog_point *) b)->layer);
}

static int
cmp_snapshot (const void *a, const void *b)
{
  return strcmp (layer_meta ((*(struct layer *const *) a))->snapshot,
                 layer_meta ((*(struct layer *const *) b))->snapshot);
}

static int
cmp_snapshot_key (const void *key, const void *elem)
{
  return strcmp (key, layer_meta ((*(struct layer *const *) elem))->snapshot);
}

/* Link each layer to its parent: same chain, older seq (so damaged
 * manifests cannot make a cycle).  A missing parent leaves the layer
 * marked, and reads that need it fail.  Snapshots are unique within a
 * disk (they name its folders), so a sorted array finds parents. */
static int
link_parents (struct catalog_disk *d)
{
  CLEANUP_FREE struct layer **by_snap = malloc ((d->npoints ? d->npoints : 1)
                                                * sizeof *by_snap);

  if (by_snap == NULL)
    return -1;
  for (size_t i = 0; i < d->npoints; i++)
    by_snap[i] = d->points[i].layer;
  qsort (by_snap, d->npoints, sizeof *by_snap, cmp_snapshot);
  for (size_t i = 0; i < d->npoints; i++) {
    struct layer *l = d->points[i].layer, **pp, *p;
    layer_link (l, NULL, false);
    if (layer_meta (l)->parent[0] == '\0')
      continue;
    pp = bsearch (layer_meta (l)->parent, by_snap, d->npoints, sizeof *by_snap,
                  cmp_snapshot_key);
    p = pp ? *pp : NULL;
    if (p && strcmp (layer_meta (p)->chain, layer_meta (l)->chain) == 0
        && layer_meta (p)->seq < layer_meta (l)->seq)
      layer_link (l, p, false);
    else {
      layer_link (l, NULL, true);
      log_warn ("snapshot %s of disk %s: its parent %s is missing or "
                "damaged; blocks it would supply cannot be read",
                layer_meta (l)->snapshot, d->uuid, layer_meta (l)->parent);
    }
  }
  return 0;
}

/* ---- names a prune recorded (FORMAT.md, `names`) ---------------------
 * A point's name depends on the points beside it (".2" for the second
 * in a second) and a VM's folder on which VM came first: a prune that
 * drops points would rename what stays.  So before it drops any point
 * of a disk, prune records the names the tree gives the disk's points,
 * and when its first point was taken; those win afterwards. */
#define NAMES_NOTE "names"
#define NAMES_MAX (64 * 1024 * 1024)

/* A point's recorded name, and the place of its line in the note. */
struct named {
  char snapshot[UUID_LEN + 1];
  char name[sizeof ((struct noteline *) 0)->word];
  size_t at;
};

struct recorded {
  struct named *v;              /* once loaded: by snapshot, one each */
  size_t n, cap;
  int64_t first;                /* the disk's first point's time, or
                                   INT64_MAX */
};

/* A noteline_fn: each point's name line, in the note's order. */
static int
take_name (void *opaque, const struct noteline *l)
{
  struct recorded *r = opaque;

  if (strcmp (l->word, "first") == 0) {
    r->first = MIN (r->first, l->time);
    return 0;
  }
  /* Only a name the tree could have given (never a path). */
  if (strchr (l->word, '/') || strcmp (l->word, ".") == 0
      || strcmp (l->word, "..") == 0)
    return 0;
  if (r->n == r->cap) {
    size_t ncap = r->cap ? r->cap * 2 : 64;
    struct named *nv = realloc (r->v, ncap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    r->v = nv;
    r->cap = ncap;
  }
  memcpy (r->v[r->n].snapshot, l->snapshot, sizeof l->snapshot);
  memcpy (r->v[r->n].name, l->word, sizeof l->word);
  r->v[r->n].at = r->n;
  r->n++;
  return 0;
}

static int
cmp_named (const void *a, const void *b)
{
  const struct named *x = a, *y = b;
  int c = strcmp (x->snapshot, y->snapshot);

  return c ? c : (x->at > y->at) - (x->at < y->at);
}

/* Sort R by snapshot, keeping only the last line about each: a mount
 * names every point of every disk from it, so a lookup must not walk
 * the whole note. */
static void
recorded_index (struct recorded *r)
{
  size_t k = 0;

  if (r->n == 0)
    return;
  qsort (r->v, r->n, sizeof *r->v, cmp_named);
  for (size_t i = 0; i < r->n; i++)
    if (k > 0 && strcmp (r->v[k - 1].snapshot, r->v[i].snapshot) == 0)
      r->v[k - 1] = r->v[i];
    else
      r->v[k++] = r->v[i];
  r->n = k;
}

/* What was recorded for disk UUID; nothing when that cannot be read
 * (then names are derived, as before any prune). */
static void
recorded_load (struct store *s, const char *uuid, struct recorded *r)
{
  r->v = NULL;
  r->n = r->cap = 0;
  r->first = INT64_MAX;
  if (noteline_each (s, uuid, NAMES_NOTE, NAMES_MAX, take_name, r) == -1) {
    log_warn ("disk %s: its recorded names cannot be read (%s); names are "
              "derived from the points", uuid, err_get ());
    free (r->v);
    r->v = NULL;
    r->n = r->cap = 0;
  }
  recorded_index (r);
}

static int
cmp_named_key (const void *key, const void *elem)
{
  return strcmp (key, ((const struct named *) elem)->snapshot);
}

static const char *
recorded_name (const struct recorded *r, const char *snapshot)
{
  const struct named *at = r->n ? bsearch (snapshot, r->v, r->n, sizeof *r->v,
                                           cmp_named_key) : NULL;

  return at ? at->name : NULL;
}

/* Name D's points: recorded names first (they keep theirs), then the
 * others by time, ".2", ".3" … where they clash. */
static int
name_points (struct catalog_disk *d, const struct recorded *r)
{
  CLEANUP_FREE char **names = calloc (d->npoints ? d->npoints : 1,
                                      sizeof *names);
  CLEANUP_FREE size_t *order = calloc (d->npoints ? d->npoints : 1,
                                       sizeof *order);
  size_t i, n = 0;
  int ret = -1;

  if (names == NULL || order == NULL)
    return -1;
  for (int pass = 0; pass < 2; pass++)
    for (i = 0; i < d->npoints; i++) {
      const char *rn = recorded_name (r, layer_meta (d->points[i].layer)
                                      ->snapshot);
      char buf[64];
      if ((rn != NULL) != (pass == 0))
        continue;
      if (rn == NULL)
        catalog_time_name (layer_meta (d->points[i].layer)->time, buf,
                           sizeof buf);
      order[n] = i;
      if ((names[n++] = strdup (rn ? rn : buf)) == NULL)
        goto out;
    }
  if (uniquify (names, d->npoints) == -1)
    goto out;
  for (i = 0; i < d->npoints; i++) {
    d->points[order[i]].name = names[i];
    names[i] = NULL;
  }
  d->since = d->npoints ? layer_meta (d->points[0].layer)->time : INT64_MAX;
  d->since = MIN (d->since, r->first);
  ret = 0;
 out:
  for (i = 0; i < d->npoints; i++)
    free (names[i]);
  return ret;
}

int
catalog_record_names (const struct catalog_disk *d)
{
  struct store *s;
  struct recorded r;
  CLEANUP_FREE size_t *todo = NULL;
  size_t n = 0;
  bool first;
  int ret = 0;

  if (d->npoints == 0)
    return 0;
  s = layer_store (d->points[0].layer);
  if ((todo = malloc (d->npoints * sizeof *todo)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  recorded_load (s, d->uuid, &r);
  for (size_t i = 0; i < d->npoints; i++) {
    const char *rn = recorded_name (&r, layer_meta (d->points[i].layer)
                                    ->snapshot);
    if (rn == NULL || strcmp (rn, d->points[i].name))
      todo[n++] = i;
  }
  first = r.first == INT64_MAX;
  free (r.v);
  /* The last line synced makes them all durable. */
  for (size_t k = 0; k < n && ret == 0; k++) {
    const struct catalog_point *pt = &d->points[todo[k]];
    ret = noteline_append (s, d->uuid, NAMES_NOTE,
                           layer_meta (pt->layer)->snapshot,
                           layer_meta (pt->layer)->time, pt->name,
                           k + 1 == n && !first);
  }
  if (ret == 0 && first)
    ret = noteline_append (s, d->uuid, NAMES_NOTE,
                           layer_meta (d->points[0].layer)->snapshot,
                           d->since, "first", true);
  return ret;
}

/* Open layer NAME of DISK as FLAGS say, or NULL after logging why it
 * is left out. */
static struct layer *
open_point (struct store *s, const char *disk, const char *name,
            unsigned flags)
{
  struct layer *l;

  l = flags & CATALOG_LAZY ? layer_open_lazy (s, disk, name)
    : layer_open (s, disk, name, false);
  if (l == NULL) {
    log_warn ("skipping damaged layer %s of disk %s: %s", name, disk,
              err_get ());
    return NULL;
  }
  if (strcmp (layer_meta (l)->snapshot, name)
      || strcmp (layer_meta (l)->disk, disk)) {
    log_warn ("skipping layer %s of disk %s: its manifest names another "
              "snapshot or disk", name, disk);
    layer_close (l);
    return NULL;
  }
  if (flags & CATALOG_COUNTS)
    layer_unload (l);
  return l;
}

/* Open lazily the layers of disk UUID that have a good copy of their
 * manifest in its manifests note and that the store lists in SNAPS
 * (sorted); mark them in TAKEN.  Whatever is not found here has its
 * own manifest read. */
static void
open_from_copies (struct store *s, const char *uuid,
                  char **snaps, size_t nsnaps, bool *taken,
                  struct catalog_disk *d)
{
  size_t len, pos = 0, tlen;
  const char *text;
  CLEANUP_FREE char *buf = manifests_read (s, uuid, &len);

  if (buf == NULL)
    return;
  while (manifests_next (buf, len, &pos, &text, &tlen)) {
    struct layer *l = layer_open_lazy_text (s, uuid, text, tlen);
    ssize_t at;

    if (l == NULL)
      continue;                 /* a torn copy: its manifest is read */
    at = store_names_find (snaps, nsnaps, layer_meta (l)->snapshot);
    /* A copy of a layer since removed, or of another disk's. */
    if (at < 0 || taken[at] || strcmp (layer_meta (l)->disk, uuid)) {
      layer_close (l);
      continue;
    }
    taken[at] = true;
    d->points[d->npoints++].layer = l;
  }
}

/* Drop from SNAPS (N of DISK's layer names) those FILLING names
 * ("DISK/SNAPSHOT", sorted). */
static void
drop_filling (const char *disk, char **snaps, size_t *n,
              char *const *filling, size_t nfilling)
{
  size_t kept = 0;

  if (nfilling == 0)
    return;                     /* the usual case: no name to make */
  for (size_t i = 0; i < *n; i++) {
    char name[2 * UUID_LEN + 2];
    snprintf (name, sizeof name, "%s/%s", disk, snaps[i]);
    if (store_names_find (filling, nfilling, name) >= 0) {
      free (snaps[i]);
      continue;
    }
    snaps[kept++] = snaps[i];
  }
  *n = kept;
}

static int
load_disk (struct store *s, const char *uuid, unsigned flags,
           char *const *filling, size_t nfilling,
           struct catalog_disk *d, size_t *nskipped)
{
  CLEANUP_FREE bool *taken = NULL;
  struct recorded rec;
  char **snaps = NULL;
  size_t nsnaps, i;
  int ret;

  memset (d, 0, sizeof *d);
  memcpy (d->uuid, uuid, UUID_LEN + 1);
  if (store_list (s, uuid, &snaps, &nsnaps) == -1)
    return -1;
  drop_filling (uuid, snaps, &nsnaps, filling, nfilling);
  d->points = calloc (nsnaps ? nsnaps : 1, sizeof *d->points);
  taken = calloc (nsnaps ? nsnaps : 1, sizeof *taken);
  if (d->points == NULL || taken == NULL) {
    store_names_free (snaps, nsnaps);
    return -1;
  }
  /* Lazy loads (mounts) take the copies; the others read every layer
   * whole anyway. */
  if (flags & CATALOG_LAZY)
    open_from_copies (s, uuid, snaps, nsnaps, taken, d);
  for (i = 0; i < nsnaps; i++) {
    struct layer *l;

    if (taken[i])
      continue;
    l = open_point (s, uuid, snaps[i], flags);
    if (l == NULL)
      (*nskipped)++;
    else
      d->points[d->npoints++].layer = l;
  }
  store_names_free (snaps, nsnaps);
  qsort (d->points, d->npoints, sizeof *d->points, cmp_point);
  if (link_parents (d) == -1)
    return -1;
  recorded_load (s, uuid, &rec);
  ret = name_points (d, &rec);
  free (rec.v);
  return ret;
}

/* Per VM: the newest layer across its disks gives its current name;
 * when its first point was taken (catalog_disk.since) gives its place
 * in the naming order. */
struct vm_info {
  struct catalog_vm *vm;
  const struct layer *newest;
  int64_t since;
};

static int
cmp_vm_age (const void *a, const void *b)
{
  const struct vm_info *x = a, *y = b;

  if (x->since != y->since)
    return x->since < y->since ? -1 : 1;
  return strcmp (x->vm->uuid, y->vm->uuid);
}

static const struct layer *
newest_layer (const struct catalog_disk *d)
{
  return d->points[d->npoints - 1].layer;
}

static int
cmp_strp (const void *a, const void *b)
{
  return strcmp (**(char **const *) a, **(char **const *) b);
}

/* Mark in SHARED[i] whether BASE[i] equals another entry (sorting
 * pointers to the entries, not comparing every pair). */
static int
find_shared (char **base, size_t n, bool *shared)
{
  CLEANUP_FREE char ***by_name = malloc ((n ? n : 1) * sizeof *by_name);
  size_t i, j;

  if (by_name == NULL)
    return -1;
  for (i = 0; i < n; i++)
    by_name[i] = &base[i];
  qsort (by_name, n, sizeof *by_name, cmp_strp);
  for (i = 0; i < n; i = j) {
    for (j = i + 1; j < n && strcmp (*by_name[i], *by_name[j]) == 0; j++)
      ;
    for (size_t k = i; k < j; k++)
      shared[by_name[k] - base] = j - i > 1;
  }
  return 0;
}

/* Disk folder names within one VM: the VDI name, with "-<userdevice>"
 * where two disks share a name, then ".2" for whatever still clashes. */
static int
name_disks (struct catalog_vm *vm)
{
  size_t n = vm->ndisks, i;
  CLEANUP_FREE char **base = calloc (n ? n : 1, sizeof *base);
  CLEANUP_FREE char **names = calloc (n ? n : 1, sizeof *names);
  CLEANUP_FREE bool *shared = calloc (n ? n : 1, sizeof *shared);
  int ret = -1;

  if (base == NULL || names == NULL || shared == NULL)
    return -1;
  for (i = 0; i < n; i++) {
    const struct layer_meta *m = layer_meta (newest_layer (vm->disks[i]));
    if ((base[i] = catalog_safe_name (m->disk_name)) == NULL)
      goto out;
  }
  if (find_shared (base, n, shared) == -1)
    goto out;
  for (i = 0; i < n; i++) {
    const char *dev = layer_meta (newest_layer (vm->disks[i]))->userdevice;
    if (shared[i] && dev[0]) {
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
  const char *dx = layer_meta (newest_layer (x))->userdevice;
  const char *dy = layer_meta (newest_layer (y))->userdevice;
  size_t lx = strlen (dx), ly = strlen (dy);

  /* Numeric order of decimal strings: shorter first, then by digits. */
  if (lx != ly)
    return lx < ly ? -1 : 1;
  if (strcmp (dx, dy))
    return strcmp (dx, dy);
  return strcmp (x->uuid, y->uuid);
}

/* Disks by the VM their newest layer names, then by place in C. */
static int
cmp_disk_vm (const void *a, const void *b)
{
  const struct catalog_disk *x = *(struct catalog_disk *const *) a;
  const struct catalog_disk *y = *(struct catalog_disk *const *) b;
  int c = strcmp (layer_meta (newest_layer (x))->vm,
                  layer_meta (newest_layer (y))->vm);

  return c ? c : (x > y) - (x < y);
}

/* A run of BY_VM: one VM's disks, the first the earliest in C. */
struct vm_group {
  struct catalog_disk **first;
  size_t n;
};

static int
cmp_group (const void *a, const void *b)
{
  const struct catalog_disk *x = *((const struct vm_group *) a)->first;
  const struct catalog_disk *y = *((const struct vm_group *) b)->first;

  return (x > y) - (x < y);
}

/* Make one VM of each group of disks that name the same VM, in the
 * order of each VM's first disk in C (sorting, not a search per disk). */
static int
group_vms (struct catalog *c, struct vm_info *info)
{
  CLEANUP_FREE struct catalog_disk **by_vm = NULL;
  CLEANUP_FREE struct vm_group *groups = NULL;
  size_t i, j, n = 0, ngroups = 0;

  by_vm = malloc ((c->ndisks ? c->ndisks : 1) * sizeof *by_vm);
  groups = malloc ((c->ndisks ? c->ndisks : 1) * sizeof *groups);
  if (by_vm == NULL || groups == NULL)
    return -1;
  for (i = 0; i < c->ndisks; i++)
    if (c->disks[i].npoints > 0)
      by_vm[n++] = &c->disks[i];
  qsort (by_vm, n, sizeof *by_vm, cmp_disk_vm);
  for (i = 0; i < n; i = j) {
    for (j = i + 1; j < n && strcmp (layer_meta (newest_layer (by_vm[i]))->vm,
                                     layer_meta (newest_layer (by_vm[j]))->vm) == 0;
         j++)
      ;
    groups[ngroups++] = (struct vm_group) { &by_vm[i], j - i };
  }
  qsort (groups, ngroups, sizeof *groups, cmp_group);
  for (i = 0; i < ngroups; i++) {
    struct catalog_vm *vm = &c->vms[i];
    struct vm_group *g = &groups[i];
    memcpy (vm->uuid, layer_meta (newest_layer (g->first[0]))->vm,
            UUID_LEN + 1);
    vm->disks = malloc (g->n * sizeof *vm->disks);
    if (vm->disks == NULL)
      return -1;
    c->nvms++;
    info[i] = (struct vm_info) { vm, newest_layer (g->first[0]),
                                 g->first[0]->since };
    for (j = 0; j < g->n; j++) {
      struct catalog_disk *d = g->first[j];
      if (cmp_layer_age (newest_layer (d), info[i].newest) > 0)
        info[i].newest = newest_layer (d);
      info[i].since = MIN (info[i].since, d->since);
      vm->disks[vm->ndisks++] = d;
      d->vm = vm;
    }
  }
  return 0;
}

static int
build_vms (struct catalog *c)
{
  CLEANUP_FREE struct vm_info *info = NULL;
  CLEANUP_FREE char **names = NULL;
  size_t i, nvms;
  int ret = -1;

  c->vms = calloc (c->ndisks ? c->ndisks : 1, sizeof *c->vms);
  info = calloc (c->ndisks ? c->ndisks : 1, sizeof *info);
  if (c->vms == NULL || info == NULL || group_vms (c, info) == -1)
    return -1;
  nvms = c->nvms;

  /* Name VMs oldest first so first comers keep their names. */
  qsort (info, nvms, sizeof *info, cmp_vm_age);
  names = calloc (nvms ? nvms : 1, sizeof *names);
  if (names == NULL)
    return -1;
  for (i = 0; i < nvms; i++) {
    names[i] = catalog_safe_name (layer_meta (info[i].newest)->vm_name);
    if (names[i] == NULL)
      goto out;
  }
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

/* Disks are loaded by several threads at once.  Warm, reading
 * thousands of small files is system calls, which spread over the
 * cores; cold, it is waits on the disk, which overlap: more threads
 * than cores (cbtfs ls of 100 x 1000 layers after drop_caches: 21 s
 * with 2 threads, 8 s with 16, 7.7 s with 32). */
#define LOAD_THREADS_MAX 16

/* What the loader threads share.  Each disk is loaded by one thread
 * into its own slot; only NEXT, NSKIPPED and FAILED are shared, and
 * the first error's message is kept under LOCK (err_* is per thread). */
struct loader {
  struct store *s;              /* only read */
  char **names;
  size_t n;
  unsigned flags;
  struct catalog *c;            /* c->disks[i] for names[i] */
  char **filling;               /* CATALOG_SHOWN: layers left out */
  size_t nfilling;
  size_t next;                  /* atomic: the next disk to take */
  bool failed;                  /* atomic: stop taking disks */
  pthread_mutex_t lock;
  char *error;                  /* the first failure's message */
  int error_errno;
};

static void *
loader_run (void *arg)
{
  struct loader *ld = arg;
  size_t i, skipped = 0;

  while ((i = __atomic_fetch_add (&ld->next, 1, __ATOMIC_RELAXED)) < ld->n
         && !__atomic_load_n (&ld->failed, __ATOMIC_RELAXED)) {
    if (load_disk (ld->s, ld->names[i], ld->flags, ld->filling, ld->nfilling,
                   &ld->c->disks[i], &skipped) == 0)
      continue;
    err_prefix ("disk %s", ld->names[i]);
    pthread_mutex_lock (&ld->lock);
    if (ld->error == NULL) {
      ld->error_errno = errno;
      ld->error = strdup (err_get ());
    }
    pthread_mutex_unlock (&ld->lock);
    __atomic_store_n (&ld->failed, true, __ATOMIC_RELAXED);
  }
  __atomic_fetch_add (&ld->c->nskipped, skipped, __ATOMIC_RELAXED);
  return NULL;
}

/* Load every disk of LD with up to LOAD_THREADS_MAX threads (this one
 * among them).  0, or -1 with err_*. */
static int
load_disks (struct loader *ld)
{
  pthread_t tids[LOAD_THREADS_MAX - 1];
  size_t nthreads = MIN ((size_t) LOAD_THREADS_MAX, MAX (ld->n, (size_t) 1));
  size_t started = 0;

  while (started + 1 < nthreads
         && pthread_create (&tids[started], NULL, loader_run, ld) == 0)
    started++;
  loader_run (ld);
  for (size_t i = 0; i < started; i++)
    pthread_join (tids[i], NULL);
  if (ld->failed) {
    err_set (ld->error_errno, "%s", ld->error ? ld->error : "out of memory");
    return -1;
  }
  return 0;
}

struct catalog *
catalog_load (struct store *s, unsigned flags)
{
  struct catalog *c = calloc (1, sizeof *c);
  struct loader ld = { .s = s, .flags = flags, .c = c,
                       .lock = PTHREAD_MUTEX_INITIALIZER };
  int r;

  if (c == NULL)
    return NULL;
  if (store_list (s, NULL, &ld.names, &ld.n) == -1
      || ((flags & CATALOG_SHOWN)
          && store_filling_list (s, &ld.filling, &ld.nfilling) == -1))
    goto err;
  c->disks = calloc (ld.n ? ld.n : 1, sizeof *c->disks);
  if (c->disks == NULL)
    goto nomem;
  r = load_disks (&ld);
  /* Slots of disks never reached are zero: catalog_free copes. */
  c->ndisks = ld.n;
  free (ld.error);
  if (r == -1)
    goto err;
  if (build_vms (c) == -1)
    goto nomem;
  store_names_free (ld.names, ld.n);
  store_names_free (ld.filling, ld.nfilling);
  return c;

 nomem:
  err_set (ENOMEM, "out of memory");
 err:
  store_names_free (ld.names, ld.n);
  store_names_free (ld.filling, ld.nfilling);
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
  store_close (c->own_store);
  free (c);
}

struct catalog *
catalog_open (const char *where, unsigned flags)
{
  struct store *s = store_open (where, false);
  struct catalog *c;

  if (s == NULL)
    return NULL;
  c = catalog_load (s, flags);
  if (c == NULL) {
    store_close (s);
    return NULL;
  }
  c->own_store = s;
  return c;
}

struct catalog_point *
catalog_find (const struct catalog *c, const char *snapshot,
              struct catalog_disk **disk)
{
  for (size_t i = 0; i < c->ndisks; i++)
    for (size_t j = 0; j < c->disks[i].npoints; j++) {
      const struct layer *l = c->disks[i].points[j].layer;
      if (strcmp (layer_meta (l)->snapshot, snapshot) == 0) {
        if (disk)
          *disk = &c->disks[i];
        return &c->disks[i].points[j];
      }
    }
  return NULL;
}
