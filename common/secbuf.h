/* cbtfs: a growing text buffer for bytes that may be secret.
 *
 * XAPI requests carry the password or the session ref, and responses
 * may carry the ref (login, NBD export names).  realloc could leave old
 * copies in freed memory, so growing copies and wipes instead, and
 * secbuf_wipe zeroes before freeing.  Not thread-safe (one owner).
 * Also the wiping of plain secret strings, for the clients of XAPI and
 * of S3.
 */
#ifndef CBTFS_SECBUF_H
#define CBTFS_SECBUF_H

#include <stdbool.h>
#include <stddef.h>

struct secbuf {
  char *p;                      /* NUL-terminated once anything was added */
  size_t len, cap;
  bool failed;                  /* an add ran out of memory; later adds no-op */
};

/* Append N bytes of S.  0, or -1 (ENOMEM) with b->failed set. */
extern int secbuf_add (struct secbuf *b, const void *s, size_t n)
  __attribute__ ((__nonnull__ (1)));

/* Append the string S. */
extern int secbuf_puts (struct secbuf *b, const char *s)
  __attribute__ ((__nonnull__ (1, 2)));

/* Zero and free the contents; the buffer is empty and reusable after
 * (an earlier out-of-memory is forgotten). */
extern void secbuf_wipe (struct secbuf *b) __attribute__ ((__nonnull__ (1)));

/* Zero the string S (a password, a session ref) in place; NULL is a
 * no-op. */
extern void secret_wipe (char *s);

/* secret_wipe S, then free it; NULL is a no-op. */
extern void secret_free (char *s);

#endif /* CBTFS_SECBUF_H */
