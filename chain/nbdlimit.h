/* cbtfs: what all NBD connections of a run share: XenServer's budget
 * of connections per host, and a read rate.
 *
 * xapi-nbd serves at most 16 connections per host and closes the 17th
 * before the handshake (docs/xapi-nbd.md, "Connections per host"), so
 * parallel copies must share those 16 rather than each take as many as
 * it likes: a connection waits for a slot of its host instead of being
 * refused.  The rate
 * (--limit-rate) is a token bucket over the bytes of every NBD read:
 * a read waits, before it is sent, until the bucket has its bytes; the
 * bucket holds at most a small burst, so a long copy averages the rate.
 *
 * Thread model: any thread may call any function at once; one mutex
 * and one condition variable guard the counts and the bucket.  Waits
 * (for a slot, for tokens) happen with no lock held but our own, and
 * a token wait sleeps with no lock at all: callers must not hold locks
 * others need while calling nbdlimit_acquire or nbdlimit_take.
 */
#ifndef CBTFS_CHAIN_NBDLIMIT_H
#define CBTFS_CHAIN_NBDLIMIT_H

#include <stdint.h>

/* xapi-nbd's connection_limit. */
#define NBDLIMIT_XAPI_NBD 16

struct nbdlimit;

/* A budget of PER_HOST connections per host (> 0) and RATE bytes per
 * second over all reads (0: unlimited).  NULL with err_* (ENOMEM). */
extern struct nbdlimit *nbdlimit_new (unsigned per_host, uint64_t rate);

/* Free; no connection may hold a slot.  NULL is a no-op. */
extern void nbdlimit_free (struct nbdlimit *lim);

/* The burst the bucket allows: what a run may read before the rate
 * applies (0 when unlimited). */
extern uint64_t nbdlimit_burst (const struct nbdlimit *lim)
  __attribute__ ((__nonnull__ (1)));

/* Take one of HOST's slots, waiting for one to be given back.  0, or
 * -1 with err_* (ENOMEM). */
extern int nbdlimit_acquire (struct nbdlimit *lim, const char *host)
  __attribute__ ((__nonnull__ (1, 2)));

/* Give back a slot of HOST taken with nbdlimit_acquire. */
extern void nbdlimit_release (struct nbdlimit *lim, const char *host)
  __attribute__ ((__nonnull__ (1, 2)));

/* Wait until BYTES may be read under the rate (at once when unlimited
 * or within the burst). */
extern void nbdlimit_take (struct nbdlimit *lim, uint64_t bytes)
  __attribute__ ((__nonnull__ (1)));

/* The most slots of any host held at once so far (for tests). */
extern unsigned nbdlimit_peak (struct nbdlimit *lim)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_CHAIN_NBDLIMIT_H */
