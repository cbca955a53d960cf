/* cbtfs engine: restoring a point in time into a VDI on the host.
 *
 * The point's image is streamed from the store (chain_read, as a mount
 * reads it: every stored block checked against its checksum, blocks
 * the store lacks fetched over NBD from their snapshots) into XAPI's
 * PUT /import_raw_vdi, either into a new VDI made on an SR (VDI.create;
 * format=vhd, the blocks the point has nothing in left out) or over an
 * existing one that no VBD has attached (format=raw, every byte).  The
 * md5 of the content is compared with the host's VDI.checksum
 * afterwards.  docs/restore.md says what of XAPI this relies on.
 *
 * Thread model: the calling thread drives XAPI and the upload; one
 * reader thread (readahead.h) reads the image ahead of it, through a
 * fetcher (which stores nothing) whose targets log in with a session of
 * their own.
 */
#ifndef CBTFS_ENGINE_RESTORE_H
#define CBTFS_ENGINE_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "session.h"

/* What to restore where; strings borrowed. */
struct engine_restore_opts {
  const char *point;            /* snapshot uuid or path in the tree */
  const char *sr;               /* uuid of the SR to create a VDI on, or */
  const char *vdi;              /* uuid of the VDI to overwrite */
  const char *name;             /* name_label of a created VDI */
  bool progress;                /* a progress line on stderr */
};

/* What a restore did, for the summary (filled as far as it got). */
struct engine_restore_result {
  char *label;                  /* the point's path in the tree (owned) */
  char snapshot[37];            /* the point's snapshot uuid */
  char vdi[37];                 /* the VDI written */
  bool created;                 /* made by this restore (--sr) */
  uint64_t size;                /* the point's size */
  uint64_t vdi_size;            /* the VDI's (the point, then zeros) */
  const char *format;           /* "vhd" (a new VDI: holes not sent) or "raw" */
  uint64_t sent;                /* bytes of the upload's body */
  char md5[33];                 /* of the VDI's content as sent */
  char host_md5[33];            /* VDI.checksum afterwards */
  double seconds;               /* the upload's */
};

/* Restore O->point of the store at STORE through SERVER.  0 when the
 * VDI holds the point (the host's checksum agrees), 1 when the upload
 * went through but the checksum differs (logged), -1 with err_* when
 * it could not be done: a point that cannot be read completely, a VDI
 * that is attached, too small or not there, a refused upload (nothing
 * is created or written in the cases found before the upload; a VDI
 * this restore created is destroyed again when the upload fails). */
extern int engine_restore (const char *store, const struct engine_server *server,
                           const struct engine_restore_opts *o,
                           struct engine_restore_result *r)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* Free what R owns. */
extern void engine_restore_result_free (struct engine_restore_result *r)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_ENGINE_RESTORE_H */
