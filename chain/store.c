/* cbtfs: the store directory (FORMAT.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "store.h"

static const char marker_name[] = "cbtfs-store";

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

/* Parse the marker file MARKER of the store at PATH: its format and,
 * if it has one, its id (into ID, else ""). */
static int
check_marker (const char *path, const char *marker, char id[UUID_LEN + 1])
{
  CLEANUP_FREE char *text = read_file (marker, 4096, NULL);
  const char *line;
  int version;

  if (text == NULL) {
    if (errno == ENOENT)
      err_set (ENOENT, "%s is not a cbtfs store (no %s file)", path,
               marker_name);
    else
      err_sys (errno, "%s", marker);
    return -1;
  }
  if (sscanf (text, "cbtfs-store %d", &version) != 1) {
    err_set (EPROTO, "%s is not a cbtfs store (bad %s)", path, marker_name);
    return -1;
  }
  if (version != STORE_FORMAT) {
    err_set (EPROTO, "%s has store format %d, this cbtfs reads %d", path,
             version, STORE_FORMAT);
    return -1;
  }
  id[0] = '\0';
  line = strstr (text, "\nid ");
  if (line) {
    if (strlen (line + 4) < UUID_LEN + 1 || line[4 + UUID_LEN] != '\n') {
      err_set (EPROTO, "%s: bad %s (its id line)", path, marker_name);
      return -1;
    }
    memcpy (id, line + 4, UUID_LEN);
    id[UUID_LEN] = '\0';
    if (!is_uuid (id)) {
      err_set (EPROTO, "%s: bad %s (its id is not a uuid)", path,
               marker_name);
      return -1;
    }
  }
  return 0;
}

/* Write the marker of a store with id ID (atomically). */
static int
write_marker (const char *marker, const char *id)
{
  char text[64 + UUID_LEN];

  snprintf (text, sizeof text, "cbtfs-store %d\nid %s\n", STORE_FORMAT, id);
  return write_file_atomic (marker, text, strlen (text), 0600);
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
  return write_marker (marker, id);
}

struct store *
store_open (const char *path, bool create)
{
  struct store *s = calloc (1, sizeof *s);
  CLEANUP_FREE char *marker = NULL;

  if (s == NULL)
    return NULL;
  s->lock_fd = -1;
  if ((s->path = strdup (path)) == NULL
      || asprintf (&s->disks_dir, "%s/disks", path) == -1
      || asprintf (&s->tmp_dir, "%s/tmp", path) == -1
      || asprintf (&marker, "%s/%s", path, marker_name) == -1) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  if (access (marker, F_OK) == -1 && errno == ENOENT && create) {
    if (create_store (path, marker, s->id) == -1)
      goto err;
  }
  else if (check_marker (path, marker, s->id) == -1)
    goto err;
  if (create && (mkdir_private (s->disks_dir) == -1
                 || mkdir_private (s->tmp_dir) == -1
                 || fsync_dir (path) == -1))
    goto err;
  return s;

 err:
  store_close (s);
  return NULL;
}

void
store_close (struct store *s)
{
  if (s == NULL)
    return;
  if (s->lock_fd >= 0)
    close (s->lock_fd);
  free (s->path);
  free (s->disks_dir);
  free (s->tmp_dir);
  free (s);
}

/* Remove DIR and the plain files in it (a crashed writer's stage). */
static void
remove_stage (const char *dir)
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

int
store_lock (struct store *s)
{
  CLEANUP_FREE char *path = NULL;
  DIR *d;
  struct dirent *e;
  int fd;

  if (asprintf (&path, "%s/lock", s->path) == -1)
    return -1;
  fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1) {
    err_sys (errno, "open %s", path);
    return -1;
  }
  if (flock (fd, LOCK_EX | LOCK_NB) == -1) {
    int err = errno;
    close (fd);
    if (err == EWOULDBLOCK)
      err_set (err, "another cbtfs backup is using the store %s", s->path);
    else
      err_sys (err, "lock %s", path);
    return -1;
  }
  s->lock_fd = fd;

  /* A store made before ids gets one now, while nobody else writes. */
  if (s->id[0] == '\0') {
    CLEANUP_FREE char *marker = NULL;
    char id[UUID_LEN + 1];
    if (asprintf (&marker, "%s/%s", s->path, marker_name) == -1) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    if (make_uuid (id) == -1 || write_marker (marker, id) == -1)
      return -1;
    memcpy (s->id, id, sizeof id);
  }

  /* Nobody else writes now: what tmp/ holds is a crashed run's. */
  d = opendir (s->tmp_dir);
  if (d) {
    while ((e = readdir (d)) != NULL) {
      CLEANUP_FREE char *p = NULL;
      if (e->d_name[0] == '.' || asprintf (&p, "%s/%s", s->tmp_dir,
                                           e->d_name) == -1)
        continue;
      remove_stage (p);
    }
    closedir (d);
  }
  return 0;
}

char *
store_disk_dir (struct store *s, const char *disk, bool create)
{
  char *p;

  if (!is_uuid (disk)) {
    err_set (EINVAL, "'%s' is not a uuid", disk);
    return NULL;
  }
  if (asprintf (&p, "%s/%s", s->disks_dir, disk) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  /* Also when it exists: a crash may have left it made but its name
   * not yet durable. */
  if (create && mkdir (p, 0700) == -1 && errno != EEXIST) {
    err_sys (errno, "mkdir %s", p);
    free (p);
    return NULL;
  }
  if (create && fsync_dir (s->disks_dir) == -1) {
    free (p);
    return NULL;
  }
  return p;
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
store_list (const char *dir, char ***names, size_t *n)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  char **v = NULL;
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
    if (!is_uuid (e->d_name))
      continue;                 /* stages, editor droppings, … */
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      char **nv = realloc (v, ncap * sizeof *nv);
      if (nv == NULL)
        goto nomem;
      v = nv;
      cap = ncap;
    }
    if ((v[len] = strdup (e->d_name)) == NULL)
      goto nomem;
    len++;
  }
  closedir (d);
  if (len)
    qsort (v, len, sizeof *v, cmp_str);
  *names = v;
  *n = len;
  return 0;

 nomem:
  closedir (d);
  store_names_free (v, len);
  err_set (ENOMEM, "out of memory");
  return -1;
}

void
store_names_free (char **names, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (names[i]);
  free (names);
}

static int
cmp_str_key (const void *key, const void *elem)
{
  return strcmp (key, *(char *const *) elem);
}

ssize_t
store_names_find (char *const *names, size_t n, const char *name)
{
  char *const *at = n ? bsearch (name, names, n, sizeof *names, cmp_str_key)
    : NULL;

  return at ? at - names : -1;
}

int
store_has_layer (const char *disk_dir, const char *snapshot)
{
  CLEANUP_FREE char *p = NULL;
  struct stat st;

  if (!is_uuid (snapshot))
    return 0;
  if (asprintf (&p, "%s/%s", disk_dir, snapshot) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (lstat (p, &st) == 0)
    return 1;
  if (errno == ENOENT)
    return 0;
  err_sys (errno, "%s", p);
  return -1;
}
