/* cbtfs: the mounted tree, as inodes, built from a catalog.
 *
 * Thread model: single-threaded build, then read-only (see tree.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../engine/points.h"
#include "tree.h"

/* Grow *V (of *CAP elements of SIZE bytes) to hold at least N, doubling
 * so that building costs linear time.  0 or -1. */
static int
grow (void *v, size_t *cap, size_t n, size_t size)
{
  size_t ncap = *cap ? *cap : 8;
  void *nv;

  if (n <= *cap)
    return 0;
  while (ncap < n)
    ncap *= 2;
  nv = realloc (*(void **) v, ncap * size);
  if (nv == NULL)
    return -1;
  *(void **) v = nv;
  *cap = ncap;
  return 0;
}

static uint64_t
add_node (struct tree *t, enum node_kind kind, time_t mtime)
{
  struct node *nv;

  if (grow (&t->nodes, &t->nodes_cap, t->nnodes + 1, sizeof *nv) == -1)
    return 0;
  nv = t->nodes;
  memset (&nv[t->nnodes], 0, sizeof *nv);
  nv[t->nnodes].kind = kind;
  nv[t->nnodes].nlink = kind == NODE_DIR ? 2 : 1;
  nv[t->nnodes].mtime = mtime;
  return ++t->nnodes;
}

/* Add NAME → INO to directory DIR; takes ownership of NAME. */
static int
add_ent (struct tree *t, uint64_t dir, char *name, uint64_t ino)
{
  struct node *d;

  if (name == NULL || ino == 0) {
    free (name);
    return -1;
  }
  d = &t->nodes[dir - 1];
  if (grow (&d->ents, &d->ents_cap, d->nents + 1, sizeof *d->ents) == -1) {
    free (name);
    return -1;
  }
  d->ents[d->nents++] = (struct dirent_ref) { name, ino };
  if (t->nodes[ino - 1].kind == NODE_DIR)
    d->nlink++;                 /* the subdirectory's ".." */
  return 0;
}

static char *
img_name (const char *base)
{
  char *s;

  if (asprintf (&s, "%s.img", base) == -1)
    return NULL;
  return s;
}

static uint64_t
mkdir_in (struct tree *t, uint64_t parent, const char *name, time_t mtime)
{
  uint64_t ino = add_node (t, NODE_DIR, mtime);

  if (ino == 0 || add_ent (t, parent, strdup (name), ino) == -1)
    return 0;
  return ino;
}

/* Add MD5SUMS to DDIR, D's folder under by-vm: "<md5>  <time>.img"
 * for each point whose snapshot's VDI.checksum a check recorded
 * (verdict.h), as md5sum -c reads it in that folder; its time is that
 * of the newest line.  None when no point has one. */
static int
add_md5sums (struct tree *t, uint64_t ddir, const struct catalog_disk *d)
{
  struct verdicts vs;
  char *text = NULL;
  size_t len = 0;
  time_t newest = 0;
  FILE *f;
  uint64_t ino;

  engine_load_verdicts (d, &vs);
  f = open_memstream (&text, &len);
  if (f == NULL) {
    verdicts_free (&vs);
    return -1;
  }
  for (size_t k = 0; k < d->npoints; k++)
    for (size_t i = 0; i < vs.n; i++)
      if (vs.v[i].md5[0]
          && strcmp (vs.v[i].snapshot,
                     layer_meta (d->points[k].layer)->snapshot) == 0) {
        fprintf (f, "%s  %s.img\n", vs.v[i].md5, d->points[k].name);
        if (vs.v[i].md5_time > newest)
          newest = vs.v[i].md5_time;
      }
  verdicts_free (&vs);
  if (fclose (f) == EOF) {
    free (text);
    return -1;
  }
  if (len == 0) {
    free (text);
    return 0;
  }
  ino = add_node (t, NODE_TEXT, newest);
  if (ino == 0) {
    free (text);
    return -1;
  }
  t->nodes[ino - 1].text = text;
  t->nodes[ino - 1].text_len = len;
  return add_ent (t, ddir, strdup ("MD5SUMS"), ino);
}

static time_t
newest_time (const struct catalog_disk *d)
{
  return d->npoints ? layer_meta (d->points[d->npoints - 1].layer)->time : 0;
}

static int
cmp_ent (const void *a, const void *b)
{
  return strcmp ((*(struct dirent_ref *const *) a)->name,
                 (*(struct dirent_ref *const *) b)->name);
}

/* Sort each folder's names for tree_lookup. */
static int
index_names (struct tree *t)
{
  for (size_t n = 0; n < t->nnodes; n++) {
    struct node *d = &t->nodes[n];
    if (d->kind != NODE_DIR || d->nents == 0)
      continue;
    d->by_name = malloc (d->nents * sizeof *d->by_name);
    if (d->by_name == NULL)
      return -1;
    for (size_t i = 0; i < d->nents; i++)
      d->by_name[i] = &d->ents[i];
    qsort (d->by_name, d->nents, sizeof *d->by_name, cmp_ent);
  }
  return 0;
}

static int
build (struct tree *t, const struct catalog *cat)
{
  uint64_t root, by_uuid, by_vm, *files;
  size_t i, j, k, nfiles = 0, f;
  CLEANUP_FREE size_t *first = calloc (cat->ndisks ? cat->ndisks : 1,
                                       sizeof *first);

  for (i = 0; i < cat->ndisks; i++)
    nfiles += cat->disks[i].npoints;
  files = calloc (nfiles ? nfiles : 1, sizeof *files);
  if (files == NULL || first == NULL) {
    free (files);
    return -1;
  }

  if ((root = add_node (t, NODE_DIR, 0)) != 1
      || (by_uuid = mkdir_in (t, root, "by-uuid", 0)) == 0
      || (by_vm = mkdir_in (t, root, "by-vm", 0)) == 0)
    goto err;

  /* One inode per point in time, linked from both trees. */
  for (i = 0, f = 0; i < cat->ndisks; i++) {
    const struct catalog_disk *d = &cat->disks[i];
    uint64_t dir;
    first[i] = f;
    if (d->npoints == 0)
      continue;
    dir = mkdir_in (t, by_uuid, d->uuid, newest_time (d));
    if (dir == 0)
      goto err;
    for (j = 0; j < d->npoints; j++, f++) {
      struct layer *l = d->points[j].layer;
      files[f] = add_node (t, NODE_FILE, layer_meta (l)->time);
      if (files[f] == 0 || add_ent (t, dir, img_name (layer_meta (l)->snapshot),
                                    files[f]) == -1)
        goto err;
      t->nodes[files[f] - 1].top = l;
    }
  }
  for (i = 0; i < cat->nvms; i++) {
    const struct catalog_vm *vm = &cat->vms[i];
    uint64_t vdir = mkdir_in (t, by_vm, vm->name, 0);
    if (vdir == 0)
      goto err;
    for (j = 0; j < vm->ndisks; j++) {
      const struct catalog_disk *d = vm->disks[j];
      /* D's points were numbered in catalog order above. */
      size_t base = first[d - cat->disks];
      uint64_t ddir = mkdir_in (t, vdir, d->name, newest_time (d)), link;
      char *target;
      if (ddir == 0)
        goto err;
      for (k = 0; k < d->npoints; k++) {
        if (add_ent (t, ddir, img_name (d->points[k].name), files[base + k]) == -1)
          goto err;
        t->nodes[files[base + k] - 1].nlink++;
      }
      target = img_name (d->points[d->npoints - 1].name);
      link = add_node (t, NODE_LINK, newest_time (d));
      if (target == NULL || link == 0) {
        free (target);
        goto err;
      }
      t->nodes[link - 1].target = target;
      if (add_ent (t, ddir, strdup ("latest"), link) == -1
          || add_md5sums (t, ddir, d) == -1)
        goto err;
    }
  }
  free (files);
  /* A folder's time is that of the newest point under it.  Subfolders
   * are made after their parent (higher numbers) and files' times are
   * fixed, so one pass from the highest number settles it. */
  for (size_t n = t->nnodes; n-- > 0;)
    for (k = 0; k < t->nodes[n].nents; k++) {
      time_t c = t->nodes[t->nodes[n].ents[k].ino - 1].mtime;
      if (c > t->nodes[n].mtime)
        t->nodes[n].mtime = c;
    }
  return index_names (t);
 err:
  free (files);
  return -1;
}

struct tree *
tree_build (const struct catalog *cat)
{
  struct tree *t = calloc (1, sizeof *t);

  if (t == NULL || build (t, cat) == -1) {
    tree_free (t);
    err_set (ENOMEM, "out of memory building the tree");
    return NULL;
  }
  return t;
}

void
tree_free (struct tree *t)
{
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->nnodes; i++) {
    struct node *n = &t->nodes[i];
    for (size_t j = 0; j < n->nents; j++)
      free (n->ents[j].name);
    free (n->ents);
    free (n->by_name);
    free (n->target);
    free (n->text);
  }
  free (t->nodes);
  free (t);
}

const struct node *
tree_node (const struct tree *t, uint64_t ino)
{
  if (ino == 0 || ino > t->nnodes)
    return NULL;
  return &t->nodes[ino - 1];
}

uint64_t
tree_lookup (const struct tree *t, uint64_t dir, const char *name)
{
  const struct node *d = tree_node (t, dir);
  size_t lo = 0, hi;

  if (d == NULL || d->kind != NODE_DIR || d->by_name == NULL)
    return 0;
  for (hi = d->nents; lo < hi;) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp (name, d->by_name[mid]->name);
    if (c == 0)
      return d->by_name[mid]->ino;
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return 0;
}
