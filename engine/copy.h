/* cbtfs engine: copy, replication of one store into another (a
 * directory into a bucket for the offsite copy, a bucket back into a
 * directory, or any two): the destination comes to hold the points
 * the source holds, incrementally.
 *
 * Under the destination's store lock ("copy"), in order: the drops an
 * interrupted prune left are finished; the destination's points the
 * source no longer has are dropped as prune drops them (folded into
 * the next point, under the prune journal: prune-run.c), unless
 * KEEP_EXTRA; then each source point, oldest first, is made at the
 * destination with the same manifest and set, and every block the
 * destination lacks and the source holds is read from the source,
 * checked against its record there, and put (so a damaged block is
 * never copied: the point stays incomplete and the run fails).  A
 * point the destination has with another manifest (the source merged
 * it differently) is removed and copied again.  The disks' `verified`
 * and `names` notes get the source's lines they lack.  The source is
 * only read, and takes no lock.  A destination made by the copy gets
 * an identity of its own; one with the source's identity (a cp of it)
 * is refused.
 *
 * Thread model: one thread.
 */
#ifndef CBTFS_ENGINE_COPY_H
#define CBTFS_ENGINE_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct engine_copy_opts {
  bool keep_extra;              /* keep the destination's points the
                                   source no longer has */
  double lock_wait;             /* seconds to wait for the destination */
  const char *dst_key_file;     /* the destination's encryption key, or
                                   NULL: not encrypted */
};

struct engine_copy_result {
  size_t made;                  /* points made at the destination */
  size_t filled;                /* points there before that got blocks */
  size_t same;                  /* points there whole already */
  size_t dropped;               /* points dropped at the destination */
  size_t failed;                /* points not copied whole */
  uint64_t blocks;              /* blocks put (data and zeros) */
  uint64_t bytes;               /* bytes of data blocks put */
};

/* Told of each point: WHAT is "made", "filled", "same", "dropped" or
 * "failed", and WHY (one line) for a failure, else NULL. */
typedef void (*engine_copy_cb) (void *opaque, const char *disk,
                                const char *snapshot, const char *what,
                                const char *why);

/* Copy the store SRC into DST (made if missing).  0 when every point
 * was copied, -1 with err_* otherwise (RES says what was done either
 * way). */
extern int engine_copy (const char *src, const char *dst,
                        const struct engine_copy_opts *o,
                        engine_copy_cb cb, void *opaque,
                        struct engine_copy_result *res)
  __attribute__ ((__nonnull__ (1, 2, 3, 6)));

#endif /* CBTFS_ENGINE_COPY_H */
