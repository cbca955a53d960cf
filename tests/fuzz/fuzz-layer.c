/* Fuzz target: a layer's changed set and index files, as layer_open
 * reads them from the store.  The input is split in two at the length
 * its first byte gives: the "changed" file, then the "index" file (the
 * valid header is prepended so the records themselves get fuzzed). */
#include <fcntl.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "chain/layer.h"
#include "chain/store/store.h"
#include "common/util.h"
#include "../unit/check.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define DISK "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define SNAP "11111111-2222-3333-4444-555555555555"

static char *top;               /* a store in it, made once */
static char *dir;               /* the layer's folder in the store */
static struct store *store;
static uint8_t header[40];      /* the index header (FORMAT.md) */

static void
put (const char *name, const void *p, size_t n)
{
  char path[512];
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd == -1 || full_write (fd, p, n) == -1)
    abort ();
  close (fd);
}

/* The store goes when the fuzzer exits (every run of make check-unit
 * and make fuzz left one in /tmp). */
static void
remove_dir (void)
{
  store_close (store);
  free (dir);
  rm_rf (top);
}

static void
setup (void)
{
  struct layer_meta m = { 0 };
  char *spath, *text;

  top = make_tmpdir ();
  if (asprintf (&spath, "%s/s", top) == -1
      || (store = store_open (spath, true)) == NULL
      || store_disk_prepare (store, DISK) == -1
      || asprintf (&dir, "%s/disks/" DISK "/" SNAP, spath) == -1
      || mkdir (dir, 0700) == -1 || atexit (remove_dir) != 0)
    abort ();
  free (spath);
  strcpy (m.snapshot, SNAP);
  strcpy (m.disk, DISK);
  strcpy (m.chain, m.snapshot);
  m.seq = 1;
  m.size = 64 * CHAIN_BLOCK_SIZE;       /* 64 blocks: an 8-byte set */
  m.vm_name = (char *) "vm";
  m.disk_name = (char *) "disk";
  text = layer_meta_format (&m);
  put ("layer", text, strlen (text));
  put ("data", "", 0);
  free (text);
  memcpy (header, "CBTFSIX1", 8);
  {
    uint64_t check = XXH3_64bits (header, 32);
    for (int i = 0; i < 8; i++)
      header[32 + i] = check >> (8 * i);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t *index;
  size_t split;
  struct layer *l;

  if (dir == NULL)
    setup ();
  if (size < 1)
    return 0;
  split = data[0] % 16;
  if (split > size - 1)
    split = size - 1;
  put ("changed", data + 1, split);
  index = malloc (40 + size);
  if (index == NULL)
    return 0;
  memcpy (index, header, 40);
  memcpy (index + 40, data + 1 + split, size - 1 - split);
  put ("index", index, 40 + size - 1 - split);
  free (index);

  l = layer_open (store, DISK, SNAP, false);
  if (l) {
    uint8_t *buf = malloc (CHAIN_BLOCK_SIZE);
    uint64_t present, stored;
    layer_counts (l, &present, &stored);
    for (uint64_t b = 0; buf && b < layer_nblocks (l); b++)
      if (layer_block_state (l, b) >= LAYER_ZERO)
        layer_read_block (l, b, buf);
    free (buf);
    layer_close (l);
  }
  return 0;
}
