/* cbtfs: what checks of a point found, kept in the store.
 *
 * A disk's note "verified" (store/store.h) holds one line per check of
 * one point (FORMAT.md): "<snapshot> <time> <verdict> <check>".  The
 * newest line about a snapshot is its verdict.  A point whose image
 * differed from the host's, or whose stored blocks were damaged, keeps
 * its snapshot's data on the host and is not built on, until a later
 * check passes or the user accepts it.
 *
 * Thread model: no shared state; appends from several processes do not
 * interleave (each is one note record).
 */
#ifndef CBTFS_CHAIN_VERDICT_H
#define CBTFS_CHAIN_VERDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"
#include "store/store.h"

enum verdict {
  VERDICT_NONE = 0,             /* never checked (no line) */
  VERDICT_MATCH,                /* the image's md5 is VDI.checksum's */
  VERDICT_DIFFERS,              /* it is not */
  VERDICT_DAMAGED,              /* stored blocks or index records fail */
  VERDICT_SOUND,                /* every stored block passes its checksum */
  VERDICT_ACCEPTED,             /* the user let a failed point go */
};

/* Whether V holds a point back: its snapshot keeps its data and no
 * delta is built on it. */
static inline bool
verdict_holds (enum verdict v)
{
  return v == VERDICT_DIFFERS || v == VERDICT_DAMAGED;
}

/* "match", "differs", …; "" for VERDICT_NONE. */
extern const char *verdict_name (enum verdict v);

/* Append V about SNAPSHOT to DISK's note and make it durable.  0 or -1
 * with err_*. */
extern int verdict_record (struct store *s, const char *disk,
                           const char *snapshot, enum verdict v)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Append that the host's VDI.checksum of SNAPSHOT is MD5 (32 hex
 * digits, stored lowercase) to DISK's note and make it durable: what a
 * check compared the image with, whatever it found.  0 or -1 with
 * err_* (EINVAL for a bad MD5). */
extern int verdict_record_md5 (struct store *s, const char *disk,
                               const char *snapshot, const char *md5)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* The verdicts of one disk, newest per snapshot, and the host's
 * checksums.  Owned by the caller (verdicts_free). */
struct verdicts {
  struct verdict_entry {
    char snapshot[UUID_LEN + 1];
    enum verdict v;             /* VERDICT_NONE when only an md5 is known */
    char md5[33];               /* the host's, lowercase hex, or "" */
    int64_t md5_time;           /* when it was recorded */
  } *v;
  size_t n;
};

/* Read DISK's note into *OUT (empty when there is none); torn and
 * damaged lines are skipped.  0 or -1 with err_*. */
extern int verdicts_load (struct store *s, const char *disk,
                          struct verdicts *out)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* SNAPSHOT's verdict in VS (VERDICT_NONE if none). */
extern enum verdict verdicts_of (const struct verdicts *vs,
                                 const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2)));

/* SNAPSHOT's recorded host checksum in VS, or NULL; borrowed from VS. */
extern const char *verdicts_md5 (const struct verdicts *vs,
                                 const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2)));

extern void verdicts_free (struct verdicts *vs)
  __attribute__ ((__nonnull__ (1)));

/* SNAPSHOT's verdict read from DISK's note (verdicts_load +
 * verdicts_of).  VERDICT_NONE, or -1 with err_* when it cannot be read. */
extern int verdict_latest (struct store *s, const char *disk,
                           const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

#endif /* CBTFS_CHAIN_VERDICT_H */
