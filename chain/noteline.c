/* cbtfs: notes made of checked lines (noteline.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "noteline.h"

int
noteline_append (struct store *s, const char *disk, const char *note,
                 const char *snapshot, int64_t when, const char *word,
                 bool durable)
{
  char line[160];
  int n;

  if (!is_uuid (snapshot) || word[0] == '\0'
      || strlen (word) >= sizeof ((struct noteline *) 0)->word
      || strpbrk (word, " \n")) {
    err_set (EINVAL, "bad %s line", note);
    return -1;
  }
  n = snprintf (line, sizeof line, "%s %lld %s", snapshot, (long long) when,
                word);
  n += snprintf (line + n, sizeof line - n, " %016" PRIx64 "\n",
                 (uint64_t) XXH3_64bits (line, n));
  /* The store starts a new line after one a crash tore. */
  return store_note_append (s, disk, note, line, n, durable);
}

/* Parse one LINE (LEN bytes, no newline) into *L: false if it is torn
 * or damaged. */
static bool
parse_line (const char *line, size_t len, struct noteline *l)
{
  const char *w;
  uint64_t check;
  long long t;
  size_t body, wl;
  char *end;

  if (len < UUID_LEN + 20 || line[len - 17] != ' ')
    return false;
  body = len - 17;
  if (sscanf (line + body + 1, "%16" SCNx64, &check) != 1
      || check != XXH3_64bits (line, body))
    return false;
  memcpy (l->snapshot, line, UUID_LEN);
  l->snapshot[UUID_LEN] = '\0';
  if (!is_uuid (l->snapshot) || line[UUID_LEN] != ' ')
    return false;
  errno = 0;
  t = strtoll (line + UUID_LEN + 1, &end, 10);
  if (errno || *end != ' ')
    return false;
  l->time = t;
  w = end + 1;
  wl = line + body - w;
  if (wl == 0 || wl >= sizeof l->word || memchr (w, ' ', wl))
    return false;
  memcpy (l->word, w, wl);
  l->word[wl] = '\0';
  return true;
}

int
noteline_each (struct store *s, const char *disk, const char *note,
               size_t max, noteline_fn fn, void *opaque)
{
  CLEANUP_FREE char *text = NULL;
  size_t len;

  text = store_note_read (s, disk, note, max, &len);
  if (text == NULL)
    return errno == ENOENT ? 0 : -1;
  for (size_t i = 0; i < len;) {
    const char *nl = memchr (text + i, '\n', len - i);
    size_t ll = (nl ? (size_t) (nl - text) : len) - i;
    struct noteline l;

    /* A last line without its newline was torn by a crash. */
    if (nl && parse_line (text + i, ll, &l) && fn (opaque, &l) == -1)
      return -1;
    i += ll + 1;
  }
  return 0;
}
