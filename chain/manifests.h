/* cbtfs: a disk's manifests note (FORMAT.md).
 *
 * The note "manifests" of a disk (store/store.h) holds a copy of the
 * manifest of every layer created for the disk, each preceded by a
 * newline, appended when the layer is created.  It saves a mount one
 * read per layer (thousands per disk), which is what mounting costs
 * when the page cache is cold.  It is only a cache: every copy carries
 * its manifest's own check, a copy counts only for a layer the store
 * lists, and a layer without a good copy has its own manifest read.
 *
 * Thread model: no shared state.  One appender at a time per store
 * (the backup holding the store lock); readers need no lock.
 */
#ifndef CBTFS_CHAIN_MANIFESTS_H
#define CBTFS_CHAIN_MANIFESTS_H

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

/* Append a copy of MANIFEST (LEN bytes) to DISK's note.  Not synced:
 * a lost or torn tail costs speed, never data.  0 or -1 with err_*. */
extern int manifests_append (struct store *s, const char *disk,
                             const char *manifest, size_t len)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* DISK's note read whole into a malloc'd buffer (caller frees) of *LEN
 * bytes; NULL with errno when there is none or it cannot be read. */
extern char *manifests_read (struct store *s, const char *disk, size_t *len)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* The next copy in BUF[0, LEN) at or after *POS: *TEXT and *TLEN are
 * set and *POS advanced; false at the end.  A copy starts at a line
 * "cbtfs-layer …" and runs to the next one, so a torn copy spoils only
 * itself (it then fails its check). */
extern bool manifests_next (const char *buf, size_t len, size_t *pos,
                            const char **text, size_t *tlen)
  __attribute__ ((__nonnull__ (1, 3, 4, 5)));

/* Append to DISK's note a copy of each good manifest of a layer of
 * DISK that has no good copy yet (a store older than the note, a lost
 * tail); a complete note is not written.  Needs the store lock.  0 or
 * -1 with err_*. */
extern int manifests_refresh (struct store *s, const char *disk)
  __attribute__ ((__nonnull__ (1, 2)));

/* Rewrite DISK's note without the copies of layers A and B (and
 * without copies that fail their check), atomically and durably
 * (store_note_replace): done before a layer is replaced by another of
 * the same name, so that no reader takes the old copy for the new
 * layer, even after a crash.  Needs the store lock.  0 or -1 with
 * err_*. */
extern int manifests_forget (struct store *s, const char *disk,
                             const char *a, const char *b)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

#endif /* CBTFS_CHAIN_MANIFESTS_H */
