/* Unit test: scope-based cleanup (common/cleanup.h).
 *
 * CLEANUP_FREE, CLEANUP_CLOSE and SCOPED_LOCK must run on every way
 * out of their scope (its end, return, goto, break, continue), not run
 * on a local given away (set to NULL or -1), leave errno alone there,
 * and run in reverse order (a block freed under a SCOPED_LOCK is freed
 * before the unlock).  The Makefile links this test with
 * -Wl,--wrap=free so that it sees what is freed.
 *
 * Thread model: the main thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/cleanup.h"

extern void __real_free (void *p);
extern void __wrap_free (void *p);

static uintptr_t last_freed;            /* a value, never dereferenced */
static unsigned frees;
static pthread_mutex_t *watch_lock;     /* was it held at the last free? */
static bool held_at_free;

void
__wrap_free (void *p)
{
  if (p) {
    last_freed = (uintptr_t) p;
    frees++;
    if (watch_lock) {
      /* An error-checking mutex we hold says EBUSY (not EDEADLK). */
      int r = pthread_mutex_trylock (watch_lock);
      held_at_free = r == EBUSY;
      if (r == 0)
        pthread_mutex_unlock (watch_lock);
    }
  }
  __real_free (p);
}

static uintptr_t last_malloced;

/* (The test compares last_malloced and last_freed rather than the
 * pointers: GCC's -Wuse-after-free takes a freed pointer's value, read
 * in a later loop iteration, for a use.) */
static void *
xmalloc (size_t n)
{
  void *p = malloc (n);

  CHECK (p != NULL);
  last_malloced = (uintptr_t) p;
  return p;
}

static bool
is_open (int fd)
{
  return fcntl (fd, F_GETFD) != -1;
}

static int
open_null (void)
{
  int fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);

  CHECK (fd >= 0);
  return fd;
}

/* Leave by return from inside nested blocks, at step HOW; *SEEN gets
 * the block and the descriptor. */
static int
leave_by_return (int how, uintptr_t *seen, int *seen_fd)
{
  CLEANUP_FREE char *p = xmalloc (16);
  CLEANUP_CLOSE int fd = open_null ();

  *seen = (uintptr_t) p;
  *seen_fd = fd;
  if (how == 0)
    return 0;
  for (int i = 0; i < 3; i++) {
    CLEANUP_FREE char *inner = xmalloc (8);
    if (how == 1 && i == 1)
      return 1;
  }
  return 2;
}

static void
test_every_exit (void)
{
  uintptr_t seen;
  int fd;

  for (int how = 0; how <= 2; how++) {
    unsigned before = frees;
    CHECK (leave_by_return (how, &seen, &fd) == how);
    CHECK (last_freed == seen);                 /* the outer one, last */
    CHECK (frees - before == 1 + (how == 1 ? 2 : how == 2 ? 3 : 0));
    CHECK (!is_open (fd));
  }

  /* goto out of the scope. */
  {
    CLEANUP_FREE char *p = xmalloc (16);
    CLEANUP_CLOSE int gfd = open_null ();
    seen = (uintptr_t) p;
    fd = gfd;
    goto out;
  }
 out:
  CHECK (last_freed == seen && !is_open (fd));

  /* break and continue out of a loop body. */
  for (int i = 0; i < 4; i++) {
    CLEANUP_FREE char *p = xmalloc (16);
    CLEANUP_CLOSE int lfd = open_null ();
    seen = last_malloced;
    fd = lfd;
    (void) p;
    if (i == 1)
      continue;
    if (i == 2)
      break;
  }
  CHECK (last_freed == seen && !is_open (fd));
}

/* A local given away is left alone, and errno with it. */
static void
test_given_away (void)
{
  char *kept;
  int kept_fd;
  unsigned before = frees;

  {
    CLEANUP_FREE char *p = xmalloc (16);
    CLEANUP_CLOSE int fd = open_null ();
    CLEANUP_FREE char *never = NULL;
    kept = p;
    p = NULL;
    kept_fd = fd;
    fd = -1;
    (void) never;
    errno = ENOSPC;
  }
  CHECK (errno == ENOSPC);                      /* no close (-1) */
  CHECK (frees == before && is_open (kept_fd));
  __real_free (kept);
  close (kept_fd);

  /* Nor does closing a good descriptor disturb errno. */
  {
    CLEANUP_CLOSE int fd = open_null ();
    kept_fd = fd;
    errno = EROFS;
  }
  CHECK (errno == EROFS && !is_open (kept_fd));
}

static pthread_mutex_t m1, m2;

static bool
held (pthread_mutex_t *m)
{
  /* Error-checking: locking one we hold says EDEADLK, not deadlock. */
  int r = pthread_mutex_lock (m);

  if (r == 0)
    pthread_mutex_unlock (m);
  return r == EDEADLK;
}

static int
locked_early_return (int how)
{
  SCOPED_LOCK (&m1);
  CHECK (held (&m1));
  if (how == 0)
    return 0;
  {
    SCOPED_LOCK (&m2);
    CHECK (held (&m2));
    if (how == 1)
      return 1;
  }
  CHECK (!held (&m2));
  return 2;
}

static void
test_scoped_lock (void)
{
  pthread_mutexattr_t a;

  CHECK (pthread_mutexattr_init (&a) == 0);
  CHECK (pthread_mutexattr_settype (&a, PTHREAD_MUTEX_ERRORCHECK) == 0);
  CHECK (pthread_mutex_init (&m1, &a) == 0);
  CHECK (pthread_mutex_init (&m2, &a) == 0);

  for (int how = 0; how <= 2; how++) {
    CHECK (locked_early_return (how) == how);
    CHECK (!held (&m1) && !held (&m2));
  }

  /* Two in one scope (names made from __LINE__ do not clash). */
  {
    SCOPED_LOCK (&m1);
    SCOPED_LOCK (&m2);
    CHECK (held (&m1) && held (&m2));
  }
  CHECK (!held (&m1) && !held (&m2));

  /* Reverse order: what was declared after the lock goes first, while
   * the lock is still held. */
  watch_lock = &m1;
  held_at_free = false;
  {
    SCOPED_LOCK (&m1);
    CLEANUP_FREE char *p = xmalloc (16);
    (void) p;
  }
  watch_lock = NULL;
  CHECK (held_at_free && !held (&m1));

  pthread_mutex_destroy (&m1);
  pthread_mutex_destroy (&m2);
  pthread_mutexattr_destroy (&a);
}

int
main (void)
{
  test_every_exit ();
  test_given_away ();
  test_scoped_lock ();
  return 0;
}
