/* Unit test: per-thread error messages (common/error.c).
 *
 * What error.h promises: err_set and err_sys set errno (err_set with 0
 * leaves it), err_sys appends strerror, err_prefix composes "ctx: old"
 * and keeps errno, messages are cut short rather than overflowing, an
 * argument may be the current message itself (callers write
 * err_set (E, "… (%s)", err_get ())), and each thread has its own.
 *
 * Thread model: the main thread, and two more for the per-thread case.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/error.h"

/* error.c's buffer, with its NUL: longer messages are cut to this - 1. */
#define ERR_MAX 1024

/* MSG ": " strerror (ERRNUM), as err_sys should write it. */
static const char *
with_strerror (const char *msg, int errnum)
{
  static char buf[256];

  snprintf (buf, sizeof buf, "%s: %s", msg, strerror (errnum));
  return buf;
}

static void
test_set_sys_clear (void)
{
  CHECK (strcmp (err_get (), "") == 0);         /* nothing set yet */

  errno = 0;
  err_set (EPROTO, "VDI %s: bitmap is %d bytes, expected %d", "1234", 3, 16);
  CHECK (errno == EPROTO);
  CHECK (strcmp (err_get (), "VDI 1234: bitmap is 3 bytes, expected 16") == 0);

  errno = ENOSPC;
  err_set (0, "errno stays");
  CHECK (errno == ENOSPC);
  CHECK (strcmp (err_get (), "errno stays") == 0);

  errno = 0;
  err_sys (ENOENT, "open %s", "/no/such");
  CHECK (errno == ENOENT);
  CHECK (strcmp (err_get (), with_strerror ("open /no/such", ENOENT)) == 0);

  err_clear ();
  CHECK (strcmp (err_get (), "") == 0);
}

static void
test_prefix (void)
{
  err_set (EIO, "short read");
  errno = EIO;
  err_prefix ("layer %s", "abc");
  CHECK (errno == EIO);                         /* kept, not reset */
  CHECK (strcmp (err_get (), "layer abc: short read") == 0);
  err_prefix ("disk %d", 2);
  CHECK (strcmp (err_get (), "disk 2: layer abc: short read") == 0);

  /* Nothing to prefix: the context alone, with no dangling ": ". */
  err_clear ();
  err_prefix ("context");
  CHECK (strcmp (err_get (), "context") == 0);

  /* errno is kept even when it disagrees with the message's. */
  err_sys (EACCES, "open x");
  errno = ETIMEDOUT;
  err_prefix ("ctx");
  CHECK (errno == ETIMEDOUT);
  CHECK (strcmp (err_get (), with_strerror ("ctx: open x", EACCES)) == 0);
}

/* The current message as an argument: it must be read before it is
 * overwritten (cli/backup.c does this when verifying). */
static void
test_message_as_argument (void)
{
  err_set (0, "fetcher: out of memory");
  err_set (ENOENT, "cannot verify (%s); the snapshot keeps its data",
           err_get ());
  CHECK (errno == ENOENT);
  CHECK (strcmp (err_get (), "cannot verify (fetcher: out of memory); "
                 "the snapshot keeps its data") == 0);

  err_set (0, "inner");
  err_sys (EIO, "outer (%s)", err_get ());
  CHECK (strcmp (err_get (), with_strerror ("outer (inner)", EIO)) == 0);

  err_set (0, "inner");
  err_prefix ("again %s", err_get ());
  CHECK (strcmp (err_get (), "again inner: inner") == 0);
}

/* Long messages are cut at ERR_MAX - 1 bytes, keeping their beginning
 * (the outermost context); nothing is written past the buffer (ASan
 * and valgrind would see it). */
static void
test_truncation (void)
{
  char big[3 * ERR_MAX];
  const char *m;

  memset (big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';

  err_set (EIO, "%s", big);
  m = err_get ();
  CHECK (strlen (m) == ERR_MAX - 1 && strspn (m, "a") == ERR_MAX - 1);

  err_sys (EIO, "%s", big);                     /* no room for strerror */
  CHECK (errno == EIO);
  CHECK (strlen (err_get ()) == ERR_MAX - 1);

  /* Room for part of strerror: it is cut, not dropped or overflowed. */
  big[ERR_MAX - 6] = '\0';
  err_sys (EIO, "%s", big);
  big[ERR_MAX - 6] = 'a';
  m = err_get ();
  CHECK (strlen (m) == ERR_MAX - 1 && strspn (m, "a") == ERR_MAX - 6);
  CHECK (strncmp (m + ERR_MAX - 6, ": ", 2) == 0);
  CHECK (strncmp (m + ERR_MAX - 4, strerror (EIO), 3) == 0);

  /* A prefix on a full message: the prefix survives, the tail is cut. */
  err_set (EIO, "%s", big);
  err_prefix ("ctx");
  m = err_get ();
  CHECK (strlen (m) == ERR_MAX - 1 && strncmp (m, "ctx: aaa", 8) == 0);

  /* A prefix longer than the buffer: it alone, cut. */
  err_set (EIO, "tail");
  err_prefix ("%s", big);
  m = err_get ();
  CHECK (strlen (m) == ERR_MAX - 1 && strspn (m, "a") == ERR_MAX - 1);
}

struct th {
  const char *name;
  int errnum;
  pthread_barrier_t *barrier;
};

/* Set this thread's message, wait until the other thread has set its
 * own, then find ours unchanged; the same for a prefix. */
static void *
per_thread (void *arg)
{
  const struct th *t = arg;
  char want[64];

  CHECK (strcmp (err_get (), "") == 0);         /* not the main thread's */
  err_set (t->errnum, "thread %s", t->name);
  pthread_barrier_wait (t->barrier);
  snprintf (want, sizeof want, "thread %s", t->name);
  CHECK (strcmp (err_get (), want) == 0 && errno == t->errnum);

  err_prefix ("in %s", t->name);
  pthread_barrier_wait (t->barrier);
  snprintf (want, sizeof want, "in %s: thread %s", t->name, t->name);
  CHECK (strcmp (err_get (), want) == 0 && errno == t->errnum);
  return NULL;
}

static void
test_per_thread (void)
{
  pthread_barrier_t barrier;
  struct th t[2] = {
    { "A", EACCES, &barrier },
    { "B", EPIPE, &barrier },
  };
  pthread_t tid[2];

  CHECK (pthread_barrier_init (&barrier, NULL, 2) == 0);
  err_set (EIO, "main's");
  for (int i = 0; i < 2; i++)
    CHECK (pthread_create (&tid[i], NULL, per_thread, &t[i]) == 0);
  for (int i = 0; i < 2; i++)
    CHECK (pthread_join (tid[i], NULL) == 0);
  CHECK (strcmp (err_get (), "main's") == 0);
  pthread_barrier_destroy (&barrier);
}

/* The class: err_prefix keeps it (a caller adding context to a login
 * failure keeps it the server's), a new error is ERR_OTHER again. */
static void
test_class (void)
{
  err_clear ();
  CHECK (err_class () == ERR_OTHER);
  err_set (ECONNREFUSED, "cannot connect to %s", "host");
  err_set_class (ERR_SERVER);
  err_prefix ("fetch");
  CHECK (err_class () == ERR_SERVER);
  err_set (EIO, "another");
  CHECK (err_class () == ERR_OTHER);
  err_set_class (ERR_CONFIG);
  err_sys (ENOENT, "--password-file x");
  CHECK (err_class () == ERR_OTHER);
  err_set_class (ERR_CONFIG);
  err_clear ();
  CHECK (err_class () == ERR_OTHER);
}

int
main (void)
{
  test_set_sys_clear ();
  test_prefix ();
  test_message_as_argument ();
  test_truncation ();
  test_per_thread ();
  test_class ();
  return 0;
}
