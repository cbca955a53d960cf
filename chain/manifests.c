/* cbtfs: a disk's manifests note (manifests.h, FORMAT.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "layer-meta.h"
#include "manifests.h"

#define NAME "manifests"
/* Where a copy starts: a manifest's first line, at the start of a line. */
#define START "\ncbtfs-layer "
/* Bigger than any real file (a million layers of a few hundred bytes). */
#define MAX_LEN ((size_t) 1 << 30)

int
manifests_append (struct store *s, const char *disk, const char *manifest,
                  size_t len)
{
  CLEANUP_FREE char *rec = malloc (len + 1);

  if (rec == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  /* The newline first: after a torn copy, this one still starts a line. */
  rec[0] = '\n';
  memcpy (rec + 1, manifest, len);
  return store_note_append (s, disk, NAME, rec, len + 1, false);
}

char *
manifests_read (struct store *s, const char *disk, size_t *len)
{
  /* What an appender adds meanwhile may be cut short: that copy fails
   * its check and its layer's own manifest is read instead. */
  return store_note_read (s, disk, NAME, MAX_LEN, len);
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

/* Append a copy of the manifest of layer NAME of DISK if it is good (a
 * damaged one is left out, as readers would).  0 or -1 with err_*. */
static int
copy_manifest (struct store *s, const char *disk, const char *name)
{
  CLEANUP_FREE char *text = NULL;
  struct layer_meta m;
  size_t len;

  text = store_manifest_read (s, disk, name, 1 << 20, &len);
  if (text == NULL || layer_meta_parse (text, len, &m) == -1)
    return 0;
  layer_meta_clear (&m);
  return manifests_append (s, disk, text, len);
}

int
manifests_refresh (struct store *s, const char *disk)
{
  CLEANUP_FREE char *buf = NULL;
  CLEANUP_FREE bool *have = NULL;
  char **names = NULL;
  size_t n = 0, len = 0, i;
  int ret = 0;

  if (store_list (s, disk, &names, &n) == -1)
    return -1;
  if ((have = calloc (n ? n : 1, sizeof *have)) == NULL) {
    store_names_free (names, n);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if ((buf = manifests_read (s, disk, &len)) != NULL)
    mark_copies (buf, len, disk, names, n, have);
  /* Appended after whatever is there: a torn tail spoils nothing. */
  for (i = 0; i < n && ret == 0; i++)
    if (!have[i])
      ret = copy_manifest (s, disk, names[i]);
  store_names_free (names, n);
  return ret;
}

int
manifests_forget (struct store *s, const char *disk, const char *a,
                  const char *b)
{
  CLEANUP_FREE char *buf = NULL, *out = NULL;
  size_t len = 0, pos = 0, olen = 0, tlen;
  const char *text;

  buf = manifests_read (s, disk, &len);
  if (buf == NULL)
    return errno == ENOENT ? 0 : -1;
  if ((out = malloc (len + 1)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  while (manifests_next (buf, len, &pos, &text, &tlen)) {
    struct layer_meta m;
    bool keep;

    if (layer_meta_parse (text, tlen, &m) == -1)
      continue;
    keep = strcmp (m.snapshot, a) && strcmp (m.snapshot, b);
    layer_meta_clear (&m);
    if (keep) {
      out[olen++] = '\n';
      memcpy (out + olen, text, tlen);
      olen += tlen;
    }
  }
  return store_note_replace (s, disk, NAME, out, olen);
}
