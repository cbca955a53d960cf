/* Unit test: dropping a layer by folding it into its child
 * (chain/fold.h): the child's point reads the same, block by block,
 * whichever side the merged layer starts from; the fold writes the
 * smaller side; an incomplete layer is folded only when its child
 * changed again every block it lacks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/fold.h"
#include "chain/layer.h"
#include "chain/store/store.h"
#include "common/error.h"
#include "common/util.h"
#include "check.h"

#define BS CHAIN_BLOCK_SIZE
#define DISK "0000000d-0000-0000-0000-00000000000d"

static struct store *st;

/* Block B's bytes as layer ID stores them; 0 means all zeros. */
static void
pattern (uint8_t *buf, unsigned id, uint64_t b)
{
  for (size_t i = 0; i < BS; i++)
    buf[i] = id ? (uint8_t) (id * 61 + b * 13 + i) : 0;
}

/* Layer ID (parent PARENT, 0 for a baseline) of NBLOCKS blocks whose set
 * holds the blocks WHAT names: 'd' data, 'z' zeros, 'm' missing (in the
 * set, not stored), '.' not in the set. */
static void
make_layer (unsigned id, unsigned parent, const char *what)
{
  struct layer_meta m = { 0 };
  struct bitmap set = { 0 };
  uint64_t nblocks = strlen (what);
  uint8_t *buf = malloc (BS);
  struct layer *l;

  uuid_n (m.snapshot, id);
  memcpy (m.disk, DISK, sizeof m.disk);
  uuid_n (m.chain, 1);
  if (parent)
    uuid_n (m.parent, parent);
  m.seq = id;
  m.time = 1000 + id;
  m.size = nblocks * BS;
  m.vm_name = (char *) "vm";
  m.disk_name = (char *) "d";
  strcpy (m.userdevice, "0");
  CHECK (bitmap_init (&set, nblocks) == 0);
  for (uint64_t b = 0; b < nblocks; b++)
    if (what[b] != '.')
      bitmap_set (&set, b);
  l = layer_create (st, &m, &set);
  CHECK (l != NULL);
  for (uint64_t b = 0; b < nblocks; b++)
    if (what[b] == 'd' || what[b] == 'z') {
      pattern (buf, what[b] == 'd' ? id : 0, b);
      CHECK (layer_put_block (l, b, buf) == 0);
    }
  CHECK (layer_sync (l) == 0);
  layer_close (l);
  bitmap_free (&set);
  free (buf);
}

/* Layer ID reads as WANT says, block by block: the id of the layer
 * whose bytes it holds ('0'…'9'), 'z' zeros, 'm' missing, '.' absent. */
static void
check_layer (unsigned id, unsigned parent, const char *want)
{
  char snap[UUID_LEN + 1], par[UUID_LEN + 1] = "";
  uint8_t *buf = malloc (BS), *exp = malloc (BS);
  struct layer *l;

  uuid_n (snap, id);
  if (parent)
    uuid_n (par, parent);
  l = layer_open (st, DISK, snap, false);
  CHECK (l != NULL && layer_nblocks (l) == strlen (want));
  CHECK (strcmp (layer_meta (l)->parent, par) == 0);
  for (uint64_t b = 0; b < strlen (want); b++) {
    enum layer_block s = layer_block_state (l, b);
    switch (want[b]) {
    case '.': CHECK (s == LAYER_ABSENT); break;
    case 'm': CHECK (s == LAYER_MISSING); break;
    case 'z':
      CHECK (s == LAYER_ZERO && layer_read_block (l, b, buf) == 0
             && is_zero (buf, BS));
      break;
    default:
      pattern (exp, want[b] - '0', b);
      CHECK (s == LAYER_DATA && layer_read_block (l, b, buf) == 0
             && memcmp (buf, exp, BS) == 0);
    }
  }
  layer_close (l);
  free (buf);
  free (exp);
}

static bool
exists (unsigned id)
{
  char snap[UUID_LEN + 1];

  uuid_n (snap, id);
  return store_has_layer (st, DISK, snap) == 1;
}

static void
fold (unsigned drop, unsigned child, struct fold_stats *s)
{
  char d[UUID_LEN + 1], c[UUID_LEN + 1];

  uuid_n (d, drop);
  uuid_n (c, child);
  CHECK (fold_drop (st, DISK, d, child ? c : NULL, 0, s) == 0);
  CHECK (!exists (drop) && (child == 0 || exists (child)));
}

int
main (void)
{
  char *dir = make_tmpdir (), *path;
  char p5[UUID_LEN + 1], p6[UUID_LEN + 1], p7[UUID_LEN + 1];
  struct fold_stats s;

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  st = store_open (path, true);
  CHECK (st != NULL && store_lock (st, "prune", 0) == 0);

  /* A big baseline under a small delta (which misses a block of its
   * own, and zeroes one): the merge starts from the baseline, writes
   * the delta's one stored block, and block 9 of the disk that grew
   * is the delta's alone. */
  make_layer (1, 0, "dddddddddd");
  make_layer (2, 1, "..d..z..m..");
  fold (1, 2, &s);
  CHECK (s.merged && s.started && s.blocks_written == 1);
  check_layer (2, 0, "11211z11m1.");

  /* A smaller delta under a bigger one: the merge starts from the
   * child and writes the dropped layer's four blocks the child lacks. */
  make_layer (3, 2, "ddddd.dd.dd");
  make_layer (4, 3, "d.dd.d.dd.d");
  fold (3, 4, &s);
  CHECK (s.merged && s.blocks_written == 4);
  check_layer (4, 2, "43443434434");

  /* A layer missing a block that its child reads from it is not
   * folded: nothing changes. */
  make_layer (6, 4, "m..........");
  make_layer (7, 6, ".d.........");
  uuid_n (p6, 6);
  uuid_n (p7, 7);
  CHECK_FAILS (fold_drop (st, DISK, p6, p7, 0, &s), ENODATA,
               "blocks are not in the store");
  CHECK (!s.started && exists (6));
  check_layer (7, 6, ".7.........");

  /* One whose missing blocks the child changed again is: layer 2
   * misses block 8, which 4 holds. */
  fold (2, 4, &s);
  CHECK (s.merged);
  check_layer (4, 0, "43443434434");

  /* Nor into a layer that is not its child. */
  make_layer (5, 4, "...........");
  uuid_n (p5, 5);
  CHECK_FAILS (fold_drop (st, DISK, p6, p5, 0, &s), EINVAL,
               "its parent is not");
  CHECK (!s.started && exists (6) && exists (5));

  /* A layer with no child is removed. */
  fold (5, 0, &s);
  CHECK (!s.merged && !exists (5));

  store_close (st);
  free (path);
  rm_rf (dir);
  return 0;
}
