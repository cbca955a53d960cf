/* cbtfs: O_DIRECT writes that overlap across threads.
 *
 * Thread model: see dio.h.  The only shared state is the counter
 * (atomic) and the key whose destructor frees a thread's context.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/aio_abi.h>

#include "dio.h"
#include "util.h"

/* glibc has no wrappers for the AIO system calls (libaio does; one
 * submit and one wait do not need it). */
static _Thread_local aio_context_t ctx;
static _Thread_local bool unavailable;
static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static uint64_t aio_writes;

static void
ctx_destroy (void *p)
{
  syscall (SYS_io_destroy, (aio_context_t) (uintptr_t) p);
}

static void
make_key (void)
{
  pthread_key_create (&ctx_key, ctx_destroy);
}

/* This thread's context, or false when AIO cannot be had. */
static bool
get_ctx (void)
{
  if (ctx != 0)
    return true;
  if (unavailable)
    return false;
  if (syscall (SYS_io_setup, 1, &ctx) == -1) {
    ctx = 0;
    unavailable = true;         /* ENOSYS, or aio-max-nr reached */
    return false;
  }
  pthread_once (&ctx_once, make_key);
  pthread_setspecific (ctx_key, (void *) (uintptr_t) ctx);
  return true;
}

/* Submit the write and wait for it: bytes written, or -1 (errno; not
 * submitted when *SUBMITTED is false). */
static ssize_t
aio_write (int fd, const void *buf, size_t len, off_t off,
           pthread_mutex_t *lock, bool *submitted)
{
  struct iocb cb, *cbs[1] = { &cb };
  struct io_event ev;
  long r;

  memset (&cb, 0, sizeof cb);
  cb.aio_lio_opcode = IOCB_CMD_PWRITE;
  cb.aio_fildes = fd;
  cb.aio_buf = (uintptr_t) buf;
  cb.aio_nbytes = len;
  cb.aio_offset = off;
  pthread_mutex_lock (lock);
  r = syscall (SYS_io_submit, ctx, 1, cbs);
  pthread_mutex_unlock (lock);
  *submitted = r == 1;
  if (r != 1)
    return -1;
  do
    r = syscall (SYS_io_getevents, ctx, 1, 1, &ev, NULL);
  while (r == -1 && errno == EINTR);
  if (r != 1)
    return -1;
  if (ev.res < 0) {
    errno = -ev.res;
    return -1;
  }
  __atomic_add_fetch (&aio_writes, 1, __ATOMIC_RELAXED);
  return ev.res;
}

int
dio_pwrite (int fd, const void *buf, size_t len, off_t off,
            pthread_mutex_t *lock)
{
  const char *p = buf;
  bool submitted = false;
  int r;

  if (get_ctx ()) {
    ssize_t w = aio_write (fd, p, len, off, lock, &submitted);
    if (w == (ssize_t) len)
      return 0;
    if (w == -1 && submitted)
      return -1;                /* the write itself failed */
    if (w > 0) {
      p += w;
      len -= w;
      off += w;
    }
  }
  pthread_mutex_lock (lock);
  r = full_pwrite (fd, p, len, off);
  pthread_mutex_unlock (lock);
  return r;
}

uint64_t
dio_aio_writes (void)
{
  return __atomic_load_n (&aio_writes, __ATOMIC_RELAXED);
}
