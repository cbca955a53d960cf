/* cbtfs: a growing text buffer for bytes that may be secret. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "secbuf.h"

int
secbuf_add (struct secbuf *b, const void *s, size_t n)
{
  if (b->failed)
    return -1;
  if (n >= b->cap - b->len) {
    size_t cap = b->cap ? b->cap : 256;
    char *np;

    while (n >= cap - b->len) {
      if (cap > SIZE_MAX / 2)
        goto nomem;
      cap *= 2;
    }
    np = malloc (cap);
    if (np == NULL)
      goto nomem;
    if (b->p) {
      memcpy (np, b->p, b->len);
      explicit_bzero (b->p, b->cap);
      free (b->p);
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy (b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;

 nomem:
  b->failed = true;
  errno = ENOMEM;
  return -1;
}

int
secbuf_puts (struct secbuf *b, const char *s)
{
  return secbuf_add (b, s, strlen (s));
}

void
secbuf_wipe (struct secbuf *b)
{
  if (b->p) {
    explicit_bzero (b->p, b->cap);
    free (b->p);
  }
  b->p = NULL;
  b->len = b->cap = 0;
  b->failed = false;            /* "reusable": later adds must not no-op */
}

void
secret_wipe (char *s)
{
  if (s)
    explicit_bzero (s, strlen (s));
}

void
secret_free (char *s)
{
  secret_wipe (s);
  free (s);
}
