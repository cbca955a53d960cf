/* cbtfs: the directory backend: a store is a directory (posix.h, FORMAT.md).
 *
 * Thread model: the store's fields are set at open and only read
 * after, except lock_fd and base.id, which store_lock (one thread, the
 * locking command's) sets before any other thread uses the store.
 * Everything else is a system call on paths, safe from any thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "holder.h"
#include "posix.h"

static const char marker_name[] = STORE_MARKER;

static int
mkdir_private (const char *path)
{
  if (mkdir (path, 0700) == -1 && errno != EEXIST) {
    err_sys (errno, "mkdir %s", path);
    return -1;
  }
  return 0;
}

static bool
dir_is_empty (const char *path)
{
  DIR *d = opendir (path);
  struct dirent *e;
  bool empty = true;

  if (d == NULL)
    return false;
  while ((e = readdir (d)) != NULL)
    if (strcmp (e->d_name, ".") && strcmp (e->d_name, "..")) {
      empty = false;
      break;
    }
  closedir (d);
  return empty;
}

/* Parse the marker file MARKER of the store at PATH: its format (into
 * *FORMAT) and, if it has one, its id (into ID, else ""). */
static int
check_marker (const char *path, const char *marker, int *format,
              char id[UUID_LEN + 1])
{
  CLEANUP_FREE char *text = read_file (marker, 4096, NULL);

  if (text == NULL) {
    if (errno == ENOENT) {
      err_set (ENOENT, "%s is not a cbtfs store (no %s file)", path,
               marker_name);
      err_set_class (ERR_CONFIG);       /* the STORE given names none */
    }
    else
      err_sys (errno, "%s", marker);
    return -1;
  }
  return store_marker_parse (path, text, format, id);
}

/* Write the marker of a store of FORMAT with id ID (atomically). */
static int
write_marker (const char *marker, int format, const char *id)
{
  char text[64 + UUID_LEN];
  size_t n = store_marker_format (format, id, text, sizeof text);

  return write_file_atomic (marker, text, n, 0600);
}

static int
create_store (const char *path, const char *marker, char id[UUID_LEN + 1])
{
  CLEANUP_FREE char *parent = dir_of (path);

  if (parent == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (mkdir_private (path) == -1)
    return -1;
  if (!dir_is_empty (path)) {
    err_set (EEXIST, "%s is not empty and not a cbtfs store; refusing to "
             "use it", path);
    return -1;
  }
  /* The store holds whole disks: only its owner may read it. */
  if (chmod (path, 0700) == -1) {
    err_sys (errno, "chmod %s", path);
    return -1;
  }
  /* Its name in its parent must last as long as what goes in it. */
  if (fsync_dir (parent) == -1 || make_uuid (id) == -1)
    return -1;
  return write_marker (marker, STORE_FORMAT, id);
}

static void posix_close (struct store *s);

static struct store *
posix_open (const char *path, bool create)
{
  struct posix_store *ps = calloc (1, sizeof *ps);
  CLEANUP_FREE char *marker = NULL;

  if (ps == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  ps->base.be = &store_posix;
  ps->lock_fd = -1;
  if ((ps->base.where = strdup (path)) == NULL
      || (ps->path = strdup (path)) == NULL
      || asprintf (&ps->disks_dir, "%s/disks", path) == -1
      || asprintf (&ps->tmp_dir, "%s/tmp", path) == -1
      || asprintf (&marker, "%s/%s", path, marker_name) == -1) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  if (access (marker, F_OK) == -1 && errno == ENOENT && create) {
    if (create_store (path, marker, ps->base.id) == -1)
      goto err;
    ps->base.format = STORE_FORMAT;
  }
  else if (check_marker (path, marker, &ps->base.format, ps->base.id) == -1)
    goto err;
  if (create && (mkdir_private (ps->disks_dir) == -1
                 || mkdir_private (ps->tmp_dir) == -1
                 || fsync_dir (path) == -1))
    goto err;
  return &ps->base;

 err:
  posix_close (&ps->base);
  return NULL;
}

static void
posix_close (struct store *s)
{
  struct posix_store *ps = posix_of (s);

  if (ps->lock_fd >= 0) {
    /* Still holding the lock: empty the record, which would otherwise
     * name a process that is gone to those refused between the next
     * holder's flock and its own record. */
    if (ftruncate (ps->lock_fd, 0) == -1) {
      /* Only those messages' detail is lost. */
    }
    close (ps->lock_fd);
  }
  free (ps->base.where);
  free (ps->path);
  free (ps->disks_dir);
  free (ps->tmp_dir);
  free (ps);
}

/* Remove DIR and the plain files in it (a crashed writer's stage). */
void
posix_remove_stage (const char *dir)
{
  DIR *d = opendir (dir);
  struct dirent *e;

  if (d == NULL)
    return;
  while ((e = readdir (d)) != NULL)
    if (strcmp (e->d_name, ".") && strcmp (e->d_name, ".."))
      unlinkat (dirfd (d), e->d_name, 0);
  closedir (d);
  rmdir (dir);
}

/* ---- the store lock ----------------------------------------------------
 * STORE/lock is flock(2)ed by the holder, which then writes its record
 * into it (FORMAT.md): "pid N\ncommand WORD\nsince UNIX-TIME\n".  The
 * record is only for the messages of those it keeps waiting: a reader
 * takes the whole lines it understands and ignores the rest, since a
 * crash, a holder that is still writing or another program may leave
 * anything there. */

/* How often a waiting store_lock tries again.  flock(2) has no
 * timeout.  The usual way to give it one, a SIGALRM interrupting a
 * blocking flock, does not fit here: the handler would be the whole
 * process's, and the signal goes to any thread that does not block
 * it, so in a process with libcurl's or libnbd's threads it may hit
 * one of those and leave flock blocked.  A try every tenth of a second
 * costs nothing next to a wait of minutes. */
#define LOCK_POLL 0.1

/* Read the record in the lock file open as FD into *H; a record
 * naming a process that no longer exists is a crashed holder's (the
 * one holding the lock now has not written its own): nobody. */
static void
read_holder (int fd, struct store_holder *h)
{
  char buf[512];
  ssize_t n = full_pread (fd, buf, sizeof buf, 0);

  store_holder_parse (buf, n > 0 ? (size_t) n : 0, h);
  if (store_holder_gone (h))
    memset (h, 0, sizeof *h);
}

/* Who holds the lock file open as FD, for a message (holder.h). */
static void
describe_holder (int fd, char *buf, size_t len)
{
  struct store_holder h;

  read_holder (fd, &h);
  store_holder_describe (&h, buf, len);
}

/* Write this process's record as the holder WHO into the lock file
 * open as FD (holding the lock).  Emptied first, so that a reader
 * meanwhile sees a prefix of the new record, never its head followed
 * by an older record's tail.  A record that cannot be written only
 * makes others' messages vaguer: warn, and hold the lock all the
 * same. */
static void
write_holder (int fd, const char *path, const char *who)
{
  char text[256];
  size_t n = store_holder_format (who, text, sizeof text);

  if (ftruncate (fd, 0) == -1 || full_pwrite (fd, text, n, 0) == -1)
    log_warn ("%s: cannot record who holds the lock: %s", path,
              strerror (errno));
}

static int
posix_lock (struct store *s, const char *who, double wait)
{
  struct posix_store *ps = posix_of (s);
  CLEANUP_FREE char *path = NULL;
  char holder[128];
  double deadline, left;
  bool said = false;
  DIR *d;
  struct dirent *e;
  int fd;

  if (asprintf (&path, "%s/lock", ps->path) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1) {
    err_sys (errno, "open %s", path);
    return -1;
  }
  deadline = now_monotonic () + wait;
  while (flock (fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EINTR)
      continue;
    if (errno != EWOULDBLOCK) {
      err_sys (errno, "lock %s", path);
      goto err;
    }
    left = deadline - now_monotonic ();
    if (left <= 0) {
      /* Read now: the holder may have changed while we waited. */
      describe_holder (fd, holder, sizeof holder);
      if (wait > 0)
        err_set (EWOULDBLOCK, "the store %s is in use by %s; gave up after "
                 "%.9g s", ps->path, holder, wait);
      else
        err_set (EWOULDBLOCK, "the store %s is in use by %s", ps->path,
                 holder);
      goto err;
    }
    if (!said) {
      describe_holder (fd, holder, sizeof holder);
      log_info ("the store %s is in use by %s; waiting up to %.9g s",
                ps->path, holder, wait);
      said = true;
    }
    sleep_seconds (left < LOCK_POLL ? left : LOCK_POLL);
  }
  ps->lock_fd = fd;
  write_holder (fd, path, who);

  /* A store made before ids gets one now, while nobody else writes. */
  if (s->id[0] == '\0') {
    CLEANUP_FREE char *marker = NULL;
    char id[UUID_LEN + 1];
    if (asprintf (&marker, "%s/%s", ps->path, marker_name) == -1) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    if (make_uuid (id) == -1
        || write_marker (marker, s->format, id) == -1)
      return -1;
    memcpy (s->id, id, sizeof id);
  }

  /* Nobody else writes now: what tmp/ holds is a crashed run's. */
  d = opendir (ps->tmp_dir);
  if (d) {
    while ((e = readdir (d)) != NULL) {
      CLEANUP_FREE char *p = NULL;
      if (e->d_name[0] == '.' || asprintf (&p, "%s/%s", ps->tmp_dir,
                                           e->d_name) == -1)
        continue;
      posix_remove_stage (p);
    }
    closedir (d);
  }
  return 0;

 err:
  close (fd);
  return -1;
}

static int
posix_owner (struct store *s, uid_t *uid, gid_t *gid, mode_t *mode)
{
  struct stat st;

  if (stat (posix_of (s)->path, &st) == -1) {
    err_sys (errno, "store %s", posix_of (s)->path);
    return -1;
  }
  *uid = st.st_uid;
  *gid = st.st_gid;
  *mode = st.st_mode & 07777;
  return 0;
}

char *
posix_disk_path (struct store *s, const char *disk, const char *name)
{
  char *p;
  int r = name ? asprintf (&p, "%s/%s/%s", posix_of (s)->disks_dir, disk,
                           name)
    : asprintf (&p, "%s/%s", posix_of (s)->disks_dir, disk);

  if (r == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return p;
}

static int
posix_disk_prepare (struct store *s, const char *disk)
{
  CLEANUP_FREE char *p = posix_disk_path (s, disk, NULL);

  if (p == NULL)
    return -1;
  /* Also when it exists: a crash may have left it made but its name
   * not yet durable. */
  if (mkdir_private (p) == -1)
    return -1;
  return fsync_dir (posix_of (s)->disks_dir);
}

static bool
uuid_name (char *name)
{
  return is_uuid (name);
}

/* The entries of DIR that KEEP accepts (it may rewrite the name it is
 * given), sorted; none when DIR does not exist. */
static int
list_dir (const char *dir, bool (*keep) (char *name), char ***names,
          size_t *n)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  char **v = NULL, name[NAME_MAX + 1];
  size_t len = 0, cap = 0;

  *names = NULL;
  *n = 0;
  if (d == NULL) {
    if (errno == ENOENT)
      return 0;
    err_sys (errno, "open %s", dir);
    return -1;
  }
  while ((e = readdir (d)) != NULL) {
    snprintf (name, sizeof name, "%s", e->d_name);
    if (!keep (name))
      continue;                 /* stages, notes, editor droppings, … */
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      char **nv = realloc (v, ncap * sizeof *nv);
      if (nv == NULL)
        goto nomem;
      v = nv;
      cap = ncap;
    }
    if ((v[len] = strdup (name)) == NULL)
      goto nomem;
    len++;
  }
  closedir (d);
  store_names_sort (v, len);
  *names = v;
  *n = len;
  return 0;

 nomem:
  closedir (d);
  store_names_free (v, len);
  err_set (ENOMEM, "out of memory");
  return -1;
}

static int
posix_list (struct store *s, const char *disk, char ***names, size_t *n)
{
  CLEANUP_FREE char *dir = NULL;

  if (disk == NULL)
    return list_dir (posix_of (s)->disks_dir, uuid_name, names, n);
  dir = posix_disk_path (s, disk, NULL);
  if (dir == NULL)
    return -1;
  return list_dir (dir, uuid_name, names, n);
}

static int
posix_has_layer (struct store *s, const char *disk, const char *snapshot)
{
  CLEANUP_FREE char *p = posix_disk_path (s, disk, snapshot);
  struct stat st;

  if (p == NULL)
    return -1;
  if (lstat (p, &st) == 0)
    return 1;
  if (errno == ENOENT)
    return 0;
  err_sys (errno, "%s", p);
  return -1;
}

static char *
posix_note_read (struct store *s, const char *disk, const char *note,
                 size_t max, size_t *len)
{
  CLEANUP_FREE char *dir = posix_disk_path (s, disk, NULL);

  /* What an appender adds meanwhile may be cut short: callers check
   * each record. */
  return dir ? posix_read_in (dir, note, max, len) : NULL;
}

static int
posix_note_append (struct store *s, const char *disk, const char *note,
                   const void *rec, size_t len, bool durable)
{
  CLEANUP_FREE char *p = posix_disk_path (s, disk, note);
  CLEANUP_FREE char *dir = posix_disk_path (s, disk, NULL);
  CLEANUP_CLOSE int fd = -1;
  struct stat st;
  char last = '\n';

  if (p == NULL || dir == NULL)
    return -1;
  fd = open (p, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1 || fstat (fd, &st) == -1) {
    err_sys (errno, "open %s", p);
    return -1;
  }
  /* A record a crash tore gets no newline of its own: end it first. */
  if (st.st_size > 0 && pread (fd, &last, 1, st.st_size - 1) != 1)
    last = '\n';
  if ((last != '\n' && full_write (fd, "\n", 1) == -1)
      || full_write (fd, rec, len) == -1
      || (durable && fdatasync (fd) == -1)) {
    err_sys (errno, "write %s", p);
    return -1;
  }
  /* A new file's name must last too. */
  if (durable && st.st_size == 0 && fsync_dir (dir) == -1)
    return -1;
  return 0;
}

static int
posix_upgrade (struct store *s)
{
  struct posix_store *ps = posix_of (s);
  CLEANUP_FREE char *marker = NULL;

  if (asprintf (&marker, "%s/%s", ps->path, marker_name) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (write_marker (marker, STORE_FORMAT, s->id) == -1)
    return -1;
  s->format = STORE_FORMAT;
  return 0;
}

static int
posix_note_replace (struct store *s, const char *disk, const char *note,
                    const void *rec, size_t len)
{
  CLEANUP_FREE char *p = posix_disk_path (s, disk, note);
  CLEANUP_FREE char *dir = posix_disk_path (s, disk, NULL);

  if (p == NULL || dir == NULL)
    return -1;
  if (len > 0)
    return write_file_atomic (p, rec, len, 0600);
  if (unlink (p) == -1 && errno != ENOENT) {
    err_sys (errno, "remove %s", p);
    return -1;
  }
  return fsync_dir (dir);
}

static char *
posix_manifest_read (struct store *s, const char *disk, const char *snapshot,
                     size_t max, size_t *len)
{
  CLEANUP_FREE char *dir = posix_disk_path (s, disk, snapshot);

  return dir ? posix_read_in (dir, "layer", max, len) : NULL;
}

int
posix_write_new (const char *dir, const char *name, const void *data, size_t len)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_CLOSE int fd = -1;

  if (asprintf (&path, "%s/%s", dir, name) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1 || full_write (fd, data, len) == -1 || fsync (fd) == -1) {
    err_sys (errno, "write %s", path);
    return -1;
  }
  return 0;
}

/* Staged in tmp/ under a name only this process uses, fsynced, then
 * renamed into the disk's folder: only a whole, durable layer ever
 * appears under its name. */
static int
posix_layer_create (struct store *s, const char *disk, const char *snapshot,
                    const void *manifest, size_t mlen,
                    const void *set, size_t slen,
                    const void *head, size_t hlen)
{
  struct posix_store *ps = posix_of (s);
  CLEANUP_FREE char *stage = NULL, *final = NULL, *dir = NULL;

  if (asprintf (&stage, "%s/%s.%ld", ps->tmp_dir, snapshot,
                (long) getpid ()) == -1
      || (dir = posix_disk_path (s, disk, NULL)) == NULL
      || (final = posix_disk_path (s, disk, snapshot)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (mkdir (stage, 0700) == -1) {
    err_sys (errno, "mkdir %s", stage);
    return -1;
  }
  if (posix_write_new (stage, "layer", manifest, mlen) == -1
      || posix_write_new (stage, "index", head, hlen) == -1
      || posix_write_new (stage, "data", "", 0) == -1
      || (set && posix_write_new (stage, "changed", set, slen) == -1)
      || fsync_dir (stage) == -1)
    goto err;
  if (rename (stage, final) == -1) {
    err_sys (errno == ENOTEMPTY ? EEXIST : errno, "rename %s to %s", stage,
             final);
    goto err;
  }
  return fsync_dir (dir);

 err:
  posix_remove_stage (stage);
  return -1;
}

/* Renamed out of the disk's folder into tmp/ (atomic, durable once the
 * folder is fsynced), then its files removed; a crash in between
 * leaves them in tmp/ for the next store_lock. */
static int
posix_layer_remove (struct store *s, const char *disk, const char *snapshot)
{
  struct posix_store *ps = posix_of (s);
  CLEANUP_FREE char *from = NULL, *to = NULL, *dir = NULL;

  if ((from = posix_disk_path (s, disk, snapshot)) == NULL
      || (dir = posix_disk_path (s, disk, NULL)) == NULL
      || asprintf (&to, "%s/%s.gone.%ld", ps->tmp_dir, snapshot,
                   (long) getpid ()) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (rename (from, to) == -1) {
    err_sys (errno, "rename %s to %s", from, to);
    return -1;
  }
  if (fsync_dir (dir) == -1)
    return -1;
  /* Marked before the files go, as a replace marks it (posix-layer.c). */
  posix_changed (s);
  posix_remove_stage (to);
  return 0;
}

/* Staged as a new layer is (posix_layer_create), under a name of its
 * own in tmp/, with BASE's data file hard-linked in: the blocks of
 * BASE come at the cost of a link, whatever the disk's size, and the
 * caller writes only what changes (store.h says which blocks it may). */
static struct store_layer *
posix_layer_stage (struct store *s, const char *disk, const char *snapshot,
                   const char *base, const void *manifest, size_t mlen,
                   const void *set, size_t slen, const void *head, size_t hlen,
                   uint64_t nblocks)
{
  struct posix_store *ps = posix_of (s);
  CLEANUP_FREE char *from = NULL, *to = NULL, *based = NULL;
  char *stage = NULL, *final = NULL;
  struct store_layer *h;

  if (asprintf (&stage, "%s/%s.%ld.new", ps->tmp_dir, snapshot,
                (long) getpid ()) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if ((final = posix_disk_path (s, disk, snapshot)) == NULL
      || (based = posix_disk_path (s, disk, base)) == NULL
      || asprintf (&from, "%s/data", based) == -1
      || asprintf (&to, "%s/data", stage) == -1) {
    err_set (ENOMEM, "out of memory");
    free (stage);
    free (final);
    return NULL;
  }
  if (mkdir (stage, 0700) == -1) {
    err_sys (errno, "mkdir %s", stage);
    free (stage);
    free (final);
    return NULL;
  }
  /* The stage's handle owns STAGE and FINAL from here, and removes the
   * stage when closed before it is swapped in. */
  h = posix_layer_staged (s, stage, final);
  if (h == NULL)
    return NULL;
  if (posix_write_new (stage, "layer", manifest, mlen) == -1
      || posix_write_new (stage, "index", head, hlen) == -1
      || (set && posix_write_new (stage, "changed", set, slen) == -1))
    goto err;
  if (link (from, to) == -1) {
    err_sys (errno, "link %s to %s", from, to);
    goto err;
  }
  if (fsync_dir (stage) == -1 || posix_writer_open (h, nblocks) == -1)
    goto err;
  return h;

 err:
  posix_layer_close (h);
  return NULL;
}

/* Every name is a path: this backend comes last (store.c). */
static bool
posix_claims (const char *where)
{
  (void) where;
  return true;
}

/* The generation is the size of the file `generation`, to which every
 * change appends one byte (FORMAT.md): a reader's poll is one stat, and
 * unlike a time stamp a size cannot miss two changes made within one
 * tick of the file system's clock.  Not synced: only mounts up at the
 * time read it. */
static int
posix_generation (struct store *s, uint64_t *gen)
{
  CLEANUP_FREE char *path = NULL;
  struct stat st;

  if (asprintf (&path, "%s/generation", posix_of (s)->path) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (stat (path, &st) == -1) {
    if (errno != ENOENT) {
      err_sys (errno, "stat %s", path);
      return -1;
    }
    st.st_size = 0;
  }
  *gen = st.st_size;
  return 0;
}

void
posix_changed (struct store *s)
{
  CLEANUP_FREE char *path = NULL;
  int fd;

  if (asprintf (&path, "%s/generation", posix_of (s)->path) == -1)
    return;
  fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1 || write (fd, "+", 1) != 1)
    log_warn ("%s: %m (a mount may not show the change until the next)",
              path);
  if (fd >= 0)
    close (fd);
}

/* Filling marks: PATH/filling/DISK.SNAPSHOT, empty files (FORMAT.md). */
static char *
filling_path (struct store *s, const char *disk, const char *snapshot)
{
  char *p;

  if (asprintf (&p, "%s/filling%s%s%s%s", posix_of (s)->path,
                disk ? "/" : "", disk ? disk : "", disk ? "." : "",
                disk ? snapshot : "") == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return p;
}

static int
posix_filling_mark (struct store *s, const char *disk, const char *snapshot,
                    bool on)
{
  CLEANUP_FREE char *dir = filling_path (s, NULL, NULL);
  CLEANUP_FREE char *p = filling_path (s, disk, snapshot);
  int fd;

  if (dir == NULL || p == NULL)
    return -1;
  if (!on) {
    if (unlink (p) == -1 && errno != ENOENT) {
      err_sys (errno, "remove %s", p);
      return -1;
    }
    return 0;
  }
  /* Its name made durable also when it exists: a crash may have left
   * it made but not yet so. */
  if (mkdir_private (dir) == -1 || fsync_dir (posix_of (s)->path) == -1)
    return -1;
  fd = open (p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1) {
    err_sys (errno, "create %s", p);
    return -1;
  }
  close (fd);
  return fsync_dir (dir);
}

/* A filling mark's file name "DISK.SNAPSHOT", as "DISK/SNAPSHOT". */
static bool
filling_name (char *name)
{
  return store_pair_name (name, '.');
}

static int
posix_filling_list (struct store *s, char ***names, size_t *n)
{
  CLEANUP_FREE char *dir = filling_path (s, NULL, NULL);

  if (dir == NULL)
    return -1;
  return list_dir (dir, filling_name, names, n);
}

const struct store_backend store_posix = {
  .name = "directory",
  .commit_bytes = 64u << 20,    /* an fdatasync per 64 MiB */
  .claims = posix_claims,
  .open = posix_open,
  .close = posix_close,
  .lock = posix_lock,
  .owner = posix_owner,
  .disk_prepare = posix_disk_prepare,
  .list = posix_list,
  .has_layer = posix_has_layer,
  .note_read = posix_note_read,
  .note_append = posix_note_append,
  .manifest_read = posix_manifest_read,
  .layer_create = posix_layer_create,
  .layer_remove = posix_layer_remove,
  .upgrade = posix_upgrade,
  .note_replace = posix_note_replace,
  .layer_stage = posix_layer_stage,
  .layer_replace = posix_layer_replace,
  .layer_open = posix_layer_open,
  .layer_close = posix_layer_close,
  .layer_where = posix_layer_where,
  .set_read = posix_set_read,
  .usage = posix_usage,
  .index_read = posix_index_read,
  .block_read = posix_block_read,
  .writer_open = posix_writer_open,
  .index_cut = posix_index_cut,
  .blocks_write = posix_blocks_write,
  .commit = posix_commit,
  .blocks_drop = posix_blocks_drop,
  .writer_close = posix_writer_close,
  .generation = posix_generation,
  .filling_mark = posix_filling_mark,
  .filling_list = posix_filling_list,
  .changed = posix_changed,
};
