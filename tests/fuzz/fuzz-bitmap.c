/* Fuzz target: CBT bitmaps from VDI.list_changed_blocks (base64, then
 * MSB-first bits for a disk whose size the first bytes give). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chain/bitmap.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct bitmap bm = { 0 };
  uint64_t nblocks = 0;
  uint8_t *bits;
  char *text;
  size_t len;

  if (size < 3)
    return 0;
  nblocks = ((uint64_t) data[0] << 8 | data[1]) * (data[2] % 8 + 1);
  text = malloc (size - 2);
  if (text == NULL)
    return 0;
  memcpy (text, data + 3, size - 3);
  text[size - 3] = '\0';
  bits = base64_decode (text, &len);
  if (bits && cbt_bitmap_decode (bits, len, nblocks, &bm) == 0) {
    uint8_t *back = malloc (cbt_bitmap_bytes (nblocks) + 1);
    if (back) {
      cbt_bitmap_encode (&bm, back);
      /* Decoding ignores padding bits; encoding writes them clear. */
      for (uint64_t i = 0; i < nblocks; i++)
        if (((back[i >> 3] ^ bits[i >> 3]) >> (7 - (i & 7))) & 1)
          abort ();
      free (back);
    }
    bitmap_count (&bm);
    bitmap_next_set (&bm, nblocks / 2);
  }
  bitmap_free (&bm);
  free (bits);
  free (text);
  return 0;
}
