/* cbtfs: the head of a dynamic VHD, as XAPI's export streams it.
 *
 * GET /export_raw_vdi?format=vhd (vhd-export.md) sends a footer copy,
 * a dynamic header and a block allocation table (BAT) before any data.
 * The BAT says which VHD blocks hold data; the rest of the disk reads
 * as zeros.  cbtfs reads only this head, to copy a baseline without
 * reading the unallocated part of the disk over NBD.
 *
 * The head comes from the network: every field is checked (cookies,
 * checksums, sizes, BAT length) before it is believed.  Pure functions,
 * no I/O; thread-safe.
 */
#ifndef CBTFS_XAPI_VHD_H
#define CBTFS_XAPI_VHD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHD_FOOTER_SIZE 512
#define VHD_HEADER_SIZE 1024
/* XAPI refuses VHD exports of larger disks (VDI_TOO_LARGE); SM makes
 * no VHD larger. */
#define VHD_EXPORT_MAX (UINT64_C (2040) << 30)

/* A parsed head; bat borrows from the buffer it was parsed from. */
struct vhd_head {
  uint64_t current_size;        /* the disk's size per the footer */
  uint32_t block_size;          /* bytes per VHD block (a power of 2) */
  uint32_t nentries;            /* BAT entries = blocks of the disk */
  const uint8_t *bat;           /* nentries big-endian u32 */
};

/* Given the first LEN bytes of a stream, set *NEED to the length of
 * its head (footer, header, BAT): 0 when known (LEN may be shorter),
 * or -1 with err_* when those bytes are not the start of a dynamic VHD
 * (or claim a head over MAX bytes).  With LEN < 1536 *NEED is 1536. */
extern int vhd_head_need (const uint8_t *buf, size_t len, size_t max,
                          size_t *need)
  __attribute__ ((__nonnull__ (1, 4)));

/* Parse a whole head (LEN >= what vhd_head_need said) of a disk that
 * XAPI says is SIZE bytes.  0, or -1 with err_* naming what is wrong. */
extern int vhd_head_parse (const uint8_t *buf, size_t len, uint64_t size,
                           struct vhd_head *h)
  __attribute__ ((__nonnull__ (1, 4)));

/* Does VHD block I of H hold data? */
static inline bool
vhd_allocated (const struct vhd_head *h, uint32_t i)
{
  const uint8_t *e = h->bat + 4 * (size_t) i;
  return (e[0] & e[1] & e[2] & e[3]) != 0xFF;
}

#endif /* CBTFS_XAPI_VHD_H */
