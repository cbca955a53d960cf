/* cbtfs: what checks of a point found, kept in the store. */
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

/* A noteline_fn: the line's verdict into VS (OPAQUE); the newest line
 * about a snapshot wins, and an unknown word is skipped. */
static int
take_line (void *opaque, const struct noteline *l)
{
  struct verdict_entry e;

  memcpy (e.snapshot, l->snapshot, sizeof e.snapshot);
  for (size_t i = 1; i < ARRAY_SIZE (names); i++)
    if (strcmp (l->word, names[i]) == 0) {
      e.v = i;
      return put (opaque, &e);
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
