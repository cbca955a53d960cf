/* cbtfs: the local cache of an object store's blocks (s3store.h).
 *
 * Blocks read from packs are kept in a directory of this machine, so
 * that reading them again costs a local read, across mounts too.
 * Packs never change once named (FORMAT.md, "Object stores"), so what
 * is kept never goes stale: a pack's blocks are kept in a sparse file
 * named after the store, the disk and the pack, block at place p at
 * p * 64 KiB, and beside it a file of one XXH3-64 per place (0: not
 * kept), written after the block.  A read takes a kept block only when
 * it still has that hash; anything else (a torn write, a full disk,
 * another program) is a miss, and the block is read from the bucket.
 * The core checks every block against its index record as well.
 *
 *   DIR/<store id>/<disk>/<pack>        the blocks
 *   DIR/<store id>/<disk>/<pack>.sum    their hashes
 *
 * When the files take more than the cache's size, the least recently
 * used packs go (their files' times, touched on use at most once a
 * minute per pack) until they take 90 % of it.
 *
 * Thread model: any thread; files are read and written with
 * pread/pwrite.  c->lock guards the byte count, the touch table and
 * eviction.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "s3store.h"

#define BLOCK_SHIFT 16
#define BLOCK_SIZE (1u << BLOCK_SHIFT)
#define TOUCHES 1024            /* packs whose last touch is remembered */
#define TOUCH_EVERY 60          /* seconds */

struct s3store_cache {
  char *dir;                    /* DIR (owned) */
  char *root;                   /* DIR/<store id> (owned) */
  uint64_t max;
  pthread_mutex_t lock;
  uint64_t bytes;               /* what DIR's files take, about */
  struct {
    uint64_t key;
    time_t when;
  } touched[TOUCHES];
};

/* DIR exists, is ours and only ours: it holds disks' data. */
static int
private_dir (const char *dir)
{
  struct stat st;

  if (mkdir (dir, 0700) == -1 && errno != EEXIST) {
    err_sys (errno, "cache %s", dir);
    return -1;
  }
  if (lstat (dir, &st) == -1) {
    err_sys (errno, "cache %s", dir);
    return -1;
  }
  if (!S_ISDIR (st.st_mode) || st.st_uid != geteuid ()
      || (st.st_mode & 077)) {
    err_set (EACCES, "cache %s: not a directory only this user may use "
             "(mode %04o)", dir, (unsigned) (st.st_mode & 07777));
    return -1;
  }
  return 0;
}

/* Bytes the files under DIR take (recursively, one level of folders
 * per level of the layout); the files' names and times into *F. */
struct file {
  char *path;
  time_t mtime;
  uint64_t bytes;
};

struct files {
  struct file *v;
  size_t n, cap;
};

/* Take *PATH into F (best effort: a file left out is only not
 * evicted this time). */
static void
add_file (struct files *f, char **path, time_t mtime, uint64_t bytes)
{
  if (f->n == f->cap) {
    size_t ncap = f->cap ? f->cap * 2 : 256;
    struct file *nv = realloc (f->v, ncap * sizeof *nv);
    if (nv == NULL)
      return;
    f->v = nv;
    f->cap = ncap;
  }
  f->v[f->n++] = (struct file) { .path = *path, .mtime = mtime,
                                 .bytes = bytes };
  *path = NULL;
}

static uint64_t
scan (const char *dir, int depth, struct files *f)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  uint64_t total = 0;

  if (d == NULL)
    return 0;
  while ((e = readdir (d)) != NULL) {
    CLEANUP_FREE char *p = NULL;
    struct stat st;
    if (e->d_name[0] == '.' || asprintf (&p, "%s/%s", dir, e->d_name) == -1
        || lstat (p, &st) == -1)
      continue;
    if (S_ISDIR (st.st_mode) && depth > 0)
      total += scan (p, depth - 1, f);
    else if (S_ISREG (st.st_mode)) {
      total += (uint64_t) st.st_blocks * 512;
      if (f)
        add_file (f, &p, st.st_mtime, (uint64_t) st.st_blocks * 512);
    }
  }
  closedir (d);
  return total;
}

struct s3store_cache *
s3store_cache_open (const char *dir, uint64_t max, const char *store_id)
{
  struct s3store_cache *c = calloc (1, sizeof *c);

  if (c == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init (&c->lock, NULL);
  c->max = max;
  if ((c->dir = strdup (dir)) == NULL
      || asprintf (&c->root, "%s/%s", dir, store_id) == -1) {
    c->root = NULL;
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  if (private_dir (c->dir) == -1 || private_dir (c->root) == -1)
    goto err;
  c->bytes = scan (c->dir, 2, NULL);
  return c;

 err:
  s3store_cache_close (c);
  return NULL;
}

void
s3store_cache_close (struct s3store_cache *c)
{
  if (c == NULL)
    return;
  pthread_mutex_destroy (&c->lock);
  free (c->dir);
  free (c->root);
  free (c);
}

/* The files of pack PACK of DISK: "…/<pack>" and "…/<pack>.sum". */
static int
paths (const struct s3store_cache *c, const char *disk, const char *pack,
       char **data, char **sum)
{
  if (asprintf (data, "%s/%s/%s", c->root, disk, pack) == -1) {
    *data = NULL;
    return -1;
  }
  if (asprintf (sum, "%s.sum", *data) == -1) {
    free (*data);
    *data = *sum = NULL;
    return -1;
  }
  return 0;
}

static uint64_t
hash_of (const void *block)
{
  return XXH3_64bits (block, BLOCK_SIZE) | 1;   /* 0 means "not kept" */
}

/* Mark pack DATA used now, if not marked within the last minute. */
static void
touch (struct s3store_cache *c, const char *data)
{
  uint64_t key = XXH3_64bits (data, strlen (data));
  size_t i = key % TOUCHES;
  time_t now = time (NULL);
  bool due;

  pthread_mutex_lock (&c->lock);
  due = c->touched[i].key != key || now - c->touched[i].when >= TOUCH_EVERY;
  if (due) {
    c->touched[i].key = key;
    c->touched[i].when = now;
  }
  pthread_mutex_unlock (&c->lock);
  if (due)
    utimensat (AT_FDCWD, data, NULL, 0);
}

bool
s3store_cache_get (struct s3store_cache *c, const char *disk,
                   const char *pack, uint32_t place, void *buf)
{
  CLEANUP_FREE char *data = NULL, *sum = NULL;
  CLEANUP_CLOSE int dfd = -1, sfd = -1;
  uint8_t h[8];

  if (paths (c, disk, pack, &data, &sum) == -1)
    return false;
  sfd = open (sum, O_RDONLY | O_CLOEXEC);
  if (sfd == -1 || pread (sfd, h, 8, (off_t) place * 8) != 8
      || get_le64 (h) == 0)
    return false;
  dfd = open (data, O_RDONLY | O_CLOEXEC);
  if (dfd == -1
      || full_pread (dfd, buf, BLOCK_SIZE, (off_t) place << BLOCK_SHIFT)
      != BLOCK_SIZE
      || hash_of (buf) != get_le64 (h))
    return false;
  touch (c, data);
  return true;
}

static int
cmp_mtime (const void *a, const void *b)
{
  const struct file *x = a, *y = b;

  return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Delete the least recently used packs until the files take 90 % of
 * the size.  Called with c->lock held. */
static void
evict (struct s3store_cache *c)
{
  struct files f = { 0 };
  uint64_t total = scan (c->dir, 2, &f), goal = c->max / 10 * 9;

  if (f.n)
    qsort (f.v, f.n, sizeof *f.v, cmp_mtime);
  for (size_t i = 0; i < f.n && total > goal; i++) {
    size_t len = strlen (f.v[i].path);
    if (len > 4 && strcmp (f.v[i].path + len - 4, ".sum") == 0)
      continue;                 /* goes with its pack */
    {
      CLEANUP_FREE char *sum = NULL;
      uint64_t sbytes = 0;
      struct stat st;
      if (asprintf (&sum, "%s.sum", f.v[i].path) != -1
          && stat (sum, &st) == 0)
        sbytes = (uint64_t) st.st_blocks * 512;
      /* The hashes first: a reader then misses rather than read a
       * block being deleted. */
      if (sum)
        unlink (sum);
      if (unlink (f.v[i].path) == 0)
        total -= MIN (total, f.v[i].bytes + sbytes);
    }
  }
  for (size_t i = 0; i < f.n; i++)
    free (f.v[i].path);
  free (f.v);
  c->bytes = total;
}

void
s3store_cache_put (struct s3store_cache *c, const char *disk,
                   const char *pack, uint32_t place, uint32_t n,
                   const void *buf)
{
  CLEANUP_FREE char *data = NULL, *sum = NULL, *dir = NULL;
  CLEANUP_FREE uint8_t *h = malloc (8 * (size_t) n);
  CLEANUP_CLOSE int dfd = -1, sfd = -1;
  bool full;

  if (h == NULL || paths (c, disk, pack, &data, &sum) == -1
      || asprintf (&dir, "%s/%s", c->root, disk) == -1)
    return;
  if (mkdir (dir, 0700) == -1 && errno != EEXIST)
    return;
  dfd = open (data, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  sfd = open (sum, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (dfd == -1 || sfd == -1)
    return;
  for (uint32_t i = 0; i < n; i++)
    put_le64 (h + 8 * i,
              hash_of ((const uint8_t *) buf + ((size_t) i << BLOCK_SHIFT)));
  /* The blocks, then their hashes: a hash never vouches for a block
   * not yet written.  A full disk leaves a miss, nothing worse. */
  if (full_pwrite (dfd, buf, (size_t) n << BLOCK_SHIFT,
                   (off_t) place << BLOCK_SHIFT) == -1
      || full_pwrite (sfd, h, 8 * (size_t) n, (off_t) place * 8) == -1)
    return;
  pthread_mutex_lock (&c->lock);
  c->bytes += (uint64_t) n << BLOCK_SHIFT;
  full = c->bytes > c->max;
  if (full)
    evict (c);
  pthread_mutex_unlock (&c->lock);
}
