/* cbtfs engine: restore's upload body (restore-body.c), shared with
 * restore.c only.
 *
 * The body is the VDI's whole content from the point (then zeros to the
 * VDI's end), raw, or as a dynamic VHD stream that leaves out the 2 MiB
 * blocks the point has nothing in (xapi/vhd.h).  Either way the md5 is
 * of the whole content, what VDI.checksum computes.
 *
 * Thread model: the upload's thread calls these; the reading runs in a
 * readahead's thread (readahead.h).
 */
#ifndef CBTFS_ENGINE_RESTORE_INT_H
#define CBTFS_ENGINE_RESTORE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "../chain/fetch.h"
#include "../chain/layer.h"

struct restore_body;

/* A body for TOP (borrowed, as F) into a VDI of VDI_SIZE bytes, as a
 * VHD stream if VHD, with a progress line on stderr if PROGRESS.  With
 * VHD it first finds which blocks hold anything (chain_resolve), in the
 * calling thread.  NULL with err_*. */
extern struct restore_body *restore_body_new (struct layer *top,
                                              struct fetcher *f,
                                              uint64_t vdi_size, bool vhd,
                                              bool progress)
  __attribute__ ((__nonnull__ (1)));

/* The body's length in bytes (the Content-Length). */
extern uint64_t restore_body_len (const struct restore_body *b)
  __attribute__ ((__nonnull__ (1)));

/* The xapi_put_fn that produces it (OPAQUE: the body). */
extern int restore_body_fill (void *buf, size_t len, uint64_t off,
                              void *opaque);

/* After the whole body went: read what was not sent to its end and put
 * the content's md5 (hex) in MD5.  0, or -1 with err_*. */
extern int restore_body_finish (struct restore_body *b, char md5[33])
  __attribute__ ((__nonnull__ (1, 2)));

/* Stop reading and free; NULL is a no-op. */
extern void restore_body_free (struct restore_body *b);

#endif /* CBTFS_ENGINE_RESTORE_INT_H */
