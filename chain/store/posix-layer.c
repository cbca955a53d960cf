/* cbtfs: a layer in the directory backend: four files in one folder
 * (posix.h).  Block b lives at byte b * 64 KiB of "data" (a sparse
 * file); the index is the file "index"; the writer lock is flock(2) on
 * it.
 *
 * Thread model: reads use descriptors from a process-wide LRU (below),
 * guarded by fdc_lock, which is held across open(2) and close(2) but
 * never across a read.  The writer's descriptors are set by
 * posix_writer_open and cleared by posix_writer_close, which the core
 * serialises with everything else that writes (store.h); h->write_lock
 * lets one blocks_write at a time submit to the data file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/dio.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "posix.h"

#define BLOCK_SHIFT 16
#define BLOCK_SIZE (1u << BLOCK_SHIFT)

struct posix_layer {
  struct store_layer base;
  char *dir;                    /* STORE/disks/D/S, or a stage in tmp/
                                   (owned) */
  const char *snapshot;         /* its last component (a stage: the
                                   snapshot it replaces) */
  char *final;                  /* a stage: the layer it replaces (owned);
                                   NULL for a plain handle */
  bool replaced;                /* a stage swapped in: DIR now holds the
                                   old layer, already removed */

  /* Reading: see the fd cache. */
  int data_fd, rindex_fd;       /* both open, or both -1 */
  unsigned fd_users;            /* reads using them now */
  struct posix_layer *fd_prev, *fd_next;

  /* Writing: -1 unless this process is the layer's writer. */
  pthread_mutex_t write_lock;   /* one write submitted at a time */
  int wdata_fd;
  int direct_fd;                /* O_DIRECT writes of aligned buffers, or -1 */
  int index_fd;                 /* flock'ed: the writer lock */
};

static inline struct posix_layer *
pl_of (struct store_layer *h)
{
  return (struct posix_layer *) h;
}

/* ---- read descriptors ---------------------------------------------------
 * A store can hold far more layers than a process may have open files
 * (1024 by default), so a layer opens its files only to read, and
 * keeps them in a bounded LRU (an eighth of the process's limit, which
 * cbtfs raises to the hard limit); descriptors some reader is using
 * are never closed.
 */
#define FD_CACHE_MAX 16384

static pthread_mutex_t fdc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct posix_layer *fdc_head, *fdc_tail; /* most recently used first */
static unsigned fdc_open;
static unsigned fdc_max;                    /* 0 until first needed */

static void
fdc_unlink (struct posix_layer *l)
{
  if (l->fd_prev)
    l->fd_prev->fd_next = l->fd_next;
  else
    fdc_head = l->fd_next;
  if (l->fd_next)
    l->fd_next->fd_prev = l->fd_prev;
  else
    fdc_tail = l->fd_prev;
  l->fd_prev = l->fd_next = NULL;
}

static void
fdc_push (struct posix_layer *l)
{
  l->fd_next = fdc_head;
  l->fd_prev = NULL;
  if (fdc_head)
    fdc_head->fd_prev = l;
  fdc_head = l;
  if (fdc_tail == NULL)
    fdc_tail = l;
}

/* Close the least recently used idle descriptors until fewer than MAX
 * are open. */
static void
fdc_make_room (unsigned max)
{
  struct posix_layer *l = fdc_tail;

  while (fdc_open >= max && l) {
    struct posix_layer *prev = l->fd_prev;
    if (l->fd_users == 0) {
      fdc_unlink (l);
      close (l->data_fd);
      close (l->rindex_fd);
      l->data_fd = l->rindex_fd = -1;
      fdc_open--;
    }
    l = prev;
  }
}

/* Open DIR/NAME for reading, giving back cached descriptors when the
 * process has none left.  Called with fdc_lock held. */
static int
open_cached (const char *dir, const char *name)
{
  CLEANUP_FREE char *path = NULL;
  int fd;

  if (asprintf (&path, "%s/%s", dir, name) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {
    /* Others used up the process's files: give back all we can. */
    fdc_make_room (1);
    fd = open (path, O_RDONLY | O_CLOEXEC);
  }
  if (fd == -1)
    err_sys (errno, "open %s", path);
  return fd;
}

char *
posix_read_in (const char *dir, const char *name, size_t max, size_t *len)
{
  CLEANUP_FREE char *path = NULL;
  char *text;

  if (asprintf (&path, "%s/%s", dir, name) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  text = read_file (path, max, len);
  if (text == NULL && (errno == EMFILE || errno == ENFILE)) {
    pthread_mutex_lock (&fdc_lock);
    fdc_make_room (1);
    pthread_mutex_unlock (&fdc_lock);
    text = read_file (path, max, len);
  }
  if (text == NULL)
    err_sys (errno, "%s", path);
  return text;
}

/* Hold L's read descriptors until fds_put: 0, or -1 with err_*. */
static int
fds_get (struct posix_layer *l)
{
  int fd;

  pthread_mutex_lock (&fdc_lock);
  if (l->data_fd >= 0) {
    fdc_unlink (l);
    fdc_push (l);
  }
  else {
    if (fdc_max == 0) {
      /* An eighth of what the process may open (two files a layer),
       * leaving the rest to FUSE, NBD connections and layers being
       * filled.  Reading a point whose chain is deeper than this opens
       * and closes files often. */
      struct rlimit rl;
      fdc_max = FD_CACHE_MAX;
      if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur / 8 < fdc_max)
        fdc_max = MAX (rl.rlim_cur / 8, 4);
    }
    fdc_make_room (fdc_max);
    fd = open_cached (l->dir, "data");
    if (fd >= 0 && (l->rindex_fd = open_cached (l->dir, "index")) == -1) {
      close (fd);
      fd = -1;
    }
    if (fd == -1) {
      pthread_mutex_unlock (&fdc_lock);
      return -1;
    }
    l->data_fd = fd;
    fdc_open++;
    fdc_push (l);
  }
  l->fd_users++;
  pthread_mutex_unlock (&fdc_lock);
  return 0;
}

static void
fds_put (struct posix_layer *l)
{
  pthread_mutex_lock (&fdc_lock);
  l->fd_users--;
  pthread_mutex_unlock (&fdc_lock);
}

/* ---- the handle ---------------------------------------------------------- */

/* A handle on the layer in DIR (owned, also on failure). */
static struct posix_layer *
handle_new (struct store *s, char *dir)
{
  struct posix_layer *l;

  if (dir == NULL)
    return NULL;
  l = calloc (1, sizeof *l);
  if (l == NULL) {
    err_set (ENOMEM, "out of memory");
    free (dir);
    return NULL;
  }
  l->base.store = s;
  l->data_fd = l->rindex_fd = -1;
  l->wdata_fd = l->direct_fd = l->index_fd = -1;
  pthread_mutex_init (&l->write_lock, NULL);
  l->dir = dir;
  l->snapshot = strrchr (l->dir, '/') + 1;
  return l;
}

struct store_layer *
posix_layer_open (struct store *s, const char *disk, const char *snapshot)
{
  struct posix_layer *l = handle_new (s, posix_disk_path (s, disk, snapshot));

  return l ? &l->base : NULL;
}

struct store_layer *
posix_layer_staged (struct store *s, char *dir, char *final)
{
  struct posix_layer *l = handle_new (s, dir);

  if (l == NULL) {
    free (final);
    return NULL;
  }
  l->final = final;
  l->snapshot = strrchr (final, '/') + 1;
  return &l->base;
}

/* The exchange is one rename(2): the layer's name never points at
 * nothing, so neither a reader nor a crash can find the point missing.
 * Readers holding the old files keep reading them (their blocks are
 * checked against the old index); the old folder then sits at the
 * stage's name in tmp/ and is removed (by the next store_lock after a
 * crash). */
int
posix_layer_replace (struct store_layer *h)
{
  struct posix_layer *l = pl_of (h);
  CLEANUP_FREE char *parent = dir_of (l->final);

  posix_writer_close (h);
  if (parent == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (renameat2 (AT_FDCWD, l->dir, AT_FDCWD, l->final, RENAME_EXCHANGE)
      == -1) {
    if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)
      err_set (EOPNOTSUPP, "the file system of %s cannot swap two folders "
               "atomically (renameat2 RENAME_EXCHANGE); prune needs one "
               "that can (ext4, xfs, btrfs, tmpfs)", l->final);
    else
      err_sys (errno, "swap %s and %s", l->dir, l->final);
    return -1;
  }
  l->replaced = true;
  if (fsync_dir (parent) == -1)
    return -1;
  /* Readers that open the old version's files by name from now on
   * find the new one's: they fail (its records do not match theirs),
   * and look for a change of the store (fs.c), which is marked here
   * rather than after the old files are deleted (store.c marks it
   * again). */
  posix_changed (l->base.store);
  posix_remove_stage (l->dir);
  return 0;
}

void
posix_layer_close (struct store_layer *h)
{
  struct posix_layer *l = pl_of (h);

  posix_writer_close (h);
  pthread_mutex_lock (&fdc_lock);
  if (l->data_fd >= 0) {
    fdc_unlink (l);
    fdc_open--;
    close (l->data_fd);
    close (l->rindex_fd);
  }
  pthread_mutex_unlock (&fdc_lock);
  if (l->final && !l->replaced)
    posix_remove_stage (l->dir);
  pthread_mutex_destroy (&l->write_lock);
  free (l->final);
  free (l->dir);
  free (l);
}

const char *
posix_layer_where (const struct store_layer *h)
{
  return ((const struct posix_layer *) h)->dir;
}

char *
posix_set_read (struct store_layer *h, size_t max, size_t *len)
{
  return posix_read_in (pl_of (h)->dir, "changed", max, len);
}

/* What the layer's four files occupy on the file system (a full
 * layer has no "changed"). */
int
posix_usage (struct store_layer *h, uint64_t *bytes)
{
  static const char *const names[] = { "layer", "changed", "index", "data" };
  struct posix_layer *l = pl_of (h);

  *bytes = 0;
  for (size_t i = 0; i < ARRAY_SIZE (names); i++) {
    CLEANUP_FREE char *path = NULL;
    struct stat st;

    if (asprintf (&path, "%s/%s", l->dir, names[i]) == -1) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    if (stat (path, &st) == 0)
      *bytes += (uint64_t) st.st_blocks * 512;
    else if (errno != ENOENT) {
      err_sys (errno, "%s", path);
      return -1;
    }
  }
  return 0;
}

ssize_t
posix_index_read (struct store_layer *h, void *buf, size_t len, uint64_t off)
{
  struct posix_layer *l = pl_of (h);
  ssize_t r;

  if (fds_get (l) == -1)
    return -1;
  r = full_pread (l->rindex_fd, buf, len, off);
  if (r == -1)
    err_sys (errno, "read %s/index", l->dir);
  fds_put (l);
  return r;
}

ssize_t
posix_block_read (struct store_layer *h, uint64_t b, void *buf)
{
  struct posix_layer *l = pl_of (h);
  ssize_t r;

  if (fds_get (l) == -1)
    return -1;
  r = full_pread (l->data_fd, buf, BLOCK_SIZE, (off_t) b << BLOCK_SHIFT);
  if (r == -1)
    err_sys (errno, "read %s/data", l->dir);
  fds_put (l);
  return r;
}

/* ---- writing ------------------------------------------------------------- */

/* A second write fd for the data file that bypasses the page cache
 * (-1 where the filesystem cannot): blocks copied into the store are
 * rarely read again soon, and copying them through the page cache costs
 * as much CPU as fetching them.  The file is first given the disk's
 * whole length (holes cost nothing): writes that extend a file cannot
 * overlap (dio.h). */
static int
open_direct (const char *path, uint64_t nblocks)
{
  int fd = open (path, O_WRONLY | O_DIRECT | O_CLOEXEC);
  off_t len = (off_t) nblocks << BLOCK_SHIFT;
  struct stat st;

  if (fd >= 0 && fstat (fd, &st) == 0 && st.st_size < len
      && ftruncate (fd, len) == -1) {
    /* Then writes just take turns. */
  }
  return fd;
}

int
posix_writer_open (struct store_layer *h, uint64_t nblocks)
{
  struct posix_layer *l = pl_of (h);
  CLEANUP_FREE char *dpath = NULL, *ipath = NULL;
  int ifd = -1, wfd = -1;

  if (l->index_fd >= 0)
    return 0;
  if (asprintf (&dpath, "%s/data", l->dir) == -1
      || asprintf (&ipath, "%s/index", l->dir) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  ifd = open (ipath, O_RDWR | O_CLOEXEC);
  if (ifd == -1) {
    err_sys (errno, "open %s", ipath);
    return -1;
  }
  if (flock (ifd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK)
      err_set (EWOULDBLOCK, "snapshot %s is being filled by another cbtfs "
               "process (a backup, a fetch, or a mount reading from it)",
               l->snapshot);
    else
      err_sys (errno, "lock %s", ipath);
    goto err;
  }
  wfd = open (dpath, O_RDWR | O_CLOEXEC);
  if (wfd == -1) {
    err_sys (errno, "open %s", dpath);
    goto err;
  }
  l->index_fd = ifd;
  l->wdata_fd = wfd;
  l->direct_fd = open_direct (dpath, nblocks);
  return 0;

 err:
  close (ifd);                  /* releases the lock */
  return -1;
}

int
posix_index_cut (struct store_layer *h, uint64_t len)
{
  struct posix_layer *l = pl_of (h);

  if (ftruncate (l->index_fd, len) == -1 || fsync (l->index_fd) == -1) {
    err_sys (errno, "truncate %s/index", l->dir);
    return -1;
  }
  return 0;
}

int
posix_blocks_write (struct store_layer *h, uint64_t first, const void *buf,
                    size_t len)
{
  struct posix_layer *l = pl_of (h);
  off_t off = (off_t) first << BLOCK_SHIFT;
  int w;

  /* One writer at a time submits: ext4 serialises that part anyway,
   * and makes the writers that wait spin on its inode lock.  Direct
   * writes then overlap (dio.h); buffered ones are quick. */
  if (l->direct_fd >= 0 && (uintptr_t) buf % 4096 == 0)
    w = dio_pwrite (l->direct_fd, buf, len, off, &l->write_lock);
  else {
    pthread_mutex_lock (&l->write_lock);
    w = full_pwrite (l->wdata_fd, buf, len, off);
    pthread_mutex_unlock (&l->write_lock);
  }
  if (w == -1)
    err_sys (errno, "write %s/data", l->dir);
  return w;
}

int
posix_commit (struct store_layer *h, const void *recs, size_t len,
              uint64_t at)
{
  struct posix_layer *l = pl_of (h);

  /* Data first, then the records that vouch for it (FORMAT.md). */
  if (fdatasync (l->wdata_fd) == -1) {
    err_sys (errno, "fsync %s/data", l->dir);
    return -1;
  }
  if (full_pwrite (l->index_fd, recs, len, at) == -1
      || fdatasync (l->index_fd) == -1) {
    err_sys (errno, "write %s/index", l->dir);
    /* Whatever part landed is cut off by the next writer's open. */
    if (ftruncate (l->index_fd, at) == -1) {
      /* The torn tail is ignored by readers anyway. */
    }
    return -1;
  }
  return 0;
}

/* ext4 leaves a range whose first writeback failed allocated but
 * unwritten, and a buffered rewrite of it then reads back as zeros
 * (tests/test-store-faults.py): punch it out. */
void
posix_blocks_drop (struct store_layer *h, uint64_t first, uint64_t n)
{
  struct posix_layer *l = pl_of (h);

  if (fallocate (l->wdata_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) first << BLOCK_SHIFT, (off_t) n << BLOCK_SHIFT) == -1)
    log_debug ("%s/data: cannot punch blocks %" PRIu64 "+%" PRIu64 ": %m",
               l->dir, first, n);
}

void
posix_writer_close (struct store_layer *h)
{
  struct posix_layer *l = pl_of (h);

  if (l->direct_fd >= 0)
    close (l->direct_fd);
  if (l->wdata_fd >= 0)
    close (l->wdata_fd);
  if (l->index_fd >= 0)
    close (l->index_fd);        /* releases the writer lock */
  l->direct_fd = l->wdata_fd = l->index_fd = -1;
}
