/* cbtfs: notes made of checked lines, "<snapshot> <unix-time> <word>
 * <check>" (FORMAT.md): a disk's "verified", "prune" and "names"
 * notes.
 *
 * The check is the XXH3-64 of the bytes before its space, so a line a
 * crash tore or damage changed is skipped, never misread.
 *
 * Thread model: no shared state.
 */
#ifndef CBTFS_CHAIN_NOTELINE_H
#define CBTFS_CHAIN_NOTELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"
#include "store/store.h"

struct noteline {
  char snapshot[UUID_LEN + 1];
  int64_t time;
  char word[40];
};

/* Append a line saying WORD (printable, no space, shorter than 40
 * bytes) about SNAPSHOT at time WHEN to NOTE of DISK, durably when
 * DURABLE.  0 or -1 with err_*. */
extern int noteline_append (struct store *s, const char *disk,
                            const char *note, const char *snapshot,
                            int64_t when, const char *word, bool durable)
  __attribute__ ((__nonnull__ (1, 2, 3, 4, 6)));

/* Called by noteline_each for every good line L. */
typedef int (*noteline_fn) (void *opaque, const struct noteline *l);

/* Call FN for every good line of NOTE of DISK (at most MAX bytes),
 * oldest first; a torn last line (no newline) or a line whose check
 * fails is skipped.  0 (also when there is no note), FN's -1, or -1
 * with err_*. */
extern int noteline_each (struct store *s, const char *disk, const char *note,
                          size_t max, noteline_fn fn, void *opaque)
  __attribute__ ((__nonnull__ (1, 2, 3, 5)));

#endif /* CBTFS_CHAIN_NOTELINE_H */
