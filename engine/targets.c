/* cbtfs engine: snapshots' NBD details from XAPI.
 *
 * Thread model: see targets.h.  et->lock guards the session (and the
 * lazy login) and the noted refs; it is held across the XAPI calls of
 * an ask, which is what serialises the session.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../xapi/api.h"
#include "snapshot.h"
#include "targets.h"

struct noted {
  char *uuid;
  char *ref;
};

struct engine_targets {
  struct chain_targets tg;      /* lookup = ask, opaque = this */
  pthread_mutex_t lock;
  xapi_session *xs;             /* NULL until a lazy login */
  bool own;                     /* xs is ours to log out */
  const struct engine_creds *creds;  /* for a lazy login, or NULL */
  struct noted *notes;
  size_t nnotes;
};

/* The ref of snapshot UUID: noted, or asked of XAPI (caller frees).
 * Call with et->lock held. */
static char *
ref_of (struct engine_targets *et, const char *uuid)
{
  char *ref;

  for (size_t i = 0; i < et->nnotes; i++)
    if (strcmp (et->notes[i].uuid, uuid) == 0) {
      if ((ref = strdup (et->notes[i].ref)) == NULL)
        err_set (ENOMEM, "out of memory");
      return ref;
    }
  return xapi_vdi_by_uuid (et->xs, uuid);
}

static int
ask (void *opaque, const char *snapshot, struct nbdsrc_target *t)
{
  struct engine_targets *et = opaque;
  CLEANUP_FREE char *ref = NULL;
  SCOPED_LOCK (&et->lock);

  if (et->xs == NULL) {
    if ((et->xs = engine_login (et->creds)) == NULL)
      return -1;
    et->own = true;
  }
  ref = ref_of (et, snapshot);
  if (ref == NULL)
    return -1;
  return engine_nbd_target (et->xs, ref, snapshot, t);
}

static struct engine_targets *
targets_new (xapi_session *xs, const struct engine_creds *creds)
{
  struct engine_targets *et = calloc (1, sizeof *et);

  if (et == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  et->tg.lookup = ask;
  et->tg.opaque = et;
  et->xs = xs;
  et->creds = creds;
  pthread_mutex_init (&et->lock, NULL);
  return et;
}

struct engine_targets *
engine_targets_new (xapi_session *xs)
{
  return targets_new (xs, NULL);
}

struct engine_targets *
engine_targets_new_lazy (const struct engine_creds *creds)
{
  return targets_new (NULL, creds);
}

void
engine_targets_free (struct engine_targets *et)
{
  if (et == NULL)
    return;
  if (et->own)
    xapi_logout (et->xs);
  for (size_t i = 0; i < et->nnotes; i++) {
    free (et->notes[i].uuid);
    free (et->notes[i].ref);
  }
  free (et->notes);
  pthread_mutex_destroy (&et->lock);
  free (et);
}

int
engine_targets_note (struct engine_targets *et, const char *uuid,
                     const char *ref)
{
  struct noted *nv;
  char *u, *r;
  SCOPED_LOCK (&et->lock);

  for (size_t i = 0; i < et->nnotes; i++)
    if (strcmp (et->notes[i].uuid, uuid) == 0) {
      if ((r = strdup (ref)) == NULL)
        goto oom;
      free (et->notes[i].ref);
      et->notes[i].ref = r;
      return 0;
    }
  nv = realloc (et->notes, (et->nnotes + 1) * sizeof *nv);
  if (nv == NULL)
    goto oom;
  et->notes = nv;
  u = strdup (uuid);
  r = strdup (ref);
  if (u == NULL || r == NULL) {
    free (u);
    free (r);
    goto oom;
  }
  et->notes[et->nnotes++] = (struct noted) { u, r };
  return 0;

 oom:
  err_set (ENOMEM, "out of memory");
  return -1;
}

const struct chain_targets *
engine_targets_chain (struct engine_targets *et)
{
  return &et->tg;
}
