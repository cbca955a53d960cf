/* cbtfs: the head of a dynamic VHD, as XAPI's export streams it.
 *
 * GET /export_raw_vdi?format=vhd (docs/vhd-export.md) sends a footer copy,
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

/* ---- writing a stream (vhd-stream.c), for PUT /import_raw_vdi ----
 *
 * The layout XAPI's own exports have (docs/vhd-export.md, "The
 * stream"): footer, header at 512, 512 zero bytes, the BAT at 2048
 * (padded to a sector), then each included 2 MiB block in ascending
 * order as a 512-byte sector bitmap and the block's 2 MiB, then the
 * footer again. */

#define VHD_STREAM_BLOCK (UINT32_C (2) << 20)
#define VHD_STREAM_TABLE 2048

/* Bytes of the head (footer, header, padding, BAT) of a disk of SIZE. */
extern uint64_t vhd_stream_head_len (uint64_t size);

/* Bytes of the whole stream of a disk of SIZE with K included blocks. */
extern uint64_t vhd_stream_len (uint64_t size, uint64_t k);

/* Write the head of the stream of a disk of SIZE bytes (current_size)
 * into BUF (vhd_stream_head_len bytes), with footer uid UID, and BAT
 * entries for the blocks INCLUDED (NBLOCKS bools, one per 2 MiB block:
 * ceil (SIZE / 2 MiB) of them), the others unallocated. */
extern void vhd_stream_head (uint8_t *buf, uint64_t size,
                             const uint8_t uid[16], const bool *included)
  __attribute__ ((__nonnull__ (1, 3, 4)));

/* The 512-byte footer alone (what ends the stream), as in the head. */
extern void vhd_stream_footer (uint8_t *buf, uint64_t size,
                               const uint8_t uid[16])
  __attribute__ ((__nonnull__ (1, 3)));

/* The sector bitmap of block I of a disk of SIZE: every sector of the
 * block that lies within SIZE is present.  BUF: 512 bytes. */
extern void vhd_stream_bitmap (uint8_t *buf, uint64_t size, uint64_t i)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_XAPI_VHD_H */
