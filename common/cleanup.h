/* cbtfs: scope-based cleanup helpers (GCC/Clang "cleanup" attribute).
 *
 * Modelled on nbdkit's common/utils/cleanup.h: a local marked
 * CLEANUP_FREE is freed when it goes out of scope, so early returns
 * cannot leak it.  Use only for locals whose ownership never escapes;
 * to hand one out, set the local to NULL after copying the pointer.
 */
#ifndef CBTFS_CLEANUP_H
#define CBTFS_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static inline void
cleanup_free (void *ptr)
{
  free (*(void **) ptr);
}
#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))

static inline void
cleanup_close (int *fd)
{
  if (*fd >= 0)
    close (*fd);
}
#define CLEANUP_CLOSE __attribute__ ((cleanup (cleanup_close)))

static inline void
cleanup_unlock (pthread_mutex_t **m)
{
  pthread_mutex_unlock (*m);
}
#define CLEANUP_CONCAT_(a, b) a##b
#define CLEANUP_CONCAT(a, b) CLEANUP_CONCAT_ (a, b)
/* Hold MUTEX until the end of the enclosing scope. */
#define SCOPED_LOCK(mutex)                                               \
  __attribute__ ((cleanup (cleanup_unlock), unused))                    \
  pthread_mutex_t *CLEANUP_CONCAT (scoped_lock_, __LINE__) = (mutex);   \
  pthread_mutex_lock (CLEANUP_CONCAT (scoped_lock_, __LINE__))

#endif /* CBTFS_CLEANUP_H */
