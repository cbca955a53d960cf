/* cbtfs: what checks of a point found, kept in the store. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "verdict.h"

static const char *const names[] = {
  [VERDICT_NONE] = "", [VERDICT_MATCH] = "match",
  [VERDICT_DIFFERS] = "differs", [VERDICT_DAMAGED] = "damaged",
  [VERDICT_SOUND] = "sound", [VERDICT_ACCEPTED] = "accepted",
};

#define NOTE "verified"

/* The note may be as large as one line per check of every point. */
#define VERIFIED_MAX (256 * 1024 * 1024)

const char *
verdict_name (enum verdict v)
{
  return (size_t) v < ARRAY_SIZE (names) ? names[v] : "";
}

int
verdict_record (struct store *s, const char *disk, const char *snapshot,
                enum verdict v)
{
  char line[160];
  int n;

  if (!is_uuid (snapshot) || v == VERDICT_NONE) {
    err_set (EINVAL, "bad verdict");
    return -1;
  }
  n = snprintf (line, sizeof line, "%s %lld %s", snapshot,
                (long long) time (NULL), verdict_name (v));
  n += snprintf (line + n, sizeof line - n, " %016" PRIx64 "\n",
                 (uint64_t) XXH3_64bits (line, n));
  /* The store starts a new line after one a crash tore. */
  return store_note_append (s, disk, NOTE, line, n, true);
}

/* Parse one LINE (LEN bytes, no newline): 1 with *E filled, 0 if it is
 * torn or damaged. */
static int
parse_line (const char *line, size_t len, struct verdict_entry *e)
{
  char word[16];
  uint64_t check;
  size_t body;

  if (len < UUID_LEN + 20 || line[len - 17] != ' ')
    return 0;
  body = len - 17;
  if (sscanf (line + body + 1, "%16" SCNx64, &check) != 1
      || check != XXH3_64bits (line, body))
    return 0;
  memcpy (e->snapshot, line, UUID_LEN);
  e->snapshot[UUID_LEN] = '\0';
  if (!is_uuid (e->snapshot) || line[UUID_LEN] != ' ')
    return 0;
  {
    const char *w = memrchr (line, ' ', body);
    size_t wl = line + body - w - 1;
    if (w == NULL || wl == 0 || wl >= sizeof word)
      return 0;
    memcpy (word, w + 1, wl);
    word[wl] = '\0';
  }
  for (size_t i = 1; i < ARRAY_SIZE (names); i++)
    if (strcmp (word, names[i]) == 0) {
      e->v = i;
      return 1;
    }
  return 0;
}

/* Set SNAPSHOT's verdict in VS to E's (the newest line wins). */
static int
put (struct verdicts *vs, const struct verdict_entry *e)
{
  struct verdict_entry *nv;

  for (size_t i = 0; i < vs->n; i++)
    if (strcmp (vs->v[i].snapshot, e->snapshot) == 0) {
      vs->v[i].v = e->v;
      return 0;
    }
  nv = realloc (vs->v, (vs->n + 1) * sizeof *nv);
  if (nv == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  vs->v = nv;
  vs->v[vs->n++] = *e;
  return 0;
}

int
verdicts_load (struct store *s, const char *disk, struct verdicts *out)
{
  CLEANUP_FREE char *text = NULL;
  size_t len;

  out->v = NULL;
  out->n = 0;
  text = store_note_read (s, disk, NOTE, VERIFIED_MAX, &len);
  if (text == NULL)
    return errno == ENOENT ? 0 : -1;
  for (size_t i = 0; i < len;) {
    const char *nl = memchr (text + i, '\n', len - i);
    size_t ll = (nl ? (size_t) (nl - text) : len) - i;
    struct verdict_entry e;
    /* A last line without its newline was torn by a crash. */
    if (nl && parse_line (text + i, ll, &e) && put (out, &e) == -1) {
      verdicts_free (out);
      return -1;
    }
    i += ll + 1;
  }
  return 0;
}

enum verdict
verdicts_of (const struct verdicts *vs, const char *snapshot)
{
  for (size_t i = 0; i < vs->n; i++)
    if (strcmp (vs->v[i].snapshot, snapshot) == 0)
      return vs->v[i].v;
  return VERDICT_NONE;
}

void
verdicts_free (struct verdicts *vs)
{
  free (vs->v);
  vs->v = NULL;
  vs->n = 0;
}

int
verdict_latest (struct store *s, const char *disk, const char *snapshot)
{
  struct verdicts vs;
  enum verdict v;

  if (verdicts_load (s, disk, &vs) == -1)
    return -1;
  v = verdicts_of (&vs, snapshot);
  verdicts_free (&vs);
  return v;
}
