/* cbtfs engine: snapshots' NBD details from XAPI, as chain/targets.h
 * asks for them.
 *
 * An ask is VDI.get_nbd_info of the snapshot's ref, and before it
 * VDI.get_by_uuid unless the ref was noted (engine_targets_note: a
 * backup knows the refs of the snapshots it took).  chain/ asks once
 * per snapshot and again only when the answer stops working.
 *
 * Thread model: asks come from chain/'s threads (copy workers, FUSE
 * readers); et->lock serialises them over the one XAPI session.  An
 * engine_targets made on a borrowed session (engine_targets_new) must
 * not have that session used by its owner while chain/ may ask (during
 * copy_layer, or while a fetcher reads); one made lazy logs in on the
 * first ask and owns that session.  engine_targets_note may be called
 * from any thread.
 */
#ifndef CBTFS_ENGINE_TARGETS_H
#define CBTFS_ENGINE_TARGETS_H

#include "../chain/targets.h"
#include "../xapi/session.h"
#include "session.h"

struct engine_targets;

/* Targets asked through session XS (borrowed: it outlives them).  NULL
 * with err_* (ENOMEM). */
extern struct engine_targets *engine_targets_new (xapi_session *xs)
  __attribute__ ((__nonnull__ (1)));

/* Targets that log in with CREDS (borrowed: they outlive them) on the
 * first ask, and log out when freed: a mount, which forks after making
 * them.  NULL with err_* (ENOMEM). */
extern struct engine_targets *engine_targets_new_lazy
  (const struct engine_creds *creds) __attribute__ ((__nonnull__ (1)));

/* Free, logging out a session of its own; NULL is a no-op. */
extern void engine_targets_free (struct engine_targets *et);

/* Remember that snapshot UUID is REF on the host, to skip
 * VDI.get_by_uuid when it is asked about.  0 or -1 with err_*. */
extern int engine_targets_note (struct engine_targets *et, const char *uuid,
                                const char *ref)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* The interface chain/ takes (copy_layer, fetcher_new); valid until
 * ET is freed. */
extern const struct chain_targets *engine_targets_chain
  (struct engine_targets *et) __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_ENGINE_TARGETS_H */
