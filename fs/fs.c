/* cbtfs: the read-only FUSE filesystem over a store.
 *
 * NOTES ON THE THREAD MODEL
 * fuse_session_loop_mt runs up to MAX_THREADS request threads, and one
 * watcher thread follows the store (started after fuse_daemonize
 * forks: no thread exists before).  What the mount shows is a
 * generation: a catalog, its fetcher and its tree.  The watcher builds
 * the next one aside, swaps fs.tree and fs.cur under the write side of
 * fs.tree_lock, then tells the kernel what to forget; it alone writes
 * those two, so it reads them unlocked.  Request threads hold the read
 * side while they use the tree and until their reply is written, so
 * the kernel has taken a reply into its caches before the watcher's
 * invalidation of it.  An open image holds its generation (refs, under
 * fs.gen_lock) and reads through it alone: a point the store dropped
 * reads on from what stays open, or fails with EIO, never another
 * point's data.  The watcher frees a replaced generation once no image
 * holds it.  Reads go to chain_read, which is reentrant (layers lock
 * themselves; each fetcher has its own lock and flusher thread, started
 * on first use).  A read that fails through a replaced generation is
 * tried again through newer ones (read_again, holding a ref on each
 * meanwhile); it may poke the watcher (fs.poked, under fs.stop_lock)
 * and wait for it to show the next (fs.shown, with fs.gen_lock, which
 * also guards fs.stamp and fs.cur_seq: the watcher writes them there).  fs.log_lock only guards the repeated-error filter.
 */
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../chain/holes.h"
#include "../chain/read.h"
#include "../chain/store/store.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "fs.h"
#include "tree.h"

#define MAX_THREADS 16
/* Requests up to 1 MiB: libfuse derives the kernel's max_pages from
 * max_write, even on a read-only filesystem (docs/performance.md, "FUSE
 * request size"). */
#define MAX_IO (1u << 20)
/* The kernel's readahead window for the mount (KiB). */
#define READAHEAD_KB 8192
/* An image never changes while it is shown, and the watcher tells the
 * kernel what else changed: let it cache for a day. */
#define TIMEOUT 86400.0
/* How often the watcher looks at the store (seconds). */
#define WATCH_INTERVAL 1
/* How long a read that failed while the store changed waits for the
 * watcher to show the store as it is (seconds). */
#define READ_AGAIN_WAIT 10

/* How long a failed read looks for a change of the store that its
 * generation mark does not show yet (newer_gen), and how often. */
#define SETTLE_WAIT 1.0
#define SETTLE_POLL 0.05

/* What the mount shows at one time (see the thread model). */
struct gen {
  struct store *store;          /* owned, read-only */
  struct catalog *cat;          /* owned */
  struct fetcher *fetch;        /* owned; NULL: missing blocks are EIO */
  uint64_t seq;                 /* 1 at mount, one more for each next */
  unsigned refs;                /* open images reading through it */
  struct gen *next;             /* on fs.retired */
};

/* An open file: what fi->fh points to. */
struct handle {
  struct layer *top;            /* an image's, borrowed from gen->cat */
  struct gen *gen;              /* one of its refs; NULL for text */
  char *text;                   /* a small file's bytes (owned) */
  size_t text_len;
};

struct fs {
  pthread_rwlock_t tree_lock;   /* guards the two below (thread model) */
  struct tree *tree;
  struct gen *cur;
  pthread_mutex_t gen_lock;     /* guards refs, retired, stamp, cur_seq */
  pthread_cond_t shown;         /* the watcher showed another generation */
  struct gen *retired;          /* replaced, freed at refs 0 */
  const struct fs_opts *o;
  uint64_t stamp;               /* the store's generation cur shows */
  uint64_t cur_seq;             /* cur's seq */
  bool load_failed;             /* the last reload failed (logged once) */
  struct fuse_session *se;
  pthread_mutex_t stop_lock;    /* guards stop and poked */
  pthread_cond_t stop_cond;
  bool stop;
  bool poked;                   /* look at the store now (read_again) */
  uid_t uid;
  gid_t gid;
  mode_t file_mode;             /* permission bits of images */
  mode_t dir_mode;              /* and of folders */
  pthread_mutex_t log_lock;     /* guards the two below */
  char last_error[256];         /* the last read error logged, and when */
  double last_error_time;
};

static struct fs *
fs_of (fuse_req_t req)
{
  return fuse_req_userdata (req);
}

static void
fill_attr (const struct fs *fs, uint64_t ino, const struct node *n,
           struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_nlink = n->nlink;
  st->st_uid = fs->uid;
  st->st_gid = fs->gid;
  st->st_mtime = st->st_ctime = st->st_atime = n->mtime;
  st->st_blksize = CHAIN_BLOCK_SIZE;
  switch (n->kind) {
  case NODE_DIR:
    st->st_mode = S_IFDIR | fs->dir_mode;
    break;
  case NODE_FILE:
    st->st_mode = S_IFREG | fs->file_mode;
    st->st_size = layer_meta (n->top)->size;
    st->st_blocks = DIV_ROUND_UP (st->st_size, 512);
    break;
  case NODE_LINK:
    st->st_mode = S_IFLNK | 0777;
    st->st_size = strlen (n->target);
    break;
  case NODE_TEXT:
    st->st_mode = S_IFREG | fs->file_mode;
    st->st_size = n->text_len;
    st->st_blocks = DIV_ROUND_UP (st->st_size, 512);
    break;
  }
}

/* An image's true st_blocks: its blocks that may hold data (holes.h),
 * so that du and sparse-aware copies see what the point holds.  Only
 * lookup and getattr ask (it loads the point's chain); readdir's
 * entries carry no sizes. */
static void
fill_blocks (const struct node *n, struct stat *st)
{
  if (n->kind == NODE_FILE)
    st->st_blocks = MIN (chain_data_blocks (n->top) * (CHAIN_BLOCK_SIZE / 512),
                         DIV_ROUND_UP ((uint64_t) st->st_size, 512));
}

static void
op_init (void *userdata, struct fuse_conn_info *conn)
{
  (void) userdata;
  conn->max_write = MAX_IO;
  conn->max_read = MAX_IO;
  /* The kernel offers its window (raised by raise_readahead when we
   * may) and takes the smaller of the two. */
  conn->max_readahead = READAHEAD_KB * 1024;
  /* Readahead counts as background work; the default 12 throttles it. */
  conn->max_background = 64;
}

/* The tree, held for reading until tree_done: replies are written
 * while it is held (see the thread model). */
static const struct tree *
tree_use (struct fs *fs)
{
  pthread_rwlock_rdlock (&fs->tree_lock);
  return fs->tree;
}

static void
tree_done (struct fs *fs)
{
  pthread_rwlock_unlock (&fs->tree_lock);
}

static void
op_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct fs *fs = fs_of (req);
  const struct tree *t = tree_use (fs);
  uint64_t ino = tree_lookup (t, parent, name);
  struct fuse_entry_param e;

  if (ino == 0)
    fuse_reply_err (req, ENOENT);
  else {
    memset (&e, 0, sizeof e);
    e.ino = ino;
    e.attr_timeout = e.entry_timeout = TIMEOUT;
    fill_attr (fs, ino, tree_node (t, ino), &e.attr);
    fill_blocks (tree_node (t, ino), &e.attr);
    fuse_reply_entry (req, &e);
  }
  tree_done (fs);
}

static void
op_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (tree_use (fs), ino);
  struct stat st;

  (void) fi;
  if (n == NULL)
    fuse_reply_err (req, ENOENT);
  else {
    fill_attr (fs, ino, n, &st);
    fill_blocks (n, &st);
    fuse_reply_attr (req, &st, TIMEOUT);
  }
  tree_done (fs);
}

static void
op_readlink (fuse_req_t req, fuse_ino_t ino)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (tree_use (fs), ino);

  if (n == NULL || n->kind != NODE_LINK)
    fuse_reply_err (req, EINVAL);
  else
    fuse_reply_readlink (req, n->target);
  tree_done (fs);
}

static void
op_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (tree_use (fs), ino);

  if (n == NULL)
    fuse_reply_err (req, ENOENT);
  else if (n->kind != NODE_DIR)
    fuse_reply_err (req, ENOTDIR);
  else {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open (req, fi);
  }
  tree_done (fs);
}

static void
op_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
            struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct tree *t = tree_use (fs);
  const struct node *n = tree_node (t, ino);
  char *buf;
  size_t used = 0;

  (void) fi;
  if (n == NULL || n->kind != NODE_DIR) {
    fuse_reply_err (req, ENOTDIR);
    tree_done (fs);
    return;
  }
  buf = malloc (size);
  if (buf == NULL) {
    fuse_reply_err (req, ENOMEM);
    tree_done (fs);
    return;
  }
  /* Offsets: 0 ".", 1 "..", 2+i the i-th entry. */
  for (; (size_t) off < n->nents + 2; off++) {
    struct stat st = { 0 };
    const char *name;
    size_t need;

    if (off < 2) {
      name = off == 0 ? "." : "..";
      st.st_mode = S_IFDIR;
      st.st_ino = ino;
    }
    else {
      const struct dirent_ref *e = &n->ents[off - 2];
      name = e->name;
      fill_attr (fs, e->ino, tree_node (t, e->ino), &st);
    }
    need = fuse_add_direntry (req, buf + used, size - used, name, &st,
                              off + 1);
    if (need > size - used)
      break;
    used += need;
  }
  fuse_reply_buf (req, buf, used);
  tree_done (fs);
  free (buf);
}

/* Make H (zeroed, with room for a NODE_TEXT's bytes) the handle of an
 * open N: an image holds the generation it reads through; a small
 * file's bytes are copied, as the tree they are in may go first.  Call
 * with the tree held. */
static void
handle_init (struct fs *fs, struct handle *h, const struct node *n)
{
  if (n->kind == NODE_TEXT) {
    memcpy (h->text, n->text, n->text_len);
    h->text_len = n->text_len;
    return;
  }
  h->top = n->top;
  h->gen = fs->cur;
  pthread_mutex_lock (&fs->gen_lock);
  h->gen->refs++;
  pthread_mutex_unlock (&fs->gen_lock);
}

static void
handle_free (struct fs *fs, struct handle *h)
{
  if (h->gen) {
    pthread_mutex_lock (&fs->gen_lock);
    h->gen->refs--;
    pthread_mutex_unlock (&fs->gen_lock);
  }
  free (h->text);
  free (h);
}

static void
op_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (tree_use (fs), ino);
  struct handle *h;

  if (n == NULL)
    fuse_reply_err (req, ENOENT);
  else if (n->kind != NODE_FILE && n->kind != NODE_TEXT)
    fuse_reply_err (req, EISDIR);
  else if ((fi->flags & O_ACCMODE) != O_RDONLY)
    fuse_reply_err (req, EROFS);
  else if ((h = calloc (1, sizeof *h)) == NULL
           || (n->kind == NODE_TEXT
               && (h->text = malloc (n->text_len + 1)) == NULL)) {
    free (h);
    fuse_reply_err (req, ENOMEM);
  }
  else {
    handle_init (fs, h, n);
    fi->fh = (uintptr_t) h;
    /* A point in time never changes: keep its pages across opens.
     * MD5SUMS grows as checks are recorded. */
    fi->keep_cache = n->kind == NODE_FILE;
    if (fuse_reply_open (req, fi) == -ENOENT)
      /* Interrupted: no release will come for it. */
      handle_free (fs, h);
  }
  tree_done (fs);
}

static void
op_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void) ino;
  handle_free (fs_of (req), (struct handle *) (uintptr_t) fi->fh);
  fuse_reply_err (req, 0);
}

/* Log a failed read once: the kernel retries a failed readahead page by
 * page, which would repeat the same line. */
static void
log_read_error (struct fs *fs)
{
  const char *msg = err_get ();
  double now = now_monotonic ();
  bool repeat;

  pthread_mutex_lock (&fs->log_lock);
  repeat = now < fs->last_error_time + 10
    && strcmp (fs->last_error, msg) == 0;
  if (!repeat) {
    snprintf (fs->last_error, sizeof fs->last_error, "%s", msg);
    fs->last_error_time = now;
  }
  pthread_mutex_unlock (&fs->log_lock);
  if (!repeat)
    log_error ("%s", msg);
}

/* Each FUSE thread reads into its own buffer, kept for the thread's
 * life: a fresh 1 MiB malloc per read is an mmap, 256 page faults and
 * an munmap each time, which costs more than the read. */
static _Thread_local char *tbuf;
static _Thread_local size_t tbuf_size;

static void
free_read_buffer (void *p)
{
  free (p);
}

static pthread_key_t tbuf_key;
static pthread_once_t tbuf_once = PTHREAD_ONCE_INIT;

static void
make_tbuf_key (void)
{
  /* The key's destructor frees a thread's buffer when it exits. */
  pthread_key_create (&tbuf_key, free_read_buffer);
}

static char *
read_buffer (size_t size)
{
  if (tbuf_size < size) {
    /* Page-aligned, so blocks fetched into it can be written to the
     * store with O_DIRECT. */
    char *p = aligned_alloc (4096, ROUND_UP (MAX (size, (size_t) MAX_IO), 4096));
    if (p == NULL)
      return NULL;
    free (tbuf);
    tbuf = p;
    tbuf_size = MAX (size, (size_t) MAX_IO);
    pthread_once (&tbuf_once, make_tbuf_key);
    pthread_setspecific (tbuf_key, tbuf);
  }
  return tbuf;
}

/* A read of a small file made with the tree (MD5SUMS). */
static void
read_text (fuse_req_t req, const struct handle *h, size_t size, off_t off)
{
  if (off < 0 || (uint64_t) off >= h->text_len)
    fuse_reply_buf (req, NULL, 0);
  else
    fuse_reply_buf (req, h->text + off, MIN (size, h->text_len - off));
}

/* Ask the watcher to look at the store now. */
static void
poke (struct fs *fs)
{
  pthread_mutex_lock (&fs->stop_lock);
  fs->poked = true;
  pthread_cond_signal (&fs->stop_cond);
  pthread_mutex_unlock (&fs->stop_lock);
}

static void
gen_put (struct fs *fs, struct gen *g)
{
  pthread_mutex_lock (&fs->gen_lock);
  g->refs--;
  pthread_mutex_unlock (&fs->gen_lock);
}

/* The generation shown now, with a ref (gen_put it), once it is newer
 * than SEQ: when the store changed since the one shown, the watcher is
 * asked to show it, and waited for until UNTIL (monotonic).  NULL when
 * the store has nothing newer, or the wait is over.  A writer moves
 * the store's generation just after a change, so one that seems not
 * to have moved is looked at again for SETTLE_WAIT: the read that
 * failed may have met the change before its mark. */
static struct gen *
newer_gen (struct fs *fs, uint64_t seq, double until)
{
  double settle = now_monotonic () + SETTLE_WAIT;

  for (;;) {
    struct gen *g;
    uint64_t at;
    bool same;
    struct timespec ts;

    tree_use (fs);
    g = fs->cur;
    pthread_mutex_lock (&fs->gen_lock);
    g->refs++;
    pthread_mutex_unlock (&fs->gen_lock);
    tree_done (fs);
    if (g->seq > seq)
      return g;
    if (store_generation (g->store, &at) == -1) {
      gen_put (fs, g);
      return NULL;
    }
    gen_put (fs, g);
    pthread_mutex_lock (&fs->gen_lock);
    same = at == fs->stamp;
    if (!same && now_monotonic () < until) {
      pthread_mutex_unlock (&fs->gen_lock);
      poke (fs);
      pthread_mutex_lock (&fs->gen_lock);
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_sec += WATCH_INTERVAL;
      if (fs->cur_seq <= seq)
        pthread_cond_timedwait (&fs->shown, &fs->gen_lock, &ts);
    }
    pthread_mutex_unlock (&fs->gen_lock);
    if (now_monotonic () >= until || (same && now_monotonic () >= settle))
      return NULL;
    if (same)
      sleep_seconds (SETTLE_POLL);
  }
}

/* A read through H's generation failed: if the store has changed since
 * H was opened (a prune replaced or removed layers its chain read from
 * before it had opened them), read the same point through the store as
 * it is now, waiting for the watcher to show it if need be (a prune
 * replaces layers one after another).  A point never changes, so any
 * generation that has it gives its bytes.  0, or -1 (the caller tells
 * its first failure). */
static int
read_again (struct fs *fs, const struct handle *h, char *buf, size_t size,
            off_t off)
{
  const char *snap = layer_meta (h->top)->snapshot;
  double until = now_monotonic () + READ_AGAIN_WAIT;
  uint64_t seq = h->gen->seq;
  struct catalog_point *p;
  struct gen *g;
  int r;

  while ((g = newer_gen (fs, seq, until)) != NULL) {
    p = catalog_find (g->cat, snap, NULL);
    r = p ? chain_read (p->layer, buf, size, off, g->fetch) : -1;
    seq = g->seq;
    gen_put (fs, g);
    if (p == NULL)
      return -1;                /* dropped: the first failure stands */
    if (r == 0) {
      log_debug ("snapshot %s: read again after the store changed", snap);
      return 0;
    }
  }
  return -1;
}

static void
op_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
         struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct handle *h = (const struct handle *) (uintptr_t) fi->fh;
  struct fetch_later later = { .n = 0 };
  struct fetcher *fetch;
  uint64_t fsize;
  char *buf;

  (void) ino;
  if (h->top == NULL) {
    read_text (req, h, size, off);
    return;
  }
  fetch = h->gen->fetch;
  fsize = layer_meta (h->top)->size;
  if ((uint64_t) off >= fsize) {
    fuse_reply_buf (req, NULL, 0);
    return;
  }
  size = MIN (size, fsize - off);
  buf = read_buffer (size);
  if (buf == NULL) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  /* Reply first, keep fetched blocks after: the store's write is then
   * off the reader's path. */
  if (chain_read_later (h->top, buf, size, off, fetch, &later) == 0)
    fuse_reply_buf (req, buf, size);
  else {
    int e = errno == EIO || errno == 0 ? EIO : errno;
    char why[512];

    /* The first failure is the one to tell, whatever trying again met. */
    snprintf (why, sizeof why, "%s", err_get ());
    if (read_again (fs, h, buf, size, off) == 0)
      fuse_reply_buf (req, buf, size);
    else {
      err_set (e, "%s", why);
      log_read_error (fs);
      fuse_reply_err (req, e);
    }
  }
  if (later.n > 0)
    fetcher_keep_later (fetch, &later);
}

/* SEEK_DATA and SEEK_HOLE (the kernel answers the other whences
 * itself), as lseek(2) says: the first data or hole at or after OFF,
 * OFF itself when it is in one, the end of the file as the last hole,
 * ENXIO from the end on.  Holes are whole 64 KiB blocks (holes.h). */
static void
op_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
          struct fuse_file_info *fi)
{
  const struct handle *h = (const struct handle *) (uintptr_t) fi->fh;
  uint64_t size, b;

  (void) ino;
  if (whence != SEEK_DATA && whence != SEEK_HOLE) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  size = h->top == NULL ? h->text_len : layer_meta (h->top)->size;
  if (off < 0 || (uint64_t) off >= size) {
    fuse_reply_err (req, ENXIO);
    return;
  }
  if (h->top == NULL) {
    fuse_reply_lseek (req, whence == SEEK_DATA ? (uint64_t) off : size);
    return;
  }
  b = chain_next_extent (h->top, (uint64_t) off >> CHAIN_BLOCK_SHIFT,
                         whence == SEEK_DATA);
  if (b >= layer_nblocks (h->top)) {
    if (whence == SEEK_DATA)
      fuse_reply_err (req, ENXIO);
    else
      fuse_reply_lseek (req, size);
    return;
  }
  fuse_reply_lseek (req, MAX ((uint64_t) off, b << CHAIN_BLOCK_SHIFT));
}

/* The extended attributes of an image, so that a script finds a point
 * by what it is rather than by parsing its names. */
static const char *const xattr_names[] = {
  "user.cbtfs.snapshot", "user.cbtfs.vdi", "user.cbtfs.vm",
  "user.cbtfs.vm-name", "user.cbtfs.time", "user.cbtfs.complete",
};

/* Whether image N has attribute I: not the VM's when its manifest
 * names no VM. */
static bool
xattr_has (const struct node *n, size_t i)
{
  return n->kind == NODE_FILE && i < ARRAY_SIZE (xattr_names)
    && !((i == 2 || i == 3) && layer_meta (n->top)->vm[0] == '\0');
}

/* Attribute I of image N, which has it, into *VALUE (malloc'd, caller
 * frees).  0, or -1 on ENOMEM. */
static int
xattr_value (const struct node *n, size_t i, char **value)
{
  const struct layer_meta *m = layer_meta (n->top);
  char t[32];

  *value = NULL;
  switch (i) {
  case 0: *value = strdup (m->snapshot); break;
  case 1: *value = strdup (m->disk); break;
  case 2: *value = strdup (m->vm); break;
  case 3: *value = strdup (m->vm_name ? m->vm_name : ""); break;
  case 4:
    catalog_time_name (m->time, t, sizeof t);
    *value = strdup (t);
    break;
  case 5:
    /* Whether every byte of the image is in the store now. */
    *value = strdup (chain_readable_now (n->top) ? "1" : "0");
    break;
  }
  return *value ? 0 : -1;
}

/* Reply with LEN bytes of BUF as getxattr and listxattr want: the
 * length alone when SIZE is 0, ERANGE when SIZE is too small. */
static void
reply_xattr (fuse_req_t req, const char *buf, size_t len, size_t size)
{
  if (size == 0)
    fuse_reply_xattr (req, len);
  else if (size < len)
    fuse_reply_err (req, ERANGE);
  else
    fuse_reply_buf (req, buf, len);
}

static void
getxattr_of (fuse_req_t req, const struct node *n, const char *name,
             size_t size)
{
  CLEANUP_FREE char *value = NULL;

  if (n == NULL) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  for (size_t i = 0; i < ARRAY_SIZE (xattr_names); i++)
    if (strcmp (name, xattr_names[i]) == 0 && xattr_has (n, i)) {
      if (xattr_value (n, i, &value) == -1)
        fuse_reply_err (req, ENOMEM);
      else
        reply_xattr (req, value, strlen (value), size);
      return;
    }
  fuse_reply_err (req, ENODATA);
}

static void
op_getxattr (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
  struct fs *fs = fs_of (req);

  getxattr_of (req, tree_node (tree_use (fs), ino), name, size);
  tree_done (fs);
}

static void
listxattr_of (fuse_req_t req, const struct node *n, size_t size)
{
  char buf[256];
  size_t len = 0;

  if (n == NULL) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  /* Each name with its NUL (all fit in BUF). */
  for (size_t i = 0; i < ARRAY_SIZE (xattr_names); i++)
    if (xattr_has (n, i)) {
      memcpy (buf + len, xattr_names[i], strlen (xattr_names[i]) + 1);
      len += strlen (xattr_names[i]) + 1;
    }
  reply_xattr (req, buf, len, size);
}

static void
op_listxattr (fuse_req_t req, fuse_ino_t ino, size_t size)
{
  struct fs *fs = fs_of (req);

  listxattr_of (req, tree_node (tree_use (fs), ino), size);
  tree_done (fs);
}

static const struct fuse_lowlevel_ops ops = {
  .init = op_init,
  .lookup = op_lookup,
  .getattr = op_getattr,
  .readlink = op_readlink,
  .opendir = op_opendir,
  .readdir = op_readdir,
  .open = op_open,
  .read = op_read,
  .release = op_release,
  .lseek = op_lseek,
  .getxattr = op_getxattr,
  .listxattr = op_listxattr,
};

/* Buffered readers send FUSE reads as big as the kernel's readahead
 * window for the mount, 128 KiB by default; a bigger window lets the
 * kernel ask for several 1 MiB reads at once, which is what makes
 * sequential reads (and lazy fetches) fast (docs/performance.md,
 * "Readahead").  Only root may set it; elsewhere this quietly does
 * nothing.  The mount's device comes from mountinfo: stat on the mount
 * point would wait for the loop that is not running yet. */
static void
raise_readahead (const char *mountpoint, unsigned kb)
{
  CLEANUP_FREE char *want = realpath (mountpoint, NULL), *line = NULL;
  char dev[32] = "", path[128];
  size_t cap = 0;
  FILE *f;
  int fd;

  if (want == NULL || (f = fopen ("/proc/self/mountinfo", "re")) == NULL)
    return;
  while (getline (&line, &cap, f) != -1) {
    char d[32];
    int mp = 0, end = 0;
    /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT …"; a path with spaces is
     * written \040, which never equals a realpath with spaces anyway. */
    if (sscanf (line, "%*d %*d %31s %*s %n%*s%n", d, &mp, &end) == 1
        && end > mp && (size_t) (end - mp) == strlen (want)
        && strncmp (line + mp, want, end - mp) == 0)
      snprintf (dev, sizeof dev, "%s", d);        /* the last one wins */
  }
  fclose (f);
  if (dev[0] == '\0')
    return;
  snprintf (path, sizeof path, "/sys/class/bdi/%s/read_ahead_kb", dev);
  fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    char v[16];
    int n = snprintf (v, sizeof v, "%u", kb);
    if (write (fd, v, n) != n)
      log_debug ("cannot set %s: %m", path);
    close (fd);
  }
}

/* ---- generations ------------------------------------------------------ */

/* Load the store as it is now into a new generation, *STAMP its
 * generation number (read first: a change during the load is seen by
 * the next look).  NULL with err_*. */
static struct gen *
gen_load (const struct fs_opts *o, uint64_t *stamp)
{
  struct gen *g = calloc (1, sizeof *g);

  if (g == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  /* Only manifests now: each layer's set and index are read when a
   * read first needs them, so loading thousands of layers is quick. */
  g->store = store_open (o->store, false);
  if (g->store == NULL || store_generation (g->store, stamp) == -1)
    goto err;
  g->cat = catalog_load (g->store, CATALOG_LAZY | CATALOG_SHOWN);
  if (g->cat == NULL)
    goto err;
  if (o->targets
      && (g->fetch = fetcher_new (o->targets, &o->fetch_opts)) == NULL) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  return g;

 err:
  catalog_free (g->cat);
  store_close (g->store);
  free (g);
  return NULL;
}

/* Free G: what it fetched made durable first.  0, or -1 (logged) if
 * that failed. */
static int
gen_free (struct gen *g)
{
  int r = 0;

  if (g == NULL)
    return 0;
  if (fetcher_free (g->fetch) == -1) {
    log_error ("%s", err_get ());
    r = -1;
  }
  catalog_free (g->cat);
  store_close (g->store);
  free (g);
  return r;
}

/* Free the replaced generations no open image holds any longer. */
static int
free_idle (struct fs *fs)
{
  struct gen *idle = NULL, **p;
  int r = 0;

  pthread_mutex_lock (&fs->gen_lock);
  for (p = &fs->retired; *p;) {
    struct gen *g = *p;
    if (g->refs == 0) {
      *p = g->next;
      g->next = idle;
      idle = g;
    }
    else
      p = &g->next;
  }
  pthread_mutex_unlock (&fs->gen_lock);
  while (idle) {
    struct gen *g = idle;
    idle = g->next;
    if (gen_free (g) == -1)
      r = -1;
  }
  return r;
}

static void
forget_inode (void *opaque, uint64_t ino)
{
  /* Attributes, and a folder's cached listing with its pages. */
  fuse_lowlevel_notify_inval_inode (opaque, ino, 0, 0);
}

static void
forget_entry (void *opaque, uint64_t dir, const char *name)
{
  fuse_lowlevel_notify_inval_entry (opaque, dir, name, strlen (name));
}

/* Show the store as it is now if it changed since fs->cur: the watcher's
 * work (the thread model says why it needs no lock to read). */
static void
follow (struct fs *fs)
{
  const struct tree_changes cb = { forget_inode, forget_entry, fs->se };
  struct tree *t, *old_tree;
  struct gen *g, *old;
  uint64_t now;

  if (store_generation (fs->cur->store, &now) == -1
      || now == fs->stamp)
    goto done;
  g = gen_load (fs->o, &now);
  if (g)
    g->seq = fs->cur->seq + 1;
  t = g ? tree_build (g->cat, fs->tree) : NULL;
  if (t == NULL) {
    gen_free (g);
    goto done;
  }
  pthread_rwlock_wrlock (&fs->tree_lock);
  old_tree = fs->tree;
  old = fs->cur;
  fs->tree = t;
  fs->cur = g;
  pthread_rwlock_unlock (&fs->tree_lock);
  fs->load_failed = false;
  log_debug ("the store changed: showing it again");
  tree_diff (old_tree, t, &cb);
  tree_free (old_tree);
  pthread_mutex_lock (&fs->gen_lock);
  old->next = fs->retired;
  fs->retired = old;
  fs->stamp = now;
  fs->cur_seq = g->seq;
  pthread_cond_broadcast (&fs->shown);
  pthread_mutex_unlock (&fs->gen_lock);
  return;

 done:
  /* Logged once until it works again; the next look tries again. */
  if (err_get ()[0] && !fs->load_failed) {
    log_error ("cannot show the store's changes: %s", err_get ());
    fs->load_failed = true;
  }
}

static void *
watcher (void *arg)
{
  struct fs *fs = arg;

  double pause = WATCH_INTERVAL;

  pthread_mutex_lock (&fs->stop_lock);
  while (!fs->stop) {
    struct timespec ts;
    double t;

    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t) pause;
    ts.tv_nsec += (long) ((pause - (time_t) pause) * 1e9);
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    if (!fs->poked)
      pthread_cond_timedwait (&fs->stop_cond, &fs->stop_lock, &ts);
    fs->poked = false;
    if (fs->stop)
      break;
    pthread_mutex_unlock (&fs->stop_lock);
    err_clear ();
    t = now_monotonic ();
    follow (fs);
    /* A store of 100 000 layers loads in about a second: while backups
     * change it, look at most a third of the time, not all of it. */
    pause = MAX ((double) WATCH_INTERVAL, 2 * (now_monotonic () - t));
    free_idle (fs);
    pthread_mutex_lock (&fs->stop_lock);
  }
  pthread_mutex_unlock (&fs->stop_lock);
  return NULL;
}

/* Serve until unmounted, with the watcher beside the request threads. */
static int
serve (struct fs *fs)
{
  struct fuse_loop_config *cfg = fuse_loop_cfg_create ();
  pthread_t w;
  bool watching;
  int status;

  if (cfg == NULL)
    return 1;
  fuse_loop_cfg_set_max_threads (cfg, MAX_THREADS);
  watching = pthread_create (&w, NULL, watcher, fs) == 0;
  if (!watching)
    log_error ("cannot follow the store: it is shown as it was at mount");
  status = fuse_session_loop_mt (fs->se, cfg) == 0 ? 0 : 1;
  if (watching) {
    pthread_mutex_lock (&fs->stop_lock);
    fs->stop = true;
    pthread_cond_signal (&fs->stop_cond);
    pthread_mutex_unlock (&fs->stop_lock);
    pthread_join (w, NULL);
  }
  fuse_loop_cfg_destroy (cfg);
  return status;
}

/* Free every generation: unmounted, nothing reads any more. */
static int
free_all (struct fs *fs)
{
  int r = 0;

  pthread_mutex_lock (&fs->gen_lock);
  for (struct gen *g = fs->retired; g; g = g->next)
    g->refs = 0;
  pthread_mutex_unlock (&fs->gen_lock);
  if (free_idle (fs) == -1 || gen_free (fs->cur) == -1)
    r = -1;
  tree_free (fs->tree);
  return r;
}

int
fs_run (const struct fs_opts *o)
{
  struct fs fs = {
    .o = o, .uid = o->uid, .gid = o->gid,
    .file_mode = o->mode & 0444,
    /* Each read bit brings its search bit: r-- → r-x. */
    .dir_mode = (o->mode & 0444) | (o->mode & 0444) >> 2,
    .gen_lock = PTHREAD_MUTEX_INITIALIZER,
    .stop_lock = PTHREAD_MUTEX_INITIALIZER,
    .stop_cond = PTHREAD_COND_INITIALIZER,
    .shown = PTHREAD_COND_INITIALIZER,
    .log_lock = PTHREAD_MUTEX_INITIALIZER,
  };
  pthread_rwlockattr_t rwa;
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_session *se = NULL;
  char *base = NULL;
  int status = 1;

  /* Readers come all the time; the watcher must not wait them all out. */
  pthread_rwlockattr_init (&rwa);
  pthread_rwlockattr_setkind_np (&rwa,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&fs.tree_lock, &rwa);
  pthread_rwlockattr_destroy (&rwa);
  fs.cur = gen_load (o, &fs.stamp);
  if (fs.cur)
    fs.cur->seq = fs.cur_seq = 1;
  fs.tree = fs.cur ? tree_build (fs.cur->cat, NULL) : NULL;
  if (fs.tree == NULL) {
    log_error ("%s", err_get ());
    goto out;
  }
  /* Commas would split the option; fsname is informational anyway. */
  if (asprintf (&base, "ro,default_permissions,max_read=%u,subtype=cbtfs,"
                "fsname=%s", MAX_IO, o->fsname) == -1) {
    base = NULL;
    goto out;
  }
  for (char *p = strstr (base, "fsname=") + 7; *p; p++)
    if (*p == ',' || *p == ' ')
      *p = '_';
  if (fuse_opt_add_arg (&args, "cbtfs") == -1
      || fuse_opt_add_arg (&args, "-o") == -1
      || fuse_opt_add_arg (&args, base) == -1
      || (o->fuse_opts && (fuse_opt_add_arg (&args, "-o") == -1
                           || fuse_opt_add_arg (&args, o->fuse_opts) == -1))
      || (o->debug && fuse_opt_add_arg (&args, "-d") == -1))
    goto out;

  se = fuse_session_new (&args, &ops, sizeof ops, &fs);
  if (se == NULL) {
    log_error ("cannot start FUSE (bad -o option?)");
    goto out;
  }
  if (fuse_set_signal_handlers (se) == -1)
    goto out;
  if (fuse_session_mount (se, o->mountpoint) == -1) {
    log_error ("cannot mount on %s", o->mountpoint);
    goto out_handlers;
  }
  raise_readahead (o->mountpoint, READAHEAD_KB);
  /* The mount is in place: the parent may now return to its caller. */
  if (!o->foreground)
    log_use_syslog ();
  if (fuse_daemonize (o->foreground) == -1)
    goto out_unmount;
  fs.se = se;
  status = serve (&fs);
 out_unmount:
  fuse_session_unmount (se);
 out_handlers:
  fuse_remove_signal_handlers (se);
 out:
  if (se)
    fuse_session_destroy (se);
  fuse_opt_free_args (&args);
  free (base);
  /* Unmounted: make what was fetched durable before the layers go. */
  if (free_all (&fs) == -1)
    status = 1;
  pthread_rwlock_destroy (&fs.tree_lock);
  return status;
}
