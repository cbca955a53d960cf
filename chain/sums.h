/* cbtfs: block number → checksum, an open-addressing hash table.
 *
 * Holds the 128-bit checksum of every stored (non-zero) block of a
 * layer.  Not thread-safe: the layer's lock guards it.
 */
#ifndef CBTFS_CHAIN_SUMS_H
#define CBTFS_CHAIN_SUMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SUM_LEN 16

struct sums_slot {
  uint64_t key;                 /* block + 1; 0 marks an empty slot */
  uint8_t sum[SUM_LEN];
};

struct sums {
  struct sums_slot *slots;      /* owned; NULL when empty */
  size_t cap;                   /* a power of two, or 0 */
  size_t len;
};

/* Set block B's checksum (replacing any).  0 or -1 (ENOMEM). */
extern int sums_put (struct sums *t, uint64_t b, const uint8_t sum[SUM_LEN])
  __attribute__ ((__nonnull__ (1, 3)));

/* Forget block B's checksum, if any. */
extern void sums_del (struct sums *t, uint64_t b)
  __attribute__ ((__nonnull__ (1)));

/* Block B's checksum, or NULL.  Borrowed until the next sums_put. */
extern const uint8_t *sums_get (const struct sums *t, uint64_t b)
  __attribute__ ((__nonnull__ (1)));

/* Free the table. */
extern void sums_free (struct sums *t) __attribute__ ((__nonnull__ (1)));

/* XXH3-128 of LEN bytes of BUF, in canonical (big-endian) form. */
extern void sums_compute (const void *buf, size_t len, uint8_t out[SUM_LEN])
  __attribute__ ((__nonnull__ (1, 3)));

#endif /* CBTFS_CHAIN_SUMS_H */
