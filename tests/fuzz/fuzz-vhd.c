/* Fuzz target: the head of a VHD export (footer, header, block table),
 * for a disk whose size the first 8 bytes give. */
#include <stdint.h>
#include <string.h>

#include "xapi/vhd.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct vhd_head h;
  uint64_t disk = 0;
  size_t need;
  uint32_t n = 0;

  if (size < 8)
    return 0;
  memcpy (&disk, data, 8);
  data += 8;
  size -= 8;
  if (vhd_head_need (data, size, 1 << 20, &need) == 0
      && vhd_head_parse (data, size, disk, &h) == 0)
    for (uint32_t i = 0; i < h.nentries; i++)
      n += vhd_allocated (&h, i);
  return n == UINT32_MAX;
}
