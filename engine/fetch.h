/* cbtfs engine: finishing lazy or interrupted points from the host.
 *
 * Copies every block a point's layer still lacks from its snapshot
 * (the copier backup uses), then, unless keep_data, reduces the
 * snapshot to CBT metadata, as backup would have.
 *
 * Thread model: called from one thread; copy_layer's workers call back
 * for NBD details while it waits.
 */
#ifndef CBTFS_ENGINE_FETCH_H
#define CBTFS_ENGINE_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "../chain/copy.h"
#include "session.h"

struct engine_fetch_opts {
  struct copy_opts copy;        /* label is set per point */
  bool keep_data;               /* leave the snapshots' data on the host */
  char *const *snapshots;       /* points to fetch; none: every incomplete
                                   or lazy point */
  size_t nsnapshots;
};

/* Fetch what O selects in the store at STORE from the pool SERVER
 * names.  0 when everything was fetched, 1 when some point was not
 * (logged), -1 with err_* when nothing could start (the store, login,
 * a snapshot not in the store). */
extern int engine_fetch (const char *store, const struct engine_server *server,
                         const struct engine_fetch_opts *o)
  __attribute__ ((__nonnull__ (1, 2, 3)));

#endif /* CBTFS_ENGINE_FETCH_H */
