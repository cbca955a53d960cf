/* cbtfs: the mounted tree, as inodes, built from a catalog.
 *
 * Thread model: single-threaded build, then read-only (see tree.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "tree.h"

static uint64_t
add_node (struct tree *t, enum node_kind kind, time_t mtime)
{
  struct node *nv = realloc (t->nodes, (t->nnodes + 1) * sizeof *nv);

  if (nv == NULL)
    return 0;
  t->nodes = nv;
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
  struct dirent_ref *ne;

  if (name == NULL || ino == 0) {
    free (name);
    return -1;
  }
  d = &t->nodes[dir - 1];
  ne = realloc (d->ents, (d->nents + 1) * sizeof *ne);
  if (ne == NULL) {
    free (name);
    return -1;
  }
  d->ents = ne;
  ne[d->nents++] = (struct dirent_ref) { name, ino };
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

static time_t
newest_time (const struct catalog_disk *d)
{
  return d->npoints ? d->points[d->npoints - 1].layer->meta.time : 0;
}

static int
build (struct tree *t, const struct catalog *cat)
{
  uint64_t root, by_uuid, by_vm, *files;
  size_t i, j, k, nfiles = 0, f;

  for (i = 0; i < cat->ndisks; i++)
    nfiles += cat->disks[i].npoints;
  files = calloc (nfiles ? nfiles : 1, sizeof *files);
  if (files == NULL)
    return -1;

  if ((root = add_node (t, NODE_DIR, 0)) != 1
      || (by_uuid = mkdir_in (t, root, "by-uuid", 0)) == 0
      || (by_vm = mkdir_in (t, root, "by-vm", 0)) == 0)
    goto err;

  /* One inode per point in time, linked from both trees. */
  for (i = 0, f = 0; i < cat->ndisks; i++) {
    const struct catalog_disk *d = &cat->disks[i];
    uint64_t dir;
    if (d->npoints == 0)
      continue;
    dir = mkdir_in (t, by_uuid, d->uuid, newest_time (d));
    if (dir == 0)
      goto err;
    for (j = 0; j < d->npoints; j++, f++) {
      struct layer *l = d->points[j].layer;
      files[f] = add_node (t, NODE_FILE, l->meta.time);
      if (files[f] == 0 || add_ent (t, dir, img_name (l->meta.snapshot),
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
      size_t base = 0;
      uint64_t ddir = mkdir_in (t, vdir, d->name, newest_time (d)), link;
      char *target;
      if (ddir == 0)
        goto err;
      for (k = 0; &cat->disks[k] != d; k++)
        base += cat->disks[k].npoints;
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
      if (add_ent (t, ddir, strdup ("latest"), link) == -1)
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
  return 0;
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
    free (n->target);
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

  if (d == NULL || d->kind != NODE_DIR)
    return 0;
  for (size_t i = 0; i < d->nents; i++)
    if (strcmp (d->ents[i].name, name) == 0)
      return d->ents[i].ino;
  return 0;
}
