/* cbtfs engine: what the host holds of a snapshot, through XAPI.
 *
 * Thread model: each function uses the session it is given from the
 * calling thread only; a session is not thread-safe (xapi/session.h).
 */
#ifndef CBTFS_ENGINE_SNAPSHOT_H
#define CBTFS_ENGINE_SNAPSHOT_H

#include <stdint.h>

#include "../chain/nbdsrc.h"
#include "../xapi/session.h"

/* Connection details for snapshot SNAP_REF (uuid SNAP_UUID, for
 * messages) from VDI.get_nbd_info into *T (caller clears).  0 or -1
 * with err_*. */
extern int engine_nbd_target (xapi_session *xs, const char *snap_ref,
                              const char *snap_uuid, struct nbdsrc_target *t)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* The ref of snapshot UUID (caller frees) if it still holds data on the
 * host; NULL with the reason in err_* when it is gone or only CBT
 * metadata is left. */
extern char *engine_snapshot_with_data (xapi_session *xs, const char *uuid)
  __attribute__ ((__nonnull__ (1, 2)));

struct store;

/* Reduce snapshot REF (uuid UUID, whose layer is in DISK of S) to CBT
 * metadata, once the layer read back from the store is complete and no
 * verdict holds it, retrying a few times while the host still holds it
 * (xapi waits only 4 s for its own VBDs).  0, or -1 after a warning
 * that it keeps its data. */
extern int engine_data_destroy (xapi_session *xs, struct store *s,
                                const char *disk, const char *ref,
                                const char *uuid)
  __attribute__ ((__nonnull__ (1, 2, 3, 4, 5)));

/* The host side of engine_data_destroy alone, for a caller that has
 * made its checks: VDI.data_destroy of REF (uuid UUID), retried while
 * the host still holds it.  0, or -1 after a warning. */
extern int engine_reduce (xapi_session *xs, const char *ref,
                          const char *uuid)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Seconds to give VDI.checksum of a disk of SIZE bytes: the host reads
 * all of it (allowing 20 MiB/s), and never less than AT_LEAST. */
extern long engine_checksum_timeout (uint64_t size, long at_least);

#endif /* CBTFS_ENGINE_SNAPSHOT_H */
