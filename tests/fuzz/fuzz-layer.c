/* Fuzz target: a layer's changed set and index files, as layer_open
 * reads them from the store.  The input is split in two at the length
 * its first byte gives: the "changed" file, then the "index" file (the
 * valid header is prepended so the records themselves get fuzzed). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "chain/layer.h"
#include "chain/store.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static char *dir;               /* a layer directory, made once */
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

/* The layer directory goes when the fuzzer exits (every run of make
 * check-unit and make fuzz left one in /tmp). */
static void
remove_dir (void)
{
  static const char *const names[] = { "layer", "data", "changed", "index" };
  char path[512];

  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf (path, sizeof path, "%s/%s", dir, names[i]);
    unlink (path);
  }
  rmdir (dir);
}

static void
setup (void)
{
  static char tmpl[] = "/tmp/cbtfs-fuzz-XXXXXX";
  struct layer_meta m = { 0 };
  char *text;

  dir = mkdtemp (tmpl);
  if (dir == NULL || atexit (remove_dir) != 0)
    abort ();
  strcpy (m.snapshot, "11111111-2222-3333-4444-555555555555");
  strcpy (m.disk, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
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

  l = layer_open (dir, false);
  if (l) {
    uint8_t *buf = malloc (CHAIN_BLOCK_SIZE);
    uint64_t present, stored;
    layer_counts (l, &present, &stored);
    for (uint64_t b = 0; buf && b < l->nblocks; b++)
      if (layer_block_state (l, b) >= LAYER_ZERO)
        layer_read_block (l, b, buf);
    free (buf);
    layer_close (l);
  }
  return 0;
}
