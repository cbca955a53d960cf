/* cbtfs engine: a baseline's blocks with data, from the head of the
 * snapshot's VHD export (docs/vhd-export.md): its block allocation table,
 * whose 2 MiB blocks map onto 64 KiB CBT blocks.
 *
 * Thread model: one thread per struct backup (backup-int.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../xapi/vhd.h"
#include "backup-int.h"

/* A baseline need not read what holds no data.  XenServer's NBD server
 * cannot say which blocks do, but the head of the snapshot's VHD
 * export can (docs/vhd-export.md, "Which blocks the table lists"): its
 * block table.  Sets *SET to the blocks to copy and returns 1, or
 * returns 0 to copy every block (the host could not tell us; one
 * warning says why). */
int
backup_allocated_blocks (struct backup *b, struct disk *d,
                         uint64_t nblocks, struct bitmap *set)
{
  CLEANUP_FREE uint8_t *head = NULL;
  struct vhd_head h;
  uint64_t per, first, last;

  if ((uint64_t) d->snap.virtual_size > VHD_EXPORT_MAX) {
    log_warn ("%s: copying every block: the disk is larger than XAPI's "
              "VHD export (2040 GiB) can describe", d->label);
    return 0;
  }
  if (xapi_vdi_vhd_head (b->xs, d->snap.uuid, d->snap.virtual_size,
                         &head, &h) == -1) {
    log_warn ("%s: copying every block: %s", d->label, err_get ());
    return 0;
  }
  if (bitmap_init (set, nblocks) == -1) {
    log_warn ("%s: copying every block: out of memory", d->label);
    return 0;
  }
  /* VHD blocks (2 MiB from XAPI) cover whole CBT blocks, or a part. */
  per = h.block_size;
  for (uint32_t i = 0; i < h.nentries; i++) {
    if (!vhd_allocated (&h, i))
      continue;
    first = i * per >> CHAIN_BLOCK_SHIFT;
    last = MIN (nblocks, ((i + 1) * per + CHAIN_BLOCK_SIZE - 1)
                >> CHAIN_BLOCK_SHIFT);
    for (uint64_t k = first; k < last; k++)
      bitmap_set (set, k);
  }
  log_info ("%s: %" PRIu64 " of %" PRIu64 " blocks hold data", d->label,
            bitmap_count (set), nblocks);
  return 1;
}
