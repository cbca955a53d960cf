/* cbtfs engine: keeping the host clean of old CBT-metadata snapshots.
 *
 * Each backup leaves one snapshot per disk on the host, reduced to CBT
 * metadata (VDI.data_destroy).  Only this store's newest is read again
 * (the next VDI.list_changed_blocks starts from it); the points of the
 * older ones are whole in the store and need nothing from the host.
 * Kept, they would leave 73 000 metadata VDIs in the pool's database
 * after a year of 100 two-disk VMs.
 *
 * VDI.destroy of a snapshot or cbt_metadata VDI ORs its changed-block
 * log into the next one of its chain and links its neighbours to each
 * other (docs/xapi.md, "Snapshots on the host"), so list_changed_blocks
 * between the snapshots that stay (the user's own, another store's,
 * this store's newest) answers exactly as before.
 *
 * Thread model: no shared state; the session is used from the calling
 * thread only (xapi/session.h).
 */
#ifndef CBTFS_ENGINE_HOSTCLEAN_H
#define CBTFS_ENGINE_HOSTCLEAN_H

#include <stdbool.h>
#include <stddef.h>

#include "../xapi/session.h"

struct store;

/* Destroy the snapshots of the live disk LIVE_REF (uuid DISK; LABEL
 * names it in messages) that hold only CBT metadata, have a layer in
 * DISK of S, and are not KEEP (the uuid of S's newest point of DISK).
 * A snapshot that still holds data stays (S may lack its blocks), and
 * so does every snapshot S has no layer for (the user's own, another
 * store's).  Never fails: each snapshot that cannot be destroyed is
 * named in one warning, and the next call tries it again.  Returns how
 * many were destroyed (with verbosity, one line says so).  An older
 * snapshot that still holds data whose point S has whole (complete,
 * not held by a check, not a --no-copy point) is reduced first
 * (engine_data_destroy), and then destroyed with the others. */
extern size_t engine_clean_host (xapi_session *xs, struct store *s,
                                 const char *disk, const char *live_ref,
                                 const char *keep, const char *label)
  __attribute__ ((__nonnull__ (1, 2, 3, 4, 5, 6)));

/* Destroy on the host the snapshot SNAP (uuid) of disk DISK whose
 * point prune has just dropped from the store: whatever it still holds
 * (CBT metadata, or data that no point of the store needs any more),
 * unless it is not a snapshot of DISK.  *REMOVED says whether it was
 * destroyed; one already gone is not an error.  0, or -1 with err_*. */
extern int engine_destroy_dropped (xapi_session *xs, const char *disk,
                                   const char *snap, bool *removed)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

#endif /* CBTFS_ENGINE_HOSTCLEAN_H */
