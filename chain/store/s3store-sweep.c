/* cbtfs: the sweep of an object store: delete the packs of a disk that
 * no layer's current version names, and the layer objects of no current
 * version (s3store.h).
 *
 * Packs are shared: a merged layer (a stage) names its base's packs
 * where they are, so a removed layer's or a replaced version's packs
 * may still be read.  Removals and replaces mark their disk
 * (P/sweep/D); the lock holder sweeps the marked disks before it lets
 * the lock go, and at the start of the next lock when a crash came
 * first.  A pack goes when no current version's index objects name it
 * and it is no current version's own: a layer's current version is
 * left to its writer, which may be putting packs it has not named yet
 * (s3store-layer.c clears those it finds unnamed).  Removed layers and
 * old or unfinished versions have no writer.
 *
 * A sweep stops once the lock is no longer surely ours
 * (s3store_may_change).  A backup holding the lock shared sweeps only
 * the disks it holds (s3store.c, disk locks).
 *
 * Thread model: the lock holder's thread, with no stage open; a
 * shared holder's, that of the disk's holder.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "s3store.h"

/* Pack names ("S.V.SEQ") some current version reads, and each layer's
 * current version. */
struct live {
  char **names;
  size_t n, cap;
  char **layers;                /* sorted, as listed */
  uint32_t *versions;
  size_t nlayers;
};

static int
add_name (void *opaque, const char *name)
{
  struct live *lv = opaque;

  if (lv->n == lv->cap) {
    size_t ncap = lv->cap ? lv->cap * 2 : 256;
    char **nv = realloc (lv->names, ncap * sizeof *nv);
    if (nv == NULL)
      goto nomem;
    lv->names = nv;
    lv->cap = ncap;
  }
  if ((lv->names[lv->n] = strdup (name)) == NULL)
    goto nomem;
  lv->n++;
  return 0;
 nomem:
  err_set (ENOMEM, "out of memory");
  return -1;
}

/* Add the packs version V of layer S of DISK names. */
static int
add_version (struct s3_store *ss, const char *disk, const char *s,
             uint32_t v, struct live *lv)
{
  CLEANUP_FREE char *prefix = s3store_key (ss, "layers/%s/%s/%010" PRIu32
                                           "/i/", disk, s, v);
  char **keys = NULL;
  size_t n = 0;
  int ret = 0;

  if (prefix == NULL || s3store_keys (ss, prefix, &keys, &n) == -1)
    return -1;
  for (size_t i = 0; i < n && ret == 0; i++) {
    CLEANUP_FREE char *key = NULL;
    void *buf;
    size_t len;
    if (strcmp (keys[i], "0000000000") == 0)
      continue;                 /* the header: no packs */
    if (asprintf (&key, "%s%s", prefix, keys[i]) == -1) {
      err_set (ENOMEM, "out of memory");
      ret = -1;
      break;
    }
    ret = s3store_get (ss, key, 0, 0, &buf, &len);
    if (ret == 0) {
      ret = s3store_index_packs (buf, len, add_name, lv);
      if (ret == -1)
        err_prefix ("s3://%s/%s", ss->o.bucket, key);
      free (buf);
    }
  }
  store_names_free (keys, n);
  return ret;
}

/* What DISK's layers read now. */
static int
find_live (struct s3_store *ss, const char *disk, struct live *lv)
{
  CLEANUP_FREE char *roots = s3store_key (ss, "roots/%s/", disk);

  if (roots == NULL
      || s3store_keys (ss, roots, &lv->layers, &lv->nlayers) == -1)
    return -1;
  lv->versions = calloc (lv->nlayers ? lv->nlayers : 1,
                         sizeof *lv->versions);
  if (lv->versions == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < lv->nlayers; i++) {
    if (!is_uuid (lv->layers[i]))
      continue;
    if (s3store_root_read (ss, disk, lv->layers[i], &lv->versions[i], NULL,
                           0, NULL) == -1) {
      if (errno == ENOENT)
        continue;               /* removed meanwhile */
      return -1;
    }
    if (add_version (ss, disk, lv->layers[i], lv->versions[i], lv) == -1)
      return -1;
  }
  store_names_sort (lv->names, lv->n);
  return 0;
}

/* Whether pack NAME ("S.V.SEQ") may go. */
static bool
unused (const struct live *lv, const char *name)
{
  char owner[UUID_LEN + 1];
  ssize_t at;
  unsigned v;

  if (strlen (name) != UUID_LEN + 22 || name[UUID_LEN] != '.'
      || sscanf (name + UUID_LEN + 1, "%10u", &v) != 1)
    return false;               /* not a pack of ours: left alone */
  if (store_names_find (lv->names, lv->n, name) >= 0)
    return false;
  memcpy (owner, name, UUID_LEN);
  owner[UUID_LEN] = '\0';
  at = store_names_find (lv->layers, lv->nlayers, owner);
  /* A current version's own pack is its writer's to clear. */
  return at < 0 || lv->versions[at] != v;
}

/* Whether layer object KEY ("S/..." under layers/DISK/) belongs to no
 * current version: anything of a layer with no root (a removal leaves
 * it to us; or a crash came before the root), or of one of its other
 * versions (a replace leaves the old one to us; a crash left a stage).
 * A current layer's writer lease ("S/writer") is left to the lease
 * rules. */
static bool
stale_layer_object (const struct live *lv, const char *key)
{
  char layer[UUID_LEN + 1];
  unsigned v;
  ssize_t at;

  if (strlen (key) < UUID_LEN + 2 || key[UUID_LEN] != '/')
    return false;               /* not ours */
  memcpy (layer, key, UUID_LEN);
  layer[UUID_LEN] = '\0';
  if (!is_uuid (layer))
    return false;
  at = store_names_find (lv->layers, lv->nlayers, layer);
  if (at < 0)
    return true;
  if (lv->versions[at] == 0)
    return false;               /* its root went meanwhile: not ours */
  if (strlen (key) < UUID_LEN + 12 || key[UUID_LEN + 11] != '/'
      || sscanf (key + UUID_LEN + 1, "%10u", &v) != 1)
    return false;               /* its writer lease, or not ours */
  return lv->versions[at] != v;
}

/* Delete every object listed under PREFIX (a key of the store) whose
 * name there STALE says LV no longer reads; *GONE and *LISTED count.
 * Stops when the lock is no longer surely ours: another holder may
 * have made a layer since find_live looked, and only a holder may
 * sweep. */
static int
delete_stale (struct s3_store *ss, const char *prefix, const struct live *lv,
              bool (*stale) (const struct live *, const char *),
              size_t *gone, size_t *listed)
{
  char **names = NULL;
  size_t n = 0;
  int ret = 0;

  *gone = *listed = 0;
  if (s3store_keys (ss, prefix, &names, &n) == -1)
    return -1;
  *listed = n;
  /* The stale names first, in place (the others freed), then deleted
   * a batch per request. */
  for (size_t i = 0; i < n; i++) {
    if (stale (lv, names[i])) {
      char *t = names[*gone];
      names[(*gone)++] = names[i];
      names[i] = t;
    }
  }
  ret = s3store_delete_names (ss, prefix, names, *gone, true);
  store_names_free (names, n);
  return ret;
}

/* Sweep DISK: its packs no current version names, and its layer
 * objects of no current version (removals and replaces leave them, so
 * that readers still on them read on until the generation has moved;
 * no reader opens them again). */
static int
sweep_disk (struct s3_store *ss, const char *disk)
{
  CLEANUP_FREE char *packs = s3store_key (ss, "packs/%s/", disk);
  CLEANUP_FREE char *layers = s3store_key (ss, "layers/%s/", disk);
  struct live lv = { 0 };
  size_t gone, listed;
  int ret = -1;

  if (packs == NULL || layers == NULL || find_live (ss, disk, &lv) == -1)
    goto out;
  ret = delete_stale (ss, packs, &lv, unused, &gone, &listed);
  log_debug ("%s: disk %s: %zu of %zu packs unused, deleted", ss->base.where,
             disk, gone, listed);
  if (ret == 0)
    ret = delete_stale (ss, layers, &lv, stale_layer_object, &gone, &listed);
 out:
  store_names_free (lv.names, lv.n);
  store_names_free (lv.layers, lv.nlayers);
  free (lv.versions);
  return ret;
}

/* Sweep DISK, then delete its mark. */
static void
sweep_marked (struct s3_store *ss, const char *disk)
{
  CLEANUP_FREE char *key = NULL;

  if (sweep_disk (ss, disk) == -1) {
    log_warn ("%s: disk %s: unused packs stay until the next sweep: %s",
              ss->base.where, disk, err_get ());
    return;
  }
  if ((key = s3store_key (ss, "sweep/%s", disk)) != NULL)
    s3store_delete (ss, key);
}

void
s3store_sweep (struct s3_store *ss, const char *disk)
{
  CLEANUP_FREE char *marks = s3store_key (ss, "sweep/");
  char **disks = NULL;
  size_t n = 0;

  if (disk) {
    CLEANUP_FREE char *key = s3store_key (ss, "sweep/%s", disk);
    uint64_t size;
    if (key && s3store_head (ss, key, &size) == 0)
      sweep_marked (ss, disk);
    else if (key == NULL || errno != ENOENT)
      log_warn ("%s: disk %s: unused packs stay until the next sweep: %s",
                ss->base.where, disk, err_get ());
    return;
  }
  if (marks == NULL || s3store_keys (ss, marks, &disks, &n) == -1) {
    log_warn ("%s: unused packs stay until the next sweep: %s",
              ss->base.where, err_get ());
    return;
  }
  for (size_t i = 0; i < n; i++)
    if (is_uuid (disks[i]))
      sweep_marked (ss, disks[i]);
  store_names_free (disks, n);
}
