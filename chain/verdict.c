/* cbtfs: what checks of a point found, kept in the store. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "noteline.h"
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
  if (v == VERDICT_NONE) {
    err_set (EINVAL, "bad verdict");
    return -1;
  }
  return noteline_append (s, disk, NOTE, snapshot, time (NULL),
                          verdict_name (v), true);
}

/* The word of a line recording the host's checksum: "md5:" and 32
 * lowercase hex digits.  Readers that predate it skip it as a word
 * they do not know. */
#define MD5_WORD "md5:"

int
verdict_record_md5 (struct store *s, const char *disk, const char *snapshot,
                    const char *md5)
{
  char word[sizeof MD5_WORD + 32];

  if (strlen (md5) != 32 || strspn (md5, "0123456789abcdefABCDEF") != 32) {
    err_set (EINVAL, "bad md5 \"%s\"", md5);
    return -1;
  }
  snprintf (word, sizeof word, MD5_WORD "%s", md5);
  for (char *p = word; *p; p++)
    *p = tolower ((unsigned char) *p);
  return noteline_append (s, disk, NOTE, snapshot, time (NULL), word, true);
}

/* SNAPSHOT's entry in VS, made (no verdict, no md5) if there is none;
 * NULL with err_* (ENOMEM). */
static struct verdict_entry *
entry (struct verdicts *vs, const char *snapshot)
{
  struct verdict_entry *nv;

  for (size_t i = 0; i < vs->n; i++)
    if (strcmp (vs->v[i].snapshot, snapshot) == 0)
      return &vs->v[i];
  nv = realloc (vs->v, (vs->n + 1) * sizeof *nv);
  if (nv == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  vs->v = nv;
  nv = &vs->v[vs->n++];
  memset (nv, 0, sizeof *nv);
  memcpy (nv->snapshot, snapshot, sizeof nv->snapshot);
  return nv;
}

/* A noteline_fn: the line's verdict or checksum into VS (OPAQUE); the
 * newest line about a snapshot wins, and an unknown word is skipped. */
static int
take_line (void *opaque, const struct noteline *l)
{
  const char *hex = l->word + strlen (MD5_WORD);
  struct verdict_entry *e;

  if (strncmp (l->word, MD5_WORD, strlen (MD5_WORD)) == 0) {
    if (strlen (hex) != 32 || strspn (hex, "0123456789abcdef") != 32)
      return 0;
    if ((e = entry (opaque, l->snapshot)) == NULL)
      return -1;
    memcpy (e->md5, hex, sizeof e->md5);
    e->md5_time = l->time;
    return 0;
  }
  for (size_t i = 1; i < ARRAY_SIZE (names); i++)
    if (strcmp (l->word, names[i]) == 0) {
      if ((e = entry (opaque, l->snapshot)) == NULL)
        return -1;
      e->v = i;
      return 0;
    }
  return 0;
}

int
verdicts_load (struct store *s, const char *disk, struct verdicts *out)
{
  out->v = NULL;
  out->n = 0;
  if (noteline_each (s, disk, NOTE, VERIFIED_MAX, take_line, out) == -1) {
    verdicts_free (out);
    return -1;
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

const char *
verdicts_md5 (const struct verdicts *vs, const char *snapshot)
{
  for (size_t i = 0; i < vs->n; i++)
    if (strcmp (vs->v[i].snapshot, snapshot) == 0)
      return vs->v[i].md5[0] ? vs->v[i].md5 : NULL;
  return NULL;
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
