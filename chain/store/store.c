/* cbtfs: the store interface: pick a backend, dispatch to it, and the
 * checks every backend would otherwise repeat (names are uuids). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/error.h"
#include "../../common/log.h"
#include "store.h"

/* Backends added at run time (store_backend_add), tried first; the
 * directory backend claims everything, so it comes last. */
static const struct store_backend *added[4];
static size_t nadded;

int
store_backend_add (const struct store_backend *be)
{
  for (size_t i = 0; i < nadded; i++)
    if (added[i] == be)
      return 0;
  if (nadded == ARRAY_SIZE (added)) {
    err_set (ENOSPC, "too many store backends");
    return -1;
  }
  added[nadded++] = be;
  return 0;
}

struct store *
store_open (const char *where, bool create)
{
  for (size_t i = 0; i < nadded; i++)
    if (added[i]->claims (where))
      return added[i]->open (where, create);
  if (store_posix.claims (where)) {
    const char *key = getenv ("CBTFS_ENCRYPT_KEY_FILE");
    /* Encryption is for stores that leave the building: the object
     * store backend's alone.  Never ignore a key: the user thinks the
     * store encrypted. */
    if (key && *key) {
      err_set (EINVAL, "%s is a directory store: --encrypt-key-file is for "
               "object stores (s3://) only", where);
      err_set_class (ERR_CONFIG);
      return NULL;
    }
    return store_posix.open (where, create);
  }
  err_set (EINVAL, "%s: no store backend takes this", where);
  return NULL;
}

int
store_marker_parse (const char *where, const char *text, int *format,
                    char id[UUID_LEN + 1])
{
  const char *line;
  int version;

  if (sscanf (text, "cbtfs-store %d", &version) != 1) {
    err_set (EPROTO, "%s is not a cbtfs store (bad %s)", where,
             STORE_MARKER);
    return -1;
  }
  if (version < 1 || version > STORE_FORMAT) {
    err_set (EPROTO, "%s has store format %d, this cbtfs reads 1 to %d",
             where, version, STORE_FORMAT);
    return -1;
  }
  *format = version;
  id[0] = '\0';
  line = strstr (text, "\nid ");
  if (line) {
    if (strlen (line + 4) < UUID_LEN + 1 || line[4 + UUID_LEN] != '\n') {
      err_set (EPROTO, "%s: bad %s (its id line)", where, STORE_MARKER);
      return -1;
    }
    memcpy (id, line + 4, UUID_LEN);
    id[UUID_LEN] = '\0';
    if (!is_uuid (id)) {
      err_set (EPROTO, "%s: bad %s (its id is not a uuid)", where,
               STORE_MARKER);
      return -1;
    }
  }
  return 0;
}

size_t
store_marker_format (int format, const char *id, char *buf, size_t len)
{
  int n = snprintf (buf, len, "cbtfs-store %d\nid %s\n", format, id);

  return n < 0 ? 0 : (size_t) n < len ? (size_t) n : len - 1;
}

void
store_close (struct store *s)
{
  if (s)
    s->be->close (s);
}

/* WHO goes into the holder's record and into other processes'
 * messages: a short plain word, nothing that could break a line. */
static int
check_who (const char *who)
{
  size_t n = strlen (who);

  if (n >= 1 && n <= STORE_WHO_MAX
      && strspn (who, "abcdefghijklmnopqrstuvwxyz-") == n)
    return 0;
  err_set (EINVAL, "'%s' is not a command name", who);
  return -1;
}

static int check_name (const char *what, const char *name);

static int
check_wait (double wait)
{
  if (wait >= 0)                /* not NaN */
    return 0;
  err_set (EINVAL, "a lock wait must be 0 s or more, not %g s", wait);
  return -1;
}

/* Clear the filling marks a crashed run left of DISK, or of every disk
 * when DISK is NULL (store_lock's holder is the only run that sets
 * them, as store_disk_lock's is of its disk's); best effort: a mark
 * left hides its point until the next lock holder clears it. */
static void
clear_filling (struct store *s, const char *disk)
{
  char **names;
  size_t n, cleared = 0;

  if (s->be->filling_list (s, &names, &n) == -1) {
    log_warn ("%s", err_get ());
    return;
  }
  for (size_t i = 0; i < n; i++) {
    names[i][UUID_LEN] = '\0';         /* "DISK/SNAPSHOT" */
    if (disk && strcmp (names[i], disk) != 0)
      continue;
    if (s->be->filling_mark (s, names[i], names[i] + UUID_LEN + 1,
                             false) == 0)
      cleared++;
    else
      log_warn ("%s", err_get ());
  }
  store_names_free (names, n);
  if (cleared)
    s->be->changed (s);
}

int
store_lock (struct store *s, const char *who, double wait)
{
  if (check_who (who) == -1 || check_wait (wait) == -1)
    return -1;
  if (s->be->lock (s, who, wait) == -1)
    return -1;
  clear_filling (s, NULL);
  return 0;
}

int
store_lock_shared (struct store *s, const char *who, double wait)
{
  if (s->be->lock_shared == NULL)
    return store_lock (s, who, wait);
  if (check_who (who) == -1 || check_wait (wait) == -1
      || s->be->lock_shared (s, who, wait) == -1)
    return -1;
  s->shared = true;
  return 0;
}

int
store_disk_lock (struct store *s, const char *disk, const char *who,
                 double wait)
{
  if (check_name ("disk", disk) == -1 || check_who (who) == -1
      || check_wait (wait) == -1)
    return -1;
  if (!s->shared)
    return 0;
  if (s->be->disk_lock (s, disk, who, wait) == -1)
    return -1;
  clear_filling (s, disk);
  return 0;
}

void
store_disk_unlock (struct store *s, const char *disk)
{
  if (s->shared && check_name ("disk", disk) == 0)
    s->be->disk_unlock (s, disk);
}

int
store_filling_begin (struct store *s, const char *disk, const char *snapshot)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1)
    return -1;
  return s->be->filling_mark (s, disk, snapshot, true);
}

int
store_filling_end (struct store *s, const char *disk, const char *snapshot)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1
      || s->be->filling_mark (s, disk, snapshot, false) == -1)
    return -1;
  s->be->changed (s);
  return 0;
}

int
store_filling_list (struct store *s, char ***names, size_t *n)
{
  return s->be->filling_list (s, names, n);
}

uint64_t
store_commit_bytes (const struct store *s)
{
  return s->be->commit_bytes;
}

int
store_upgrade (struct store *s)
{
  return s->format == STORE_FORMAT ? 0 : s->be->upgrade (s);
}

int
store_owner (struct store *s, uid_t *uid, gid_t *gid, mode_t *mode)
{
  return s->be->owner (s, uid, gid, mode);
}

/* Names reach backends as path components or object keys: only uuids. */
static int
check_name (const char *what, const char *name)
{
  if (is_uuid (name))
    return 0;
  err_set (EINVAL, "'%s' is not a %s uuid", name, what);
  return -1;
}

int
store_disk_prepare (struct store *s, const char *disk)
{
  if (check_name ("disk", disk) == -1)
    return -1;
  return s->be->disk_prepare (s, disk);
}

int
store_list (struct store *s, const char *disk, char ***names, size_t *n)
{
  *names = NULL;
  *n = 0;
  if (disk && check_name ("disk", disk) == -1)
    return -1;
  return s->be->list (s, disk, names, n);
}

void
store_names_free (char **names, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (names[i]);
  free (names);
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

void
store_names_sort (char **names, size_t n)
{
  if (n)
    qsort (names, n, sizeof *names, cmp_str);
}

bool
store_pair_name (char *name, char sep)
{
  bool ok;

  if (strlen (name) != 2 * UUID_LEN + 1 || name[UUID_LEN] != sep)
    return false;
  name[UUID_LEN] = '\0';
  ok = is_uuid (name) && is_uuid (name + UUID_LEN + 1);
  name[UUID_LEN] = ok ? '/' : sep;
  return ok;
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
store_has_layer (struct store *s, const char *disk, const char *snapshot)
{
  if (!is_uuid (snapshot))
    return 0;
  if (check_name ("disk", disk) == -1)
    return -1;
  return s->be->has_layer (s, disk, snapshot);
}

/* Notes are named by the core, never by the wire: a plain word. */
static int
check_note (const char *note)
{
  if (note[0] && strspn (note, "abcdefghijklmnopqrstuvwxyz-") == strlen (note))
    return 0;
  err_set (EINVAL, "'%s' is not a note name", note);
  return -1;
}

char *
store_note_read (struct store *s, const char *disk, const char *note,
                 size_t max, size_t *len)
{
  if (check_name ("disk", disk) == -1 || check_note (note) == -1)
    return NULL;
  return s->be->note_read (s, disk, note, max, len);
}

int
store_note_append (struct store *s, const char *disk, const char *note,
                   const void *rec, size_t len, bool durable)
{
  if (check_name ("disk", disk) == -1 || check_note (note) == -1)
    return -1;
  if (s->be->note_append (s, disk, note, rec, len, durable) == -1)
    return -1;
  /* A mount shows the host's checksums that checks record (MD5SUMS). */
  if (strcmp (note, "verified") == 0)
    s->be->changed (s);
  return 0;
}

int
store_note_replace (struct store *s, const char *disk, const char *note,
                    const void *rec, size_t len)
{
  if (check_name ("disk", disk) == -1 || check_note (note) == -1)
    return -1;
  return s->be->note_replace (s, disk, note, rec, len);
}

int
store_layer_create (struct store *s, const char *disk, const char *snapshot,
                    const void *manifest, size_t mlen,
                    const void *set, size_t slen,
                    const void *head, size_t hlen)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1)
    return -1;
  if (s->be->layer_create (s, disk, snapshot, manifest, mlen, set, slen,
                           head, hlen) == -1)
    return -1;
  s->be->changed (s);
  return 0;
}

int
store_layer_remove (struct store *s, const char *disk, const char *snapshot)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1)
    return -1;
  if (s->be->layer_remove (s, disk, snapshot) == -1)
    return -1;
  s->be->changed (s);
  return 0;
}

struct store_layer *
store_layer_stage (struct store *s, const char *disk, const char *snapshot,
                   const char *base, const void *manifest, size_t mlen,
                   const void *set, size_t slen, const void *head, size_t hlen,
                   uint64_t nblocks)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1
      || check_name ("snapshot", base) == -1)
    return NULL;
  return s->be->layer_stage (s, disk, snapshot, base, manifest, mlen, set,
                             slen, head, hlen, nblocks);
}

int
store_layer_replace (struct store_layer *h)
{
  if (h->store->be->layer_replace (h) == -1)
    return -1;
  h->store->be->changed (h->store);
  return 0;
}

int
store_generation (struct store *s, uint64_t *gen)
{
  return s->be->generation (s, gen);
}

char *
store_manifest_read (struct store *s, const char *disk, const char *snapshot,
                     size_t max, size_t *len)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1)
    return NULL;
  return s->be->manifest_read (s, disk, snapshot, max, len);
}

struct store_layer *
store_layer_open (struct store *s, const char *disk, const char *snapshot)
{
  if (check_name ("disk", disk) == -1
      || check_name ("snapshot", snapshot) == -1)
    return NULL;
  return s->be->layer_open (s, disk, snapshot);
}

void
store_layer_close (struct store_layer *h)
{
  if (h)
    h->store->be->layer_close (h);
}

const char *
store_layer_where (const struct store_layer *h)
{
  return h->store->be->layer_where (h);
}

int
store_layer_usage (struct store_layer *h, uint64_t *bytes)
{
  return h->store->be->usage (h, bytes);
}

char *
store_set_read (struct store_layer *h, size_t max, size_t *len)
{
  return h->store->be->set_read (h, max, len);
}

ssize_t
store_index_read (struct store_layer *h, void *buf, size_t len, uint64_t off)
{
  return h->store->be->index_read (h, buf, len, off);
}

ssize_t
store_block_read (struct store_layer *h, uint64_t b, void *buf)
{
  return h->store->be->block_read (h, b, buf);
}

int
store_writer_open (struct store_layer *h, uint64_t nblocks)
{
  return h->store->be->writer_open (h, nblocks);
}

int
store_index_cut (struct store_layer *h, uint64_t len)
{
  return h->store->be->index_cut (h, len);
}

int
store_blocks_write (struct store_layer *h, uint64_t first, const void *buf,
                    size_t len)
{
  return h->store->be->blocks_write (h, first, buf, len);
}

int
store_commit (struct store_layer *h, const void *recs, size_t len,
              uint64_t at)
{
  return h->store->be->commit (h, recs, len, at);
}

void
store_blocks_drop (struct store_layer *h, uint64_t first, uint64_t n)
{
  h->store->be->blocks_drop (h, first, n);
}

void
store_writer_close (struct store_layer *h)
{
  h->store->be->writer_close (h);
}
