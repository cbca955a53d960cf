/* cbtfs: the read-only FUSE filesystem over a catalog.
 *
 * NOTES ON THE THREAD MODEL
 * fuse_session_loop_mt runs up to MAX_THREADS request threads.  The
 * tree and catalog are immutable while mounted, so lookups need no
 * lock; reads go to chain_read, which is reentrant (layers lock
 * themselves; the fetcher has its own lock and flusher thread, started
 * on first use).  fs.log_lock only guards the repeated-error filter.
 * No thread exists before fuse_daemonize forks.
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
#include <unistd.h>

#include "../chain/holes.h"
#include "../chain/read.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "fs.h"
#include "tree.h"

#define MAX_THREADS 16
/* Requests up to 1 MiB: libfuse derives the kernel's max_pages from
 * max_write, even on a read-only filesystem (style-and-perf.md B1). */
#define MAX_IO (1u << 20)
/* The kernel's readahead window for the mount (KiB). */
#define READAHEAD_KB 8192
/* Images never change while mounted: let the kernel cache forever. */
#define TIMEOUT 86400.0

struct fs {
  struct tree *tree;
  struct fetcher *fetch;        /* borrowed; NULL: missing blocks are EIO */
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

static void
op_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct fs *fs = fs_of (req);
  uint64_t ino = tree_lookup (fs->tree, parent, name);
  struct fuse_entry_param e;

  if (ino == 0) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  memset (&e, 0, sizeof e);
  e.ino = ino;
  e.attr_timeout = e.entry_timeout = TIMEOUT;
  fill_attr (fs, ino, tree_node (fs->tree, ino), &e.attr);
  fill_blocks (tree_node (fs->tree, ino), &e.attr);
  fuse_reply_entry (req, &e);
}

static void
op_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (fs->tree, ino);
  struct stat st;

  (void) fi;
  if (n == NULL) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  fill_attr (fs, ino, n, &st);
  fill_blocks (n, &st);
  fuse_reply_attr (req, &st, TIMEOUT);
}

static void
op_readlink (fuse_req_t req, fuse_ino_t ino)
{
  const struct node *n = tree_node (fs_of (req)->tree, ino);

  if (n == NULL || n->kind != NODE_LINK)
    fuse_reply_err (req, EINVAL);
  else
    fuse_reply_readlink (req, n->target);
}

static void
op_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  const struct node *n = tree_node (fs_of (req)->tree, ino);

  if (n == NULL)
    fuse_reply_err (req, ENOENT);
  else if (n->kind != NODE_DIR)
    fuse_reply_err (req, ENOTDIR);
  else {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open (req, fi);
  }
}

static void
op_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
            struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (fs->tree, ino);
  char *buf;
  size_t used = 0;

  (void) fi;
  if (n == NULL || n->kind != NODE_DIR) {
    fuse_reply_err (req, ENOTDIR);
    return;
  }
  buf = malloc (size);
  if (buf == NULL) {
    fuse_reply_err (req, ENOMEM);
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
      fill_attr (fs, e->ino, tree_node (fs->tree, e->ino), &st);
    }
    need = fuse_add_direntry (req, buf + used, size - used, name, &st,
                              off + 1);
    if (need > size - used)
      break;
    used += need;
  }
  fuse_reply_buf (req, buf, used);
  free (buf);
}

static void
op_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  const struct node *n = tree_node (fs_of (req)->tree, ino);

  if (n == NULL)
    fuse_reply_err (req, ENOENT);
  else if (n->kind != NODE_FILE && n->kind != NODE_TEXT)
    fuse_reply_err (req, EISDIR);
  else if ((fi->flags & O_ACCMODE) != O_RDONLY)
    fuse_reply_err (req, EROFS);
  else {
    /* A point in time never changes: keep its pages across opens.
     * MD5SUMS grows as checks are recorded. */
    fi->keep_cache = n->kind == NODE_FILE;
    fuse_reply_open (req, fi);
  }
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
read_text (fuse_req_t req, const struct node *n, size_t size, off_t off)
{
  if (off < 0 || (uint64_t) off >= n->text_len)
    fuse_reply_buf (req, NULL, 0);
  else
    fuse_reply_buf (req, n->text + off, MIN (size, n->text_len - off));
}

static void
op_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
         struct fuse_file_info *fi)
{
  struct fs *fs = fs_of (req);
  const struct node *n = tree_node (fs->tree, ino);
  struct fetch_later later = { .n = 0 };
  uint64_t fsize;
  char *buf;

  (void) fi;
  if (n != NULL && n->kind == NODE_TEXT) {
    read_text (req, n, size, off);
    return;
  }
  if (n == NULL || n->kind != NODE_FILE) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  fsize = layer_meta (n->top)->size;
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
  if (chain_read_later (n->top, buf, size, off, fs->fetch, &later) == -1) {
    int e = errno == EIO || errno == 0 ? EIO : errno;
    log_read_error (fs);
    fuse_reply_err (req, e);
  }
  else
    fuse_reply_buf (req, buf, size);
  if (later.n > 0)
    fetcher_keep_later (fs->fetch, &later);
}

/* SEEK_DATA and SEEK_HOLE (the kernel answers the other whences
 * itself), as lseek(2) says: the first data or hole at or after OFF,
 * OFF itself when it is in one, the end of the file as the last hole,
 * ENXIO from the end on.  Holes are whole 64 KiB blocks (holes.h). */
static void
op_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
          struct fuse_file_info *fi)
{
  const struct node *n = tree_node (fs_of (req)->tree, ino);
  uint64_t size, b;

  (void) fi;
  if (n == NULL || (n->kind != NODE_FILE && n->kind != NODE_TEXT)
      || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  size = n->kind == NODE_TEXT ? n->text_len : layer_meta (n->top)->size;
  if (off < 0 || (uint64_t) off >= size) {
    fuse_reply_err (req, ENXIO);
    return;
  }
  if (n->kind == NODE_TEXT) {
    fuse_reply_lseek (req, whence == SEEK_DATA ? (uint64_t) off : size);
    return;
  }
  b = chain_next_extent (n->top, (uint64_t) off >> CHAIN_BLOCK_SHIFT,
                         whence == SEEK_DATA);
  if (b >= layer_nblocks (n->top)) {
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
op_getxattr (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
  const struct node *n = tree_node (fs_of (req)->tree, ino);
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
op_listxattr (fuse_req_t req, fuse_ino_t ino, size_t size)
{
  const struct node *n = tree_node (fs_of (req)->tree, ino);
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

static const struct fuse_lowlevel_ops ops = {
  .init = op_init,
  .lookup = op_lookup,
  .getattr = op_getattr,
  .readlink = op_readlink,
  .opendir = op_opendir,
  .readdir = op_readdir,
  .open = op_open,
  .read = op_read,
  .lseek = op_lseek,
  .getxattr = op_getxattr,
  .listxattr = op_listxattr,
};

/* Buffered readers send FUSE reads as big as the kernel's readahead
 * window for the mount, 128 KiB by default; a bigger window lets the
 * kernel ask for several 1 MiB reads at once, which is what makes
 * sequential reads (and lazy fetches) fast (style-and-perf.md B1).  Only
 * root may set it; elsewhere this quietly does nothing.  The mount's
 * device comes from mountinfo: stat on the mount point would wait for
 * the loop that is not running yet. */
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

int
fs_run (const struct catalog *cat, const struct fs_opts *o)
{
  struct fs fs = {
    .fetch = o->fetch, .uid = o->uid, .gid = o->gid,
    .file_mode = o->mode & 0444,
    /* Each read bit brings its search bit: r-- → r-x. */
    .dir_mode = (o->mode & 0444) | (o->mode & 0444) >> 2,
    .log_lock = PTHREAD_MUTEX_INITIALIZER,
  };
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_session *se = NULL;
  struct fuse_loop_config *cfg = NULL;
  char *base = NULL;
  int status = 1;

  fs.tree = tree_build (cat);
  if (fs.tree == NULL) {
    log_error ("%s", err_get ());
    return 1;
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
  cfg = fuse_loop_cfg_create ();
  if (cfg == NULL)
    goto out_unmount;
  fuse_loop_cfg_set_max_threads (cfg, MAX_THREADS);
  status = fuse_session_loop_mt (se, cfg) == 0 ? 0 : 1;
  fuse_loop_cfg_destroy (cfg);
 out_unmount:
  fuse_session_unmount (se);
 out_handlers:
  fuse_remove_signal_handlers (se);
 out:
  if (se)
    fuse_session_destroy (se);
  fuse_opt_free_args (&args);
  free (base);
  tree_free (fs.tree);
  return status;
}
