/* mkchain: build a chain of layers in a store directly, for benchmarks.
 *
 *   mkchain STORE DISK-UUID VM-NAME DEPTH SIZE-MIB CHANGED [SEED [DENSITY]]
 *   mkchain --holes STORE DISK-UUID VM-NAME SIZE-MIB
 *
 * Makes a baseline of SIZE-MIB whose blocks hold pseudo-random data
 * (DENSITY percent of them, default 100; the rest are zero), then
 * DEPTH-1 deltas that each change CHANGED random blocks, as a backup
 * would have left them (same manifests, sets, data and index).  Prints
 * the snapshot uuids, oldest first.
 *
 * --holes makes one baseline whose every block is stored as far as its
 * index says (one DATA record each, as a fully copied disk has), while
 * its data file is all holes: the records hold the checksum of a block
 * of zeros, so every block reads back right.  A 2 TiB disk's index
 * (32 million records) without 2 TiB of data.  Not part of cbtfs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "chain/layer.h"
#include "chain/store/store.h"
#include "common/error.h"

/* DISK's folder in the directory store S, made if need be (this tool
 * writes a layer's index itself, to make huge ones fast); malloc'd. */
static char *
disk_dir (struct store *s, const char *disk)
{
  char *p;

  if (store_disk_prepare (s, disk) == -1
      || asprintf (&p, "%s/disks/%s", s->where, disk) == -1)
    return NULL;
  return p;
}

static uint64_t rng;

static uint64_t
next (void)
{
  /* xorshift64*: fast, and the data need only look random. */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * UINT64_C (2685821657736338717);
}

static void
fill (uint8_t *buf)
{
  for (size_t i = 0; i < CHAIN_BLOCK_SIZE; i += 8) {
    uint64_t v = next ();
    memcpy (buf + i, &v, 8);
  }
}

static void
rand_uuid (char out[UUID_LEN + 1])
{
  uint64_t a = next (), b = next ();
  snprintf (out, UUID_LEN + 1, "%08x-%04x-4%03x-8%03x-%012" PRIx64,
            (unsigned) (a >> 32), (unsigned) (a >> 16) & 0xffff,
            (unsigned) a & 0xfff, (unsigned) (b >> 48) & 0xfff,
            b & UINT64_C (0xffffffffffff));
}

static void
die (const char *what)
{
  fprintf (stderr, "mkchain: %s: %s\n", what, err_get ());
  exit (1);
}

static void
put_le (uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = v >> (8 * i);
}

/* The --holes baseline: records written as FORMAT.md says. */
static int
holes (char **argv)
{
  struct store *s = store_open (argv[0], true);
  struct layer_meta m = { 0 };
  uint64_t size = strtoull (argv[3], NULL, 10) << 20, n, b;
  uint8_t *zero = calloc (1, CHAIN_BLOCK_SIZE), *out;
  XXH128_canonical_t sum;
  char *dir, *index;
  struct layer *l;
  enum { BATCH = 65536 };
  FILE *f;

  if (s == NULL || (dir = disk_dir (s, argv[1])) == NULL)
    die (argv[0]);
  rng = 1;
  rand_uuid (m.snapshot);
  rand_uuid (m.vm);
  strcpy (m.disk, argv[1]);
  strcpy (m.chain, m.snapshot);
  m.seq = 1;
  m.time = 1700000000;
  m.size = size;
  m.full = true;
  m.vm_name = argv[2];
  m.disk_name = (char *) "disk";
  strcpy (m.userdevice, "0");
  l = layer_create (s, &m, NULL);
  if (l == NULL)
    die ("layer_create");
  layer_close (l);
  XXH128_canonicalFromHash (&sum, XXH3_128bits (zero, CHAIN_BLOCK_SIZE));
  if (asprintf (&index, "%s/%s/index", dir, m.snapshot) == -1
      || (f = fopen (index, "ab")) == NULL
      || (out = malloc ((size_t) BATCH * 40)) == NULL)
    return 1;
  n = chain_nblocks (size);
  for (b = 0; b < n;) {
    size_t k;
    for (k = 0; k < BATCH && b < n; k++, b++) {
      uint8_t *r = out + k * 40;
      put_le (r, b, 8);
      put_le (r + 8, 1, 4);
      put_le (r + 12, 1, 4);            /* DATA */
      memcpy (r + 16, sum.digest, 16);
      put_le (r + 32, XXH3_64bits (r, 32), 8);
    }
    if (fwrite (out, 40, k, f) != k)
      return 1;
  }
  if (fclose (f) != 0)
    return 1;
  printf ("%s\n", m.snapshot);
  store_close (s);
  return 0;
}

int
main (int argc, char **argv)
{
  if (argc == 6 && strcmp (argv[1], "--holes") == 0)
    return holes (argv + 2);
  struct store *s;
  struct layer_meta m = { 0 }, prev = { 0 };
  uint64_t depth, size, changed, nblocks, i, k, density;
  uint8_t *buf = malloc (CHAIN_BLOCK_SIZE);
  char vm[UUID_LEN + 1], *dir;

  if (argc < 7) {
    fprintf (stderr, "usage: mkchain STORE DISK-UUID VM-NAME DEPTH SIZE-MIB "
             "CHANGED [SEED [DENSITY]]\n");
    return 2;
  }
  depth = strtoull (argv[4], NULL, 10);
  size = strtoull (argv[5], NULL, 10) << 20;
  changed = strtoull (argv[6], NULL, 10);
  rng = argc > 7 ? strtoull (argv[7], NULL, 10) : (uint64_t) time (NULL);
  density = argc > 8 ? strtoull (argv[8], NULL, 10) : 100;
  rng |= 1;
  nblocks = chain_nblocks (size);
  s = store_open (argv[1], true);
  if (s == NULL)
    die (argv[1]);
  dir = disk_dir (s, argv[2]);
  if (dir == NULL)
    die (argv[2]);
  rand_uuid (vm);
  for (i = 0; i < depth; i++) {
    struct bitmap set = { 0 };
    struct layer *l;

    memset (&m, 0, sizeof m);
    rand_uuid (m.snapshot);
    strcpy (m.disk, argv[2]);
    strcpy (m.vm, vm);
    strcpy (m.chain, i ? prev.chain : m.snapshot);
    if (i)
      strcpy (m.parent, prev.snapshot);
    m.seq = i + 1;
    m.time = 1700000000 + i;
    m.size = size;
    m.full = i == 0;
    m.vm_name = argv[3];
    m.disk_name = (char *) "disk";
    strcpy (m.userdevice, "0");
    if (i) {
      if (bitmap_init (&set, nblocks) == -1)
        die ("bitmap");
      for (k = 0; k < changed; k++)
        bitmap_set (&set, next () % nblocks);
    }
    l = layer_create (s, &m, i ? &set : NULL);
    if (l == NULL)
      die ("layer_create");
    for (k = bitmap_next_set (layer_set (l), 0); k < nblocks;
         k = bitmap_next_set (layer_set (l), k + 1)) {
      if (i == 0 && next () % 100 >= density)
        memset (buf, 0, CHAIN_BLOCK_SIZE);
      else
        fill (buf);
      if (layer_put_block (l, k, buf) == -1)
        die ("put");
    }
    if (layer_sync (l) == -1)
      die ("sync");
    layer_close (l);
    bitmap_free (&set);
    printf ("%s\n", m.snapshot);
    prev = m;
  }
  free (dir);
  free (buf);
  store_close (s);
  return 0;
}
