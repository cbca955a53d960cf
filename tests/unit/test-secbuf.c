/* Unit test: buffers for secret bytes (common/secbuf.c).
 *
 * What secbuf.h promises: the text stays NUL-terminated; secret bytes
 * are never left behind in freed memory, so growing copies into a new
 * block and zeroes the old one before freeing it (no realloc), and
 * secbuf_wipe zeroes before freeing; an add that runs out of memory
 * sets failed with ENOMEM and later adds do nothing; after a wipe the
 * buffer is empty and can be used again.
 *
 * The Makefile links this test with -Wl,--wrap for malloc, realloc and
 * free: every block secbuf gives back passes through __wrap_free here,
 * which looks at the block being watched just before it is freed, and
 * malloc can be made to fail.
 *
 * Thread model: the main thread only.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/secbuf.h"

extern void *__real_malloc (size_t n);
extern void *__real_realloc (void *p, size_t n);
extern void __real_free (void *p);
extern void *__wrap_malloc (size_t n);
extern void *__wrap_realloc (void *p, size_t n);
extern void __wrap_free (void *p);

static bool fail_malloc;
static unsigned mallocs, reallocs;

/* The block to look at when it is freed, and what was seen. */
static const unsigned char *watch;
static size_t watch_len;
static unsigned watched_frees;
static bool watched_zero;

void *
__wrap_malloc (size_t n)
{
  mallocs++;
  return fail_malloc ? NULL : __real_malloc (n);
}

void *
__wrap_realloc (void *p, size_t n)
{
  reallocs++;
  return __real_realloc (p, n);
}

void
__wrap_free (void *p)
{
  if (p != NULL && p == watch) {
    watched_frees++;
    watched_zero = true;
    for (size_t i = 0; i < watch_len; i++)
      if (watch[i] != 0)
        watched_zero = false;
    watch = NULL;
  }
  __real_free (p);
}

/* Look at B's current block when it is freed: all of it (not just the
 * bytes in use) must be zero by then. */
static void
watch_block (const struct secbuf *b)
{
  watch = (const unsigned char *) b->p;
  watch_len = b->cap;
  watched_frees = 0;
  watched_zero = false;
}

/* B holds LEN bytes of C, NUL-terminated, with room to spare. */
static bool
holds (const struct secbuf *b, char c, size_t len)
{
  if (b->len != len || b->cap <= len || b->p[len] != '\0')
    return false;
  for (size_t i = 0; i < len; i++)
    if (b->p[i] != c)
      return false;
  return true;
}

static void
test_append (void)
{
  struct secbuf b = { 0 };
  const char bin[] = { 's', '\0', 'x' };

  CHECK (secbuf_add (&b, "", 0) == 0);          /* something was added */
  CHECK (b.p != NULL && b.len == 0 && b.p[0] == '\0');
  CHECK (secbuf_puts (&b, "<value>") == 0);
  CHECK (secbuf_puts (&b, "OpaqueRef:abc") == 0);
  CHECK (secbuf_add (&b, "</value>xxx", 8) == 0);
  CHECK (strcmp (b.p, "<value>OpaqueRef:abc</value>") == 0);
  CHECK (b.len == strlen (b.p) && !b.failed);
  CHECK (secbuf_add (&b, bin, sizeof bin) == 0);        /* bytes, not text */
  CHECK (b.len == 28 + 3 && memcmp (b.p + 28, bin, 3) == 0 && b.p[31] == 0);
  secbuf_wipe (&b);
}

/* Growing never leaves the old copy readable in freed memory, and the
 * NUL always has room: exactly cap - 1 bytes fit, cap do not. */
static void
test_growth (void)
{
  struct secbuf b = { 0 };
  char secret[1000];
  size_t cap;

  memset (secret, 'S', sizeof secret);
  CHECK (secbuf_add (&b, secret, 200) == 0);
  cap = b.cap;
  CHECK (holds (&b, 'S', 200));

  watch_block (&b);
  CHECK (secbuf_add (&b, secret, cap - 1 - 200) == 0);  /* fills it */
  CHECK (b.cap == cap && watched_frees == 0 && holds (&b, 'S', cap - 1));
  CHECK (secbuf_add (&b, secret, 1) == 0);              /* one too many */
  CHECK (b.cap > cap && holds (&b, 'S', cap));
  CHECK (watched_frees == 1 && watched_zero);

  /* Several doublings in one add. */
  watch_block (&b);
  for (int i = 0; i < 8; i++)
    CHECK (secbuf_add (&b, secret, sizeof secret) == 0);
  CHECK (holds (&b, 'S', cap + 8 * sizeof secret));
  CHECK (watched_frees == 1 && watched_zero);
  CHECK (reallocs == 0);

  watch_block (&b);
  secbuf_wipe (&b);
  CHECK (watched_frees == 1 && watched_zero);
}

static void
test_wipe (void)
{
  struct secbuf b = { 0 };

  secbuf_wipe (&b);                             /* never used: nothing to do */
  CHECK (b.p == NULL && b.len == 0 && b.cap == 0);

  CHECK (secbuf_puts (&b, "password=hunter2") == 0);
  watch_block (&b);
  secbuf_wipe (&b);
  CHECK (watched_frees == 1 && watched_zero);
  CHECK (b.p == NULL && b.len == 0 && b.cap == 0 && !b.failed);
  secbuf_wipe (&b);                             /* twice is harmless */

  CHECK (secbuf_puts (&b, "again") == 0);       /* reusable */
  CHECK (strcmp (b.p, "again") == 0 && b.len == 5);
  secbuf_wipe (&b);
}

static void
test_out_of_memory (void)
{
  struct secbuf b = { 0 };
  char big[300];
  size_t cap;

  memset (big, 'B', sizeof big);
  CHECK (secbuf_puts (&b, "kept") == 0);
  cap = b.cap;

  fail_malloc = true;
  errno = 0;
  CHECK (secbuf_add (&b, big, sizeof big) == -1 && errno == ENOMEM);
  fail_malloc = false;
  CHECK (b.failed && b.cap == cap && strcmp (b.p, "kept") == 0 && b.len == 4);

  /* Later adds do nothing, even those that would fit: the text is
   * already incomplete. */
  mallocs = 0;
  CHECK (secbuf_puts (&b, "x") == -1);
  CHECK (secbuf_add (&b, big, sizeof big) == -1);
  CHECK (mallocs == 0 && strcmp (b.p, "kept") == 0);

  /* Wiped, it works again. */
  watch_block (&b);
  secbuf_wipe (&b);
  CHECK (watched_frees == 1 && watched_zero);
  CHECK (secbuf_puts (&b, "fresh") == 0 && strcmp (b.p, "fresh") == 0);
  secbuf_wipe (&b);

  /* A length whose capacity would overflow fails before allocating
   * (the bytes are never read). */
  mallocs = 0;
  errno = 0;
  CHECK (secbuf_add (&b, big, SIZE_MAX - 8) == -1 && errno == ENOMEM);
  CHECK (b.failed && mallocs == 0);
  secbuf_wipe (&b);

  /* The first add failing leaves nothing allocated to free. */
  fail_malloc = true;
  CHECK (secbuf_puts (&b, "first") == -1 && b.failed && b.p == NULL);
  fail_malloc = false;
  secbuf_wipe (&b);
}

int
main (void)
{
  test_append ();
  test_growth ();
  test_wipe ();
  test_out_of_memory ();
  return 0;
}
