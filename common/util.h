/* cbtfs: small I/O and arithmetic helpers shared by every module. */
#ifndef CBTFS_UTIL_H
#define CBTFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ROUND_UP(n, a) (DIV_ROUND_UP ((n), (a)) * (a))
#define ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))

/* Little-endian integers in the store's binary formats (FORMAT.md). */
static inline void
put_le64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = v >> (8 * i);
}

static inline void
put_le32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static inline uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static inline uint32_t
get_le32 (const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* pread until COUNT bytes or EOF; returns bytes read or -1 (errno). */
extern ssize_t full_pread (int fd, void *buf, size_t count, off_t offset);

/* pwrite all COUNT bytes; 0 or -1 (errno). */
extern int full_pwrite (int fd, const void *buf, size_t count, off_t offset);

/* write all COUNT bytes; 0 or -1 (errno). */
extern int full_write (int fd, const void *buf, size_t count);

/* True if all LEN bytes of BUF are zero. */
extern bool is_zero (const void *buf, size_t len);

/* Read a whole small file into a NUL-terminated malloc'd buffer
 * (caller frees); *LEN gets its length.  NULL with errno on failure,
 * EFBIG past MAX bytes. */
extern char *read_file (const char *path, size_t max, size_t *len);

/* read_file of PATH relative to the directory open as DIRFD. */
extern char *read_file_at (int dirfd, const char *path, size_t max,
                           size_t *len);

/* read_file of the file open as FD (from its start; FD stays open). */
extern char *read_fd (int fd, size_t max, size_t *len);

/* 1 for yes, true, on or 1, 0 for no, false, off or 0 (any case), -1
 * for anything else: the one reading of a yes-or-no setting (the
 * configuration file, the environment). */
extern int parse_yes_no (const char *v) __attribute__ ((__nonnull__ (1)));

/* read_file of PATH, which holds a secret (a password, a key): refused
 * with EPERM, before anything is read, when other users may read or
 * write it.  OPTION ("--password-file") names it in messages.  NULL
 * with err_*; caller wipes and frees. */
extern char *secret_file_read (const char *option, const char *path,
                               size_t max, size_t *len)
  __attribute__ ((__nonnull__ (1, 2)));

/* Write DATA to PATH atomically and durably: write a temporary file in
 * the same directory, fsync it, rename it over PATH, fsync the
 * directory.  MODE is applied to the new file.  0 or -1 (err_*). */
extern int write_file_atomic (const char *path, const void *data, size_t len,
                              mode_t mode);

/* The directory PATH is in (malloc'd): "." for a bare name, "/" for a
 * name at the root, else PATH up to its last '/'.  NULL on ENOMEM. */
extern char *dir_of (const char *path) __attribute__ ((__nonnull__ (1)));

/* fsync the directory DIR; 0 or -1 (err_*). */
extern int fsync_dir (const char *dir);

/* Seconds since an arbitrary start, monotonic. */
extern double now_monotonic (void);

/* Sleep for SECONDS (0 or more; a signal may cut it short: callers
 * loop on a deadline). */
extern void sleep_seconds (double seconds);

/* Decode standard base64 (RFC 4648, padding optional, no whitespace
 * except trailing newlines).  Returns a malloc'd buffer (caller frees)
 * and its length, or NULL with errno EINVAL on bad input. */
extern uint8_t *base64_decode (const char *in, size_t *out_len);



/* Parse a byte count "N", "NK", "NM" or "NG" (1024-based; the suffix
 * in either case): N decimal digits, the whole more than 0 and fitting
 * in 64 bits.  0 with *OUT set, or -1 with errno EINVAL (garbage) or
 * ERANGE (too large); *OUT is then unchanged. */
extern int parse_size (const char *s, uint64_t *out)
  __attribute__ ((__nonnull__ (1, 2)));

#define UUID_LEN 36

/* True if S is a canonical lowercase-or-uppercase hex UUID
 * (8-4-4-4-12).  Everything that names a store path passes this. */
extern bool is_uuid (const char *s);

/* Copy S into BUF (SIZE > 0) as one line: control characters become
 * spaces and trailing spaces go, as a server's text (an XAPI error
 * parameter carrying a backend's stderr, an S3 message) may hold
 * several lines. */
extern void one_line (char *buf, size_t size, const char *s)
  __attribute__ ((__nonnull__ (1, 3)));

/* Fill OUT with a new random (version 4) uuid, lowercase.  0 or -1
 * with err_*. */
extern int make_uuid (char out[UUID_LEN + 1]) __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_UTIL_H */
