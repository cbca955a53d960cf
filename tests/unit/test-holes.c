/* Unit test: where a point in time holds data (chain/holes.h), against
 * what reading it block by block says (chain_resolve and the layers'
 * block states), on chains with zeros, missing blocks, a disk that
 * grew, a missing parent, a damaged layer and a 2040 GiB sparse disk. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/catalog.h"
#include "chain/holes.h"
#include "chain/layer-impl.h"
#include "chain/layer.h"
#include "chain/read.h"
#include "chain/store/store.h"
#include "common/error.h"
#include "common/util.h"
#include "check.h"

#define BS CHAIN_BLOCK_SIZE

static struct store *st;

/* What layer ID holds at block B: 0 data, 1 zeros, 2 nothing yet. */
static int
kind (unsigned id, uint64_t b)
{
  return (b * 7 + id) % 3;
}

/* Make layer ID of DISK over PARENT (0: a baseline) of NBLOCKS blocks
 * with the blocks of SET (NULL: all), filled as kind () says; with
 * FILL_ALL, "nothing yet" blocks are data too.  Closed at once. */
static void
make_layer (unsigned disk, unsigned id, unsigned parent, uint64_t seq,
            uint64_t nblocks, const uint64_t *set, size_t nset, bool fill_all)
{
  struct layer_meta m = { 0 };
  struct bitmap changed = { 0 };
  uint8_t *buf = malloc (BS);
  struct layer *l;

  CHECK (buf);
  uuid_n (m.snapshot, id);
  uuid_n (m.disk, disk);
  uuid_n (m.chain, disk * 1000);
  if (parent)
    uuid_n (m.parent, parent);
  uuid_n (m.vm, disk);
  m.seq = seq;
  m.time = 1000 + seq;
  m.size = nblocks * BS;
  m.full = set == NULL;
  m.vm_name = (char *) "vm";
  m.disk_name = (char *) "d";
  snprintf (m.userdevice, sizeof m.userdevice, "0");
  if (set) {
    CHECK (bitmap_init (&changed, nblocks) == 0);
    for (size_t i = 0; i < nset; i++)
      bitmap_set (&changed, set[i]);
  }
  l = layer_create (st, &m, set ? &changed : NULL);
  CHECK (l);
  for (uint64_t b = bitmap_next_set (&l->changed, 0); b < nblocks;
       b = bitmap_next_set (&l->changed, b + 1)) {
    int k = kind (id, b);
    if (k == 2 && !fill_all)
      continue;
    memset (buf, 0, BS);
    if (k != 1)
      buf[b % BS] = 1 + id;
    CHECK (layer_put_block (l, b, buf) == 0);
  }
  CHECK (layer_sync (l) == 0);
  layer_close (l);
  bitmap_free (&changed);
  free (buf);
}

static struct layer *
find_point (const struct catalog *c, unsigned id)
{
  char u[UUID_LEN + 1];
  struct catalog_point *p;

  uuid_n (u, id);
  p = catalog_find (c, u, NULL);
  CHECK (p);
  return p->layer;
}

/* Whether block B of TOP may hold data, as a reader finds out. */
static bool
oracle (struct layer *top, uint64_t b)
{
  bool broken;
  struct layer *l = chain_resolve (top, b, &broken);

  return broken || (l && layer_block_state (l, b) != LAYER_ZERO);
}

/* chain_next_extent and chain_data_blocks agree with the oracle at
 * every block of TOP. */
static void
check_point (struct layer *top)
{
  uint64_t nb = layer_nblocks (top), count = 0;
  bool *d = malloc (nb + 1);

  CHECK (d);
  for (uint64_t b = 0; b < nb; b++)
    count += d[b] = oracle (top, b);
  for (uint64_t b = 0; b <= nb; b++) {
    uint64_t nd = b, nh = b;
    while (nd < nb && !d[nd])
      nd++;
    while (nh < nb && d[nh])
      nh++;
    if (chain_next_extent (top, b, true) != nd
        || chain_next_extent (top, b, false) != nh) {
      fprintf (stderr, "snapshot %s block %lu: data %lu (want %lu), hole "
               "%lu (want %lu)\n", layer_meta (top)->snapshot,
               (unsigned long) b,
               (unsigned long) chain_next_extent (top, b, true),
               (unsigned long) nd,
               (unsigned long) chain_next_extent (top, b, false),
               (unsigned long) nh);
      exit (1);
    }
  }
  CHECK (chain_data_blocks (top) == count);
  free (d);
}

/* A chain with data, zeros and missing blocks in every layer, over
 * partial words (300 blocks), and a disk that grew. */
static void
test_chain (void)
{
  static const uint64_t s1[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 63, 64, 65, 66,
                                 130, 200, 201, 202, 203, 204, 205, 206, 207,
                                 208, 209, 210, 211, 212, 213, 214, 215, 216 };
  static const uint64_t s2[] = { 5, 6, 7, 65, 129, 250, 251, 252, 253, 254,
                                 255, 256, 257, 258, 259, 299 };
  static const uint64_t s3[] = { 0, 1, 299, 350, 398, 399 };
  struct catalog *c;

  make_layer (1, 101, 0, 1, 300, s1, ARRAY_SIZE (s1), false);
  make_layer (1, 102, 101, 2, 300, s2, ARRAY_SIZE (s2), false);
  make_layer (1, 103, 102, 3, 400, s3, ARRAY_SIZE (s3), true);
  /* A full baseline: every block in the set, most of it zeros. */
  make_layer (2, 201, 0, 1, 130, NULL, 0, false);
  c = catalog_load (st, CATALOG_LAZY);
  CHECK (c);
  check_point (find_point (c, 101));
  check_point (find_point (c, 102));
  check_point (find_point (c, 103));
  check_point (find_point (c, 201));
  /* Past the older layers' 300 blocks only the top's set counts. */
  CHECK (chain_next_extent (find_point (c, 103), 300, true) == 350);
  catalog_free (c);
}

/* A delta whose parent is not in the store: what it does not hold is
 * unknowable, so data.  A layer found damaged: the same below it. */
static void
test_cut (void)
{
  static const uint64_t s[] = { 3, 4 }, s2[] = { 10 };
  struct catalog *c;
  struct layer *top;
  char d[UUID_LEN + 1], u[UUID_LEN + 1], *path;

  make_layer (3, 302, 301, 2, 100, s, ARRAY_SIZE (s), true);
  make_layer (4, 401, 0, 1, 100, s2, ARRAY_SIZE (s2), true);
  make_layer (4, 402, 401, 2, 100, s, ARRAY_SIZE (s), true);
  make_layer (4, 403, 402, 3, 100, s2, ARRAY_SIZE (s2), true);
  c = catalog_load (st, CATALOG_LAZY);
  CHECK (c);
  top = find_point (c, 302);
  check_point (top);
  CHECK (chain_data_blocks (top) == 100u - (unsigned) (kind (302, 3) == 1)
         - (unsigned) (kind (302, 4) == 1));
  CHECK (chain_next_extent (top, 0, true) == 0);

  uuid_n (d, 4);
  uuid_n (u, 402);
  CHECK (asprintf (&path, "%s/disks/%s/%s/changed", st->where, d, u) > 0);
  CHECK (truncate (path, 0) == 0);
  free (path);
  top = find_point (c, 403);
  check_point (top);
  /* Everything but the top's own zero block may be data. */
  CHECK (chain_next_extent (top, 0, true) == 0);
  CHECK (chain_next_extent (top, 0, false)
         == (kind (403, 10) == 1 ? 10u : 100u));
  catalog_free (c);
}

/* A lazy point: blocks not stored yet count as data until they are,
 * and the count is kept only once the chain is complete. */
static void
test_filling (void)
{
  static const uint64_t s[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
  uint8_t *zero = calloc (1, BS);
  struct catalog *c;
  struct layer *top;
  uint64_t before;

  make_layer (5, 501, 0, 1, 64, s, ARRAY_SIZE (s), false);
  c = catalog_load (st, CATALOG_LAZY);
  CHECK (c && zero);
  top = find_point (c, 501);
  check_point (top);
  before = chain_data_blocks (top);
  CHECK (!chain_readable (top) && top->resolve.data_blocks == 0);
  /* The host's missing blocks turn out to be zeros. */
  CHECK (layer_make_writable (top) == 0);
  for (size_t i = 0; i < ARRAY_SIZE (s); i++)
    if (kind (501, s[i]) == 2)
      CHECK (layer_put_block (top, s[i], zero) == 0);
  CHECK (layer_sync (top) == 0);
  CHECK (chain_readable (top));
  check_point (top);
  CHECK (chain_data_blocks (top) < before);
  CHECK (top->resolve.data_blocks == chain_data_blocks (top) + 1);
  catalog_free (c);
  free (zero);
}

/* 2040 GiB with three blocks of data: the answers skip the empty
 * terabytes. */
static void
test_huge (void)
{
  const uint64_t nb = (UINT64_C (2040) << 30) / BS, mid = nb / 2 + 5;
  const uint64_t s[] = { 0, mid, nb - 1 };
  struct catalog *c;
  struct layer *top;

  make_layer (6, 600, 0, 1, nb, s, ARRAY_SIZE (s), true);
  c = catalog_load (st, CATALOG_LAZY);
  CHECK (c);
  top = find_point (c, 600);
  /* Block 0: kind (600, 0) is 0, data; the rest as kind says. */
  CHECK (kind (600, 0) == 0 && kind (600, mid) != 1 && kind (600, nb - 1) != 1);
  CHECK (chain_next_extent (top, 0, true) == 0);
  CHECK (chain_next_extent (top, 0, false) == 1);
  CHECK (chain_next_extent (top, 1, true) == mid);
  CHECK (chain_next_extent (top, mid, false) == mid + 1);
  CHECK (chain_next_extent (top, mid + 1, true) == nb - 1);
  CHECK (chain_next_extent (top, nb - 1, false) == nb);
  CHECK (chain_next_extent (top, nb, true) == nb);
  CHECK (chain_data_blocks (top) == 3);
  catalog_free (c);
}

int
main (void)
{
  char *dir = make_tmpdir (), *path;

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  st = store_open (path, true);
  CHECK (st);
  test_chain ();
  test_cut ();
  test_filling ();
  test_huge ();
  store_close (st);
  free (path);
  rm_rf (dir);
  return 0;
}
