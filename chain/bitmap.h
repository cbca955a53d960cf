/* cbtfs: one bit per 64 KiB block, in memory, and XAPI's CBT bitmap.
 *
 * In memory bits live in 64-bit words, bit i at word i/64, bit i%64
 * (so a scan can skip 64 clear blocks at a time).  On the wire and in
 * the store's "changed" files the order is XAPI's: MSB first, block i
 * at byte i/8, mask 0x80 >> (i%8) (docs/xapi.md, "The CBT bitmap").
 *
 * Not thread-safe: callers serialise writers; concurrent readers of a
 * bitmap nobody writes are fine.
 */
#ifndef CBTFS_CHAIN_BITMAP_H
#define CBTFS_CHAIN_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitmap {
  uint64_t *words;              /* owned */
  uint64_t nbits;
};

/* Allocate NBITS clear bits.  0 or -1 (err_*, ENOMEM). */
extern int bitmap_init (struct bitmap *bm, uint64_t nbits)
  __attribute__ ((__nonnull__ (1)));

/* Free the bits; safe on a zeroed or already-freed bitmap. */
extern void bitmap_free (struct bitmap *bm) __attribute__ ((__nonnull__ (1)));

/* Bit I (false when I is past the end: shorter bitmaps read as clear). */
static inline bool
bitmap_get (const struct bitmap *bm, uint64_t i)
{
  return i < bm->nbits && (bm->words[i >> 6] >> (i & 63)) & 1;
}

/* Set bit I (< nbits). */
static inline void
bitmap_set (struct bitmap *bm, uint64_t i)
{
  bm->words[i >> 6] |= UINT64_C (1) << (i & 63);
}

/* Clear bit I (< nbits). */
static inline void
bitmap_clear (struct bitmap *bm, uint64_t i)
{
  bm->words[i >> 6] &= ~(UINT64_C (1) << (i & 63));
}

/* Set every bit. */
extern void bitmap_set_all (struct bitmap *bm) __attribute__ ((__nonnull__ (1)));

/* Number of set bits. */
extern uint64_t bitmap_count (const struct bitmap *bm)
  __attribute__ ((__nonnull__ (1)));

/* The first set bit at or after I, or nbits if there is none. */
extern uint64_t bitmap_next_set (const struct bitmap *bm, uint64_t i)
  __attribute__ ((__nonnull__ (1)));

/* Bytes a CBT bitmap of NBLOCKS blocks takes: ceil(nblocks/8). */
static inline uint64_t
cbt_bitmap_bytes (uint64_t nblocks)
{
  return (nblocks + 7) / 8;
}

/* Decode a CBT bitmap (MSB first) for a disk of NBLOCKS blocks into
 * *OUT (initialised here; caller frees).  LEN must be exactly
 * cbt_bitmap_bytes (nblocks); padding bits past the last block are
 * ignored.  0, or -1 with err_* ("bitmap is N bytes, expected M") and
 * errno EPROTO. */
extern int cbt_bitmap_decode (const uint8_t *buf, size_t len,
                              uint64_t nblocks, struct bitmap *out)
  __attribute__ ((__nonnull__ (4)));

/* Encode BM as a CBT bitmap into BUF of cbt_bitmap_bytes (nbits) bytes,
 * padding bits clear. */
extern void cbt_bitmap_encode (const struct bitmap *bm, uint8_t *buf)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_CHAIN_BITMAP_H */
