/* Unit test: small I/O and arithmetic helpers (common/util.c).
 *
 * pread and pwrite on a regular file return short only at its end, and
 * on a pipe or socket they fail with ESPIPE, so the Makefile links this
 * test with -Wl,--wrap=pread,--wrap=pwrite,--wrap=write: the wrappers
 * here can cut every call short, fail one with EINTR or EIO, and count
 * calls.  full_write's short writes are real ones: a pipe with a slow
 * reader that interrupts the blocked writer with a signal.
 *
 * Thread model: the main thread; one reader for full_write's pipe.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"

extern ssize_t __real_pread (int fd, void *buf, size_t count, off_t offset);
extern ssize_t __real_pwrite (int fd, const void *buf, size_t count,
                              off_t offset);
extern ssize_t __real_write (int fd, const void *buf, size_t count);
extern ssize_t __wrap_pread (int fd, void *buf, size_t count, off_t offset);
extern ssize_t __wrap_pwrite (int fd, const void *buf, size_t count,
                              off_t offset);
extern ssize_t __wrap_write (int fd, const void *buf, size_t count);

/* How the wrapped calls misbehave: each moves at most CHUNK bytes (0:
 * no limit), every EINTR_EVERY-th fails with EINTR before doing
 * anything, and the FAIL_AT-th fails with EIO. */
static struct {
  size_t chunk;
  unsigned eintr_every, fail_at;
  unsigned calls;                       /* of the wrapped calls */
  unsigned short_writes, eintrs;        /* write's real ones */
} io;

static void
io_reset (size_t chunk, unsigned eintr_every, unsigned fail_at)
{
  memset (&io, 0, sizeof io);
  io.chunk = chunk;
  io.eintr_every = eintr_every;
  io.fail_at = fail_at;
}

/* -1 with errno when this call is to fail; else the count to pass on. */
static ssize_t
misbehave (size_t count)
{
  io.calls++;
  if (io.fail_at && io.calls == io.fail_at) {
    errno = EIO;
    return -1;
  }
  if (io.eintr_every && io.calls % io.eintr_every == 0) {
    errno = EINTR;
    return -1;
  }
  return io.chunk && count > io.chunk ? (ssize_t) io.chunk : (ssize_t) count;
}

ssize_t
__wrap_pread (int fd, void *buf, size_t count, off_t offset)
{
  ssize_t n = misbehave (count);

  return n == -1 ? -1 : __real_pread (fd, buf, n, offset);
}

ssize_t
__wrap_pwrite (int fd, const void *buf, size_t count, off_t offset)
{
  ssize_t n = misbehave (count);

  return n == -1 ? -1 : __real_pwrite (fd, buf, n, offset);
}

/* Passed through: only counted. */
ssize_t
__wrap_write (int fd, const void *buf, size_t count)
{
  ssize_t r = __real_write (fd, buf, count);

  io.calls++;
  if (r >= 0 && (size_t) r < count)
    io.short_writes++;
  if (r == -1 && errno == EINTR)
    io.eintrs++;
  return r;
}

static void
fill (uint8_t *p, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    p[i] = (uint8_t) (i * 131 + seed + (i >> 8));
}

static int
open_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  int n = 0;

  CHECK (d != NULL);
  while (readdir (d))
    n++;
  closedir (d);
  return n;
}

static char *
path_in (const char *dir, const char *name)
{
  char *p;

  CHECK (asprintf (&p, "%s/%s", dir, name) > 0);
  return p;
}

static void
make_file (const char *path, const void *data, size_t len)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  CHECK (fd >= 0);
  CHECK (__real_write (fd, data, len) == (ssize_t) len);
  close (fd);
}

/* Names in DIR other than . and .. */
static int
entries (const char *dir)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  int n = 0;

  CHECK (d != NULL);
  while ((e = readdir (d)) != NULL)
    if (strcmp (e->d_name, ".") != 0 && strcmp (e->d_name, "..") != 0)
      n++;
  closedir (d);
  return n;
}

#define FSIZE 10000

static void
test_full_pread (const char *dir)
{
  CLEANUP_FREE char *path = path_in (dir, "pread");
  static uint8_t data[FSIZE], got[FSIZE + 100];
  int fd, p[2];

  fill (data, FSIZE, 1);
  make_file (path, data, FSIZE);
  CHECK ((fd = open (path, O_RDONLY | O_CLOEXEC)) >= 0);

  /* 7 bytes a call and every third interrupted: still all of it. */
  io_reset (7, 3, 0);
  CHECK (full_pread (fd, got, FSIZE, 0) == FSIZE);
  CHECK (memcmp (got, data, FSIZE) == 0);
  CHECK (io.calls > FSIZE / 7);                 /* the wrapper was used */

  /* Short only at the end of the file. */
  io_reset (7, 3, 0);
  CHECK (full_pread (fd, got, 500, FSIZE - 200) == 200);
  CHECK (memcmp (got, data + FSIZE - 200, 200) == 0);
  CHECK (full_pread (fd, got, 100, FSIZE) == 0);
  CHECK (full_pread (fd, got, 100, 2 * FSIZE) == 0);
  CHECK (full_pread (fd, got, 0, 0) == 0);

  /* An error part way is an error, not a short count. */
  io_reset (7, 0, 5);
  errno = 0;
  CHECK (full_pread (fd, got, FSIZE, 0) == -1 && errno == EIO);
  close (fd);

  io_reset (0, 0, 0);
  CHECK ((fd = open (path, O_WRONLY | O_CLOEXEC)) >= 0);
  CHECK (full_pread (fd, got, 10, 0) == -1 && errno == EBADF);
  close (fd);
  CHECK (pipe2 (p, O_CLOEXEC) == 0);            /* why pipes are no use */
  CHECK (full_pread (p[0], got, 10, 0) == -1 && errno == ESPIPE);
  close (p[0]);
  close (p[1]);
}

static void
test_full_pwrite (const char *dir)
{
  CLEANUP_FREE char *path = path_in (dir, "pwrite");
  static uint8_t data[FSIZE], got[FSIZE + 3000];
  struct stat st;
  int fd;

  fill (data, FSIZE, 2);
  CHECK ((fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) >= 0);
  io_reset (5, 4, 0);
  CHECK (full_pwrite (fd, data, FSIZE, 3000) == 0);
  CHECK (io.calls > FSIZE / 5);
  io_reset (0, 0, 0);
  CHECK (fstat (fd, &st) == 0 && st.st_size == FSIZE + 3000);
  CHECK (full_pread (fd, got, sizeof got, 0) == FSIZE + 3000);
  CHECK (is_zero (got, 3000) && memcmp (got + 3000, data, FSIZE) == 0);

  io_reset (5, 0, 3);
  errno = 0;
  CHECK (full_pwrite (fd, data, FSIZE, 0) == -1 && errno == EIO);
  io_reset (0, 0, 0);
  CHECK (full_pwrite (fd, data, 0, 0) == 0);
  close (fd);

  CHECK ((fd = open (path, O_RDONLY | O_CLOEXEC)) >= 0);
  CHECK (full_pwrite (fd, data, 10, 0) == -1 && errno == EBADF);
  close (fd);
}

static void
on_signal (int sig)
{
  (void) sig;
}

struct slow_reader {
  int fd;
  pthread_t writer;
  uint8_t *buf;
  size_t len;
};

/* Read a page at a time, pausing so that the writer blocks on the full
 * pipe, and interrupt it each time. */
static void *
slow_reader (void *arg)
{
  struct slow_reader *r = arg;
  const struct timespec pause = { 0, 1000000 };
  ssize_t n;

  while ((n = read (r->fd, r->buf + r->len, 4096)) > 0) {
    r->len += n;
    nanosleep (&pause, NULL);
    pthread_kill (r->writer, SIGUSR1);
  }
  return NULL;
}

#define PIPED (1024 * 1024)

static void
test_full_write (void)
{
  /* No SA_RESTART: the signal ends a blocked write. */
  struct sigaction sa = { .sa_handler = on_signal }, old_sa;
  struct slow_reader r = { .writer = pthread_self () };
  uint8_t *data = malloc (PIPED);
  pthread_t tid;
  int p[2];

  CHECK (data && (r.buf = malloc (PIPED + 4096)));
  fill (data, PIPED, 3);
  CHECK (sigaction (SIGUSR1, &sa, &old_sa) == 0);
  CHECK (pipe2 (p, O_CLOEXEC) == 0);
  fcntl (p[1], F_SETPIPE_SZ, 4096);             /* the smallest there is */
  r.fd = p[0];
  CHECK (pthread_create (&tid, NULL, slow_reader, &r) == 0);

  io_reset (0, 0, 0);
  CHECK (full_write (p[1], data, PIPED) == 0);
  close (p[1]);
  CHECK (pthread_join (tid, NULL) == 0);
  close (p[0]);
  CHECK (r.len == PIPED && memcmp (r.buf, data, PIPED) == 0);
  /* The signals really cut writes short (or interrupted them before
   * they wrote anything); a full_write that gave up would have failed
   * the comparison above. */
  CHECK (io.short_writes + io.eintrs > 0);
  CHECK (sigaction (SIGUSR1, &old_sa, NULL) == 0);

  io_reset (0, 0, 0);
  CHECK (full_write (p[1], data, 0) == 0 && io.calls == 0);

  /* An error is reported. */
  signal (SIGPIPE, SIG_IGN);
  CHECK (pipe2 (p, O_CLOEXEC) == 0);
  close (p[0]);
  errno = 0;
  CHECK (full_write (p[1], data, 10) == -1 && errno == EPIPE);
  close (p[1]);
  free (r.buf);
  free (data);
}

static void
test_read_file (const char *dir)
{
  CLEANUP_FREE char *path = path_in (dir, "small");
  CLEANUP_FREE char *empty = path_in (dir, "empty");
  CLEANUP_FREE char *missing = path_in (dir, "missing");
  char data[100];
  char *buf;
  size_t len;
  int fds = open_fds (), dfd;

  fill ((uint8_t *) data, sizeof data, 4);
  data[10] = '\0';                              /* bytes, not a C string */
  data[sizeof data - 1] = 'z';
  make_file (path, data, sizeof data);
  make_file (empty, "", 0);

  len = 0;
  CHECK ((buf = read_file (path, sizeof data, &len)) != NULL);
  CHECK (len == sizeof data && memcmp (buf, data, len) == 0);
  CHECK (buf[len] == '\0');                     /* NUL-terminated */
  free (buf);
  CHECK ((buf = read_file (path, SIZE_MAX, NULL)) != NULL);     /* no LEN */
  free (buf);

  /* Exactly MAX is allowed; one byte more is EFBIG. */
  errno = 0;
  CHECK (read_file (path, sizeof data - 1, &len) == NULL && errno == EFBIG);
  CHECK (read_file (path, 0, &len) == NULL && errno == EFBIG);

  CHECK ((buf = read_file (empty, 0, &len)) != NULL);
  CHECK (len == 0 && buf[0] == '\0');
  free (buf);

  errno = 0;
  CHECK (read_file (missing, 100, &len) == NULL && errno == ENOENT);
  errno = 0;
  CHECK (read_file (dir, 1 << 20, &len) == NULL && errno == EISDIR);

  /* read_file_at: relative to the directory, absolute paths as they are. */
  CHECK ((dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0);
  CHECK ((buf = read_file_at (dfd, "small", sizeof data, &len)) != NULL);
  CHECK (len == sizeof data && memcmp (buf, data, len) == 0 && buf[len] == 0);
  free (buf);
  CHECK ((buf = read_file_at (dfd, path, sizeof data, &len)) != NULL);
  free (buf);
  errno = 0;
  CHECK (read_file_at (dfd, "missing", 100, &len) == NULL && errno == ENOENT);
  errno = 0;
  CHECK (read_file_at (dfd, "small", 1, &len) == NULL && errno == EFBIG);
  close (dfd);

  /* Short reads are read through. */
  io_reset (3, 2, 0);
  CHECK ((buf = read_file (path, sizeof data, &len)) != NULL);
  CHECK (len == sizeof data && memcmp (buf, data, len) == 0 && io.calls > 30);
  free (buf);
  io_reset (3, 0, 4);
  errno = 0;
  CHECK (read_file (path, sizeof data, &len) == NULL && errno == EIO);
  io_reset (0, 0, 0);

  /* Every way out closed its descriptor (CLEANUP_CLOSE). */
  CHECK (open_fds () == fds);
}

static void
test_fsync_dir (const char *dir)
{
  CLEANUP_FREE char *missing = path_in (dir, "missing");
  CLEANUP_FREE char *file = path_in (dir, "file");
  int fds = open_fds ();

  CHECK (fsync_dir (dir) == 0);
  CHECK_FAILS (fsync_dir (missing), ENOENT, "fsync ");
  CHECK (strstr (err_get (), missing) != NULL);
  make_file (file, "x", 1);
  CHECK_FAILS (fsync_dir (file), ENOTDIR, file);
  CHECK (open_fds () == fds);
}

static void
check_file (const char *path, const char *want, mode_t mode)
{
  struct stat st;
  char *buf;
  size_t len;

  CHECK ((buf = read_file (path, 1 << 20, &len)) != NULL);
  CHECK (len == strlen (want) && strcmp (buf, want) == 0);
  free (buf);
  CHECK (stat (path, &st) == 0 && (st.st_mode & 07777) == mode);
}

/* dir_of: the directory to fsync after changing a name in it. */
static void
test_dir_of (void)
{
  static const char *const cases[][2] = {
    { "a/b/c", "a/b" }, { "/srv/store", "/srv" }, { "/store", "/" },
    { "store", "." }, { "", "." }, { "a/", "a" }, { "/", "/" },
  };

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *d = dir_of (cases[i][0]);
    CHECK (d && strcmp (d, cases[i][1]) == 0);
    free (d);
  }
}

static void
test_write_file_atomic (const char *dir)
{
  CLEANUP_FREE char *sub = path_in (dir, "atomic");
  CLEANUP_FREE char *path = path_in (sub, "f");
  CLEANUP_FREE char *busy = path_in (sub, "busy");
  CLEANUP_FREE char *inside = path_in (busy, "x");
  CLEANUP_FREE char *missing = path_in (sub, "no/such");
  struct stat st1, st2;
  struct rlimit rl, small = { 16, 16 };
  mode_t umask_was = umask (077);
  char old[16];
  int fd, cwd, fds;

  CHECK (mkdir (sub, 0755) == 0);
  fds = open_fds ();

  /* MODE is the file's, whatever the umask. */
  CHECK (write_file_atomic (path, "first", 5, 0640) == 0);
  check_file (path, "first", 0640);
  umask (0);
  CHECK (write_file_atomic (path, "second", 6, 0600) == 0);
  check_file (path, "second", 0600);
  CHECK (entries (sub) == 1);                   /* no temporary left */

  /* Replaced, not rewritten: a reader of the old file keeps it whole. */
  CHECK ((fd = open (path, O_RDONLY | O_CLOEXEC)) >= 0);
  CHECK (fstat (fd, &st1) == 0);
  CHECK (write_file_atomic (path, "third, longer", 13, 0644) == 0);
  CHECK (stat (path, &st2) == 0 && st2.st_ino != st1.st_ino);
  CHECK (pread (fd, old, sizeof old, 0) == 6 && memcmp (old, "second", 6) == 0);
  close (fd);
  check_file (path, "third, longer", 0644);

  /* A write that fails (the file-size limit) leaves the old file and
   * no temporary. */
  signal (SIGXFSZ, SIG_IGN);
  CHECK (getrlimit (RLIMIT_FSIZE, &rl) == 0);
  small.rlim_max = rl.rlim_max;
  CHECK (setrlimit (RLIMIT_FSIZE, &small) == 0);
  CHECK_FAILS (write_file_atomic (path, "far too long for the limit", 26,
                                  0644), EFBIG, "write ");
  CHECK (setrlimit (RLIMIT_FSIZE, &rl) == 0);
  check_file (path, "third, longer", 0644);
  CHECK (entries (sub) == 1);

  /* A rename that fails (onto a directory) the same. */
  CHECK (mkdir (busy, 0755) == 0);
  make_file (inside, "x", 1);
  CHECK_FAILS (write_file_atomic (busy, "data", 4, 0644), EISDIR, "rename ");
  CHECK (stat (inside, &st1) == 0);
  CHECK (entries (sub) == 2 && entries (busy) == 1);

  CHECK_FAILS (write_file_atomic (missing, "data", 4, 0644), ENOENT,
               "create ");

  /* A name without a directory is in the current one; an empty name
   * fails cleanly. */
  CHECK ((cwd = open (".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0);
  CHECK (chdir (sub) == 0);
  CHECK (write_file_atomic ("rel", "here", 4, 0644) == 0);
  CHECK_FAILS (write_file_atomic ("", "data", 4, 0644), ENOENT, "rename");
  CHECK (fchdir (cwd) == 0);
  close (cwd);
  CLEANUP_FREE char *rel = path_in (sub, "rel");
  check_file (rel, "here", 0644);
  CHECK (entries (sub) == 3);

  CHECK (open_fds () == fds);
  umask (umask_was);
}

static void
test_now_monotonic (void)
{
  const struct timespec pause = { 0, 20 * 1000000 };
  struct timespec ts;
  double t0, t1, a, b;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  a = ts.tv_sec + ts.tv_nsec / 1e9;
  t0 = now_monotonic ();
  clock_gettime (CLOCK_MONOTONIC, &ts);
  b = ts.tv_sec + ts.tv_nsec / 1e9;
  CHECK (a <= t0 && t0 <= b);
  nanosleep (&pause, NULL);
  t1 = now_monotonic ();
  CHECK (t1 - t0 >= 0.02 && t1 - t0 < 60);
}

/* Standard base64 of LEN bytes, with or without padding. */
static char *
encode (const uint8_t *p, size_t len, bool pad)
{
  static const char abc[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc (len / 3 * 4 + 5), *o = out;
  size_t i;

  CHECK (out != NULL);
  for (i = 0; i + 2 < len; i += 3) {
    uint32_t v = p[i] << 16 | p[i + 1] << 8 | p[i + 2];
    *o++ = abc[v >> 18];
    *o++ = abc[(v >> 12) & 63];
    *o++ = abc[(v >> 6) & 63];
    *o++ = abc[v & 63];
  }
  if (i < len) {
    uint32_t v = p[i] << 16 | (i + 1 < len ? p[i + 1] << 8 : 0);
    *o++ = abc[v >> 18];
    *o++ = abc[(v >> 12) & 63];
    if (i + 1 < len)
      *o++ = abc[(v >> 6) & 63];
    else if (pad)
      *o++ = '=';
    if (pad)
      *o++ = '=';
  }
  *o = '\0';
  return out;
}

static void
check_b64 (const char *in, const void *want, size_t want_len)
{
  size_t len = 12345;
  uint8_t *p = base64_decode (in, &len);

  if (p == NULL || len != want_len || memcmp (p, want, len) != 0) {
    fprintf (stderr, "base64_decode (\"%s\") is wrong\n", in);
    exit (1);
  }
  free (p);
}

static void
test_base64 (void)
{
  static const char *const bad[] = {
    "Y", "YQ=", "YQ===", "====", "=", "=YQ=", "YW=I", "Y*==", "-_8=",
    "YQ==YQ==", "YQ==Y", " YQ==", "YQ ==", "Y Q==", "YQ\n==", "YQ==\t",
    "\nYQ==", "YQ==\n ", "YQ==\n=", "\xc3\xa9YQ==", "YQ\xc3\xa9",
  };
  uint8_t all[256];

  check_b64 ("", "", 0);
  check_b64 ("\n", "", 0);
  check_b64 ("YQ==", "a", 1);
  check_b64 ("YWI=", "ab", 2);
  check_b64 ("YWJj", "abc", 3);
  check_b64 ("+/8=", "\xfb\xff", 2);
  check_b64 ("YQ==\n", "a", 1);                 /* trailing newlines */
  check_b64 ("YQ==\r\n", "a", 1);
  check_b64 ("YWJj\n\n", "abc", 3);
  check_b64 ("YQ", "a", 1);                     /* padding is optional */
  check_b64 ("YWI", "ab", 2);
  check_b64 ("YWI\n", "ab", 2);

  /* Every byte value, every length's padding, both ways. */
  for (int i = 0; i < 256; i++)
    all[i] = i;
  for (size_t len = 0; len <= 256; len += (len < 8 ? 1 : 37)) {
    for (int pad = 0; pad <= 1; pad++) {
      char *in = encode (all + 256 - len, len, pad);
      check_b64 (in, all + 256 - len, len);
      free (in);
    }
  }

  for (size_t i = 0; i < ARRAY_SIZE (bad); i++) {
    size_t len;
    errno = 0;
    if (base64_decode (bad[i], &len) != NULL || errno != EINVAL) {
      fprintf (stderr, "base64_decode accepted bad input \"%s\"\n", bad[i]);
      exit (1);
    }
  }
}

static void
test_is_uuid (void)
{
  static const char good[] = "0123abcd-4567-89ef-ABCD-0123456789aF";
  char s[64];

  CHECK (is_uuid (good));
  CHECK (is_uuid ("00000000-0000-0000-0000-000000000000"));
  CHECK (strlen (good) == UUID_LEN);

  /* Any one character wrong: not a hex digit, or a hyphen moved. */
  for (size_t i = 0; i < UUID_LEN; i++) {
    strcpy (s, good);
    s[i] = s[i] == '-' ? '0' : 'g';
    CHECK (!is_uuid (s));
    s[i] = good[i] == '-' ? 'a' : '-';
    CHECK (!is_uuid (s));
    s[i] = '\0';                                /* and every prefix */
    CHECK (!is_uuid (s));
  }
  snprintf (s, sizeof s, "%s0", good);          /* one too many */
  CHECK (!is_uuid (s));
  snprintf (s, sizeof s, "%s\n", good);
  CHECK (!is_uuid (s));
  snprintf (s, sizeof s, "{%s}", good);
  CHECK (!is_uuid (s));
  snprintf (s, sizeof s, " %s", good);
  CHECK (!is_uuid (s));
  CHECK (!is_uuid ("0123abcd04567-89ef-abcd-0123456789ab"));
  CHECK (!is_uuid ("0123abc-d4567-89ef-abcd-0123456789ab"));
  CHECK (!is_uuid ("0123abcd-4567-89ef-abcd-0123456789a/"));    /* '0' - 1 */
  CHECK (!is_uuid ("0123abcd-4567-89ef-abcd-0123456789a:"));    /* '9' + 1 */
  CHECK (!is_uuid ("0123abcd-4567-89ef-abcd-0123456789a@"));    /* 'A' - 1 */
  CHECK (!is_uuid ("0123abcd-4567-89ef-abcd-0123456789aG"));
  CHECK (!is_uuid ("0123abcd-4567-89ef-abcd-0123456789a`"));    /* 'a' - 1 */
  CHECK (!is_uuid ("../../../../../../../../../../../etc"));
  CHECK (!is_uuid ("------------------------------------"));
  CHECK (!is_uuid (""));
}

static int
cmp_uuid (const void *a, const void *b)
{
  return strcmp (a, b);
}

#define NUUIDS 1000

static void
test_make_uuid (void)
{
  static char u[NUUIDS][UUID_LEN + 1];

  for (int i = 0; i < NUUIDS; i++) {
    memset (u[i], 'X', sizeof u[i]);
    CHECK (make_uuid (u[i]) == 0);
    CHECK (is_uuid (u[i]) && strlen (u[i]) == UUID_LEN);
    CHECK (strspn (u[i], "0123456789abcdef-") == UUID_LEN);     /* lowercase */
    CHECK (u[i][14] == '4');                    /* version 4 */
    CHECK (strchr ("89ab", u[i][19]) != NULL);  /* RFC 4122 variant */
  }
  qsort (u, NUUIDS, sizeof u[0], cmp_uuid);
  for (int i = 1; i < NUUIDS; i++)
    CHECK (strcmp (u[i - 1], u[i]) != 0);
}

static void
test_is_zero (void)
{
  static uint8_t buf[4096 + 64];

  CHECK (is_zero (buf, 0));
  CHECK (is_zero (buf, sizeof buf));
  CHECK (is_zero (buf + 1, sizeof buf - 1));    /* unaligned */
  for (size_t i = 0; i < sizeof buf; i += (i < 130 ? 1 : 509)) {
    buf[i] = 0x80;
    CHECK (!is_zero (buf, sizeof buf));
    CHECK (!is_zero (buf, i + 1));
    CHECK (is_zero (buf, i));                   /* stops at LEN */
    if (i > 0)
      CHECK (!is_zero (buf + 1, i));
    buf[i] = 0;
  }
  buf[sizeof buf - 1] = 1;                      /* the very last byte */
  CHECK (!is_zero (buf, sizeof buf));
  buf[sizeof buf - 1] = 0;
}

static void
test_parse_size (void)
{
  uint64_t v = 7;

  CHECK (parse_size ("1", &v) == 0 && v == 1);
  CHECK (parse_size ("1000", &v) == 0 && v == 1000);
  CHECK (parse_size ("10K", &v) == 0 && v == 10240);
  CHECK (parse_size ("10k", &v) == 0 && v == 10240);
  CHECK (parse_size ("3M", &v) == 0 && v == 3u << 20);
  CHECK (parse_size ("2g", &v) == 0 && v == UINT64_C (2) << 30);
  CHECK (parse_size ("18446744073709551615", &v) == 0 && v == UINT64_MAX);
  v = 7;
  const char *bad[] = { "", "0", "0K", "K", "-1", "+1", " 1", "1 ", "1KB",
                        "1T", "1.5M", "abc", "1K1", "0x10" };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++) {
    errno = 0;
    CHECK (parse_size (bad[i], &v) == -1 && errno == EINVAL && v == 7);
  }
  errno = 0;
  CHECK (parse_size ("18446744073709551616", &v) == -1 && errno == ERANGE);
  errno = 0;
  CHECK (parse_size ("17179869184G", &v) == -1 && errno == ERANGE);
  CHECK (v == 7);
}

static void
test_macros (void)
{
  int a[7];
  uint64_t big = UINT64_C (1) << 40;

  CHECK (MIN (3, 5) == 3 && MIN (-1, 2) == -1 && MAX (3, 5) == 5);
  CHECK (DIV_ROUND_UP (0, 4) == 0 && DIV_ROUND_UP (1, 4) == 1);
  CHECK (DIV_ROUND_UP (8, 4) == 2 && DIV_ROUND_UP (9, 4) == 3);
  CHECK (ROUND_UP (0, 512) == 0 && ROUND_UP (1, 512) == 512);
  CHECK (ROUND_UP (512, 512) == 512 && ROUND_UP (513, 512) == 1024);
  /* In the arguments' type, not int. */
  CHECK (DIV_ROUND_UP (big + 1, 1 << 20) == (big >> 20) + 1);
  CHECK (ARRAY_SIZE (a) == 7);
}

/* A secret file: read only when no other user may read or write it,
 * judged by the file opened; the message names the option and why. */
static void
test_secret_file_read (const char *dir)
{
  CLEANUP_FREE char *path = path_in (dir, "secret");
  char *text;
  size_t len;

  make_file (path, "s3cret\n", 7);
  CHECK (chmod (path, 0640) == 0);
  text = secret_file_read ("--x-file", path, 4096, &len);
  CHECK (text && len == 7 && strcmp (text, "s3cret\n") == 0);
  free (text);
  CHECK (chmod (path, 0604) == 0);
  CHECK (secret_file_read ("--x-file", path, 4096, &len) == NULL
         && errno == EPERM
         && strstr (err_get (), "--x-file ")
         && strstr (err_get (), "mode 0604 lets other users read it"));
  CHECK (chmod (path, 0602) == 0);
  CHECK (secret_file_read ("--x-file", path, 4096, NULL) == NULL
         && errno == EPERM
         && strstr (err_get (), "lets other users write it"));
  CHECK (chmod (path, 0601) == 0);              /* o+x: nothing to read */
  text = secret_file_read ("--x-file", path, 4096, NULL);
  CHECK (text != NULL);
  free (text);
  CHECK (unlink (path) == 0);
  CHECK (secret_file_read ("--x-file", path, 4096, NULL) == NULL
         && errno == ENOENT && strstr (err_get (), "--x-file "));
}

static void
test_parse_yes_no (void)
{
  static const char *const yes[] = { "yes", "YES", "True", "on", "1" };
  static const char *const no[] = { "no", "No", "FALSE", "off", "0" };
  static const char *const neither[] = { "", "y", "yess", "2", " yes" };

  for (size_t i = 0; i < ARRAY_SIZE (yes); i++)
    CHECK (parse_yes_no (yes[i]) == 1);
  for (size_t i = 0; i < ARRAY_SIZE (no); i++)
    CHECK (parse_yes_no (no[i]) == 0);
  for (size_t i = 0; i < ARRAY_SIZE (neither); i++)
    CHECK (parse_yes_no (neither[i]) == -1);
}

int
main (void)
{
  char *dir = make_tmpdir ();

  test_full_pread (dir);
  test_full_pwrite (dir);
  test_full_write ();
  test_read_file (dir);
  test_fsync_dir (dir);
  test_dir_of ();
  test_write_file_atomic (dir);
  test_now_monotonic ();
  test_base64 ();
  test_is_uuid ();
  test_make_uuid ();
  test_is_zero ();
  test_macros ();
  test_parse_size ();
  test_secret_file_read (dir);
  test_parse_yes_no ();
  rm_rf (dir);
  return 0;
}
