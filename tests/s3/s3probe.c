/* cbtfs: s3/ against a real S3 server (tests/test-s3-client.py starts a
 * Ceph RGW and runs this).  Every operation, listing across pages,
 * ranged reads, create-only, and the failures a user meets: wrong
 * credentials, a missing bucket, an untrusted certificate, plain http
 * not allowed; multipart puts and unfinished uploads listed and
 * aborted.  With arguments, a command for test-s3-faults (command()).
 *
 * From the environment: S3_ENDPOINT (http), S3_HTTPS_ENDPOINT, S3_CA,
 * S3_OTHER_CA, S3_REGION, S3_BUCKET (exists, empty), S3_ACCESS_KEY,
 * S3_SECRET_KEY.  Exit 0 when everything holds, 1 at the first failure.
 * Single-threaded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/error.h"
#include "../../s3/s3.h"

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf (stderr, "s3probe: %s:%d: ", __FILE__, __LINE__); \
      fprintf (stderr, __VA_ARGS__);                            \
      fprintf (stderr, " (last error: %s)\n", err_get ());      \
      exit (1);                                                 \
    }                                                           \
  } while (0)

static const char *
env (const char *name)
{
  const char *v = getenv (name);

  if (v == NULL) {
    fprintf (stderr, "s3probe: %s not set\n", name);
    exit (2);
  }
  return v;
}

static struct s3_opts
opts (void)
{
  struct s3_opts o = {
    .endpoint = env ("S3_ENDPOINT"), .region = env ("S3_REGION"),
    .bucket = env ("S3_BUCKET"), .access_key = env ("S3_ACCESS_KEY"),
    .secret_key = env ("S3_SECRET_KEY"), .allow_http = true,
  };
  return o;
}

static s3_client *
open_ok (const struct s3_opts *o)
{
  s3_client *c = s3_open (o);

  CHECK (c, "s3_open %s failed", o->endpoint);
  return c;
}

struct seen {
  size_t n;
  char keys[64][64];
  uint64_t sizes[64];
};

static int
collect (void *opaque, const char *key, uint64_t size)
{
  struct seen *s = opaque;

  CHECK (s->n < 64, "too many keys listed");
  snprintf (s->keys[s->n], sizeof s->keys[0], "%s", key);
  s->sizes[s->n++] = size;
  return 0;
}

static int
stop_at_two (void *opaque, const char *key, uint64_t size)
{
  size_t *n = opaque;

  (void) key; (void) size;
  return ++*n == 2 ? 42 : 0;
}

#ifndef KEY
#define KEY "obj/a b+c"
#endif

/* put, get (whole, ranged), head, delete, create-only. */
static void
objects (s3_client *c)
{
  size_t n = 200000, got = 0, i;
  unsigned char *data = malloc (n);
  void *buf = NULL;
  uint64_t size = 0;
  char *etag = NULL;

  CHECK (data, "malloc");
  for (i = 0; i < n; i++)
    data[i] = (unsigned char) (i * 7 + i / 251);
  CHECK (s3_put (c, KEY, data, n, false) == 0, "put");
  CHECK (s3_get (c, KEY, 0, 0, &buf, &got) == 0, "get");
  CHECK (got == n && memcmp (buf, data, n) == 0, "get: other bytes");
  free (buf);
  CHECK (s3_get (c, KEY, 70000, 1000, &buf, &got) == 0, "ranged get");
  CHECK (got == 1000 && memcmp (buf, data + 70000, 1000) == 0,
         "ranged get: other bytes");
  free (buf);
  /* A range past the end is cut at the end. */
  CHECK (s3_get (c, KEY, n - 10, 100, &buf, &got) == 0, "tail get");
  CHECK (got == 10 && memcmp (buf, data + n - 10, 10) == 0, "tail get bytes");
  free (buf);
  CHECK (s3_head (c, KEY, &size, &etag) == 0, "head");
  CHECK (size == n && etag && strlen (etag) > 2, "head: size %llu etag %s",
         (unsigned long long) size, etag ? etag : "(none)");
  free (etag);

  /* Empty object. */
  CHECK (s3_put (c, "empty", "", 0, false) == 0, "put of an empty object");
  CHECK (s3_get (c, "empty", 0, 0, &buf, &got) == 0 && got == 0, "get empty");
  free (buf);

  /* Create-only: refused with EEXIST for an existing key, object kept. */
  CHECK (s3_put (c, KEY, "x", 1, true) == -1 && errno == EEXIST,
         "create-only put of an existing key not refused with EEXIST");
  CHECK (strstr (err_get (), "already exists"), "message: %s", err_get ());
  CHECK (s3_head (c, KEY, &size, NULL) == 0 && size == n,
         "a refused create-only put changed the object");
  CHECK (s3_put (c, "lock", "me", 2, true) == 0, "create-only put of a new key");

  CHECK (s3_delete (c, KEY) == 0, "delete");
  CHECK (s3_head (c, KEY, &size, NULL) == -1 && errno == ENOENT,
         "head after delete");
  CHECK (s3_get (c, KEY, 0, 0, &buf, &got) == -1 && errno == ENOENT
         && strstr (err_get (), "no such object"),
         "get after delete: %s", err_get ());
  CHECK (s3_delete (c, "empty") == 0 && s3_delete (c, "lock") == 0, "delete");
  free (data);

  /* Many keys in one request: those there go, a missing one is no
   * failure, and a key with XML's special characters is its own. */
  {
    char *keys[] = { "many/1", "many/a&b<c>\"d", "many/missing", "many/2" };
    const size_t nkeys = sizeof keys / sizeof *keys;
    for (i = 0; i < nkeys; i++)
      CHECK (i == 2 || s3_put (c, keys[i], "x", 1, false) == 0, "put %s",
             keys[i]);
    CHECK (s3_put (c, "many/stays", "x", 1, false) == 0, "put many/stays");
    CHECK (s3_delete_many (c, keys, nkeys) == 0, "delete_many: %s",
           err_get ());
    for (i = 0; i < nkeys; i++)
      CHECK (s3_head (c, keys[i], &size, NULL) == -1 && errno == ENOENT,
             "%s stayed after delete_many", keys[i]);
    CHECK (s3_head (c, "many/stays", &size, NULL) == 0,
           "delete_many deleted a key it was not given");
    CHECK (s3_delete_many (c, keys, 0) == 0, "delete_many of nothing");
    CHECK (s3_delete (c, "many/stays") == 0, "delete");
  }
}

/* What leases use: the server's times of an object, and a rewrite
 * only while it holds the same bytes. */
static void
rewrites (s3_client *c)
{
  struct s3_stat st, st2;
  void *buf;
  size_t got;

  CHECK (s3_put (c, "lease", "mine\n", 5, true) == 0, "put lease");
  CHECK (s3_stat (c, "lease", &st) == 0, "stat");
  CHECK (st.size == 5 && st.modified > 0 && st.date >= st.modified
         && st.date - st.modified < 60,
         "stat: size %llu modified %lld date %lld",
         (unsigned long long) st.size, (long long) st.modified,
         (long long) st.date);
  /* Once the server's clock has moved on, a rewrite moves Last-Modified
   * with it (a poll of the server's Date, at most 5 s). */
  for (int i = 0; i < 50; i++) {
    CHECK (s3_stat (c, "lease", &st2) == 0, "stat");
    if (st2.date > st.modified)
      break;
    usleep (100 * 1000);
  }
  CHECK (st2.date > st.modified, "the server's Date never moved on");
  CHECK (s3_rewrite (c, "lease", "mine\n", 5) == 0, "rewrite");
  CHECK (s3_stat (c, "lease", &st2) == 0 && st2.modified > st.modified,
         "a rewrite left Last-Modified at %lld (was %lld)",
         (long long) st2.modified, (long long) st.modified);
  /* Another's bytes, or none: refused, and nothing changed. */
  CHECK (s3_put (c, "lease", "theirs\n", 7, false) == 0, "put");
  CHECK (s3_rewrite (c, "lease", "mine\n", 5) == -1 && errno == ESTALE,
         "a rewrite over other bytes: %s", err_get ());
  CHECK (s3_get (c, "lease", 0, 0, &buf, &got) == 0 && got == 7
         && memcmp (buf, "theirs\n", 7) == 0,
         "a refused rewrite changed the object");
  free (buf);
  CHECK (s3_delete (c, "lease") == 0, "delete");
  CHECK (s3_rewrite (c, "lease", "mine\n", 5) == -1
         && (errno == ENOENT || errno == ESTALE),
         "a rewrite of a missing key: %s", err_get ());
  CHECK (s3_stat (c, "lease", &st) == -1 && errno == ENOENT,
         "a refused rewrite made the object");
  CHECK (s3_stat (c, "no-such", &st) == -1 && errno == ENOENT, "stat missing");
}

/* More keys than a page, with a prefix that must be honoured and a
 * neighbour outside it. */
static void
listing (s3_client *c)
{
  static struct seen s;             /* too big for the stack */
  size_t i, n = 0;
  char key[64];

  for (i = 0; i < 23; i++) {
    snprintf (key, sizeof key, "pre/fix/k%02zu", i);
    CHECK (s3_put (c, key, key, i, false) == 0, "put %s", key);
  }
  CHECK (s3_put (c, "pre/other", "x", 1, false) == 0, "put");
  CHECK (s3_list (c, "pre/fix/", NULL, 5, collect, &s) == 0, "list");
  CHECK (s.n == 23, "listed %zu keys, expected 23", s.n);
  for (i = 0; i < 23; i++) {
    snprintf (key, sizeof key, "pre/fix/k%02zu", i);
    CHECK (strcmp (s.keys[i], key) == 0 && s.sizes[i] == i,
           "key %zu: %s size %llu", i, s.keys[i],
           (unsigned long long) s.sizes[i]);
  }
  memset (&s, 0, sizeof s);
  CHECK (s3_list (c, NULL, NULL, 0, collect, &s) == 0 && s.n == 24,
         "list of all: %zu", s.n);
  CHECK (s3_list (c, "pre/fix/", NULL, 1, stop_at_two, &n) == 42 && n == 2,
         "a callback's stop not returned");
  memset (&s, 0, sizeof s);
  CHECK (s3_list (c, "nothing/", NULL, 2, collect, &s) == 0 && s.n == 0,
         "empty listing");
  /* start-after: only what sorts after it, across pages. */
  memset (&s, 0, sizeof s);
  CHECK (s3_list (c, "pre/fix/", "pre/fix/k16", 3, collect, &s) == 0,
         "list after");
  CHECK (s.n == 6 && strcmp (s.keys[0], "pre/fix/k17") == 0
         && strcmp (s.keys[5], "pre/fix/k22") == 0,
         "listed %zu keys after k16, first %s", s.n, s.n ? s.keys[0] : "-");
}

struct ups {
  size_t n;
  char key[256], id[256];
  int64_t age;
};

static int
collect_upload (void *opaque, const char *key, const char *id, int64_t age)
{
  struct ups *u = opaque;

  if (u->n++ == 0) {
    snprintf (u->key, sizeof u->key, "%s", key);
    snprintf (u->id, sizeof u->id, "%s", id);
    u->age = age;
  }
  return 0;
}

/* Objects above the part size go up in parts (ETag "…-N"), read back
 * whole, keep create-only, and leave no upload behind; an upload begun
 * is listed until aborted. */
static void
multipart (void)
{
  struct s3_opts o = opts ();
  size_t n = 12 << 20, got = 0, i;
  unsigned char *data = malloc (n);
  void *buf = NULL;
  uint64_t size;
  char *etag = NULL, *id = NULL;
  struct ups u = { 0 };
  s3_client *c;

  o.part_size = (5 << 20) - 1;
  CHECK (s3_open (&o) == NULL && errno == EINVAL
         && strstr (err_get (), "5 MiB"), "a part size under 5 MiB taken");
  o.part_size = 5 << 20;
  c = open_ok (&o);
  CHECK (data, "malloc");
  for (i = 0; i < n; i++)
    data[i] = (unsigned char) (i * 13 + i / 4093);
  CHECK (s3_put (c, "mp/big", data, n, true) == 0, "multipart put");
  CHECK (s3_head (c, "mp/big", &size, &etag) == 0 && size == n
         && strstr (etag, "-3") != NULL, "multipart head: %llu %s",
         (unsigned long long) size, etag ? etag : "-");
  free (etag);
  CHECK (s3_get (c, "mp/big", 0, 0, &buf, &got) == 0 && got == n
         && memcmp (buf, data, n) == 0, "multipart object read back");
  free (buf);
  CHECK (s3_put (c, "mp/big", data, n - 1, true) == -1 && errno == EEXIST,
         "create-only multipart put of an existing key not refused");
  CHECK (s3_head (c, "mp/big", &size, NULL) == 0 && size == n,
         "a refused multipart put changed the object");
  data[0] ^= 1;
  CHECK (s3_put (c, "mp/big", data, n - 1, false) == 0, "multipart replace");
  CHECK (s3_get (c, "mp/big", 0, 0, &buf, &got) == 0 && got == n - 1
         && memcmp (buf, data, n - 1) == 0, "replaced object read back");
  free (buf);
  CHECK (s3_list_uploads (c, "mp/", collect_upload, &u) == 0 && u.n == 0,
         "%zu uploads left after multipart puts", u.n);

  CHECK (s3_start_upload (c, "mp/left", &id) == 0, "start an upload");
  CHECK (s3_list_uploads (c, "mp/", collect_upload, &u) == 0 && u.n == 1
         && strcmp (u.key, "mp/left") == 0 && strcmp (u.id, id) == 0
         && u.age >= 0 && u.age < 600, "upload listed: %zu %s age %lld",
         u.n, u.key, (long long) u.age);
  CHECK (s3_abort_upload (c, "mp/left", id) == 0, "abort");
  memset (&u, 0, sizeof u);
  CHECK (s3_list_uploads (c, "mp/", collect_upload, &u) == 0 && u.n == 0,
         "an aborted upload still listed");
  CHECK (s3_head (c, "mp/left", &size, NULL) == -1 && errno == ENOENT,
         "an aborted upload made an object");
  CHECK (s3_delete (c, "mp/big") == 0, "delete");
  free (id);
  free (data);
  s3_close (c);
}

/* Commands for test-s3-faults: "start-upload KEY" leaves an upload
 * begun, as a killed run does; "abort-uploads PREFIX" aborts all. */
static int
aborter (void *opaque, const char *key, const char *id, int64_t age)
{
  (void) age;
  CHECK (s3_abort_upload (opaque, key, id) == 0, "abort %s", key);
  return 0;
}

static int
command (int argc, char **argv)
{
  struct s3_opts o = opts ();
  s3_client *c = open_ok (&o);
  char *id = NULL;

  if (argc == 3 && strcmp (argv[1], "start-upload") == 0) {
    CHECK (s3_start_upload (c, argv[2], &id) == 0, "start-upload");
    printf ("%s\n", id);
    free (id);
  }
  else if (argc == 3 && strcmp (argv[1], "abort-uploads") == 0)
    CHECK (s3_list_uploads (c, argv[2], aborter, c) == 0, "abort-uploads");
  else {
    fprintf (stderr, "usage: s3probe [start-upload KEY | abort-uploads "
             "PREFIX]\n");
    return 2;
  }
  s3_close (c);
  return 0;
}

static void
failures_users_meet (void)
{
  struct s3_opts o = opts ();
  s3_client *c;
  void *buf;
  size_t got;
  uint64_t size;
  static struct seen s;             /* too big for the stack */
  const char *secret = o.secret_key;

  /* Wrong secret: one line naming the credentials, not the secret. */
  o.secret_key = "wrongwrongwrongwrongwrongwrongwrongwrong";
  c = open_ok (&o);
  CHECK (s3_get (c, "x", 0, 0, &buf, &got) == -1 && errno == EACCES,
         "wrong secret not refused");
  CHECK (strstr (err_get (), "credentials") && !strchr (err_get (), '\n')
         && !strstr (err_get (), o.secret_key) && !strstr (err_get (), secret),
         "wrong secret message: %s", err_get ());
  s3_close (c);
  /* Unknown access key. */
  o = opts ();
  o.access_key = "NOSUCHACCESSKEY";
  c = open_ok (&o);
  CHECK (s3_put (c, "x", "x", 1, false) == -1 && errno == EACCES
         && strstr (err_get (), "credentials"),
         "unknown access key: %s", err_get ());
  s3_close (c);

  /* Missing bucket. */
  o = opts ();
  o.bucket = "no-such-bucket";
  c = open_ok (&o);
  CHECK (s3_list (c, NULL, NULL, 0, collect, &s) == -1 && errno == ENOENT
         && strstr (err_get (), "s3://no-such-bucket: no such bucket"),
         "missing bucket (list): %s", err_get ());
  CHECK (s3_put (c, "k", "x", 1, false) == -1 && errno == ENOENT
         && strstr (err_get (), "no such bucket"),
         "missing bucket (put): %s", err_get ());
  {
    char *keys[] = { "k" };
    CHECK (s3_delete_many (c, keys, 1) == -1 && errno == ENOENT
           && strstr (err_get (), "no such bucket"),
           "missing bucket (delete_many): %s", err_get ());
  }
  s3_close (c);

  /* Plain http without the allow flag: refused at open. */
  o = opts ();
  o.allow_http = false;
  CHECK (s3_open (&o) == NULL && errno == EPERM
         && strstr (err_get (), "plain http refused"),
         "http without allow: %s", err_get ());

  /* HTTPS: the right CA works; another CA is refused in the handshake,
   * so the create-only put below never reaches the server. */
  o = opts ();
  o.allow_http = false;
  o.endpoint = env ("S3_HTTPS_ENDPOINT");
  o.ca_file = env ("S3_OTHER_CA");
  c = open_ok (&o);
  CHECK (s3_put (c, "never-sent", "x", 1, true) == -1 && errno == EACCES
         && strstr (err_get (), "TLS certificate not trusted"),
         "https with another CA: %s", err_get ());
  s3_close (c);
  /* Nor do the system CAs trust the test CA. */
  o.ca_file = NULL;
  c = open_ok (&o);
  CHECK (s3_head (c, "x", &size, NULL) == -1 && errno == EACCES,
         "https with system CAs: %s", err_get ());
  s3_close (c);
  o.ca_file = env ("S3_CA");
  c = open_ok (&o);
  CHECK (s3_put (c, "tls", "over tls", 8, false) == 0, "put over https");
  CHECK (s3_get (c, "tls", 0, 0, &buf, &got) == 0 && got == 8
         && memcmp (buf, "over tls", 8) == 0, "get over https");
  free (buf);
  CHECK (s3_head (c, "never-sent", &size, NULL) == -1 && errno == ENOENT,
         "a put refused for its certificate reached the server");
  CHECK (s3_delete (c, "tls") == 0, "delete over https");
  s3_close (c);
}

int
main (int argc, char **argv)
{
  struct s3_opts o = opts ();
  s3_client *c;

  CHECK (s3_global_init () == 0, "init");
  if (argc > 1)
    return command (argc, argv);
  c = open_ok (&o);
  objects (c);
  rewrites (c);
  listing (c);
  s3_close (c);
  multipart ();
  failures_users_meet ();
  printf ("s3probe: ok\n");
  return 0;
}
