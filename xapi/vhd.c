/* cbtfs: the head of a dynamic VHD (see vhd.h).
 *
 * Layout (docs/vhd-export.md, "The stream" and "The fields cbtfs reads
 * and checks"; all integers big-endian): footer at 0, dynamic header at
 * the footer's data_offset (512 in XAPI's streams), BAT at the header's
 * table_offset, padded to 512 bytes.
 *
 * Thread model: pure functions.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "../common/error.h"
#include "vhd.h"

#define FOOTER_CHECKSUM 64
#define HEADER_CHECKSUM 36
#define DISK_DYNAMIC 3
#define NO_OFFSET UINT64_C (0xFFFFFFFFFFFFFFFF)

static uint32_t
be32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
    | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
be64 (const uint8_t *p)
{
  return (uint64_t) be32 (p) << 32 | be32 (p + 4);
}

/* VHD's checksum: the one's complement of the byte sum, with the
 * checksum field itself counted as zero. */
static bool
checksum_ok (const uint8_t *p, size_t len, size_t at)
{
  uint32_t sum = 0;

  for (size_t i = 0; i < len; i++)
    if (i < at || i >= at + 4)
      sum += p[i];
  return ~sum == be32 (p + at);
}

static int
check_footer (const uint8_t *f)
{
  if (memcmp (f, "conectix", 8) != 0) {
    err_set (EPROTO, "not a VHD stream (no footer cookie)");
    return -1;
  }
  if (!checksum_ok (f, VHD_FOOTER_SIZE, FOOTER_CHECKSUM)) {
    err_set (EPROTO, "VHD footer checksum mismatch");
    return -1;
  }
  if (be32 (f + 12) >> 16 != 1 || be64 (f + 16) != VHD_FOOTER_SIZE) {
    err_set (EPROTO, "VHD footer has an unexpected version or layout");
    return -1;
  }
  if (be32 (f + 60) != DISK_DYNAMIC) {
    err_set (EPROTO, "VHD is of type %" PRIu32 ", not dynamic",
             be32 (f + 60));
    return -1;
  }
  return 0;
}

static int
check_header (const uint8_t *h)
{
  uint32_t bs = be32 (h + 32);

  if (memcmp (h, "cxsparse", 8) != 0) {
    err_set (EPROTO, "VHD dynamic header missing");
    return -1;
  }
  if (!checksum_ok (h, VHD_HEADER_SIZE, HEADER_CHECKSUM)) {
    err_set (EPROTO, "VHD header checksum mismatch");
    return -1;
  }
  if (be64 (h + 8) != NO_OFFSET || be32 (h + 24) >> 16 != 1) {
    err_set (EPROTO, "VHD header has an unexpected version or layout");
    return -1;
  }
  if (bs < 512 || (bs & (bs - 1)) != 0) {
    err_set (EPROTO, "VHD block size %" PRIu32 " is not a power of 2",
             bs);
    return -1;
  }
  return 0;
}

int
vhd_head_need (const uint8_t *buf, size_t len, size_t max, size_t *need)
{
  const uint8_t *h = buf + VHD_FOOTER_SIZE;
  uint64_t table, bytes;

  *need = VHD_FOOTER_SIZE + VHD_HEADER_SIZE;
  if (len >= VHD_FOOTER_SIZE && check_footer (buf) == -1)
    return -1;
  if (len < *need)
    return 0;
  if (check_header (h) == -1)
    return -1;
  table = be64 (h + 16);
  /* 4 bytes per entry, padded to a sector: at most 2^34, no overflow. */
  bytes = ((uint64_t) be32 (h + 28) * 4 + 511) & ~UINT64_C (511);
  /* table + bytes is never computed before it is known not to wrap:
   * a wrapped end would pass for a short head and put the table
   * before the buffer. */
  if (table < *need || table > max || bytes > max - table) {
    err_set (EPROTO, "VHD block table at %" PRIu64 " is out of range",
             table);
    return -1;
  }
  *need = table + bytes;
  return 0;
}

int
vhd_head_parse (const uint8_t *buf, size_t len, uint64_t size,
                struct vhd_head *out)
{
  const uint8_t *h = buf + VHD_FOOTER_SIZE;
  size_t need;
  uint64_t cur, want;
  uint32_t bs;

  if (vhd_head_need (buf, len, SIZE_MAX, &need) == -1)
    return -1;
  if (len < need || len < VHD_FOOTER_SIZE + VHD_HEADER_SIZE) {
    err_set (EPROTO, "VHD stream ends inside its head (%zu of %zu bytes)",
             len, need);
    return -1;
  }
  cur = be64 (buf + 48);
  bs = be32 (h + 32);
  /* Raw SRs report the size rounded up to a whole block. */
  if (cur < size || cur - size >= bs) {
    err_set (EPROTO, "VHD says the disk is %" PRIu64 " bytes, XAPI says "
             "%" PRIu64, cur, size);
    return -1;
  }
  want = cur / bs + (cur % bs != 0);
  if (be32 (h + 28) != want) {
    err_set (EPROTO, "VHD block table has %" PRIu32 " entries for %"
             PRIu64 " blocks", be32 (h + 28), want);
    return -1;
  }
  out->current_size = cur;
  out->block_size = bs;
  out->nentries = be32 (h + 28);
  out->bat = buf + be64 (h + 16);
  return 0;
}
