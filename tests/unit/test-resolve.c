/* Unit test: resolving points in time across layers, and the catalog's
 * names for them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "chain/catalog.h"
#include "chain/layer-impl.h"
#include "chain/layer.h"
#include "chain/read.h"
#include "chain/store/store.h"
#include "common/error.h"
#include "common/util.h"
#include "engine/points.h"
#include "check.h"

#define BS CHAIN_BLOCK_SIZE

static struct store *st;

static void
pattern (uint8_t *buf, unsigned layer, uint64_t b)
{
  for (size_t i = 0; i < BS; i++)
    buf[i] = (uint8_t) (layer * 61 + b * 13 + i);
}

/* Make and fill one layer: blocks in SET (NULL = all, a baseline) get
 * pattern (id, b), except those in ZEROS which are zero. */
static struct layer *
make_layer (unsigned disk, unsigned id, unsigned parent, unsigned chain,
            uint64_t seq, int64_t time, uint64_t nblocks, const uint64_t *set,
            size_t nset, const char *vm_name, unsigned vm, const char *disk_name,
            const char *dev, bool fill_all)
{
  struct layer_meta m = { 0 };
  struct bitmap changed = { 0 };
  char uuid[UUID_LEN + 1];
  struct layer *l;
  uint8_t *buf = malloc (BS);
  uint64_t b;

  uuid_n (uuid, disk);
  uuid_n (m.snapshot, id);
  memcpy (m.disk, uuid, sizeof uuid);
  uuid_n (m.chain, chain);
  if (parent)
    uuid_n (m.parent, parent);
  uuid_n (m.vm, vm);
  m.seq = seq;
  m.time = time;
  m.size = nblocks * BS;
  m.full = set == NULL;
  m.vm_name = (char *) vm_name;
  m.disk_name = (char *) disk_name;
  snprintf (m.userdevice, sizeof m.userdevice, "%s", dev);
  if (set) {
    CHECK (bitmap_init (&changed, nblocks) == 0);
    for (size_t i = 0; i < nset; i++)
      bitmap_set (&changed, set[i]);
  }
  l = layer_create (st, &m, set ? &changed : NULL);
  CHECK (l);
  for (b = 0; b < nblocks; b++) {
    if (!bitmap_get (&l->changed, b))
      continue;
    if (!fill_all && b == nblocks - 1)
      continue;                 /* leave the last block missing */
    if (b % 4 == 2)
      memset (buf, 0, BS);
    else
      pattern (buf, id, b);
    CHECK (layer_put_block (l, b, buf) == 0);
  }
  CHECK (layer_sync (l) == 0);
  bitmap_free (&changed);
  free (buf);
  return l;
}

/* Expected content of block B at the point whose layers (oldest first)
 * are given by their ids and sets. */
struct lspec {
  unsigned id;
  uint64_t nblocks;
  const uint64_t *set;
  size_t nset;
};

static void
expect_block (const struct lspec *ls, size_t n, uint64_t b, uint8_t *out)
{
  for (size_t k = n; k-- > 0;) {
    bool in = ls[k].set == NULL ? b < ls[k].nblocks : false;
    for (size_t i = 0; ls[k].set && i < ls[k].nset; i++)
      in |= ls[k].set[i] == b;
    if (in) {
      if (b % 4 == 2)
        memset (out, 0, BS);
      else
        pattern (out, ls[k].id, b);
      return;
    }
  }
  memset (out, 0, BS);
}

static struct layer *
find_point (const struct catalog *c, unsigned id)
{
  char u[UUID_LEN + 1];

  uuid_n (u, id);
  for (size_t i = 0; i < c->ndisks; i++)
    for (size_t j = 0; j < c->disks[i].npoints; j++)
      if (strcmp (c->disks[i].points[j].layer->meta.snapshot, u) == 0)
        return c->disks[i].points[j].layer;
  return NULL;
}

static void
test_resolution (void)
{
  static const uint64_t d1[] = { 1, 3 }, d2[] = { 3, 5, 9, 10 };
  /* Disk 1: baseline of 8 blocks, then two deltas; the disk grows to 12
   * blocks in the second (blocks 8..11 not in any set but 9, 10). */
  const struct lspec ls[] = {
    { 101, 8, NULL, 0 }, { 102, 8, d1, 2 }, { 103, 12, d2, 4 },
  };
  struct catalog *c;
  uint8_t *got = malloc (12 * BS), *want = malloc (12 * BS);
  struct layer *top;
  bool broken;

  layer_close (make_layer (1, 101, 0, 101, 1, 1000, 8, NULL, 0, "vm", 7, "d", "0", true));
  layer_close (make_layer (1, 102, 101, 101, 2, 2000, 8, d1, 2, "vm", 7, "d", "0", true));
  layer_close (make_layer (1, 103, 102, 101, 3, 3000, 12, d2, 4, "vm", 7, "d", "0", true));
  for (unsigned flags = 0; flags <= CATALOG_LAZY; flags += CATALOG_LAZY) {
    c = catalog_load (st, flags);
    CHECK (c && c->ndisks == 1 && c->disks[0].npoints == 3);

    for (size_t p = 0; p < 3; p++) {
      top = find_point (c, ls[p].id);
      CHECK (top);
      for (uint64_t b = 0; b < ls[p].nblocks; b++)
        expect_block (ls, p + 1, b, want + b * BS);
      CHECK (chain_read (top, got, ls[p].nblocks * BS, 0, NULL) == 0);
      CHECK (memcmp (got, want, ls[p].nblocks * BS) == 0);
      /* Unaligned ranges spanning blocks read the same bytes. */
      CHECK (chain_read (top, got, 3 * BS + 17, BS - 5, NULL) == 0);
      CHECK (memcmp (got, want + BS - 5, 3 * BS + 17) == 0);
    }
    top = find_point (c, 103);
    CHECK (chain_resolve (top, 3, &broken) == top && !broken);
    CHECK (chain_resolve (top, 1, &broken) == find_point (c, 102));
    CHECK (chain_resolve (top, 0, &broken) == find_point (c, 101));
    CHECK (chain_resolve (top, 11, &broken) == NULL && !broken);  /* grown: zeros */
    CHECK_FAILS (chain_read (top, got, 2, 12 * BS - 1, NULL), EINVAL, "past the end");
    catalog_free (c);
  }
  free (got);
  free (want);
}

/* Deep enough that points are resolved through their index: every
 * block of every point must read as the model says. */
static void
test_deep_chain (void)
{
  enum { DEPTH = 20, NB = 40 };
  static uint64_t sets[DEPTH][NB];
  struct lspec ls[DEPTH];
  size_t nset[DEPTH];
  struct catalog *c;
  uint8_t *got = malloc (NB * BS), *want = malloc (NB * BS);
  uint64_t seed = 12345;

  for (unsigned k = 0; k < DEPTH; k++) {
    /* Sizes grow now and then, so runs past an older end read zeros. */
    uint64_t nb = k < 5 ? 30 : k < 12 ? 34 : NB;
    nset[k] = 0;
    for (uint64_t b = 0; k > 0 && b < nb; b++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      if ((seed >> 33) % 5 == 0)
        sets[k][nset[k]++] = b;
    }
    ls[k] = (struct lspec) { 500 + k, nb, k ? sets[k] : NULL, nset[k] };
    layer_close (make_layer (5, 500 + k, k ? 500 + k - 1 : 0, 500, k + 1,
                             9000 + k, nb, k ? sets[k] : NULL, nset[k],
                             "deep", 11, "d", "0", true));
  }
  for (unsigned flags = 0; flags <= CATALOG_LAZY; flags += CATALOG_LAZY) {
    c = catalog_load (st, flags);
    CHECK (c);
    for (unsigned p = 0; p < DEPTH; p++) {
      struct layer *top = find_point (c, 500 + p);
      for (uint64_t b = 0; b < ls[p].nblocks; b++)
        expect_block (ls, p + 1, b, want + b * BS);
      CHECK (chain_read (top, got, ls[p].nblocks * BS, 0, NULL) == 0);
      CHECK (memcmp (got, want, ls[p].nblocks * BS) == 0);
      CHECK (chain_read (top, got, 3 * BS + 100, 7 * BS - 50, NULL) == 0);
      CHECK (memcmp (got, want + 7 * BS - 50, 3 * BS + 100) == 0);
    }
    catalog_free (c);
  }

  /* The same chain with a layer gone from the middle: points above it
   * read what their own layers hold and fail (EIO) below. */
  {
    char *dir, *gone;
    char u[UUID_LEN + 1], dv[UUID_LEN + 1];
    struct layer *top;
    bool broken;
    uuid_n (u, 500 + 6);
    uuid_n (dv, 5);
    CHECK (asprintf (&dir, "%s/disks/%s/%s", st->where, dv, u) > 0);
    CHECK (asprintf (&gone, "%s/tmp/gone", st->where) > 0);
    CHECK (rename (dir, gone) == 0);
    free (gone);
    for (unsigned flags = 0; flags <= CATALOG_LAZY; flags += CATALOG_LAZY) {
      c = catalog_load (st, flags);
      CHECK (c);
      top = find_point (c, 500 + DEPTH - 1);
      for (uint64_t b = 0; b < NB; b++) {
        struct layer *l = chain_resolve (top, b, &broken);
        bool above = false;
        for (unsigned k = DEPTH - 1; k > 6 && !above; k--)
          for (size_t i = 0; i < nset[k]; i++)
            above |= sets[k][i] == b;
        CHECK (above ? (l != NULL && !broken) : (l == NULL && broken));
      }
      catalog_free (c);
    }
    free (dir);
  }
  free (got);
  free (want);
}

static void
test_incomplete_and_missing_parent (void)
{
  static const uint64_t d[] = { 0 };
  struct catalog *c;
  uint8_t *buf = malloc (4 * BS);
  struct layer *top;

  /* Disk 2: an incomplete baseline (last block missing). */
  layer_close (make_layer (2, 201, 0, 201, 1, 1000, 4, NULL, 0, "vm2", 8, "x", "0", false));
  /* Disk 3: a delta whose parent never reached the store. */
  layer_close (make_layer (3, 302, 301, 301, 2, 2000, 4, d, 1, "vm3", 9, "y", "0", true));
  for (unsigned flags = 0; flags <= CATALOG_LAZY; flags += CATALOG_LAZY) {
    c = catalog_load (st, flags);
    CHECK (c);
    top = find_point (c, 201);
    CHECK (chain_read (top, buf, 3 * BS, 0, NULL) == 0);
    CHECK_FAILS (chain_read (top, buf, 512, 3 * BS, NULL), EIO, "incomplete");
    top = find_point (c, 302);
    CHECK (top->parent_missing);
    CHECK (chain_read (top, buf, BS, 0, NULL) == 0);
    CHECK_FAILS (chain_read (top, buf, BS, BS, NULL), EIO, "missing from the store");
    catalog_free (c);
  }
  free (buf);
}

static void
test_safe_names (void)
{
  char long_name[1001];
  char *s;

  s = catalog_safe_name ("../x/y");
  CHECK (strcmp (s, ".._x_y") == 0);
  free (s);
  s = catalog_safe_name ("..");
  CHECK (strcmp (s, "_..") == 0);
  free (s);
  s = catalog_safe_name (".");
  CHECK (strcmp (s, "_.") == 0);
  free (s);
  s = catalog_safe_name ("");
  CHECK (strcmp (s, "unnamed") == 0);
  free (s);
  s = catalog_safe_name ("a\tb\nc\x7f");
  CHECK (strcmp (s, "a_b_c_") == 0);
  free (s);
  /* 1000 bytes of 2-byte characters: cut to <= 200 bytes, never mid-character. */
  for (int i = 0; i < 1000; i += 2) {
    long_name[i] = (char) 0xc3;
    long_name[i + 1] = (char) 0xa9;
  }
  long_name[1000] = '\0';
  s = catalog_safe_name (long_name);
  CHECK (strlen (s) == 200 && (unsigned char) s[198] == 0xc3);
  free (s);
  long_name[1] = 'x';           /* now odd-aligned: the cut backs off */
  s = catalog_safe_name (long_name + 1);
  CHECK (strlen (s) <= 200 && (strlen (s) % 2) == 1);
  free (s);
  {
    char buf[32];
    catalog_time_name (1764095684, buf, sizeof buf);
    CHECK (strcmp (buf, "2025-11-25T18:34:44Z") == 0);
  }
}

/* Points named as restore and serve take them: uuid or tree path. */
static void
test_point_find (const struct catalog *c, const struct catalog_disk *d)
{
  struct catalog_disk *got = NULL;
  char snap[UUID_LEN + 1], path[200];

  uuid_n (snap, 2102);
  CHECK (engine_point_find (c, snap, &got) == &d->points[1] && got == d);
  CHECK (engine_point_find (c, "by-vm/web/data-2/latest", NULL) == &d->points[2]);
  CHECK (engine_point_find (c, "/by-vm/web/data-2/1970-01-01T01:23:20Z.2.img",
                            &got) == &d->points[1] && got == d);
  snprintf (path, sizeof path, "by-uuid/%s/%s.img", d->uuid, snap);
  CHECK (engine_point_find (c, path, NULL) == &d->points[1]);
  /* The snapshot under another disk's folder names nothing. */
  snprintf (path, sizeof path, "by-uuid/%s/%s.img", c->disks[0].uuid == d->uuid
            ? c->disks[1].uuid : c->disks[0].uuid, snap);
  CHECK (engine_point_find (c, path, NULL) == NULL);
  CHECK (engine_point_find (c, "by-vm/web/data-2/1970-01-01T01:23:20Z", NULL) == NULL);
  CHECK (engine_point_find (c, "by-vm/web/data-2", NULL) == NULL);
  CHECK (engine_point_find (c, "by-vm/web.2/data-2/latest", NULL) == NULL);
  CHECK (engine_point_find (c, "by-vm/web/data-2/latest/x", NULL) == NULL);
  CHECK (engine_point_find (c, "no-such-uuid", NULL) == NULL);
}

static void
test_names (void)
{
  struct catalog *c;
  const struct catalog_vm *a = NULL, *b = NULL;

  /* VM 20 "web" is older than VM 10 "web": it keeps the name although its
   * uuid sorts after.  VM 20 has two disks both called "data". */
  layer_close (make_layer (20, 2001, 0, 2001, 1, 5000, 2, NULL, 0, "web", 20, "data", "1", true));
  layer_close (make_layer (21, 2101, 0, 2101, 1, 5000, 2, NULL, 0, "web", 20, "data", "2", true));
  layer_close (make_layer (21, 2102, 2101, 2101, 2, 5000, 2, NULL, 0, "web", 20, "data", "2", true));
  layer_close (make_layer (21, 2103, 2102, 2101, 3, 5001, 2, NULL, 0, "web", 20, "data", "2", true));
  layer_close (make_layer (10, 1001, 0, 1001, 1, 6000, 2, NULL, 0, "web", 10, "../root", "0", true));
  c = catalog_load (st, 0);
  CHECK (c);
  for (size_t i = 0; i < c->nvms; i++) {
    char u20[UUID_LEN + 1], u10[UUID_LEN + 1];
    uuid_n (u20, 20);
    uuid_n (u10, 10);
    if (strcmp (c->vms[i].uuid, u20) == 0)
      a = &c->vms[i];
    if (strcmp (c->vms[i].uuid, u10) == 0)
      b = &c->vms[i];
  }
  CHECK (a && b);
  CHECK (strcmp (a->name, "web") == 0 && strcmp (b->name, "web.2") == 0);
  CHECK (a->ndisks == 2);
  CHECK (strcmp (a->disks[0]->name, "data-1") == 0);
  CHECK (strcmp (a->disks[1]->name, "data-2") == 0);
  CHECK (b->ndisks == 1 && strcmp (b->disks[0]->name, ".._root") == 0);
  /* Three points, two within one second. */
  CHECK (a->disks[1]->npoints == 3);
  CHECK (strcmp (a->disks[1]->points[0].name, "1970-01-01T01:23:20Z") == 0);
  CHECK (strcmp (a->disks[1]->points[1].name, "1970-01-01T01:23:20Z.2") == 0);
  CHECK (strcmp (a->disks[1]->points[2].name, "1970-01-01T01:23:21Z") == 0);
  test_point_find (c, a->disks[1]);
  catalog_free (c);
}

/* Path of FILE in the layer of snapshot ID of disk DISK (malloc'd). */
static char *
layer_file (unsigned disk, unsigned id, const char *file)
{
  char d[UUID_LEN + 1], u[UUID_LEN + 1], *p;

  uuid_n (d, disk);
  uuid_n (u, id);
  CHECK (asprintf (&p, "%s/disks/%s/%s/%s", st->where, d, u, file) > 0);
  return p;
}

static bool
unloaded (const struct layer *l)
{
  return l->load_state == LAYER_UNLOADED && l->changed.words == NULL;
}

/* A lazy catalog reads a layer's set and index only when a read needs
 * that layer; damage found then fails the reads that need the layer
 * (EIO), never serving an older layer's block instead. */
static void
test_lazy_load (void)
{
  static const uint64_t s2[] = { 1, 3 }, s3[] = { 3, 5 };
  const struct lspec ls[] = {
    { 3001, 8, NULL, 0 }, { 3002, 8, s2, 2 }, { 3003, 8, s3, 2 },
  };
  enum { DEPTH = 12, NB = 16 };
  uint8_t *got = malloc (NB * BS), *want = malloc (BS);
  struct catalog *c;
  struct layer *top, *mid, *base;
  char *path;
  int fd;

  /* Disk 30: baseline, then deltas {1,3} and {3,5}. */
  layer_close (make_layer (30, 3001, 0, 3001, 1, 7000, 8, NULL, 0, "lazy", 30, "d", "0", true));
  layer_close (make_layer (30, 3002, 3001, 3001, 2, 7001, 8, s2, 2, "lazy", 30, "d", "0", true));
  layer_close (make_layer (30, 3003, 3002, 3001, 3, 7002, 8, s3, 2, "lazy", 30, "d", "0", true));
  /* Disk 31: a chain deep enough to be read through its index; layer
   * k (k >= 1) changes block k. */
  for (unsigned k = 0; k < DEPTH; k++) {
    uint64_t b = k;
    layer_close (make_layer (31, 3100 + k, k ? 3100 + k - 1 : 0, 3100, k + 1,
                             7100 + k, NB, k ? &b : NULL, k ? 1 : 0,
                             "lazy", 30, "deep", "1", true));
  }

  c = catalog_load (st, CATALOG_LAZY);
  CHECK (c);
  top = find_point (c, 3003);
  mid = find_point (c, 3002);
  base = find_point (c, 3001);
  CHECK (top && mid && base);
  /* Mounted: names and sizes known, nothing else read. */
  CHECK (unloaded (top) && unloaded (mid) && unloaded (base));
  CHECK (top->meta.size == 8 * BS);
  /* Block 5 is the top layer's own: only that layer is read. */
  CHECK (chain_read (top, got, BS, 5 * BS, NULL) == 0);
  expect_block (ls, 3, 5, want);
  CHECK (memcmp (got, want, BS) == 0);
  CHECK (top->load_state == LAYER_LOADED && top->changed.words != NULL);
  CHECK (unloaded (mid) && unloaded (base));

  /* Damage the middle layer's set after the catalog was loaded. */
  path = layer_file (30, 3002, "changed");
  CHECK (truncate (path, 0) == 0);
  free (path);
  /* Block 1 is the damaged layer's (the baseline has an older one):
   * the read fails rather than serve the baseline's block. */
  CHECK_FAILS (chain_read (top, got, BS, 1 * BS, NULL), EIO, "damaged");
  CHECK (mid->load_state == LAYER_DAMAGED);
  /* Blocks below it cannot be known either; it stays damaged. */
  CHECK_FAILS (chain_read (top, got, BS, 0, NULL), EIO, "damaged");
  CHECK_FAILS (chain_read (mid, got, BS, 0, NULL), EIO, "damaged");
  CHECK (unloaded (base));
  /* The top layer's own blocks and the baseline still read. */
  CHECK (chain_read (top, got, BS, 3 * BS, NULL) == 0);
  expect_block (ls, 3, 3, want);
  CHECK (memcmp (got, want, BS) == 0);
  CHECK (chain_read (base, got, BS, BS, NULL) == 0);
  expect_block (ls, 1, 1, want);
  CHECK (memcmp (got, want, BS) == 0);

  /* A deep point: damage the index of layer 3104 (block 4) now. */
  {
    struct layer *deep = find_point (c, 3100 + DEPTH - 1);
    struct layer *l4 = find_point (c, 3104);
    CHECK (deep && l4 && unloaded (deep) && unloaded (l4));
    path = layer_file (31, 3104, "index");
    fd = open (path, O_WRONLY);
    CHECK (fd >= 0 && pwrite (fd, "X", 1, 0) == 1 && close (fd) == 0);
    free (path);
    for (uint64_t b = 0; b < NB; b++) {
      if (b >= 5 && b < DEPTH) {
        /* Held by a layer above the damaged one. */
        CHECK (chain_read (deep, got, BS, b * BS, NULL) == 0);
        pattern (want, 3100 + b, b);
        if (b % 4 == 2)
          memset (want, 0, BS);
        CHECK (memcmp (got, want, BS) == 0);
      }
      else
        CHECK_FAILS (chain_read (deep, got, BS, b * BS, NULL), EIO,
                     "not a cbtfs index");
    }
    CHECK (l4->load_state == LAYER_DAMAGED);
  }
  catalog_free (c);

  /* Loaded eagerly, both damaged layers are found at load and left out. */
  c = catalog_load (st, 0);
  CHECK (c && c->nskipped >= 2);
  CHECK (find_point (c, 3002) == NULL && find_point (c, 3104) == NULL);
  CHECK (find_point (c, 3003)->parent_missing);
  catalog_free (c);
  free (got);
  free (want);
}

int
main (void)
{
  char *dir = make_tmpdir (), *path;

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  st = store_open (path, true);
  CHECK (st);
  test_resolution ();
  test_incomplete_and_missing_parent ();
  test_deep_chain ();
  test_safe_names ();
  test_names ();
  test_lazy_load ();
  store_close (st);
  free (path);
  rm_rf (dir);
  return 0;
}
