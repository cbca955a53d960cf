/* cbtfs: the object store's pack uploads (s3store.h).
 *
 * Thread model: ss->up->lock guards the queue and the counts; the
 * threads take jobs from the queue and run them without the lock.  The
 * threads start with the first job and end at s3store_uploads_end,
 * which the store's close calls once no layer is open.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "../../common/error.h"
#include "s3store.h"

struct job {
  void (*fn) (void *);
  void *opaque;
};

struct s3store_uploads {
  pthread_mutex_t lock;
  pthread_cond_t work, room;    /* a job to take; a place in the queue */
  struct job q[S3STORE_UPLOADS];
  size_t head, len;
  bool stop;
  pthread_t threads[S3STORE_UPLOADS];
  size_t nthreads;
};

static void *
worker (void *arg)
{
  struct s3store_uploads *u = arg;
  struct job j;

  pthread_mutex_lock (&u->lock);
  for (;;) {
    while (u->len == 0 && !u->stop)
      pthread_cond_wait (&u->work, &u->lock);
    if (u->len == 0)
      break;
    j = u->q[u->head];
    u->head = (u->head + 1) % S3STORE_UPLOADS;
    u->len--;
    pthread_cond_signal (&u->room);
    pthread_mutex_unlock (&u->lock);
    j.fn (j.opaque);
    pthread_mutex_lock (&u->lock);
  }
  pthread_mutex_unlock (&u->lock);
  return NULL;
}

/* The store's uploads, started on first use.  Called by writers, which
 * the core serialises per layer but not across layers: pool_lock
 * guards the start. */
static struct s3store_uploads *
uploads (struct s3_store *ss)
{
  struct s3store_uploads *u;

  pthread_mutex_lock (&ss->pool_lock);
  u = ss->up;
  if (u == NULL && (u = calloc (1, sizeof *u)) != NULL) {
    pthread_mutex_init (&u->lock, NULL);
    pthread_cond_init (&u->work, NULL);
    pthread_cond_init (&u->room, NULL);
    for (size_t i = 0; i < S3STORE_UPLOADS; i++)
      if (pthread_create (&u->threads[u->nthreads], NULL, worker, u) == 0)
        u->nthreads++;
    if (u->nthreads == 0) {
      pthread_cond_destroy (&u->room);
      pthread_cond_destroy (&u->work);
      pthread_mutex_destroy (&u->lock);
      free (u);
      u = NULL;
    }
    else
      ss->up = u;
  }
  pthread_mutex_unlock (&ss->pool_lock);
  return u;
}

int
s3store_upload (struct s3_store *ss, void (*fn) (void *), void *opaque)
{
  struct s3store_uploads *u = uploads (ss);

  if (u == NULL) {
    err_set (EAGAIN, "cannot start upload threads");
    return -1;
  }
  pthread_mutex_lock (&u->lock);
  while (u->len == S3STORE_UPLOADS)
    pthread_cond_wait (&u->room, &u->lock);
  u->q[(u->head + u->len) % S3STORE_UPLOADS] = (struct job) { fn, opaque };
  u->len++;
  pthread_cond_signal (&u->work);
  pthread_mutex_unlock (&u->lock);
  return 0;
}

void
s3store_uploads_end (struct s3_store *ss)
{
  struct s3store_uploads *u = ss->up;

  if (u == NULL)
    return;
  pthread_mutex_lock (&u->lock);
  u->stop = true;
  pthread_cond_broadcast (&u->work);
  pthread_mutex_unlock (&u->lock);
  for (size_t i = 0; i < u->nthreads; i++)
    pthread_join (u->threads[i], NULL);
  pthread_cond_destroy (&u->room);
  pthread_cond_destroy (&u->work);
  pthread_mutex_destroy (&u->lock);
  free (u);
  ss->up = NULL;
}
