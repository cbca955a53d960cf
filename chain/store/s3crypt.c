/* cbtfs: client-side encryption of an object store's objects
 * (s3crypt.h, FORMAT.md "Encrypted object stores").
 *
 * Thread model: see s3crypt.h; nothing here is shared but the
 * read-only keys.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/util.h"
#include "s3crypt.h"

/* HKDF's inputs (FORMAT.md): the salt of the extract step is this and
 * the store's id; the labels are the expand step's info. */
#define SALT_PREFIX "cbtfs-store "
#define LABEL_CHECK "cbtfs 1 check"
#define LABEL_OBJECTS "cbtfs 1 objects"
#define LABEL_PACK "cbtfs 1 pack "
#define CHECK_TEXT "cbtfs key check 1"
#define HASH_LEN 32                     /* SHA-256 */

struct s3crypt {
  uint8_t prk[HASH_LEN];                /* HKDF's pseudo-random key */
  uint8_t objects[S3CRYPT_KEY_LEN];     /* whole objects' key */
  char check[S3CRYPT_CHECK_LEN + 1];
};

int
s3crypt_key_read (const char *file, uint8_t key[S3CRYPT_KEY_LEN])
{
  uint8_t *text;
  size_t len;

  text = (uint8_t *) secret_file_read ("--encrypt-key-file", file, 4096,
                                       &len);
  if (text == NULL)
    goto config;
  if (len != S3CRYPT_KEY_LEN) {
    explicit_bzero (text, len);
    free (text);
    err_set (EINVAL, "--encrypt-key-file %s: a key is %d random bytes "
             "(head -c %d /dev/urandom > FILE), this file has %zu",
             file, S3CRYPT_KEY_LEN, S3CRYPT_KEY_LEN, len);
    goto config;
  }
  memcpy (key, text, S3CRYPT_KEY_LEN);
  explicit_bzero (text, len);
  free (text);
  return 0;

 config:
  err_set_class (ERR_CONFIG);
  return -1;
}

/* HKDF-Expand of C's PRK with INFO (ILEN bytes) into OUT (32 bytes). */
static int
expand (const struct s3crypt *c, const void *info, size_t ilen,
        uint8_t out[S3CRYPT_KEY_LEN])
{
  gnutls_datum_t k = { (unsigned char *) c->prk, HASH_LEN };
  gnutls_datum_t i = { (unsigned char *) info, ilen };
  int r = gnutls_hkdf_expand (GNUTLS_MAC_SHA256, &k, &i, out,
                              S3CRYPT_KEY_LEN);

  if (r < 0) {
    err_set (EIO, "HKDF: %s", gnutls_strerror (r));
    return -1;
  }
  return 0;
}

struct s3crypt *
s3crypt_new (const uint8_t key[S3CRYPT_KEY_LEN], const char *store_id)
{
  struct s3crypt *c = calloc (1, sizeof *c);
  CLEANUP_FREE char *salt = NULL;
  uint8_t kc[S3CRYPT_KEY_LEN], mac[HASH_LEN];
  gnutls_datum_t ikm = { (unsigned char *) key, S3CRYPT_KEY_LEN }, s;
  int r;

  if (c == NULL || asprintf (&salt, SALT_PREFIX "%s", store_id) == -1) {
    free (c);
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  s.data = (unsigned char *) salt;
  s.size = strlen (salt);
  if ((r = gnutls_hkdf_extract (GNUTLS_MAC_SHA256, &ikm, &s, c->prk)) < 0) {
    err_set (EIO, "HKDF: %s", gnutls_strerror (r));
    goto err;
  }
  if (expand (c, LABEL_OBJECTS, strlen (LABEL_OBJECTS), c->objects) == -1
      || expand (c, LABEL_CHECK, strlen (LABEL_CHECK), kc) == -1)
    goto err;
  r = gnutls_hmac_fast (GNUTLS_MAC_SHA256, kc, sizeof kc, CHECK_TEXT,
                        strlen (CHECK_TEXT), mac);
  explicit_bzero (kc, sizeof kc);
  if (r < 0) {
    err_set (EIO, "HMAC: %s", gnutls_strerror (r));
    goto err;
  }
  for (size_t i = 0; i < HASH_LEN; i++)
    snprintf (c->check + 2 * i, 3, "%02x", mac[i]);
  return c;

 err:
  s3crypt_free (c);
  return NULL;
}

void
s3crypt_free (struct s3crypt *c)
{
  if (c == NULL)
    return;
  explicit_bzero (c, sizeof *c);
  free (c);
}

void
s3crypt_check (const struct s3crypt *c, char out[S3CRYPT_CHECK_LEN + 1])
{
  memcpy (out, c->check, S3CRYPT_CHECK_LEN + 1);
}

/* An AES-256-GCM handle for KEY, or NULL with err_*. */
static gnutls_aead_cipher_hd_t
cipher (const uint8_t key[S3CRYPT_KEY_LEN])
{
  gnutls_aead_cipher_hd_t h;
  gnutls_datum_t k = { (unsigned char *) key, S3CRYPT_KEY_LEN };
  int r = gnutls_aead_cipher_init (&h, GNUTLS_CIPHER_AES_256_GCM, &k);

  if (r < 0) {
    err_set (EIO, "AES-256-GCM: %s", gnutls_strerror (r));
    return NULL;
  }
  return h;
}

static int
random_bytes (void *buf, size_t n)
{
  int r = gnutls_rnd (GNUTLS_RND_RANDOM, buf, n);

  if (r < 0) {
    err_set (EIO, "random bytes: %s", gnutls_strerror (r));
    return -1;
  }
  return 0;
}

int
s3crypt_seal (const struct s3crypt *c, const char *name, const void *buf,
              size_t len, void **out, size_t *outlen)
{
  gnutls_aead_cipher_hd_t h;
  uint8_t *p = malloc (len + S3CRYPT_OVERHEAD);
  size_t clen = len + S3CRYPT_TAG_LEN;
  int r;

  if (p == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  memcpy (p, S3CRYPT_MAGIC, 4);
  if (random_bytes (p + 4, S3CRYPT_NONCE_LEN) == -1
      || (h = cipher (c->objects)) == NULL) {
    free (p);
    return -1;
  }
  r = gnutls_aead_cipher_encrypt (h, p + 4, S3CRYPT_NONCE_LEN, name,
                                  strlen (name), S3CRYPT_TAG_LEN, buf, len,
                                  p + 4 + S3CRYPT_NONCE_LEN, &clen);
  gnutls_aead_cipher_deinit (h);
  if (r < 0) {
    free (p);
    err_set (EIO, "%s: AES-256-GCM: %s", name, gnutls_strerror (r));
    return -1;
  }
  *out = p;
  *outlen = len + S3CRYPT_OVERHEAD;
  return 0;
}

int
s3crypt_unseal (const struct s3crypt *c, const char *name, const void *buf,
                size_t len, void **out, size_t *outlen)
{
  const uint8_t *q = buf;
  gnutls_aead_cipher_hd_t h;
  uint8_t *p;
  size_t plen;
  int r;

  if (len < S3CRYPT_OVERHEAD || memcmp (q, S3CRYPT_MAGIC, 4) != 0) {
    err_set (EIO, "%s: not an encrypted object (%zu bytes)", name, len);
    return -1;
  }
  plen = len - S3CRYPT_OVERHEAD;
  if ((p = malloc (plen + 1)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if ((h = cipher (c->objects)) == NULL) {
    free (p);
    return -1;
  }
  r = gnutls_aead_cipher_decrypt (h, q + 4, S3CRYPT_NONCE_LEN, name,
                                  strlen (name), S3CRYPT_TAG_LEN,
                                  q + 4 + S3CRYPT_NONCE_LEN,
                                  len - 4 - S3CRYPT_NONCE_LEN, p, &plen);
  gnutls_aead_cipher_deinit (h);
  if (r < 0) {
    free (p);
    err_set (EIO, "%s: fails authentication (damaged, or not this "
             "object's)", name);
    return -1;
  }
  p[plen] = '\0';
  *out = p;
  *outlen = plen;
  return 0;
}

/* A pack's key from its SALT. */
static gnutls_aead_cipher_hd_t
pack_cipher (const struct s3crypt *c, const uint8_t *salt)
{
  uint8_t info[sizeof LABEL_PACK - 1 + S3CRYPT_SALT_LEN];
  uint8_t key[S3CRYPT_KEY_LEN];
  gnutls_aead_cipher_hd_t h = NULL;

  memcpy (info, LABEL_PACK, sizeof LABEL_PACK - 1);
  memcpy (info + sizeof LABEL_PACK - 1, salt, S3CRYPT_SALT_LEN);
  if (expand (c, info, sizeof info, key) == 0)
    h = cipher (key);
  explicit_bzero (key, sizeof key);
  return h;
}

/* A block's nonce: its place in the pack, big-endian, in the last four
 * bytes (a pack's key seals each place once). */
static void
place_nonce (uint32_t place, uint8_t nonce[S3CRYPT_NONCE_LEN])
{
  memset (nonce, 0, S3CRYPT_NONCE_LEN);
  nonce[8] = place >> 24;
  nonce[9] = place >> 16;
  nonce[10] = place >> 8;
  nonce[11] = place;
}

int
s3crypt_pack_seal (const struct s3crypt *c, const char *name,
                   const void *buf, uint32_t n, size_t bs, void **out,
                   size_t *outlen)
{
  const size_t rec = S3CRYPT_RECORD (bs);
  uint8_t salt[S3CRYPT_SALT_LEN], nonce[S3CRYPT_NONCE_LEN];
  gnutls_aead_cipher_hd_t h;
  uint8_t *p = malloc (n ? n * rec : 1);
  int r = 0;

  if (p == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (random_bytes (salt, sizeof salt) == -1
      || (h = pack_cipher (c, salt)) == NULL) {
    free (p);
    return -1;
  }
  for (uint32_t i = 0; i < n && r >= 0; i++) {
    uint8_t *q = p + i * rec;
    size_t clen = bs + S3CRYPT_TAG_LEN;
    memcpy (q, salt, S3CRYPT_SALT_LEN);
    place_nonce (i, nonce);
    r = gnutls_aead_cipher_encrypt (h, nonce, sizeof nonce, name,
                                    strlen (name), S3CRYPT_TAG_LEN,
                                    (const uint8_t *) buf + i * bs, bs,
                                    q + S3CRYPT_SALT_LEN, &clen);
  }
  gnutls_aead_cipher_deinit (h);
  if (r < 0) {
    free (p);
    err_set (EIO, "%s: AES-256-GCM: %s", name, gnutls_strerror (r));
    return -1;
  }
  *out = p;
  *outlen = n * rec;
  return 0;
}

uint32_t
s3crypt_pack_unseal (const struct s3crypt *c, const char *name,
                     uint32_t place, const void *buf, size_t len, size_t bs,
                     void *out, bool *bad)
{
  const size_t rec = S3CRYPT_RECORD (bs);
  const uint8_t *q = buf;
  uint8_t salt[S3CRYPT_SALT_LEN], nonce[S3CRYPT_NONCE_LEN];
  gnutls_aead_cipher_hd_t h = NULL;
  uint32_t i;

  *bad = false;
  /* One salt per pack: the key is made again only where it changes
   * (never, unless the records are not one pack's). */
  for (i = 0; (size_t) (i + 1) * rec <= len; i++, q += rec) {
    size_t plen = bs;
    if (h == NULL || memcmp (salt, q, S3CRYPT_SALT_LEN) != 0) {
      if (h)
        gnutls_aead_cipher_deinit (h);
      memcpy (salt, q, S3CRYPT_SALT_LEN);
      if ((h = pack_cipher (c, salt)) == NULL) {
        *bad = true;
        return i;
      }
    }
    place_nonce (place + i, nonce);
    if (gnutls_aead_cipher_decrypt (h, nonce, sizeof nonce, name,
                                    strlen (name), S3CRYPT_TAG_LEN,
                                    q + S3CRYPT_SALT_LEN,
                                    bs + S3CRYPT_TAG_LEN,
                                    (uint8_t *) out + i * bs, &plen) < 0
        || plen != bs) {
      /* What it wrote is not to be read: it failed its check. */
      memset ((uint8_t *) out + i * bs, 0, bs);
      *bad = true;
      break;
    }
  }
  if (h)
    gnutls_aead_cipher_deinit (h);
  return i;
}
