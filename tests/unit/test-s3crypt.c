/* Unit test: client-side encryption of object store objects
 * (chain/store/s3crypt.c).
 *
 * What s3crypt.h promises: a key file is 32 bytes that others cannot
 * read, else a configuration error naming the problem; the check value
 * depends on the key and on the store's id; a sealed object opens
 * under its own name and key only, and any changed byte makes it fail
 * (EIO), never read as other content; two seals of one content differ
 * (fresh nonces); a pack's blocks open alone from any place, a block
 * moved within or between packs or changed fails, and opening stops at
 * the first failing or cut record.
 *
 * Thread model: the main thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "chain/store/s3crypt.h"
#include "common/error.h"

#define BS 4096                 /* a small block: the code takes any */
#define ID1 "0a1b2c3d-0000-4000-8000-000000000001"
#define ID2 "0a1b2c3d-0000-4000-8000-000000000002"

static void
fill (uint8_t *p, size_t n, unsigned seed)
{
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = seed >> 16;
  }
}

static void
write_key (const char *path, const void *buf, size_t n, mode_t mode)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  CHECK (fd >= 0);
  CHECK (write (fd, buf, n) == (ssize_t) n);
  CHECK (fchmod (fd, mode) == 0);
  close (fd);
}

static void
test_key_file (const char *dir)
{
  char path[4096];
  uint8_t key[S3CRYPT_KEY_LEN], got[S3CRYPT_KEY_LEN];

  fill (key, sizeof key, 1);
  snprintf (path, sizeof path, "%s/key", dir);
  write_key (path, key, sizeof key, 0600);
  CHECK (s3crypt_key_read (path, got) == 0);
  CHECK (memcmp (key, got, sizeof key) == 0);

  write_key (path, key, sizeof key, 0604);
  CHECK_FAILS (s3crypt_key_read (path, got), EPERM, "lets other users read it");
  CHECK (err_class () == ERR_CONFIG);

  write_key (path, key, sizeof key - 1, 0600);
  CHECK_FAILS (s3crypt_key_read (path, got), EINVAL, "has 31");
  CHECK (err_class () == ERR_CONFIG);
  write_key (path, key, 0, 0600);
  CHECK_FAILS (s3crypt_key_read (path, got), EINVAL, "has 0");

  snprintf (path, sizeof path, "%s/none", dir);
  CHECK_FAILS (s3crypt_key_read (path, got), ENOENT, "none");
  CHECK (err_class () == ERR_CONFIG);
}

static void
test_check (void)
{
  uint8_t k1[S3CRYPT_KEY_LEN], k2[S3CRYPT_KEY_LEN];
  struct s3crypt *a, *b, *c, *d;
  char ca[S3CRYPT_CHECK_LEN + 1], cb[S3CRYPT_CHECK_LEN + 1];
  char cc[S3CRYPT_CHECK_LEN + 1], cd[S3CRYPT_CHECK_LEN + 1];

  fill (k1, sizeof k1, 2);
  memcpy (k2, k1, sizeof k2);
  k2[31] ^= 1;
  CHECK ((a = s3crypt_new (k1, ID1)) != NULL);
  CHECK ((b = s3crypt_new (k1, ID1)) != NULL);
  CHECK ((c = s3crypt_new (k2, ID1)) != NULL);
  CHECK ((d = s3crypt_new (k1, ID2)) != NULL);
  s3crypt_check (a, ca);
  s3crypt_check (b, cb);
  s3crypt_check (c, cc);
  s3crypt_check (d, cd);
  CHECK (strlen (ca) == S3CRYPT_CHECK_LEN);
  CHECK (strspn (ca, "0123456789abcdef") == S3CRYPT_CHECK_LEN);
  CHECK (strcmp (ca, cb) == 0);
  CHECK (strcmp (ca, cc) != 0);
  CHECK (strcmp (ca, cd) != 0);
  s3crypt_free (a);
  s3crypt_free (b);
  s3crypt_free (c);
  s3crypt_free (d);
}

static void
test_objects (void)
{
  uint8_t k[S3CRYPT_KEY_LEN], text[1000];
  struct s3crypt *c, *other;
  void *s1, *s2, *p;
  size_t n1, n2, n;

  fill (k, sizeof k, 3);
  fill (text, sizeof text, 4);
  CHECK ((c = s3crypt_new (k, ID1)) != NULL);
  CHECK ((other = s3crypt_new (k, ID2)) != NULL);

  CHECK (s3crypt_seal (c, "roots/a/b", text, sizeof text, &s1, &n1) == 0);
  CHECK (n1 == sizeof text + S3CRYPT_OVERHEAD);
  CHECK (memmem (s1, n1, text + 100, 16) == NULL);
  CHECK (s3crypt_seal (c, "roots/a/b", text, sizeof text, &s2, &n2) == 0);
  CHECK (n2 == n1 && memcmp (s1, s2, n1) != 0);      /* fresh nonce */

  CHECK (s3crypt_unseal (c, "roots/a/b", s1, n1, &p, &n) == 0);
  CHECK (n == sizeof text && memcmp (p, text, n) == 0);
  CHECK (((char *) p)[n] == '\0');
  free (p);

  /* Another name, another store's keys: refused. */
  CHECK_FAILS (s3crypt_unseal (c, "roots/a/c", s1, n1, &p, &n), EIO,
               "fails authentication");
  CHECK_FAILS (s3crypt_unseal (other, "roots/a/b", s1, n1, &p, &n), EIO,
               "fails authentication");
  /* Every byte matters: magic, nonce, content, tag. */
  for (size_t i = 0; i < n1; i++) {
    ((uint8_t *) s1)[i] ^= 0x40;
    CHECK (s3crypt_unseal (c, "roots/a/b", s1, n1, &p, &n) == -1);
    CHECK (errno == EIO);
    ((uint8_t *) s1)[i] ^= 0x40;
  }
  /* Cut short, or not sealed at all. */
  CHECK_FAILS (s3crypt_unseal (c, "roots/a/b", s1, n1 - 1, &p, &n), EIO,
               "fails authentication");
  CHECK_FAILS (s3crypt_unseal (c, "roots/a/b", text, 10, &p, &n), EIO,
               "not an encrypted object");

  /* An empty object is sealed too. */
  free (s2);
  CHECK (s3crypt_seal (c, "disks/x", "", 0, &s2, &n2) == 0);
  CHECK (n2 == S3CRYPT_OVERHEAD);
  CHECK (s3crypt_unseal (c, "disks/x", s2, n2, &p, &n) == 0 && n == 0);
  free (p);
  free (s1);
  free (s2);
  s3crypt_free (c);
  s3crypt_free (other);
}

static void
test_packs (void)
{
  const uint32_t nb = 8;
  const size_t rec = S3CRYPT_RECORD (BS);
  uint8_t k[S3CRYPT_KEY_LEN];
  uint8_t *blocks = malloc (nb * BS), *out = malloc (nb * BS);
  uint8_t *a, *b;
  struct s3crypt *c;
  void *sa, *sb;
  size_t na, nb2;
  bool bad;

  CHECK (blocks && out);
  fill (k, sizeof k, 5);
  fill (blocks, nb * BS, 6);
  CHECK ((c = s3crypt_new (k, ID1)) != NULL);
  CHECK (s3crypt_pack_seal (c, "packs/d/s.1.0", blocks, nb, BS, &sa, &na)
         == 0);
  CHECK (na == nb * rec);
  CHECK (s3crypt_pack_seal (c, "packs/d/s.1.1", blocks, nb, BS, &sb, &nb2)
         == 0);
  a = sa;
  b = sb;
  for (uint32_t i = 0; i < nb; i++)
    CHECK (memmem (a, na, blocks + i * BS, 64) == NULL);
  CHECK (memcmp (a + S3CRYPT_SALT_LEN, b + S3CRYPT_SALT_LEN, 64) != 0);

  /* The whole pack, then each run of places alone. */
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 0, a, na, BS, out, &bad)
         == nb && !bad);
  CHECK (memcmp (out, blocks, nb * BS) == 0);
  for (uint32_t from = 0; from < nb; from++)
    for (uint32_t n = 1; from + n <= nb; n++) {
      memset (out, 0, nb * BS);
      CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", from, a + from * rec,
                                  n * rec, BS, out, &bad) == n && !bad);
      CHECK (memcmp (out, blocks + from * BS, n * BS) == 0);
    }

  /* Another pack's name, a block at another place: fails at once. */
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.1", 0, a, na, BS, out, &bad)
         == 0 && bad);
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 1, a, rec, BS, out, &bad)
         == 0 && bad);
  /* Records of two packs together (a swap): the foreign one fails. */
  memcpy (a + 3 * rec, b + 3 * rec, rec);
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 0, a, na, BS, out, &bad)
         == 3 && bad);
  CHECK (memcmp (out, blocks, 3 * BS) == 0);
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 4, a + 4 * rec, 4 * rec,
                              BS, out, &bad) == 4 && !bad);
  free (sa);
  CHECK (s3crypt_pack_seal (c, "packs/d/s.1.0", blocks, nb, BS, &sa, &na)
         == 0);
  a = sa;

  /* One changed byte in salt, content or tag: that block fails and
   * nothing of it is given. */
  for (size_t off = 0; off < rec; off += off < 32 ? 1 : 997) {
    a[2 * rec + off] ^= 1;
    memset (out, 0xa5, nb * BS);
    CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 0, a, na, BS, out, &bad)
           == 2 && bad);
    for (size_t j = 2 * BS; j < 3 * BS; j++)
      CHECK (out[j] == 0);
    a[2 * rec + off] ^= 1;
  }
  /* Cut short: whole records only, and no failure. */
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 0, a, 5 * rec - 1, BS,
                              out, &bad) == 4 && !bad);
  CHECK (s3crypt_pack_unseal (c, "packs/d/s.1.0", 0, a, 0, BS, out, &bad)
         == 0 && !bad);

  free (sa);
  free (sb);
  free (blocks);
  free (out);
  s3crypt_free (c);
}

int
main (void)
{
  char *dir = make_tmpdir ();

  test_key_file (dir);
  test_check ();
  test_objects ();
  test_packs ();
  rm_rf (dir);
  return 0;
}
