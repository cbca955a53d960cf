/* cbtfs: the mounted tree, as inodes, built from a catalog.
 *
 * Thread model: single-threaded build, then read-only (see tree.h).
 */
#include <errno.h>
#include <stdbool.h>
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
  return 0;
 err:
  free (files);
  return -1;
}

/* Give node N (index + 1 while building) the number that PREV gives
 * its path, PINO, when it is the same thing there, and likewise what
 * lies under it.  An image is the same when its snapshot is. */
static void
keep_number (struct tree *t, size_t n, const struct tree *prev, uint64_t pino)
{
  struct node *nn = &t->nodes[n - 1];
  const struct node *pn = tree_node (prev, pino);

  if (pn == NULL || pn->kind != nn->kind || nn->ino != 0)
    return;
  if (nn->kind == NODE_FILE
      && strcmp (layer_meta (nn->top)->snapshot,
                 layer_meta (pn->top)->snapshot) != 0)
    return;
  nn->ino = pino;
  for (size_t i = 0; i < nn->nents; i++) {
    uint64_t q = tree_lookup (prev, pino, nn->ents[i].name);
    if (q)
      keep_number (t, nn->ents[i].ino, prev, q);
  }
}

static int
cmp_ino (const void *a, const void *b)
{
  const struct tree_ino *x = a, *y = b;

  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Number the nodes (see tree.h) and index them by number. */
static int
number (struct tree *t, const struct tree *prev)
{
  t->next_ino = prev ? prev->next_ino : 1;
  if (prev)
    keep_number (t, 1, prev, 1);
  for (size_t i = 0; i < t->nnodes; i++)
    if (t->nodes[i].ino == 0)
      t->nodes[i].ino = t->next_ino++;
  for (size_t i = 0; i < t->nnodes; i++)
    for (size_t k = 0; k < t->nodes[i].nents; k++)
      t->nodes[i].ents[k].ino = t->nodes[t->nodes[i].ents[k].ino - 1].ino;
  t->by_ino = malloc ((t->nnodes ? t->nnodes : 1) * sizeof *t->by_ino);
  if (t->by_ino == NULL)
    return -1;
  for (size_t i = 0; i < t->nnodes; i++)
    t->by_ino[i] = (struct tree_ino) { t->nodes[i].ino, i };
  qsort (t->by_ino, t->nnodes, sizeof *t->by_ino, cmp_ino);
  return 0;
}

struct tree *
tree_build (const struct catalog *cat, const struct tree *prev)
{
  struct tree *t = calloc (1, sizeof *t);

  if (t == NULL || build (t, cat) == -1 || number (t, prev) == -1
      || index_names (t) == -1) {
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
  free (t->by_ino);
  free (t);
}

const struct node *
tree_node (const struct tree *t, uint64_t ino)
{
  size_t lo = 0, hi = t->nnodes;

  /* While building, nodes are known by index + 1. */
  if (t->by_ino == NULL)
    return ino == 0 || ino > t->nnodes ? NULL : &t->nodes[ino - 1];
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (t->by_ino[mid].ino == ino)
      return &t->nodes[t->by_ino[mid].node];
    if (t->by_ino[mid].ino < ino)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* Whether folder NEXT lists what PREV did, all as PREV's (same ino);
 * tells CB about each of PREV's names that is gone or moved. */
static bool
same_listing (const struct node *prev, const struct tree *next,
              const struct node *nn, const struct tree_changes *cb)
{
  bool same = prev->nents == nn->nents;

  for (size_t i = 0; i < prev->nents; i++)
    if (tree_lookup (next, prev->ino, prev->ents[i].name) != prev->ents[i].ino) {
      cb->entry (cb->opaque, prev->ino, prev->ents[i].name);
      same = false;
    }
  return same;
}

void
tree_diff (const struct tree *prev, const struct tree *next,
           const struct tree_changes *cb)
{
  for (size_t i = 0; i < prev->nnodes; i++) {
    const struct node *pn = &prev->nodes[i];
    const struct node *nn = tree_node (next, pn->ino);

    /* Gone: the name in its folder is told, below or above. */
    if (nn == NULL)
      continue;
    if (pn->kind == NODE_DIR) {
      if (!same_listing (pn, next, nn, cb) || pn->mtime != nn->mtime
          || pn->nlink != nn->nlink)
        cb->inode (cb->opaque, pn->ino);
    }
    else if (pn->kind == NODE_LINK
             && (strcmp (pn->target, nn->target) != 0
                 || pn->mtime != nn->mtime))
      cb->inode (cb->opaque, pn->ino);
    else if (pn->kind == NODE_TEXT
             && (pn->text_len != nn->text_len || pn->mtime != nn->mtime
                 || memcmp (pn->text, nn->text, pn->text_len) != 0))
      cb->inode (cb->opaque, pn->ino);
  }
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
