/* cbtfs engine: proving a store still holds what was backed up.
 *
 * Re-reads every stored block against the checksum recorded when it
 * was copied, and names each point in time a damaged block shows
 * through.  With a server, also compares the md5 of each image whose
 * snapshot still holds data on the host with the host's own
 * VDI.checksum: the one check that proves the chain reproduces the
 * source.  What it finds changes a point's verdict (chain/verdict.h),
 * which decides whether its snapshot may be reduced and whether
 * backups build on it; no data in the store is changed.
 *
 * Thread model: single-threaded (the fetcher is used from the calling
 * thread only, and starts no thread as it does not store).
 */
#ifndef CBTFS_ENGINE_VERIFY_H
#define CBTFS_ENGINE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

/* What a verify run found, for its summary. */
struct engine_verify_stats {
  uint64_t checked;             /* stored blocks read */
  size_t points;                /* points in time looked at */
  size_t damaged;               /* points a damaged block or record shows in */
  size_t incomplete;            /* points not wholly in the store */
  size_t skipped;               /* layers left out: damaged manifests or
                                   sets (each logged); a failure too */
  size_t matched;               /* points equal to the host's VDI.checksum */
  size_t dropping;              /* points an interrupted prune is dropping,
                                   not checked */
  bool compared;                /* the host was asked (a server given) */
};

/* Verify the store at STORE; with SERVER (may be NULL) compare with
 * the host too.  Each finding is logged as it is made.  0 when all is
 * well, 1 when something failed (logged), -1 with err_* when nothing
 * could be checked (the store, login). */
extern int engine_verify (const char *store, const struct engine_server *server,
                          struct engine_verify_stats *st)
  __attribute__ ((__nonnull__ (1, 3)));

/* Record that the user lets each of the N named points go.  0, or -1
 * with err_* (a point not in the store, a verdict not recorded). */
extern int engine_verify_accept (const char *store, char *const *snapshots,
                                 size_t n)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_ENGINE_VERIFY_H */
