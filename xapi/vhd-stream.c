/* cbtfs: writing a dynamic VHD stream (see vhd.h), as XAPI's exports
 * lay it out, so that PUT /import_raw_vdi?format=vhd (vhd-tool serve)
 * writes only the blocks it holds.
 *
 * Field values follow ocaml-vhd's vhd_common (docs/vhd-export.md,
 * "Writing one: the restore"): disk type 3, features 2, version 1.0,
 * data offset 512, timestamp 0, CHS from ocaml-vhd's
 * Geometry.of_sectors; the header's table offset 2048, 2 MiB blocks, no
 * parent.
 *
 * Thread model: pure functions.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "vhd.h"

#define SECTOR 512
#define FOOTER_CHECKSUM 64
#define HEADER_CHECKSUM 36

static void
put32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

static void
put64 (uint8_t *p, uint64_t v)
{
  put32 (p, v >> 32);
  put32 (p + 4, v);
}

static void
checksum (uint8_t *p, size_t len, size_t at)
{
  uint32_t sum = 0;

  put32 (p + at, 0);
  for (size_t i = 0; i < len; i++)
    sum += p[i];
  put32 (p + at, ~sum);
}

static uint64_t
nblocks (uint64_t size)
{
  return size / VHD_STREAM_BLOCK + (size % VHD_STREAM_BLOCK != 0);
}

static uint64_t
bat_len (uint64_t size)
{
  return (nblocks (size) * 4 + SECTOR - 1) / SECTOR * SECTOR;
}

uint64_t
vhd_stream_head_len (uint64_t size)
{
  return VHD_STREAM_TABLE + bat_len (size);
}

uint64_t
vhd_stream_len (uint64_t size, uint64_t k)
{
  return vhd_stream_head_len (size) + k * (SECTOR + VHD_STREAM_BLOCK)
    + VHD_FOOTER_SIZE;
}

/* ocaml-vhd Geometry.of_sectors (note '>' where Microsoft has '>='). */
static void
geometry (uint64_t size, uint8_t *p)
{
  uint64_t s = size / SECTOR, cth;
  uint32_t spt, h;

  if (s > 65535ULL * 16 * 255)
    s = 65535ULL * 16 * 255;
  if (s > 65535ULL * 16 * 63) {
    spt = 255;
    h = 16;
    cth = s / spt;
  }
  else {
    spt = 17;
    cth = s / spt;
    h = (cth + 1023) / 1024;
    if (h < 4)
      h = 4;
    if (cth >= h * 1024ULL || h > 16) {
      spt = 31;
      h = 16;
      cth = s / spt;
    }
    if (cth >= h * 1024ULL) {
      spt = 63;
      h = 16;
      cth = s / spt;
    }
  }
  p[0] = (cth / h) >> 8;
  p[1] = cth / h;
  p[2] = h;
  p[3] = spt;
}

void
vhd_stream_footer (uint8_t *f, uint64_t size, const uint8_t uid[16])
{
  memset (f, 0, VHD_FOOTER_SIZE);
  memcpy (f, "conectix", 8);
  put32 (f + 8, 2);                     /* features: reserved bit */
  put32 (f + 12, 0x00010000);           /* version 1.0 */
  put64 (f + 16, VHD_FOOTER_SIZE);      /* the dynamic header's offset */
  memcpy (f + 28, "cbtf", 4);           /* creator application */
  put32 (f + 32, 0x00010000);
  put64 (f + 40, size);                 /* original size */
  put64 (f + 48, size);                 /* current size */
  geometry (size, f + 56);
  put32 (f + 60, 3);                    /* dynamic */
  memcpy (f + 68, uid, 16);
  checksum (f, VHD_FOOTER_SIZE, FOOTER_CHECKSUM);
}

void
vhd_stream_head (uint8_t *buf, uint64_t size, const uint8_t uid[16],
                 const bool *included)
{
  uint8_t *h = buf + VHD_FOOTER_SIZE, *bat = buf + VHD_STREAM_TABLE;
  uint64_t n = nblocks (size), at;

  vhd_stream_footer (buf, size, uid);
  memset (h, 0, VHD_STREAM_TABLE - VHD_FOOTER_SIZE);
  memcpy (h, "cxsparse", 8);
  put64 (h + 8, UINT64_C (0xFFFFFFFFFFFFFFFF));
  put64 (h + 16, VHD_STREAM_TABLE);
  put32 (h + 24, 0x00010000);
  put32 (h + 28, n);
  put32 (h + 32, VHD_STREAM_BLOCK);
  checksum (h, VHD_HEADER_SIZE, HEADER_CHECKSUM);
  memset (bat, 0xFF, bat_len (size));
  at = vhd_stream_head_len (size) / SECTOR;
  for (uint64_t i = 0; i < n; i++)
    if (included[i]) {
      put32 (bat + 4 * i, at);
      at += (SECTOR + VHD_STREAM_BLOCK) / SECTOR;
    }
}

void
vhd_stream_bitmap (uint8_t *buf, uint64_t size, uint64_t i)
{
  uint64_t start = i * VHD_STREAM_BLOCK;
  uint64_t sectors = VHD_STREAM_BLOCK / SECTOR;

  if (size - start < VHD_STREAM_BLOCK)
    sectors = (size - start + SECTOR - 1) / SECTOR;
  memset (buf, 0, SECTOR);
  memset (buf, 0xFF, sectors / 8);
  if (sectors % 8)
    buf[sectors / 8] = (uint8_t) (0xFF00 >> (sectors % 8));
}
