/* cbtfs: where a snapshot's NBD details come from.
 *
 * chain/ reads snapshots over NBD but knows nothing of XAPI: whoever
 * creates a copier or a fetcher hands it a struct chain_targets, which
 * answers "how do I reach snapshot S now?" with a VDI.get_nbd_info
 * record (address, port, certificate, export name).  engine/targets.h
 * implements it on XAPI; tests may implement it on anything.  Answers
 * go stale (a session expires, a host moves), so chain/ asks again
 * when connecting with an answer fails, and otherwise asks once per
 * snapshot (nbdsrc_known, nbdsrc.h): each ask costs round trips.
 *
 * Thread model: lookup may be called from any thread of the copier or
 * fetcher it was given to, for different snapshots at the same time;
 * for one snapshot one thread at a time asks (under that snapshot's
 * nbdsrc_known lock, the only chain/ lock held across it).  It may
 * block for as long as XAPI takes (a login, a round trip) and must
 * serialise whatever it shares itself (an XAPI session is not
 * thread-safe).  The struct is copied by whoever takes it; opaque must
 * outlive that copier or fetcher.
 */
#ifndef CBTFS_CHAIN_TARGETS_H
#define CBTFS_CHAIN_TARGETS_H

#include "nbdsrc.h"

struct chain_targets {
  /* Fill *T (caller clears) with fresh details of the snapshot whose
   * VDI uuid is SNAPSHOT.  0, or -1 with err_* (then the snapshot
   * cannot be read now; the message names it, never a secret). */
  int (*lookup) (void *opaque, const char *snapshot, struct nbdsrc_target *t);
  void *opaque;
};

/* Ask TG about SNAPSHOT (see lookup above). */
static inline int
chain_targets_lookup (const struct chain_targets *tg, const char *snapshot,
                      struct nbdsrc_target *t)
{
  return tg->lookup (tg->opaque, snapshot, t);
}

#endif /* CBTFS_CHAIN_TARGETS_H */
