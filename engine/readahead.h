/* cbtfs engine: a point's image read ahead, for streaming it.
 *
 * One thread reads the point in order (chain_read: checked, lazy
 * blocks fetched) into a ring of buffers and hashes it (md5) while the
 * caller sends what is ready: reading, checking and hashing overlap the
 * sending (TLS) instead of taking turns with it.  Past the point's size
 * the stream is zeros, up to the length asked for.
 *
 * Thread model: one reader thread per readahead; it alone uses the
 * fetcher and the layers while it runs.  The caller's thread takes
 * bytes with readahead_take.  One mutex and two conditions guard the
 * ring; neither thread holds the mutex while reading or copying.
 */
#ifndef CBTFS_ENGINE_READAHEAD_H
#define CBTFS_ENGINE_READAHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "../chain/fetch.h"
#include "../chain/layer.h"

struct readahead;

/* Start reading TOP (borrowed, as F: both outlive the readahead) from
 * offset 0 to LENGTH bytes (TOP's size, then zeros).  NULL with err_*. */
extern struct readahead *readahead_new (struct layer *top, struct fetcher *f,
                                        uint64_t length)
  __attribute__ ((__nonnull__ (1)));

/* Copy the next LEN bytes of the stream into BUF, waiting for them;
 * with BUF NULL, pass them by (they are still read and hashed).  0, or
 * -1 with the reader's err_* (a damaged block, a failed fetch). */
extern int readahead_take (struct readahead *ra, void *buf, size_t len)
  __attribute__ ((__nonnull__ (1)));

/* Stop the reader and free.  With MD5 (33 bytes) not NULL, and the whole
 * stream read without error, put its md5 there (hex) and return 0;
 * else -1.  NULL is a no-op. */
extern int readahead_free (struct readahead *ra, char *md5);

#endif /* CBTFS_ENGINE_READAHEAD_H */
