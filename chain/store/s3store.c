/* cbtfs: the object store backend: a store is a prefix of an S3 bucket
 * (s3store.h, FORMAT.md "Object stores").
 *
 * Every object is written once, whole, by one PUT, so a crash leaves
 * objects that exist whole or not at all; what makes a thing exist is
 * always one object written last (a layer's root, a note's record), and
 * what a crash leaves without it is never read and is removed by the
 * next lock holder (the sweep) or writer (a layer's unreferenced packs).
 *
 * Thread model: the store's fields are set at open and only read
 * after, except `lock`, `share`, `marked` and `marks`, which the lock
 * holder's thread sets (store_lock, store_lock_shared, removals,
 * stages) before any writer starts, and store_close reads (a shared
 * holder marks the disks it holds instead, under held_lock:
 * s3store-share.c); the lease guards its own state.  Requests go
 * through clients from a pool (pool_lock); an S3 client serves one
 * thread at a time.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/secbuf.h"
#include "../../common/util.h"
#include "holder.h"
#include "s3crypt.h"
#include "s3store.h"

#define SCHEME "s3://"

/* ---- configuration ------------------------------------------------------
 * From the environment only (store.h says which variables): the
 * command line sets them from its options (cli/), and children (a
 * mount's daemon, nbdkit for serve) inherit them. */

/* The environment's NAME, if set and not empty, else DEFLT. */
static const char *
setting (const char *name, const char *deflt)
{
  const char *e = getenv (name);

  return e && *e ? e : deflt;
}

/* A yes/no variable (parse_yes_no): anything else is no. */
static bool
setting_yes (const char *name)
{
  return parse_yes_no (setting (name, "no")) == 1;
}

/* ---- names ------------------------------------------------------------ */

static bool
claims (const char *where)
{
  return strncmp (where, SCHEME, strlen (SCHEME)) == 0;
}

/* A prefix becomes part of every key: plain path segments only. */
static bool
prefix_ok (const char *p)
{
  const char *seg = p;

  if (strspn (p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
              "0123456789-_./") != strlen (p))
    return false;
  for (;;) {
    size_t n = strcspn (seg, "/");
    if (n == 0 || (n == 1 && seg[0] == '.')
        || (n == 2 && seg[0] == '.' && seg[1] == '.'))
      return false;
    if (seg[n] == '\0')
      return true;
    seg += n + 1;
  }
}

/* Split "s3://BUCKET[/PREFIX][/]" into *BUCKET and *PREFIX ("" or
 * "PREFIX/"), both malloc'd. */
static int
parse_where (const char *where, char **bucket, char **prefix)
{
  const char *b = where + strlen (SCHEME);
  size_t blen = strcspn (b, "/");
  const char *p = b[blen] ? b + blen + 1 : "";
  size_t plen = strlen (p);
  CLEANUP_FREE char *pfx = strndup (p, plen);

  if (pfx == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (plen && pfx[plen - 1] == '/')
    pfx[--plen] = '\0';
  if (blen == 0 || (plen && !prefix_ok (pfx))) {
    err_set (EINVAL, "%s: expected s3://BUCKET or s3://BUCKET/PREFIX, the "
             "prefix plain path segments (letters, digits, '-', '_', '.')",
             where);
    err_set_class (ERR_CONFIG);
    return -1;
  }
  *bucket = strndup (b, blen);
  if (*bucket == NULL || asprintf (prefix, "%s%s", pfx, plen ? "/" : "") == -1) {
    free (*bucket);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

char *
s3store_key (struct s3_store *ss, const char *fmt, ...)
{
  CLEANUP_FREE char *rest = NULL;
  char *key;
  va_list ap;
  int r;

  va_start (ap, fmt);
  r = vasprintf (&rest, fmt, ap);
  va_end (ap);
  if (r == -1 || asprintf (&key, "%s%s", ss->prefix, rest) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return key;
}

/* ---- clients ---------------------------------------------------------- */

s3_client *
s3store_client (struct s3_store *ss)
{
  s3_client *c = NULL;

  pthread_mutex_lock (&ss->pool_lock);
  if (ss->nidle > 0)
    c = ss->idle[--ss->nidle];
  pthread_mutex_unlock (&ss->pool_lock);
  if (c == NULL && (c = s3_open (&ss->o)) == NULL && errno != ENOMEM)
    err_set_class (ERR_CONFIG);   /* what the options say is wrong */
  return c;
}

void
s3store_release (struct s3_store *ss, s3_client *c)
{
  if (c == NULL)
    return;
  pthread_mutex_lock (&ss->pool_lock);
  if (ss->nidle == ss->cap) {
    size_t ncap = ss->cap ? ss->cap * 2 : 8;
    s3_client **nv = realloc (ss->idle, ncap * sizeof *nv);
    if (nv == NULL) {
      pthread_mutex_unlock (&ss->pool_lock);
      s3_close (c);
      return;
    }
    ss->idle = nv;
    ss->cap = ncap;
  }
  ss->idle[ss->nidle++] = c;
  pthread_mutex_unlock (&ss->pool_lock);
}

/* The requests themselves, on the bytes the bucket holds. */
static int
raw_put (struct s3_store *ss, const char *key, const void *buf, size_t len,
         bool create_only)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_put (c, key, buf, len, create_only) : -1;

  s3store_release (ss, c);
  return r;
}

static int
raw_get (struct s3_store *ss, const char *key, uint64_t off, uint64_t len,
         void **buf, size_t *size)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_get (c, key, off, len, buf, size) : -1;

  s3store_release (ss, c);
  return r;
}

/* ---- encryption ---------------------------------------------------------
 * An encrypted store's objects are sealed here, on their way to and
 * from the bucket, with their names below the prefix as associated
 * data (a store's objects keep their meaning if the whole prefix is
 * moved; one object put in another's place fails).  Only the marker
 * (raw_get, raw_put) is not. */

/* KEY's name below the store's prefix. */
static const char *
key_name (const struct s3_store *ss, const char *key)
{
  size_t n = strlen (ss->prefix);

  return strncmp (key, ss->prefix, n) == 0 ? key + n : key;
}

/* s3crypt's message, naming the object in full (it names KEY's name). */
static void
crypt_failed (const struct s3_store *ss, const char *key)
{
  char msg[512];
  int e = errno;

  snprintf (msg, sizeof msg, "%s", err_get ());
  err_set (e, "s3://%s/%.*s%s", ss->o.bucket,
           (int) (key_name (ss, key) - key), key, msg);
}

int
s3store_seal (struct s3_store *ss, const char *key, const void *buf,
              size_t len, void **out, size_t *n)
{
  if (s3crypt_seal (ss->crypt, key_name (ss, key), buf, len, out, n) == -1) {
    crypt_failed (ss, key);
    return -1;
  }
  return 0;
}

int
s3store_unseal (struct s3_store *ss, const char *key, const void *buf,
                size_t len, void **out, size_t *n)
{
  if (s3crypt_unseal (ss->crypt, key_name (ss, key), buf, len, out,
                      n) == -1) {
    crypt_failed (ss, key);
    return -1;
  }
  return 0;
}

int
s3store_put (struct s3_store *ss, const char *key, const void *buf,
             size_t len, bool create_only)
{
  void *sealed;
  size_t n;
  int r;

  if (ss->crypt == NULL)
    return raw_put (ss, key, buf, len, create_only);
  if (s3store_seal (ss, key, buf, len, &sealed, &n) == -1)
    return -1;
  r = raw_put (ss, key, sealed, n, create_only);
  free (sealed);
  return r;
}

int
s3store_get (struct s3_store *ss, const char *key, uint64_t off,
             uint64_t len, void **buf, size_t *size)
{
  void *sealed, *text;
  size_t n, tlen;
  int r;

  if (ss->crypt == NULL)
    return raw_get (ss, key, off, len, buf, size);
  /* Only whole objects authenticate: a range is cut after (the only
   * ranges asked of objects other than packs are a root's first line). */
  if (raw_get (ss, key, 0, 0, &sealed, &n) == -1)
    return -1;
  r = s3store_unseal (ss, key, sealed, n, &text, &tlen);
  free (sealed);
  if (r == -1)
    return -1;
  if (off > tlen)
    off = tlen;
  if (len == 0 || len > tlen - off)
    len = tlen - off;
  if (off > 0)
    memmove (text, (char *) text + off, len);
  ((char *) text)[len] = '\0';
  *buf = text;
  *size = len;
  return 0;
}

uint64_t
s3store_block_bytes (const struct s3_store *ss)
{
  const uint64_t bs = (uint64_t) 1 << S3STORE_BLOCK_SHIFT;

  return ss->crypt ? S3CRYPT_RECORD (bs) : bs;
}

int
s3store_pack_put (struct s3_store *ss, const char *key, const void *buf,
                  uint32_t n)
{
  const size_t bs = (size_t) 1 << S3STORE_BLOCK_SHIFT;
  void *sealed;
  size_t len;
  int r;

  if (ss->crypt == NULL)
    return raw_put (ss, key, buf, (size_t) n * bs, false);
  if (s3crypt_pack_seal (ss->crypt, key_name (ss, key), buf, n, bs,
                         &sealed, &len) == -1) {
    crypt_failed (ss, key);
    return -1;
  }
  r = raw_put (ss, key, sealed, len, false);
  free (sealed);
  return r;
}

int
s3store_pack_get (struct s3_store *ss, const char *key, uint32_t place,
                  uint32_t n, void **buf, size_t *got)
{
  const size_t bs = (size_t) 1 << S3STORE_BLOCK_SHIFT;
  const uint64_t rec = s3store_block_bytes (ss);
  void *sealed, *out;
  size_t len;
  uint32_t k;
  bool bad;

  if (ss->crypt == NULL)
    return raw_get (ss, key, (uint64_t) place * bs, (uint64_t) n * bs, buf,
                    got);
  if (raw_get (ss, key, place * rec, n * rec, &sealed, &len) == -1)
    return -1;
  if ((out = malloc ((size_t) n * bs)) == NULL) {
    free (sealed);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  /* Each block opens alone: the wanted first one decides, later ones
   * that fail are left for their own reads to report. */
  k = s3crypt_pack_unseal (ss->crypt, key_name (ss, key), place, sealed,
                           len, bs, out, &bad);
  free (sealed);
  if (k == 0 && bad) {
    free (out);
    err_set (EIO, "s3://%s/%s: the block at place %" PRIu32 " fails "
             "authentication (damaged, or not this pack's)", ss->o.bucket,
             key, place);
    return -1;
  }
  *buf = out;
  *got = (size_t) k * bs;
  return 0;
}

int
s3store_head (struct s3_store *ss, const char *key, uint64_t *size)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_head (c, key, size, NULL) : -1;

  s3store_release (ss, c);
  return r;
}

int
s3store_delete (struct s3_store *ss, const char *key)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_delete (c, key) : -1;

  s3store_release (ss, c);
  return r;
}

int
s3store_delete_names (struct s3_store *ss, const char *prefix,
                      char *const *names, size_t n, bool holder)
{
  s3_client *c = NULL;
  char **keys = calloc (n < S3_DELETE_MAX ? n + 1 : S3_DELETE_MAX,
                        sizeof *keys);
  int ret = -1;

  if (keys == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (n > 0 && (c = s3store_client (ss)) == NULL)
    goto out;
  for (size_t i = 0; i < n; i += S3_DELETE_MAX) {
    size_t k = MIN (n - i, (size_t) S3_DELETE_MAX);
    for (size_t j = 0; j < k; j++) {
      free (keys[j]);
      if (asprintf (&keys[j], "%s%s", prefix, names[i + j]) == -1) {
        keys[j] = NULL;
        err_set (ENOMEM, "out of memory");
        goto out;
      }
    }
    if ((holder && s3store_may_change (ss) == -1)
        || s3_delete_many (c, keys, k) == -1)
      goto out;
  }
  ret = 0;
 out:
  s3store_release (ss, c);
  for (size_t j = 0; j < MIN (n, (size_t) S3_DELETE_MAX); j++)
    free (keys[j]);
  free (keys);
  return ret;
}

int
s3store_list (struct s3_store *ss, const char *prefix, const char *after,
              s3_list_fn fn, void *opaque)
{
  s3_client *c = s3store_client (ss);
  int r = c ? s3_list (c, prefix, after, 0, fn, opaque) : -1;

  s3store_release (ss, c);
  return r;
}

/* Keys listed, with PREFIX cut off (s3store_list's callback). */
struct keys {
  size_t cut;                   /* bytes of prefix to cut */
  char **v;
  size_t n, cap;
};

static int
collect (void *opaque, const char *key, uint64_t size)
{
  struct keys *k = opaque;

  (void) size;
  if (strlen (key) < k->cut)
    return 0;
  if (k->n == k->cap) {
    size_t ncap = k->cap ? k->cap * 2 : 32;
    char **nv = realloc (k->v, ncap * sizeof *nv);
    if (nv == NULL)
      goto nomem;
    k->v = nv;
    k->cap = ncap;
  }
  if ((k->v[k->n] = strdup (key + k->cut)) == NULL)
    goto nomem;
  k->n++;
  return 0;
 nomem:
  err_set (ENOMEM, "out of memory");
  return -1;
}

/* The keys under PREFIX (cut off), sorted as S3 sorts them (bytes). */
static int
list_keys (struct s3_store *ss, const char *prefix, struct keys *k)
{
  memset (k, 0, sizeof *k);
  k->cut = strlen (prefix);
  if (s3store_list (ss, prefix, NULL, collect, k) == -1) {
    store_names_free (k->v, k->n);
    return -1;
  }
  return 0;
}

int
s3store_keys (struct s3_store *ss, const char *prefix, char ***keys,
              size_t *n)
{
  struct keys k;

  if (list_keys (ss, prefix, &k) == -1)
    return -1;
  *keys = k.v;
  *n = k.n;
  return 0;
}

int
s3store_delete_all (struct s3_store *ss, const char *prefix)
{
  struct keys k;
  int ret;

  /* Listed first, deleted after: a listing must not page over keys
   * that go meanwhile. */
  if (list_keys (ss, prefix, &k) == -1)
    return -1;
  ret = s3store_delete_names (ss, prefix, k.v, k.n, false);
  store_names_free (k.v, k.n);
  return ret;
}

/* ---- open and close --------------------------------------------------- */

static void s3store_close (struct store *s);

/* CBTFS_S3_PART_SIZE: objects above it go up in parts (s3.h). */
static int
part_size (struct s3_store *ss)
{
  const char *v = setting ("CBTFS_S3_PART_SIZE", NULL);
  uint64_t n;

  if (v == NULL)
    return 0;
  if (parse_size (v, &n) == -1 || n < ((uint64_t) 5 << 20) || n > SIZE_MAX) {
    err_set (EINVAL, "CBTFS_S3_PART_SIZE=%s: a size of at least 5M", v);
    err_set_class (ERR_CONFIG);
    return -1;
  }
  ss->o.part_size = (size_t) n;
  return 0;
}

/* Fill ss->o from the environment and defaults. */
static int
set_options (struct s3_store *ss, const char *bucket)
{
  const char *region = setting ("AWS_REGION",
                                setting ("AWS_DEFAULT_REGION", "us-east-1"));
  const char *endpoint = setting ("AWS_ENDPOINT_URL", NULL);
  const char *key = setting ("AWS_ACCESS_KEY_ID", NULL);
  const char *secret = setting ("AWS_SECRET_ACCESS_KEY", NULL);
  const char *ca = setting ("AWS_CA_BUNDLE", NULL);
  char *ep = NULL;

  if (key == NULL || secret == NULL) {
    err_set (EINVAL, "%s: no S3 %s (%s)", ss->base.where,
             key == NULL ? "access key" : "secret key",
             key == NULL ? "AWS_ACCESS_KEY_ID or --s3-access-key"
             : "AWS_SECRET_ACCESS_KEY or --s3-secret-file");
    err_set_class (ERR_CONFIG);
    return -1;
  }
  if (endpoint == NULL
      && asprintf (&ep, "https://s3.%s.amazonaws.com", region) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  ss->o.endpoint = ep ? ep : strdup (endpoint);
  ss->o.region = strdup (region);
  ss->o.bucket = strdup (bucket);
  ss->o.access_key = strdup (key);
  ss->o.secret_key = strdup (secret);
  ss->o.ca_file = ca ? strdup (ca) : NULL;
  ss->o.allow_http = setting_yes ("CBTFS_S3_ALLOW_HTTP");
  ss->o.virtual_host = !setting_yes ("CBTFS_S3_PATH_STYLE");
  ss->o.timeout = strtol (setting ("CBTFS_S3_TIMEOUT", "0"), NULL, 10);
  if (part_size (ss) == -1)
    return -1;
  if (!ss->o.endpoint || !ss->o.region || !ss->o.bucket || !ss->o.access_key
      || !ss->o.secret_key || (ca && !ss->o.ca_file)) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static int
first_key (void *opaque, const char *key, uint64_t size)
{
  (void) key;
  (void) size;
  *(bool *) opaque = true;
  return 1;                     /* one is enough */
}

/* The marker's line of an encrypted store (FORMAT.md). */
#define ENCRYPTED_LINE "encrypted aes-256-gcm "

/* Make a new store under ss->prefix, encrypted under KEY unless it is
 * NULL: refuse a prefix holding anything else; a store another process
 * made meanwhile is taken as found (1). */
static int
create_store (struct s3_store *ss, const char *mkey, const uint8_t *key)
{
  char text[128 + UUID_LEN + S3CRYPT_CHECK_LEN];
  char check[S3CRYPT_CHECK_LEN + 1];
  bool any = false;
  uint64_t size;
  size_t n;

  if (s3store_list (ss, ss->prefix, NULL, first_key, &any) == -1)
    return -1;
  if (any) {
    /* What another backup making the store at the same time put after
     * its marker (which we looked for before it was there)? */
    if (s3store_head (ss, mkey, &size) == 0)
      return 1;
    err_set (EEXIST, "%s holds objects and is not a cbtfs store; refusing "
             "to use it", ss->base.where);
    return -1;
  }
  if (make_uuid (ss->base.id) == -1)
    return -1;
  n = store_marker_format (STORE_FORMAT, ss->base.id, text, sizeof text);
  if (key) {
    if ((ss->crypt = s3crypt_new (key, ss->base.id)) == NULL)
      return -1;
    s3crypt_check (ss->crypt, check);
    n += snprintf (text + n, sizeof text - n, ENCRYPTED_LINE "%s\n", check);
  }
  if (raw_put (ss, mkey, text, n, true) == 0) {
    ss->base.format = STORE_FORMAT;
    return 0;
  }
  s3crypt_free (ss->crypt);
  ss->crypt = NULL;
  return errno == EEXIST ? 1 : -1;
}

/* Whether the store's MARKER says it is encrypted, and the key of FILE
 * (KEY, or NULL without one) is its key: its keys into ss->crypt. */
static int
use_key (struct s3_store *ss, const char *marker, const char *file,
         const uint8_t *key)
{
  const char *line = strstr (marker, "\n" ENCRYPTED_LINE);
  const char *enc = strstr (marker, "\nencrypted ");
  char check[S3CRYPT_CHECK_LEN + 1];

  if (enc && line == NULL) {
    err_set (EPROTO, "%s is encrypted in a way this cbtfs does not know "
             "(%.40s)", ss->base.where, enc + 1);
    return -1;
  }
  if (line == NULL && key == NULL)
    return 0;
  if (line == NULL) {
    err_set (EINVAL, "%s is not encrypted: --encrypt-key-file is for "
             "encrypted stores only (cbtfs copy makes an encrypted copy of "
             "it)", ss->base.where);
    goto config;
  }
  if (key == NULL) {
    err_set (EACCES, "the store %s is encrypted: give --encrypt-key-file "
             "(copy's destination: --dst-encrypt-key-file)", ss->base.where);
    goto config;
  }
  line += 1 + strlen (ENCRYPTED_LINE);
  if (!ss->base.id[0] || strlen (line) < S3CRYPT_CHECK_LEN + 1
      || line[S3CRYPT_CHECK_LEN] != '\n') {
    err_set (EPROTO, "%s: bad %s (its encrypted line)", ss->base.where,
             STORE_MARKER);
    return -1;
  }
  if ((ss->crypt = s3crypt_new (key, ss->base.id)) == NULL)
    return -1;
  s3crypt_check (ss->crypt, check);
  if (memcmp (check, line, S3CRYPT_CHECK_LEN) == 0)
    return 0;
  err_set (EACCES, "%s: the key in %s is not this store's key",
           ss->base.where, file);
 config:
  err_set_class (ERR_CONFIG);
  return -1;
}

/* The local cache the environment asks for (CBTFS_S3_CACHE, of
 * CBTFS_S3_CACHE_SIZE bytes, default 10 GiB): without one, reads only
 * keep a few runs in memory.  A cache that cannot be used is a
 * warning, not a failure. */
#define CACHE_SIZE_DEFAULT ((uint64_t) 10 << 30)

static void
open_cache (struct s3_store *ss)
{
  const char *dir = setting ("CBTFS_S3_CACHE", NULL);
  const char *size = setting ("CBTFS_S3_CACHE_SIZE", NULL);
  uint64_t max = CACHE_SIZE_DEFAULT;

  if (dir == NULL)
    return;
  if (size && parse_size (size, &max) == -1) {
    log_warn ("CBTFS_S3_CACHE_SIZE=%s: not a size; using %" PRIu64 " bytes",
              size, max);
    max = CACHE_SIZE_DEFAULT;
  }
  ss->cache = s3store_cache_open (dir, max, ss->base.id[0] ? ss->base.id
                                  : "no-id");
  if (ss->cache == NULL)
    log_warn ("%s (reading without a local cache)", err_get ());
}

static struct store *
s3store_open (const char *where, bool create)
{
  struct s3_store *ss = calloc (1, sizeof *ss);
  CLEANUP_FREE char *bucket = NULL, *mkey = NULL;
  const char *kfile = setting ("CBTFS_ENCRYPT_KEY_FILE", NULL);
  uint8_t key[S3CRYPT_KEY_LEN];
  void *text = NULL;
  size_t len;
  int r;

  if (ss == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  ss->base.be = &store_s3;
  pthread_mutex_init (&ss->pool_lock, NULL);
  pthread_mutex_init (&ss->held_lock, NULL);
  if ((ss->base.where = strdup (where)) == NULL) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  if (parse_where (where, &bucket, &ss->prefix) == -1
      || set_options (ss, bucket) == -1
      || (kfile && s3crypt_key_read (kfile, key) == -1)
      || (mkey = s3store_key (ss, "%s", STORE_MARKER)) == NULL)
    goto err;
  r = raw_get (ss, mkey, 0, 0, &text, &len);
  if (r == -1 && errno == ENOENT && create) {
    r = create_store (ss, mkey, kfile ? key : NULL);
    if (r == 0) {
      explicit_bzero (key, sizeof key);
      open_cache (ss);
      return &ss->base;
    }
    if (r == -1)
      goto err;
    r = raw_get (ss, mkey, 0, 0, &text, &len);
  }
  if (r == -1) {
    if (errno == ENOENT && strstr (err_get (), "no such bucket") == NULL) {
      err_set (ENOENT, "%s is not a cbtfs store (no %s object)", where,
               STORE_MARKER);
      err_set_class (ERR_CONFIG);
    }
    goto err;
  }
  /* s3_get ends what it read with a NUL? Not promised: copy. */
  {
    CLEANUP_FREE char *s = strndup (text, len);
    free (text);
    if (s == NULL) {
      err_set (ENOMEM, "out of memory");
      goto err;
    }
    if (store_marker_parse (where, s, &ss->base.format, ss->base.id) == -1
        || use_key (ss, s, kfile, kfile ? key : NULL) == -1)
      goto err;
  }
  explicit_bzero (key, sizeof key);
  open_cache (ss);
  return &ss->base;

 err:
  explicit_bzero (key, sizeof key);
  s3store_close (&ss->base);
  return NULL;
}

static void
s3store_close (struct store *s)
{
  struct s3_store *ss = s3store_of (s);

  if (ss->share)
    s3store_share_end (ss);
  if (ss->lock) {
    /* Still the only writer of the store: what our removals and
     * replaces left unused goes now. */
    if (ss->marked && s3store_may_change (ss) == 0)
      s3store_sweep (ss, NULL);
    store_names_free (ss->marks, ss->nmarks);
    ss->marks = NULL;
    ss->nmarks = 0;
    if (s3store_lease_end (ss->lock) == -1)
      log_warn ("%s: cannot let the store's lock go: %s (it is "
                "taken over once it expires)", s->where, err_get ());
    ss->lock = NULL;
  }
  s3store_prefetch_end (ss);
  s3store_uploads_end (ss);
  s3store_cache_close (ss->cache);
  s3crypt_free (ss->crypt);
  for (size_t i = 0; i < ss->nidle; i++)
    s3_close (ss->idle[i]);
  free (ss->idle);
  pthread_mutex_destroy (&ss->pool_lock);
  pthread_mutex_destroy (&ss->held_lock);
  free ((char *) ss->o.endpoint);
  free ((char *) ss->o.region);
  free ((char *) ss->o.bucket);
  free ((char *) ss->o.access_key);
  secret_free ((char *) ss->o.secret_key);
  free ((char *) ss->o.ca_file);
  free (ss->prefix);
  free (s->where);
  free (ss);
}

int
s3store_may_change (struct s3_store *ss)
{
  if (ss->lock)
    return s3store_lease_check (ss->lock);
  return ss->share ? s3store_share_check (ss) : 0;
}

/* Finish the removals a crashed holder left in trash/ (earlier builds
 * marked them there; removals are the sweep's now). */
static void
empty_trash (struct s3_store *ss)
{
  CLEANUP_FREE char *trash = s3store_key (ss, "trash/");
  struct keys k;

  if (trash == NULL || list_keys (ss, trash, &k) == -1)
    return;
  for (size_t i = 0; i < k.n && s3store_may_change (ss) == 0; i++) {
    CLEANUP_FREE char *root = NULL, *data = NULL, *mark = NULL;
    uint64_t size;
    /* trash/D/S: the layer D/S, if its root is gone, is rubbish. */
    if (strlen (k.v[i]) != 2 * UUID_LEN + 1 || k.v[i][UUID_LEN] != '/'
        || (root = s3store_key (ss, "roots/%s", k.v[i])) == NULL
        || (data = s3store_key (ss, "layers/%s/", k.v[i])) == NULL
        || (mark = s3store_key (ss, "trash/%s", k.v[i])) == NULL)
      continue;
    if (s3store_head (ss, root, &size) == -1) {
      if (errno != ENOENT || s3store_delete_all (ss, data) == -1)
        continue;
    }
    s3store_delete (ss, mark);
  }
  store_names_free (k.v, k.n);
}

static int
s3store_lock (struct store *s, const char *who, double wait)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "lock");
  CLEANUP_FREE char *what = NULL;
  double deadline = now_monotonic () + wait;
  bool said = false;

  if (key == NULL || asprintf (&what, "the store %s", s->where) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  ss->lock = s3store_lease_wait (ss, key, who, what, deadline, wait, &said);
  if (ss->lock == NULL)
    return -1;
  /* Backups sharing the lock see ours and wait; those already in
   * finish first. */
  if (s3store_shares_wait (ss, deadline, wait, &said) == -1) {
    char msg[512];
    int e = errno;
    snprintf (msg, sizeof msg, "%s", err_get ());
    s3store_lease_end (ss->lock);
    ss->lock = NULL;
    err_set (e, "%s", msg);
    return -1;
  }
  /* Nobody else writes now: what trash/ holds is a crashed run's, and
   * a sweep it did not finish is finished. */
  empty_trash (ss);
  s3store_sweep (ss, NULL);
  s3store_abandoned (ss);
  return 0;
}

static int
s3store_owner (struct store *s, uid_t *uid, gid_t *gid, mode_t *mode)
{
  (void) s;
  *uid = getuid ();
  *gid = getgid ();
  *mode = 0700;
  return 0;
}

/* A store made by this backend always has an id and format 2. */
static int
s3store_upgrade (struct store *s)
{
  err_set (EPROTO, "%s: an object store of format %d cannot be upgraded",
           s->where, s->format);
  return -1;
}

/* ---- disks and layers ------------------------------------------------- */

static int
s3store_disk_prepare (struct store *s, const char *disk)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "disks/%s", disk);

  return key ? s3store_put (ss, key, "", 0, false) : -1;
}

/* The uuid names under disks/ (DISK NULL) or roots/DISK/. */
static int
s3store_listing (struct store *s, const char *disk, char ***names, size_t *n)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *prefix = disk ? s3store_key (ss, "roots/%s/", disk)
    : s3store_key (ss, "disks/");
  struct keys k;
  size_t j = 0;

  if (prefix == NULL || list_keys (ss, prefix, &k) == -1)
    return -1;
  for (size_t i = 0; i < k.n; i++) {
    if (is_uuid (k.v[i]))
      k.v[j++] = k.v[i];
    else
      free (k.v[i]);
  }
  if (j)
    store_names_sort (k.v, j);
  else {
    free (k.v);
    k.v = NULL;
  }
  *names = k.v;
  *n = j;
  return 0;
}

static int
s3store_has_layer (struct store *s, const char *disk, const char *snapshot)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "roots/%s/%s", disk, snapshot);
  uint64_t size;

  if (key == NULL)
    return -1;
  if (s3store_head (ss, key, &size) == 0)
    return 1;
  return errno == ENOENT ? 0 : -1;
}

char *
s3store_read (struct s3_store *ss, const char *key, size_t max, size_t *len)
{
  void *buf;
  char *text;
  size_t n;

  if (s3store_get (ss, key, 0, 0, &buf, &n) == -1)
    return NULL;
  if (n > max) {
    free (buf);
    err_set (EFBIG, "s3://%s/%s: larger than %zu bytes", ss->o.bucket, key,
             max);
    return NULL;
  }
  text = realloc (buf, n + 1);
  if (text == NULL) {
    free (buf);
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  text[n] = '\0';
  *len = n;
  return text;
}

/* A root is "cbtfs-root 1 V\n" and the manifest: the version a reader
 * of the layer reads, put in the same PUT as the manifest it goes
 * with. */
#define ROOT_MAGIC "cbtfs-root 1 "

int
s3store_root_read (struct s3_store *ss, const char *disk,
                   const char *snapshot, uint32_t *version, char **manifest,
                   size_t max, size_t *len)
{
  CLEANUP_FREE char *key = s3store_key (ss, "roots/%s/%s", disk, snapshot);
  CLEANUP_FREE char *text = NULL;
  size_t n, hl;
  unsigned v;
  int used;

  if (key == NULL)
    return -1;
  if (manifest)
    text = s3store_read (ss, key, max + 64, &n);
  else {
    /* The version alone: the first line is enough. */
    void *buf;
    if (s3store_get (ss, key, 0, 32, &buf, &n) == -1)
      return -1;
    text = strndup (buf, n);
    free (buf);
    if (text == NULL)
      err_set (ENOMEM, "out of memory");
  }
  if (text == NULL)
    return -1;
  if (n < strlen (ROOT_MAGIC) + 11
      || strncmp (text, ROOT_MAGIC, strlen (ROOT_MAGIC)) != 0
      || sscanf (text + strlen (ROOT_MAGIC), "%10u%n", &v, &used) != 1
      || used != 10 || text[strlen (ROOT_MAGIC) + 10] != '\n' || v == 0) {
    err_set (EIO, "s3://%s/%s: not a layer's root", ss->o.bucket, key);
    return -1;
  }
  *version = v;
  hl = strlen (ROOT_MAGIC) + 11;
  if (manifest) {
    if (n - hl > max) {
      err_set (EFBIG, "s3://%s/%s: a manifest larger than %zu bytes",
               ss->o.bucket, key, max);
      return -1;
    }
    memmove (text, text + hl, n - hl + 1);
    *len = n - hl;
    *manifest = text;
    text = NULL;
  }
  return 0;
}

int
s3store_root_put (struct s3_store *ss, const char *disk, const char *snapshot,
                  uint32_t version, const void *manifest, size_t mlen,
                  bool create_only)
{
  CLEANUP_FREE char *key = s3store_key (ss, "roots/%s/%s", disk, snapshot);
  CLEANUP_FREE char *text = NULL;
  int hl;

  /* A root makes a layer, or its new version, visible. */
  if (s3store_may_change (ss) == -1)
    return -1;
  if (key == NULL || (text = malloc (mlen + 64)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  hl = snprintf (text, 64, ROOT_MAGIC "%010" PRIu32 "\n", version);
  memcpy (text + hl, manifest, mlen);
  return s3store_put (ss, key, text, hl + mlen, create_only);
}

static char *
s3store_manifest_read (struct store *s, const char *disk,
                       const char *snapshot, size_t max, size_t *len)
{
  char *text;
  uint32_t v;

  if (s3store_root_read (s3store_of (s), disk, snapshot, &v, &text, max,
                         len) == -1)
    return NULL;
  return text;
}

/* The set and the index's first object go first, the root last: the
 * layer exists, whole, from the root's PUT on.  A crash before it
 * leaves two small objects no listing shows; a layer made again under
 * the same name writes over them. */
static int
s3store_layer_create (struct store *s, const char *disk, const char *snapshot,
                      const void *manifest, size_t mlen,
                      const void *set, size_t slen,
                      const void *head, size_t hlen)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *skey = s3store_key (ss, "layers/%s/%s/%010u/set", disk,
                                         snapshot, 1u);
  CLEANUP_FREE char *ikey = s3store_key (ss, "layers/%s/%s/%010u/i/%010u",
                                         disk, snapshot, 1u, 0u);
  int have;

  if (skey == NULL || ikey == NULL)
    return -1;
  have = s3store_has_layer (s, disk, snapshot);
  if (have == -1)
    return -1;
  if (have) {
    err_set (EEXIST, "%s: layer %s of disk %s exists", s->where, snapshot,
             disk);
    return -1;
  }
  if ((set && s3store_put (ss, skey, set, slen, false) == -1)
      || s3store_put (ss, ikey, head, hlen, false) == -1)
    return -1;
  return s3store_root_put (ss, disk, snapshot, 1, manifest, mlen, true);
}

/* Whether this process put DISK's mark while holding the store lock:
 * only its own sweep deletes it then, so it is there still. */
static bool
marked_already (const struct s3_store *ss, const char *disk)
{
  if (ss->lock == NULL)
    return false;
  for (size_t i = 0; i < ss->nmarks; i++)
    if (strcmp (ss->marks[i], disk) == 0)
      return true;
  return false;
}

int
s3store_sweep_mark (struct s3_store *ss, const char *disk)
{
  CLEANUP_FREE char *key = NULL;
  char **nv;

  if (marked_already (ss, disk))
    return 0;
  if ((key = s3store_key (ss, "sweep/%s", disk)) == NULL
      || s3store_put (ss, key, "", 0, false) == -1)
    return -1;
  if (ss->share) {
    s3store_share_marked (ss, disk);
    return 0;
  }
  ss->marked = true;
  /* Remembered only for the lock's time; a failure to remember costs
   * another PUT, no more. */
  if (ss->lock && (nv = realloc (ss->marks, (ss->nmarks + 1) * sizeof *nv))
      != NULL) {
    ss->marks = nv;
    if ((nv[ss->nmarks] = strdup (disk)) != NULL)
      ss->nmarks++;
  }
  return 0;
}

/* The root's DELETE is the removal: the layer is not listed from then
 * on.  What it held, its objects and the packs other layers may use, go
 * with the sweep (sweep/DISK, put first, so that a crash leaves the
 * work to the next lock holder): only after the store's generation has
 * moved (store.c), so that a mount's reader still on the layer (a point
 * after it reads its blocks until a newer generation shows the point
 * through the layer a prune made) reads on, or finds a newer store to
 * read from once its read fails (fs.c, read_again). */
static int
s3store_layer_remove (struct store *s, const char *disk, const char *snapshot)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *root = s3store_key (ss, "roots/%s/%s", disk, snapshot);
  int have = s3store_has_layer (s, disk, snapshot);

  if (have == -1 || root == NULL)
    return -1;
  if (!have) {
    err_set (ENOENT, "%s: no layer %s of disk %s", s->where, snapshot, disk);
    return -1;
  }
  if (s3store_may_change (ss) == -1
      || s3store_sweep_mark (ss, disk) == -1
      || s3store_delete (ss, root) == -1)
    return -1;
  return 0;
}

/* ---- notes -------------------------------------------------------------
 * One object per record: notes/D/NOTE/SEQ, SEQ one more than the last
 * (create-only, so two appenders never take one number).  A replace is
 * a record named SEQ.base: readers start at the last one.  Records are
 * whole objects, so none is ever torn. */

/* The records of NOTE of DISK to read (from the last .base on), and
 * the number after the last. */
static int
note_keys (struct s3_store *ss, const char *disk, const char *note,
           struct keys *k, size_t *from, unsigned *next)
{
  CLEANUP_FREE char *prefix = s3store_key (ss, "notes/%s/%s/", disk, note);
  unsigned seq;
  int used;

  if (prefix == NULL || list_keys (ss, prefix, k) == -1)
    return -1;
  *from = 0;
  *next = 1;
  for (size_t i = 0; i < k->n; i++) {
    if (sscanf (k->v[i], "%10u%n", &seq, &used) != 1 || used != 10)
      continue;
    if (seq >= *next)
      *next = seq + 1;
    if (strcmp (k->v[i] + 10, ".base") == 0)
      *from = i;
  }
  return 0;
}

/* The records named in K from FROM on, read and concatenated into *OUT
 * (malloc'd, NUL-terminated, *LEN bytes, at most MAX); a record that
 * ends mid-line gets its newline, as a torn record of a directory store
 * does (store.h).  -1 with errno ENOENT when one went meanwhile (a
 * replace deleted it: list again). */
static int
read_records (struct s3_store *ss, const char *disk, const char *note,
              const struct keys *k, size_t from, size_t max, char **out,
              size_t *len)
{
  size_t got = 0;
  char *buf = NULL, *nbuf;

  for (size_t i = from; i < k->n; i++) {
    CLEANUP_FREE char *key = NULL, *rec = NULL;
    size_t n;
    if (strspn (k->v[i], "0123456789") != 10)
      continue;
    if ((key = s3store_key (ss, "notes/%s/%s/%s", disk, note,
                            k->v[i])) == NULL
        || (rec = s3store_read (ss, key, max, &n)) == NULL)
      goto err;
    if (got + n > max) {
      err_set (EFBIG, "%s: note %s of disk %s is larger than %zu bytes",
               ss->base.where, note, disk, max);
      goto err;
    }
    if ((nbuf = realloc (buf, got + n + 2)) == NULL) {
      err_set (ENOMEM, "out of memory");
      goto err;
    }
    buf = nbuf;
    if (got > 0 && buf[got - 1] != '\n' && n > 0)
      buf[got++] = '\n';
    memcpy (buf + got, rec, n);
    got += n;
  }
  if (buf == NULL && (buf = malloc (1)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  buf[got] = '\0';
  *out = buf;
  *len = got;
  return 0;

 err:
  free (buf);
  return -1;
}

static char *
s3store_note_read (struct store *s, const char *disk, const char *note,
                   size_t max, size_t *len)
{
  struct s3_store *ss = s3store_of (s);
  struct keys k;
  size_t from;
  unsigned next;
  char *out = NULL;
  int r = -1;

  /* A replace that deletes records as they are read: read again. */
  for (int tries = 0; tries < 5; tries++) {
    if (note_keys (ss, disk, note, &k, &from, &next) == -1)
      return NULL;
    r = read_records (ss, disk, note, &k, from, max, &out, len);
    store_names_free (k.v, k.n);
    if (r == 0 || errno != ENOENT)
      break;
  }
  if (r == -1)
    return NULL;
  if (*len == 0) {
    free (out);
    err_set (ENOENT, "%s: disk %s has no note %s", s->where, disk, note);
    return NULL;
  }
  return out;
}

/* Put REC as the next record of NOTE (a base when BASE); on a race for
 * the number, look again. */
static int
note_put (struct s3_store *ss, const char *disk, const char *note,
          const void *rec, size_t len, bool base, struct keys *k,
          size_t *from)
{
  unsigned next;

  for (int tries = 0; tries < 10; tries++) {
    CLEANUP_FREE char *key = NULL;
    if (note_keys (ss, disk, note, k, from, &next) == -1)
      return -1;
    key = s3store_key (ss, "notes/%s/%s/%010u%s", disk, note, next,
                       base ? ".base" : "");
    if (key && s3store_put (ss, key, rec, len, true) == 0)
      return 0;
    store_names_free (k->v, k->n);
    if (key == NULL || errno != EEXIST)
      return -1;
  }
  err_set (EAGAIN, "%s: note %s of disk %s: too many writers at once",
           ss->base.where, note, disk);
  return -1;
}

/* Delete the records of NOTE that K listed (a new base hides them);
 * best effort. */
static void
delete_records (struct s3_store *ss, const char *disk, const char *note,
                const struct keys *k)
{
  CLEANUP_FREE char *prefix = s3store_key (ss, "notes/%s/%s/", disk, note);

  if (prefix)
    s3store_delete_names (ss, prefix, k->v, k->n, false);
}

/* Records since the last base past which an append folds them into a
 * new base: a reader's cost is one request per record. */
#define NOTE_COMPACT 64

/* Put the records of NOTE read so far as one base that hides them, and
 * delete them.  The base is put create-only under the next number: an
 * append that took that number meanwhile makes this give up (its record
 * would be hidden), to try again after a later append.  Best effort. */
static void
note_compact (struct s3_store *ss, const char *disk, const char *note)
{
  CLEANUP_FREE char *text = NULL, *key = NULL;
  struct keys k;
  size_t from, len;
  unsigned next;

  if (note_keys (ss, disk, note, &k, &from, &next) == -1)
    return;
  if (k.n - from > NOTE_COMPACT
      && read_records (ss, disk, note, &k, from, 64 << 20, &text, &len) == 0
      && (key = s3store_key (ss, "notes/%s/%s/%010u.base", disk, note,
                             next)) != NULL
      && s3store_put (ss, key, text, len, true) == 0)
    delete_records (ss, disk, note, &k);
  store_names_free (k.v, k.n);
}

static int
s3store_note_append (struct store *s, const char *disk, const char *note,
                     const void *rec, size_t len, bool durable)
{
  struct s3_store *ss = s3store_of (s);
  struct keys k;
  size_t from, since;

  (void) durable;               /* a PUT that succeeded is durable */
  if (s3store_may_change (ss) == -1
      || note_put (ss, disk, note, rec, len, false, &k, &from) == -1)
    return -1;
  since = k.n - from;
  store_names_free (k.v, k.n);
  if (since >= NOTE_COMPACT)
    note_compact (ss, disk, note);
  return 0;
}

/* The new base hides every older record at once; they go after. */
static int
s3store_note_replace (struct store *s, const char *disk, const char *note,
                      const void *rec, size_t len)
{
  struct s3_store *ss = s3store_of (s);
  struct keys k;
  size_t from;

  if (s3store_may_change (ss) == -1
      || note_put (ss, disk, note, rec, len, true, &k, &from) == -1)
    return -1;
  delete_records (ss, disk, note, &k);
  store_names_free (k.v, k.n);
  return 0;
}

/* ---- generation ------------------------------------------------------- */

/* P/generation holds a decimal count that each change raises by one.
 * Two writers raising it at once may count one: the number still
 * changed, which is all a mount looks for. */
static int
s3store_generation (struct store *s, uint64_t *gen)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "generation");
  CLEANUP_FREE char *text = NULL;
  size_t len;

  if (key == NULL)
    return -1;
  text = s3store_read (ss, key, 64, &len);
  if (text == NULL) {
    if (errno != ENOENT)
      return -1;
    *gen = 0;
    return 0;
  }
  *gen = strtoull (text, NULL, 10);
  return 0;
}

static void
s3store_changed (struct store *s)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "generation");
  char text[32];
  uint64_t gen;
  int n;

  if (key == NULL || s3store_generation (s, &gen) == -1)
    goto warn;
  n = snprintf (text, sizeof text, "%" PRIu64 "\n", gen + 1);
  if (s3store_put (ss, key, text, n, false) == 0)
    return;
 warn:
  log_warn ("%s: %s (a mount may not show the change until the next)",
            s->where, err_get ());
}

/* ---- filling marks ---------------------------------------------------- */

/* P/filling/DISK/SNAPSHOT, empty objects (FORMAT.md). */
static int
s3store_filling_mark (struct store *s, const char *disk,
                      const char *snapshot, bool on)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *key = s3store_key (ss, "filling/%s/%s", disk, snapshot);

  if (key == NULL)
    return -1;
  return on ? s3store_put (ss, key, "", 0, false) : s3store_delete (ss, key);
}

static int
s3store_filling_list (struct store *s, char ***names, size_t *n)
{
  struct s3_store *ss = s3store_of (s);
  CLEANUP_FREE char *prefix = s3store_key (ss, "filling/");
  char **v;
  size_t len, kept = 0;

  if (prefix == NULL || s3store_keys (ss, prefix, &v, &len) == -1)
    return -1;
  /* Only DISK/SNAPSHOT names: anything else is not ours to read. */
  for (size_t i = 0; i < len; i++) {
    if (store_pair_name (v[i], '/'))
      v[kept++] = v[i];
    else
      free (v[i]);
  }
  *names = v;
  *n = kept;
  return 0;
}

const struct store_backend store_s3 = {
  .name = "s3",
  /* A commit waits for up to 2 * S3STORE_UPLOADS packs in flight (a
   * few tenths of a second): once per 1 GiB. */
  .commit_bytes = 1u << 30,
  .claims = claims,
  .open = s3store_open,
  .close = s3store_close,
  .lock = s3store_lock,
  .lock_shared = s3store_lock_shared,
  .disk_lock = s3store_disk_lock,
  .disk_unlock = s3store_disk_unlock,
  .owner = s3store_owner,
  .disk_prepare = s3store_disk_prepare,
  .list = s3store_listing,
  .has_layer = s3store_has_layer,
  .note_read = s3store_note_read,
  .note_append = s3store_note_append,
  .manifest_read = s3store_manifest_read,
  .layer_create = s3store_layer_create,
  .layer_remove = s3store_layer_remove,
  .upgrade = s3store_upgrade,
  .note_replace = s3store_note_replace,
  .layer_stage = s3store_layer_stage,
  .layer_replace = s3store_layer_replace,
  .layer_open = s3store_layer_open,
  .layer_close = s3store_layer_close,
  .layer_where = s3store_layer_where,
  .set_read = s3store_set_read,
  .usage = s3store_usage,
  .index_read = s3store_index_read,
  .block_read = s3store_block_read,
  .writer_open = s3store_writer_open,
  .index_cut = s3store_index_cut,
  .blocks_write = s3store_blocks_write,
  .commit = s3store_commit,
  .blocks_drop = s3store_blocks_drop,
  .writer_close = s3store_writer_close,
  .generation = s3store_generation,
  .filling_mark = s3store_filling_mark,
  .filling_list = s3store_filling_list,
  .changed = s3store_changed,
};
