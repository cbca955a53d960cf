/* cbtfs: proving a store still holds what was backed up.
 *
 * Two checks: every stored block against the checksum recorded when it
 * was copied (finds damage in the store), and a whole image's md5
 * against XAPI's VDI.checksum of the snapshot (proves the chain
 * reproduces the source, while the host still has the snapshot's data).
 *
 * Thread model: reentrant; a layer may be verified while others read it.
 */
#ifndef CBTFS_CHAIN_VERIFY_H
#define CBTFS_CHAIN_VERIFY_H

#include <stdint.h>

#include "fetch.h"
#include "layer.h"

/* Called for each stored block of L that fails its checksum. */
typedef void (*verify_damage_fn) (void *opaque, struct layer *l, uint64_t b);

/* Read every stored (DATA) block of L and check it; call FN for each
 * that fails.  *CHECKED gets how many blocks were read.  0, or -1 with
 * err_* when the data file cannot be read at all. */
extern int verify_layer (struct layer *l, verify_damage_fn fn, void *opaque,
                         uint64_t *checked)
  __attribute__ ((__nonnull__ (1, 2, 4)));

/* The md5 of point TOP's whole image (top->meta.size bytes), as
 * VDI.checksum computes it, in lowercase hex.  Blocks not stored come
 * through FETCH (NULL: they fail).  0 or -1 with err_*. */
extern int verify_point_md5 (struct layer *top, struct fetcher *fetch,
                             char hex[33])
  __attribute__ ((__nonnull__ (1, 3)));

#endif /* CBTFS_CHAIN_VERIFY_H */
