/* cbtfs: a layer's index (FORMAT.md): the records that vouch for its
 * blocks, and a scan that tells torn tails from damage.
 *
 * A record is 40 bytes, little-endian: u64 first block, u32 count, u32
 * kind, a 16-byte checksum (DATA) or zeros, u64 XXH3-64 of the first 32
 * bytes.  The index starts with one header record of the same size.
 * Record number n is the one at byte n * 40 (the header is number 0).
 */
#ifndef CBTFS_CHAIN_INDEX_H
#define CBTFS_CHAIN_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "sums.h"

#define INDEX_REC_SIZE 40

enum index_kind {
  INDEX_DATA = 1,               /* one block, stored, with its checksum */
  INDEX_ZERO = 2,               /* COUNT blocks of zeros, not stored */
};

struct index_rec {
  uint64_t block;
  uint32_t count;
  uint32_t kind;                /* enum index_kind */
  uint8_t sum[SUM_LEN];
};

/* Encode R, with its check, into OUT. */
extern void index_rec_encode (const struct index_rec *r,
                              uint8_t out[INDEX_REC_SIZE])
  __attribute__ ((__nonnull__ (1, 2)));

/* Decode IN into R: false if its check fails (torn or damaged). */
extern bool index_rec_decode (const uint8_t in[INDEX_REC_SIZE],
                              struct index_rec *r)
  __attribute__ ((__nonnull__ (1, 2)));

/* The header record every index starts with. */
extern void index_header (uint8_t out[INDEX_REC_SIZE])
  __attribute__ ((__nonnull__ (1)));

/* 0 if H's index starts with the header, else -1 with err_* (EPROTO:
 * not an index). */
extern int index_check_header (struct store_layer *h)
  __attribute__ ((__nonnull__ (1)));

/* Called by index_scan for every good record R, number N. */
typedef int (*index_fn) (void *opaque, const struct index_rec *r, uint64_t n);

/* Call FN for every record of H's index at or after byte FROM (the
 * header is not checked here) of a layer of NBLOCKS blocks.  A record
 * whose check fails is a torn tail when no good record follows it: a
 * crash interrupted its append, and the scan ends before it (where the
 * next writer cuts the index).  One that a good record follows is
 * damage: it is skipped and counted in *DAMAGED, and the block it named
 * stays missing (copied or fetched again); cutting there instead would
 * throw away the good records after it.  *END gets the byte after the
 * last good record.  A record whose check passes but which makes no
 * sense is damage no record can be trusted past: -1 with err_* and
 * errno EPROTO. */
extern int index_scan (struct store_layer *h, uint64_t nblocks, uint64_t from,
                       index_fn fn, void *opaque, uint64_t *end,
                       uint64_t *damaged)
  __attribute__ ((__nonnull__ (1, 4, 6, 7)));

#endif /* CBTFS_CHAIN_INDEX_H */
