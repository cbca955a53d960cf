/* cbtfs: O_DIRECT writes that overlap across threads.
 *
 * A synchronous O_DIRECT write that allocates blocks keeps ext4's inode
 * lock for the whole I/O, so writers to one file take turns and the
 * disk sees one write at a time.  Submitted through Linux AIO, a write
 * that does not extend the file holds the lock only while it is
 * submitted; several threads' writes are then in flight at once.
 *
 * Thread model: any number of threads.  Each has its own AIO context,
 * made on first use and destroyed when the thread exits.
 */
#ifndef CBTFS_COMMON_DIO_H
#define CBTFS_COMMON_DIO_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

/* Write LEN bytes of BUF at OFF to FD (open with O_DIRECT; BUF, LEN and
 * OFF aligned as it needs) and wait until it is done, holding LOCK only
 * while submitting.  Where AIO is not available (or a write comes back
 * short) the rest is written with pwrite under LOCK.  0, or -1 with
 * errno. */
extern int dio_pwrite (int fd, const void *buf, size_t len, off_t off,
                       pthread_mutex_t *lock)
  __attribute__ ((__nonnull__ (2, 5)));

/* Writes that went through AIO so far, in this process (for tests). */
extern uint64_t dio_aio_writes (void);

#endif /* CBTFS_COMMON_DIO_H */
