/* cbtfs: client-side encryption of an object store's objects
 * (FORMAT.md "Encrypted object stores").
 *
 * The key is a file of 32 random bytes.  From it and the store's id,
 * HKDF-SHA256 derives a key check value (kept in P/cbtfs-store, so that
 * a wrong key is told at open), a key for whole objects and, per pack,
 * a key of its own from a random salt the pack carries.  Objects are
 * sealed with AES-256-GCM, their name (below the store's prefix) as
 * associated data: an object moved, swapped or changed fails to open,
 * never reads as other data.  Packs are sealed block by block, so that
 * a ranged read of some blocks opens them alone.
 *
 * Thread model: a struct s3crypt is read-only after s3crypt_new, and
 * every call makes its own cipher handle, so any thread may use it.
 */
#ifndef CBTFS_CHAIN_STORE_S3CRYPT_H
#define CBTFS_CHAIN_STORE_S3CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define S3CRYPT_KEY_LEN 32
#define S3CRYPT_CHECK_LEN 64            /* hex digits of the check value */
#define S3CRYPT_MAGIC "CBE1"            /* a whole object's first bytes */
#define S3CRYPT_NONCE_LEN 12
#define S3CRYPT_TAG_LEN 16
#define S3CRYPT_SALT_LEN 16             /* a pack's, before each block */
/* Bytes a sealed whole object has more than its content. */
#define S3CRYPT_OVERHEAD (4 + S3CRYPT_NONCE_LEN + S3CRYPT_TAG_LEN)
/* Bytes a block of BS bytes takes in a sealed pack. */
#define S3CRYPT_RECORD(bs) (S3CRYPT_SALT_LEN + (uint64_t) (bs) \
                            + S3CRYPT_TAG_LEN)

struct s3crypt;

/* Read the key in FILE into KEY: 32 bytes, in a file others cannot
 * read.  0, or -1 with err_* (class ERR_CONFIG) naming the problem. */
extern int s3crypt_key_read (const char *file,
                             uint8_t key[S3CRYPT_KEY_LEN]);

/* The keys of KEY for the store STORE_ID (a uuid): malloc'd, NULL with
 * err_*.  KEY is copied; the caller wipes its own. */
extern struct s3crypt *s3crypt_new (const uint8_t key[S3CRYPT_KEY_LEN],
                                    const char *store_id);

/* Wipe and free C; NULL is a no-op. */
extern void s3crypt_free (struct s3crypt *c);

/* The key check value, S3CRYPT_CHECK_LEN hex digits and a NUL. */
extern void s3crypt_check (const struct s3crypt *c,
                           char out[S3CRYPT_CHECK_LEN + 1]);

/* Seal LEN bytes of BUF as the object NAME: *OUT (malloc'd) of *OUTLEN
 * = LEN + S3CRYPT_OVERHEAD bytes, with a fresh random nonce.  0 or -1
 * with err_*. */
extern int s3crypt_seal (const struct s3crypt *c, const char *name,
                         const void *buf, size_t len, void **out,
                         size_t *outlen);

/* Open the sealed object NAME (LEN bytes of BUF): its content into
 * *OUT (malloc'd, with a NUL after it) of *OUTLEN bytes.  -1 with EIO
 * and err_* when it is not whole, not sealed, or not this name's under
 * this key. */
extern int s3crypt_unseal (const struct s3crypt *c, const char *name,
                           const void *buf, size_t len, void **out,
                           size_t *outlen);

/* Seal N blocks of BS bytes of BUF as pack NAME: *OUT (malloc'd) of N
 * records of S3CRYPT_RECORD (BS) bytes, the record of place i at i
 * times that, under a fresh random salt.  0 or -1 with err_*. */
extern int s3crypt_pack_seal (const struct s3crypt *c, const char *name,
                              const void *buf, uint32_t n, size_t bs,
                              void **out, size_t *outlen);

/* Open the records of pack NAME that LEN bytes of BUF hold, the first
 * at place PLACE, into OUT (room for every whole record's block):
 * the number of blocks opened, in order, up to the first record that
 * is cut short or fails (*BAD true then, for the latter).  Never
 * fails otherwise. */
extern uint32_t s3crypt_pack_unseal (const struct s3crypt *c,
                                     const char *name, uint32_t place,
                                     const void *buf, size_t len, size_t bs,
                                     void *out, bool *bad);

#endif /* CBTFS_CHAIN_STORE_S3CRYPT_H */
