/* cbtfs: small I/O and arithmetic helpers. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "cleanup.h"
#include "error.h"
#include "util.h"

ssize_t
full_pread (int fd, void *buf, size_t count, off_t offset)
{
  size_t done = 0;

  while (done < count) {
    ssize_t r = pread (fd, (char *) buf + done, count - done, offset + done);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0)
      break;
    done += r;
  }
  return done;
}

int
full_pwrite (int fd, const void *buf, size_t count, off_t offset)
{
  while (count > 0) {
    ssize_t r = pwrite (fd, buf, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    buf = (const char *) buf + r;
    count -= r;
    offset += r;
  }
  return 0;
}

int
full_write (int fd, const void *buf, size_t count)
{
  while (count > 0) {
    ssize_t r = write (fd, buf, count);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    buf = (const char *) buf + r;
    count -= r;
  }
  return 0;
}

bool
is_zero (const void *buf, size_t len)
{
  const unsigned char *p = buf;

  /* Compare the buffer with itself shifted by one byte: memcmp is
   * vectorised, a byte loop is not. */
  if (len == 0)
    return true;
  return p[0] == 0 && memcmp (p, p + 1, len - 1) == 0;
}

char *
read_file (const char *path, size_t max, size_t *len)
{
  return read_file_at (AT_FDCWD, path, max, len);
}

char *
read_file_at (int dirfd, const char *path, size_t max, size_t *len)
{
  CLEANUP_CLOSE int fd = openat (dirfd, path, O_RDONLY | O_CLOEXEC);

  return fd == -1 ? NULL : read_fd (fd, max, len);
}

char *
read_fd (int fd, size_t max, size_t *len)
{
  struct stat st;
  char *buf;
  ssize_t r;

  if (fstat (fd, &st) == -1)
    return NULL;
  if ((uint64_t) st.st_size > max) {
    errno = EFBIG;
    return NULL;
  }
  buf = malloc (st.st_size + 1);
  if (buf == NULL)
    return NULL;
  r = full_pread (fd, buf, st.st_size, 0);
  if (r == -1) {
    free (buf);
    return NULL;
  }
  buf[r] = '\0';
  if (len)
    *len = r;
  return buf;
}

int
fsync_dir (const char *dir)
{
  CLEANUP_CLOSE int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd == -1 || fsync (fd) == -1) {
    err_sys (errno, "fsync %s", dir);
    return -1;
  }
  return 0;
}

char *
dir_of (const char *path)
{
  const char *slash = strrchr (path, '/');

  /* Not by cutting a copy of PATH: "." does not fit in a copy of "". */
  if (slash == NULL)
    return strdup (".");
  if (slash == path)
    return strdup ("/");
  return strndup (path, slash - path);
}

int
write_file_atomic (const char *path, const void *data, size_t len, mode_t mode)
{
  CLEANUP_FREE char *tmp = NULL, *dir = dir_of (path);
  int fd;

  if (dir == NULL || asprintf (&tmp, "%s.tmp.XXXXXX", path) == -1) {
    tmp = NULL;                 /* asprintf leaves it undefined */
    err_set (ENOMEM, "out of memory");
    return -1;
  }

  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd == -1) {
    err_sys (errno, "create %s", tmp);
    return -1;
  }
  if (fchmod (fd, mode) == -1 || full_write (fd, data, len) == -1
      || fsync (fd) == -1) {
    err_sys (errno, "write %s", tmp);
    goto err;
  }
  if (close (fd) == -1) {
    fd = -1;
    err_sys (errno, "close %s", tmp);
    goto err;
  }
  fd = -1;
  if (rename (tmp, path) == -1) {
    err_sys (errno, "rename %s", path);
    goto err;
  }
  return fsync_dir (dir);

 err:
  if (fd >= 0)
    close (fd);
  unlink (tmp);
  return -1;
}

double
now_monotonic (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
sleep_seconds (double seconds)
{
  struct timespec ts;

  ts.tv_sec = (time_t) seconds;
  ts.tv_nsec = (long) ((seconds - ts.tv_sec) * 1e9);
  nanosleep (&ts, NULL);
}

static bool
is_base64_char (char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
    || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

uint8_t *
base64_decode (const char *in, size_t *out_len)
{
  gnutls_datum_t src, dst = { NULL, 0 };
  size_t n = strlen (in), data, pad = 0;
  CLEANUP_FREE char *padded = NULL;
  uint8_t *out;

  while (n > 0 && (in[n - 1] == '\n' || in[n - 1] == '\r'))
    n--;
  if (n == 0) {
    /* gnutls rejects empty input; an empty bitmap is still a bitmap. */
    *out_len = 0;
    return calloc (1, 1);
  }
  /* gnutls skips whitespace anywhere and requires the padding; base64
   * as util.h defines it is the other way round, so check the text
   * here: the alphabet, then "=" or "==" only where it completes the
   * last group, and never a lone character in a group. */
  while (pad < n && in[n - 1 - pad] == '=')
    pad++;
  data = n - pad;
  for (size_t i = 0; i < data; i++)
    if (!is_base64_char (in[i]))
      goto bad;
  if (data % 4 == 1 || pad > 2 || (pad > 0 && n % 4 != 0) || n > UINT_MAX - 3)
    goto bad;
  if (n % 4 != 0) {
    padded = malloc (n + 3);
    if (padded == NULL)
      return NULL;
    memcpy (padded, in, n);
    while (n % 4 != 0)
      padded[n++] = '=';
  }
  src.data = (unsigned char *) (padded ? padded : in);
  src.size = n;
  if (gnutls_base64_decode2 (&src, &dst) < 0)
    goto bad;
  /* Hand out a libc-allocated copy so callers need only free(3). */
  out = malloc (dst.size ? dst.size : 1);
  if (out)
    memcpy (out, dst.data, dst.size);
  *out_len = dst.size;
  gnutls_free (dst.data);
  return out;

 bad:
  errno = EINVAL;
  return NULL;
}

int
parse_size (const char *s, uint64_t *out)
{
  uint64_t n = 0, mul = 1;
  const char *p = s;

  if (*p < '0' || *p > '9') {
    errno = EINVAL;
    return -1;
  }
  for (; *p >= '0' && *p <= '9'; p++) {
    if (n > (UINT64_MAX - (*p - '0')) / 10) {
      errno = ERANGE;
      return -1;
    }
    n = n * 10 + (*p - '0');
  }
  switch (*p) {
  case '\0': break;
  case 'k': case 'K': mul = UINT64_C (1) << 10; p++; break;
  case 'm': case 'M': mul = UINT64_C (1) << 20; p++; break;
  case 'g': case 'G': mul = UINT64_C (1) << 30; p++; break;
  default: errno = EINVAL; return -1;
  }
  if (*p != '\0' || n == 0) {
    errno = EINVAL;
    return -1;
  }
  if (n > UINT64_MAX / mul) {
    errno = ERANGE;
    return -1;
  }
  *out = n * mul;
  return 0;
}

bool
is_uuid (const char *s)
{
  static const char pat[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  size_t i;

  for (i = 0; pat[i]; i++) {
    if (pat[i] == '-') {
      if (s[i] != '-')
        return false;
    }
    else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')
               || (s[i] >= 'A' && s[i] <= 'F')))
      return false;
  }
  return s[i] == '\0';
}

int
make_uuid (char out[UUID_LEN + 1])
{
  uint8_t r[16];

  if (getrandom (r, sizeof r, 0) != (ssize_t) sizeof r) {
    err_sys (errno, "getrandom");
    return -1;
  }
  r[6] = (r[6] & 0x0f) | 0x40;
  r[8] = (r[8] & 0x3f) | 0x80;
  snprintf (out, UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
            r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
  return 0;
}

void
one_line (char *buf, size_t size, const char *s)
{
  size_t i = 0;

  for (; s[i] && i < size - 1; i++)
    buf[i] = (unsigned char) s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
  while (i > 0 && buf[i - 1] == ' ')
    i--;
  buf[i] = '\0';
}

char *
secret_file_read (const char *option, const char *path, size_t max,
                  size_t *len)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  char *text = NULL;

  /* The mode of what was opened, not of what the name may point to by
   * the time it is read. */
  if (fd == -1 || fstat (fd, &st) == -1)
    err_sys (errno, "%s %s", option, path);
  else if (st.st_mode & (S_IROTH | S_IWOTH))
    err_set (EPERM, "%s %s: mode %04o lets other users %s it; chmod o-rwx "
             "it", option, path, (unsigned) (st.st_mode & 07777),
             st.st_mode & S_IROTH ? "read" : "write");
  else if ((text = read_fd (fd, max, len)) == NULL)
    err_sys (errno, "%s %s", option, path);
  if (fd >= 0)
    close (fd);
  return text;
}

int
parse_yes_no (const char *v)
{
  static const char *const yes[] = { "yes", "true", "on", "1" };
  static const char *const no[] = { "no", "false", "off", "0" };

  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (strcasecmp (v, yes[i]) == 0)
      return 1;
    if (strcasecmp (v, no[i]) == 0)
      return 0;
  }
  return -1;
}
