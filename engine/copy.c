/* cbtfs engine: copy one store into another (copy.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../chain/bitmap.h"
#include "../chain/catalog.h"
#include "../chain/fold.h"
#include "../chain/index.h"
#include "../chain/layer.h"
#include "../chain/manifests.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "copy.h"
#include "points.h"
#include "prune.h"

/* How long a point being filled at the destination (a mount of it) is
 * waited for. */
#define WRITER_WAIT 30.0

struct copy {
  struct store *src, *dst;
  const struct engine_copy_opts *o;
  engine_copy_cb cb;
  void *opaque;
  struct engine_copy_result *res;
};

static void
tell (struct copy *c, const char *disk, const char *snap, const char *what,
      const char *why)
{
  if (c->cb)
    c->cb (c->opaque, disk, snap, what, why);
}

/* ---- dropping what the source no longer has ----------------------------- */

/* Whether the source's catalog SC has point SNAP of DISK. */
static bool
source_has (const struct catalog *sc, const char *disk, const char *snap)
{
  for (size_t i = 0; i < sc->ndisks; i++) {
    const struct catalog_disk *d = &sc->disks[i];
    if (strcmp (d->uuid, disk) != 0)
      continue;
    for (size_t k = 0; k < d->npoints; k++)
      if (strcmp (layer_meta (d->points[k].layer)->snapshot, snap) == 0)
        return true;
  }
  return false;
}

static void
dropped_cb (void *opaque, const struct catalog_disk *d,
            const struct catalog_point *pt, const struct fold_stats *st,
            const char *why)
{
  struct copy *c = opaque;

  tell (c, d->uuid, layer_meta (pt->layer)->snapshot,
        st ? "dropped" : "failed", why);
  if (st)
    c->res->dropped++;
}

/* Drop the destination's points SC lacks, as prune does. */
static int
drop_extra (struct copy *c, const struct catalog *sc)
{
  struct catalog *dc = catalog_load (c->dst, CATALOG_LAZY);
  struct engine_prune_plan plan = { 0 };
  struct engine_prune_result pr;
  int ret = -1;

  if (dc == NULL)
    return -1;
  plan.disks = calloc (dc->ndisks ? dc->ndisks : 1, sizeof *plan.disks);
  if (plan.disks == NULL)
    goto nomem;
  for (size_t i = 0; i < dc->ndisks; i++) {
    struct engine_prune_disk *pd = &plan.disks[plan.ndisks++];
    const struct catalog_disk *d = &dc->disks[i];
    pd->disk = d;
    pd->reference = INT64_MIN;
    pd->points = calloc (d->npoints ? d->npoints : 1, sizeof *pd->points);
    if (pd->points == NULL)
      goto nomem;
    for (size_t k = 0; k < d->npoints; k++) {
      pd->points[k].keep = source_has (sc, d->uuid,
                                       layer_meta (d->points[k].layer)
                                       ->snapshot);
      plan.kept += pd->points[k].keep;
      plan.dropped += !pd->points[k].keep;
    }
  }
  ret = engine_prune_run (c->dst, NULL, &plan, dropped_cb, c, &pr);
  goto out;

 nomem:
  err_set (ENOMEM, "out of memory");
 out:
  for (size_t i = 0; i < plan.ndisks; i++)
    free (plan.disks[i].points);
  free (plan.disks);
  catalog_free (dc);
  return ret;
}

/* ---- copying a point ---------------------------------------------------- */

/* Make point L (of the source) at the destination, whole but for its
 * blocks: its manifest TEXT and its set, as the source has them. */
static int
make_point (struct copy *c, struct layer *l, const char *text, size_t tlen)
{
  const struct layer_meta *m = layer_meta (l);
  struct store_layer *h = NULL;
  CLEANUP_FREE char *set = NULL;
  uint8_t hdr[INDEX_REC_SIZE];
  size_t slen = 0;
  int ret;

  if (!m->full) {
    h = store_layer_open (c->src, m->disk, m->snapshot);
    set = h ? store_set_read (h, cbt_bitmap_bytes (layer_nblocks (l)) + 1,
                              &slen) : NULL;
    store_layer_close (h);
    if (set == NULL)
      return -1;
  }
  index_header (hdr);
  if (store_disk_prepare (c->dst, m->disk) == -1)
    return -1;
  ret = store_layer_create (c->dst, m->disk, m->snapshot, text, tlen, set,
                            slen, hdr, sizeof hdr);
  if (ret == 0 && manifests_append (c->dst, m->disk, text, tlen) == -1)
    log_warn ("%s", err_get ());        /* only a cache */
  return ret;
}

/* Put into D every block of S's set that D lacks and S holds, each
 * read (and checked) from S.  *PUT counts the blocks put. */
static int
fill (struct copy *c, struct layer *s, struct layer *d, uint64_t *put)
{
  CLEANUP_FREE uint8_t *buf = malloc (CHAIN_BLOCK_SIZE);
  uint64_t n = MIN (layer_nblocks (s), layer_nblocks (d));

  *put = 0;
  if (buf == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (uint64_t b = 0; b < n; b++) {
    enum layer_block ss;
    if (layer_block_state (d, b) != LAYER_MISSING)
      continue;
    ss = layer_block_state (s, b);
    if (ss == LAYER_MISSING || ss == LAYER_ABSENT)
      continue;
    if (layer_read_block (s, b, buf) == -1
        || layer_put_block (d, b, buf) == -1)
      return -1;
    (*put)++;
    c->res->blocks++;
    if (ss == LAYER_DATA)
      c->res->bytes += CHAIN_BLOCK_SIZE;
    if (layer_pending_bytes (d) >= layer_sync_bytes (d)
        && layer_sync (d) == -1)
      return -1;
  }
  return layer_sync (d);
}

/* The destination's point SNAP of DISK if its manifest is TEXT:
 * 1; 0 when it has none (or had another, now removed); -1. */
static int
same_point (struct copy *c, const char *disk, const char *snap,
            const char *text, size_t tlen)
{
  CLEANUP_FREE char *have = NULL;
  uint64_t freed;
  size_t hlen;
  int r = store_has_layer (c->dst, disk, snap);

  if (r != 1)
    return r;
  have = store_manifest_read (c->dst, disk, snap, 1 << 20, &hlen);
  if (have == NULL)
    return -1;
  if (hlen == tlen && memcmp (have, text, tlen) == 0)
    return 1;
  log_info ("snapshot %s: the source's point differs; copying it again",
            snap);
  if (manifests_forget (c->dst, disk, snap, snap) == -1
      || fold_remove (c->dst, disk, snap, WRITER_WAIT, &freed) == -1)
    return -1;
  return 0;
}

/* Copy the source's point L. */
static int
copy_point (struct copy *c, struct layer *l)
{
  const struct layer_meta *m = layer_meta (l);
  CLEANUP_FREE char *text = NULL;
  struct layer *d = NULL;
  uint64_t put = 0;
  size_t tlen;
  int have = -1, ret = -1;

  text = store_manifest_read (c->src, m->disk, m->snapshot, 1 << 20, &tlen);
  if (text == NULL || layer_load (l) == -1)
    goto out;
  have = same_point (c, m->disk, m->snapshot, text, tlen);
  /* A new point shows in DST's mounts once it is filled (or not). */
  if (have == -1
      || (have == 0
          && (store_filling_begin (c->dst, m->disk, m->snapshot) == -1
              || make_point (c, l, text, tlen) == -1)))
    goto out;
  d = layer_open (c->dst, m->disk, m->snapshot, false);
  if (d == NULL || layer_make_writable_wait (d, WRITER_WAIT) == -1
      || fill (c, l, d, &put) == -1)
    goto out;
  ret = 0;
 out:
  layer_close (d);
  if (have == 0)
    engine_filling_end (c->dst, m->disk, m->snapshot);
  if (ret == -1) {
    c->res->failed++;
    tell (c, m->disk, m->snapshot, "failed", err_get ());
    return -1;
  }
  if (have == 0)
    c->res->made++;
  else if (put)
    c->res->filled++;
  else
    c->res->same++;
  tell (c, m->disk, m->snapshot, have == 0 ? "made" : put ? "filled" : "same",
        NULL);
  return 0;
}

/* ---- notes -------------------------------------------------------------- */

/* Whether LINE (LEN bytes, no newline) is a line of TEXT. */
static bool
has_line (const char *text, size_t tlen, const char *line, size_t len)
{
  const char *p = text, *end = text + tlen;

  while (p < end) {
    const char *nl = memchr (p, '\n', end - p);
    size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);
    if (n == len && memcmp (p, line, len) == 0)
      return true;
    p += n + 1;
  }
  return false;
}

/* Append to DISK's NOTE at the destination the source's lines it
 * lacks, in the source's order. */
static int
merge_note (struct copy *c, const char *disk, const char *note)
{
  CLEANUP_FREE char *from = NULL, *to = NULL;
  size_t flen, tlen = 0;
  const char *p, *end;

  from = store_note_read (c->src, disk, note, 64 << 20, &flen);
  if (from == NULL)
    return errno == ENOENT ? 0 : -1;
  to = store_note_read (c->dst, disk, note, 64 << 20, &tlen);
  if (to == NULL && errno != ENOENT)
    return -1;
  for (p = from, end = from + flen; p < end;) {
    const char *nl = memchr (p, '\n', end - p);
    size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);
    /* Only whole lines: a torn one is not worth copying. */
    if (nl && n > 0 && !(to && has_line (to, tlen, p, n))) {
      CLEANUP_FREE char *rec = strndup (p, n + 1);
      if (rec == NULL) {
        err_set (ENOMEM, "out of memory");
        return -1;
      }
      if (store_note_append (c->dst, disk, note, rec, n + 1, true) == -1)
        return -1;
    }
    p += n + 1;
  }
  return 0;
}

/* ---- the run ------------------------------------------------------------ */

static int
copy_disks (struct copy *c, const struct catalog *sc)
{
  int ret = 0;

  for (size_t i = 0; i < sc->ndisks; i++) {
    const struct catalog_disk *d = &sc->disks[i];
    for (size_t k = 0; k < d->npoints; k++)
      if (copy_point (c, d->points[k].layer) == -1)
        ret = -1;
    if (merge_note (c, d->uuid, "names") == -1
        || merge_note (c, d->uuid, "verified") == -1) {
      log_warn ("disk %s: %s", d->uuid, err_get ());
      ret = -1;
    }
  }
  return ret;
}

/* The destination DST, encrypted under KEY_FILE (NULL: not).  The
 * object store backend reads its key from CBTFS_ENCRYPT_KEY_FILE (the
 * source's) at open: it is the destination's for this open alone.  No
 * other thread runs yet (the source's upload threads start with its
 * first write, which a copy never makes). */
static struct store *
open_dst (const char *dst, const char *key_file)
{
  CLEANUP_FREE char *src_key = NULL;
  const char *e = getenv ("CBTFS_ENCRYPT_KEY_FILE");
  struct store *s;
  int r;

  if (e && (src_key = strdup (e)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  r = key_file ? setenv ("CBTFS_ENCRYPT_KEY_FILE", key_file, 1)
    : unsetenv ("CBTFS_ENCRYPT_KEY_FILE");
  if (r == -1) {
    err_sys (errno, "setenv");
    return NULL;
  }
  s = store_open (dst, true);
  if (s && src_key && key_file == NULL)
    log_warn ("%s is not encrypted: what is copied there from the encrypted "
              "store can be read without the key (--dst-encrypt-key-file "
              "encrypts a new store)", dst);
  r = src_key ? setenv ("CBTFS_ENCRYPT_KEY_FILE", src_key, 1)
    : unsetenv ("CBTFS_ENCRYPT_KEY_FILE");
  if (r == -1) {
    err_sys (errno, "setenv");
    store_close (s);
    return NULL;
  }
  return s;
}

int
engine_copy (const char *src, const char *dst,
             const struct engine_copy_opts *o, engine_copy_cb cb,
             void *opaque, struct engine_copy_result *res)
{
  struct copy c = { .o = o, .cb = cb, .opaque = opaque, .res = res };
  struct catalog *sc = NULL;
  size_t finished;
  int ret = -1;

  memset (res, 0, sizeof *res);
  sc = catalog_open (src, CATALOG_LAZY);
  if (sc == NULL)
    return -1;
  c.src = sc->own_store;
  if (sc->nskipped)
    log_warn ("%s: %zu damaged layers are not copied", src, sc->nskipped);
  c.dst = open_dst (dst, o->dst_key_file);
  if (c.dst == NULL)
    goto out;
  if (c.src->id[0] && strcmp (c.src->id, c.dst->id) == 0) {
    err_set (EINVAL, "%s and %s are the same store (or copies with one "
             "identity: give the copy a new id, FORMAT.md)", src, dst);
    err_set_class (ERR_CONFIG);
    goto out;
  }
  if (store_lock (c.dst, "copy", o->lock_wait) == -1)
    goto out;
  if (engine_prune_resume (c.dst, &finished) == -1)
    log_warn ("%s", err_get ());
  if (!o->keep_extra && drop_extra (&c, sc) == -1)
    log_warn ("%s: %s", dst, err_get ());
  ret = copy_disks (&c, sc);
  if (ret == 0 && res->failed) {
    err_set (EIO, "%zu points were not copied whole", res->failed);
    ret = -1;
  }
  else if (ret == -1 && res->failed)
    err_set (EIO, "%zu points were not copied whole", res->failed);
 out:
  store_close (c.dst);
  catalog_free (sc);
  return ret;
}
