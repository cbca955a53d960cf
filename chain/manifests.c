/* cbtfs: a disk's manifests file (FORMAT.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "layer.h"
#include "manifests.h"
#include "store.h"

#define NAME "manifests"
/* Where a copy starts: a manifest's first line, at the start of a line. */
#define START "\ncbtfs-layer "
/* Bigger than any real file (a million layers of a few hundred bytes). */
#define MAX_LEN ((size_t) 1 << 30)

int
manifests_append (const char *disk_dir, const char *manifest, size_t len)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_FREE char *rec = malloc (len + 1);
  CLEANUP_CLOSE int fd = -1;

  if (rec == NULL || asprintf (&path, "%s/" NAME, disk_dir) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  /* The newline first: after a torn copy, this one still starts a line. */
  rec[0] = '\n';
  memcpy (rec + 1, manifest, len);
  fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1 || full_write (fd, rec, len + 1) == -1) {
    err_sys (errno, "append to %s", path);
    return -1;
  }
  return 0;
}

char *
manifests_read (int dirfd, size_t *len)
{
  /* What an appender adds meanwhile may be cut short: that copy fails
   * its check and its layer's own manifest is read instead. */
  return read_file_at (dirfd, NAME, MAX_LEN, len);
}

bool
manifests_next (const char *buf, size_t len, size_t *pos, const char **text,
                size_t *tlen)
{
  const size_t n = sizeof START - 1;
  const char *p, *q;

  if (*pos >= len)
    return false;
  p = memmem (buf + *pos, len - *pos, START, n);
  if (p == NULL) {
    *pos = len;
    return false;
  }
  p++;                          /* the copy starts after the newline */
  q = memmem (p, buf + len - p, START, n);
  *text = p;
  *tlen = (q ? q : buf + len) - p;
  *pos = (q ? q : buf + len) - buf;
  return true;
}

/* Mark in HAVE which of NAMES (sorted) have a good copy in BUF. */
static void
mark_copies (const char *buf, size_t len, const char *disk,
             char **names, size_t n, bool *have)
{
  size_t pos = 0, tlen;
  const char *text;

  while (manifests_next (buf, len, &pos, &text, &tlen)) {
    struct layer_meta m;
    ssize_t at;

    if (layer_meta_parse (text, tlen, &m) == -1)
      continue;
    at = store_names_find (names, n, m.snapshot);
    if (at >= 0 && strcmp (m.disk, disk) == 0)
      have[at] = true;
    layer_meta_clear (&m);
  }
}

/* Append a copy of the manifest of layer DISK_DIR/NAME if it is good
 * (a damaged one is left out, as readers would).  0 or -1 with err_*. */
static int
copy_manifest (const char *disk_dir, const char *name)
{
  CLEANUP_FREE char *path = NULL, *text = NULL;
  struct layer_meta m;
  size_t len;

  if (asprintf (&path, "%s/%s/layer", disk_dir, name) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  text = read_file (path, 1 << 20, &len);
  if (text == NULL || layer_meta_parse (text, len, &m) == -1)
    return 0;
  layer_meta_clear (&m);
  return manifests_append (disk_dir, text, len);
}

int
manifests_refresh (const char *disk_dir)
{
  const char *disk = strrchr (disk_dir, '/') ? strrchr (disk_dir, '/') + 1
    : disk_dir;
  CLEANUP_FREE char *buf = NULL;
  CLEANUP_FREE bool *have = NULL;
  CLEANUP_CLOSE int dirfd = -1;
  char **names = NULL;
  size_t n = 0, len = 0, i;
  int ret = 0;

  if (store_list (disk_dir, &names, &n) == -1)
    return -1;
  if ((have = calloc (n ? n : 1, sizeof *have)) == NULL) {
    store_names_free (names, n);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  dirfd = open (disk_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd >= 0 && (buf = manifests_read (dirfd, &len)) != NULL)
    mark_copies (buf, len, disk, names, n, have);
  /* Appended after whatever is there: a torn tail spoils nothing. */
  for (i = 0; i < n && ret == 0; i++)
    if (!have[i])
      ret = copy_manifest (disk_dir, names[i]);
  store_names_free (names, n);
  return ret;
}
