/* cbtfs: one layer of a chain: the blocks one snapshot changed.
 *
 * Thread model: see layer.h.  Readers take l->lock shared; putting a
 * block takes it exclusively only to queue the record; layer_sync holds
 * l->sync_lock across its fsyncs and takes l->lock exclusively only to
 * swap the pending queue out and, at the end, to mark blocks present.
 * layer_load holds l->load_lock while it reads the set and index, and
 * l->lock exclusively while it fills the in-memory state.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "../common/cleanup.h"
#include "../common/dio.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "layer.h"
#include "manifests.h"

/* ---- index records ----------------------------------------------------
 * 40 bytes, little-endian: u64 first block, u32 count, u32 kind,
 * 16-byte checksum (DATA) or zeros, u64 XXH3-64 of the first 32 bytes.
 * The file starts with one header record of the same size.
 */
#define REC_SIZE 40
#define REC_DATA 1
#define REC_ZERO 2
static const char index_magic[8] = "CBTFSIX1";

struct rec {
  uint64_t block;
  uint32_t count;
  uint32_t kind;
  uint8_t sum[SUM_LEN];
};

static void
put_le64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = v >> (8 * i);
}

static void
put_le32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static uint32_t
get_le32 (const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static void
rec_encode (const struct rec *r, uint8_t out[REC_SIZE])
{
  put_le64 (out, r->block);
  put_le32 (out + 8, r->count);
  put_le32 (out + 12, r->kind);
  memcpy (out + 16, r->sum, SUM_LEN);
  put_le64 (out + 32, XXH3_64bits (out, 32));
}

/* 1 if IN is a record whose check matches, 0 if not. */
static int
rec_decode (const uint8_t in[REC_SIZE], struct rec *r)
{
  if (get_le64 (in + 32) != XXH3_64bits (in, 32))
    return 0;
  r->block = get_le64 (in);
  r->count = get_le32 (in + 8);
  r->kind = get_le32 (in + 12);
  memcpy (r->sum, in + 16, SUM_LEN);
  return 1;
}

static void
header_encode (uint8_t out[REC_SIZE])
{
  memset (out, 0, REC_SIZE);
  memcpy (out, index_magic, sizeof index_magic);
  put_le64 (out + 32, XXH3_64bits (out, 32));
}

/* ---- manifest ---------------------------------------------------------- */

/* Names may hold any byte but NUL; the manifest is line-based, so
 * control bytes, space, '%' and DEL are written as %XX. */
static int
pct_encode (FILE *f, const char *s)
{
  for (; *s; s++) {
    unsigned char c = *s;
    if (c <= 0x20 || c == 0x7f || c == '%') {
      if (fprintf (f, "%%%02X", c) < 0)
        return -1;
    }
    else if (fputc (c, f) == EOF)
      return -1;
  }
  return 0;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static char *
pct_decode (const char *s, size_t len)
{
  char *out = malloc (len + 1), *p = out;
  size_t i;

  if (out == NULL)
    return NULL;
  for (i = 0; i < len; i++) {
    if (s[i] == '%') {
      int hi, lo;
      /* %00 would cut the name short: refuse it like any bad escape. */
      if (i + 2 >= len || (hi = hexval (s[i + 1])) < 0
          || (lo = hexval (s[i + 2])) < 0 || (hi == 0 && lo == 0)) {
        free (out);
        errno = EPROTO;
        return NULL;
      }
      *p++ = hi * 16 + lo;
      i += 2;
    }
    else
      *p++ = s[i];
  }
  *p = '\0';
  return out;
}

char *
layer_meta_format (const struct layer_meta *m)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream (&text, &len);
  int ok;

  if (f == NULL)
    return NULL;
  ok = fprintf (f, "cbtfs-layer 1\n"
                "snapshot %s\ndisk %s\nchain %s\nparent %s\nvm %s\n"
                "seq %" PRIu64 "\ntime %" PRId64 "\nsize %" PRIu64 "\n"
                "blocks %s\nfill %s\nuserdevice %s\nvm-name ",
                m->snapshot, m->disk, m->chain,
                m->parent[0] ? m->parent : "-", m->vm[0] ? m->vm : "-",
                m->seq, m->time, m->size, m->full ? "all" : "changed",
                m->lazy ? "lazy" : "eager",
                m->userdevice[0] ? m->userdevice : "-") >= 0
    && pct_encode (f, m->vm_name ? m->vm_name : "") == 0
    && fputs ("\ndisk-name ", f) >= 0
    && pct_encode (f, m->disk_name ? m->disk_name : "") == 0
    && fputs ("\n", f) >= 0;
  if (fclose (f) == EOF || !ok) {
    free (text);
    return NULL;
  }
  /* The check line makes damage to the manifest visible rather than
   * silently changing what a layer claims to be. */
  {
    char *out;
    if (asprintf (&out, "%scheck %016" PRIx64 "\n", text,
                  (uint64_t) XXH3_64bits (text, len)) == -1)
      out = NULL;
    free (text);
    return out;
  }
}

static int
parse_u64 (const char *s, size_t n, uint64_t *out)
{
  uint64_t v = 0;
  size_t i;

  if (n == 0 || n > 20)
    return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    if (v > (UINT64_MAX - (s[i] - '0')) / 10)
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

static int
copy_uuid (char dst[UUID_LEN + 1], const char *s, size_t n, bool optional)
{
  if (optional && n == 1 && s[0] == '-') {
    dst[0] = '\0';
    return 0;
  }
  if (n != UUID_LEN)
    return -1;
  memcpy (dst, s, n);
  dst[n] = '\0';
  return is_uuid (dst) ? 0 : -1;
}

int
layer_meta_parse (const char *text, size_t len, struct layer_meta *m)
{
  static const char *const keys[] = {
    "snapshot", "disk", "chain", "parent", "vm", "seq", "time", "size",
    "blocks", "userdevice", "vm-name", "disk-name", "fill",
  };
  unsigned seen = 0;
  const char *p = text, *end = text + len, *check_line = NULL;
  uint64_t v;

  memset (m, 0, sizeof *m);
  if (len < 14 || memcmp (text, "cbtfs-layer 1\n", 14) != 0) {
    err_set (EPROTO, "not a cbtfs layer manifest (format 1)");
    return -1;
  }
  for (p = text + 14; p < end;) {
    const char *nl = memchr (p, '\n', end - p), *sp, *val;
    size_t klen, vlen;
    unsigned k;

    if (nl == NULL)
      goto bad;
    sp = memchr (p, ' ', nl - p);
    if (sp == NULL)
      goto bad;
    klen = sp - p;
    val = sp + 1;
    vlen = nl - val;
    if (klen == 5 && memcmp (p, "check", 5) == 0) {
      check_line = p;
      if (nl + 1 != end || vlen != 16)
        goto bad;
      break;
    }
    for (k = 0; k < ARRAY_SIZE (keys); k++)
      if (strlen (keys[k]) == klen && memcmp (p, keys[k], klen) == 0)
        break;
    if (k == ARRAY_SIZE (keys) || (seen & (1u << k)))
      goto bad;
    seen |= 1u << k;
    switch (k) {
    case 0: if (copy_uuid (m->snapshot, val, vlen, false)) goto bad; break;
    case 1: if (copy_uuid (m->disk, val, vlen, false)) goto bad; break;
    case 2: if (copy_uuid (m->chain, val, vlen, false)) goto bad; break;
    case 3: if (copy_uuid (m->parent, val, vlen, true)) goto bad; break;
    case 4: if (copy_uuid (m->vm, val, vlen, true)) goto bad; break;
    case 5: if (parse_u64 (val, vlen, &m->seq) || m->seq == 0) goto bad; break;
    case 6:
      if (parse_u64 (val, vlen, &v) || v > INT64_MAX) goto bad;
      m->time = v;
      break;
    case 7:
      /* Sizes past 2^62 would overflow offset arithmetic elsewhere. */
      if (parse_u64 (val, vlen, &m->size) || m->size > (UINT64_C (1) << 62))
        goto bad;
      break;
    case 8:
      if (vlen == 3 && memcmp (val, "all", 3) == 0)
        m->full = true;
      else if (!(vlen == 7 && memcmp (val, "changed", 7) == 0))
        goto bad;
      break;
    case 9:
      if (vlen == 1 && val[0] == '-')
        break;
      if (vlen == 0 || vlen >= sizeof m->userdevice
          || parse_u64 (val, vlen, &v))
        goto bad;
      memcpy (m->userdevice, val, vlen);
      break;
    case 10:
      if ((m->vm_name = pct_decode (val, vlen)) == NULL) goto bad;
      break;
    case 11:
      if ((m->disk_name = pct_decode (val, vlen)) == NULL) goto bad;
      break;
    case 12:
      if (vlen == 4 && memcmp (val, "lazy", 4) == 0)
        m->lazy = true;
      else if (!(vlen == 5 && memcmp (val, "eager", 5) == 0))
        goto bad;
      break;
    }
    p = nl + 1;
  }
  if (check_line == NULL || seen != (1u << ARRAY_SIZE (keys)) - 1)
    goto bad;
  {
    char hex[17];
    snprintf (hex, sizeof hex, "%016" PRIx64,
              (uint64_t) XXH3_64bits (text, check_line - text));
    if (memcmp (hex, check_line + 6, 16) != 0) {
      layer_meta_clear (m);
      err_set (EPROTO, "layer manifest is damaged (check mismatch)");
      return -1;
    }
  }
  return 0;

 bad:
  layer_meta_clear (m);
  err_set (EPROTO, "layer manifest is malformed at byte %zu",
           (size_t) (p - text));
  return -1;
}

void
layer_meta_clear (struct layer_meta *m)
{
  free (m->vm_name);
  free (m->disk_name);
  m->vm_name = m->disk_name = NULL;
}

/* ---- pending records -------------------------------------------------- */

struct pending {
  struct rec *v;
  size_t len, cap;
};

static int
pending_add (struct layer *l, const struct rec *r)
{
  struct pending *p = l->pending;

  if (p->len == p->cap) {
    size_t ncap = p->cap ? p->cap * 2 : 256;
    struct rec *nv = realloc (p->v, ncap * sizeof *nv);
    if (nv == NULL)
      return -1;
    p->v = nv;
    p->cap = ncap;
  }
  p->v[p->len++] = *r;
  return 0;
}

/* ---- data file descriptors ----------------------------------------------
 * A store can hold far more layers than a process may have open files
 * (1024 by default), so a layer opened for reading opens its data file
 * only to read a block, and keeps it in a bounded LRU (a quarter of the
 * process's limit, which cbtfs raises to the hard limit); a descriptor
 * some reader is using is never closed.  Layers being filled keep
 * theirs (fd_pinned).  fdc_lock guards the LRU, the counts and the
 * unpinned layers' data_fd; it is held across open(2) and close(2) but
 * never across a read.
 */
#define FD_CACHE_MAX 16384

static pthread_mutex_t fdc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct layer *fdc_head, *fdc_tail;   /* most recently used first */
static unsigned fdc_open;
static unsigned fdc_max;                    /* 0 until first needed */

static void
fdc_unlink (struct layer *l)
{
  if (l->fd_prev)
    l->fd_prev->fd_next = l->fd_next;
  else
    fdc_head = l->fd_next;
  if (l->fd_next)
    l->fd_next->fd_prev = l->fd_prev;
  else
    fdc_tail = l->fd_prev;
  l->fd_prev = l->fd_next = NULL;
}

static void
fdc_push (struct layer *l)
{
  l->fd_next = fdc_head;
  l->fd_prev = NULL;
  if (fdc_head)
    fdc_head->fd_prev = l;
  fdc_head = l;
  if (fdc_tail == NULL)
    fdc_tail = l;
}

/* Close the least recently used idle descriptors until fewer than MAX
 * are open. */
static void
fdc_make_room (unsigned max)
{
  struct layer *l = fdc_tail;

  while (fdc_open >= max && l) {
    struct layer *prev = l->fd_prev;
    if (l->fd_users == 0) {
      fdc_unlink (l);
      close (l->data_fd);
      close (l->rindex_fd);
      l->data_fd = l->rindex_fd = -1;
      fdc_open--;
    }
    l = prev;
  }
}

/* Open DIR/NAME for reading, giving back cached descriptors when the
 * process has none left.  Called with fdc_lock held. */
static int
open_cached (const char *dir, const char *name)
{
  CLEANUP_FREE char *path = NULL;
  int fd;

  if (asprintf (&path, "%s/%s", dir, name) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1 && (errno == EMFILE || errno == ENFILE)) {
    /* Others used up the process's files: give back all we can. */
    fdc_make_room (1);
    fd = open (path, O_RDONLY | O_CLOEXEC);
  }
  if (fd == -1)
    err_sys (errno, "open %s", path);
  return fd;
}

/* The data file descriptor for reading, and in *IFD the index's (for
 * the records that hold checksums), held until data_fd_put.  -1 with
 * err_* if they cannot be opened. */
static int
data_fd_get (struct layer *l, int *ifd)
{
  int fd;

  if (l->fd_pinned) {
    *ifd = l->index_fd;
    return l->data_fd;
  }
  pthread_mutex_lock (&fdc_lock);
  if (l->data_fd >= 0) {
    fdc_unlink (l);
    fdc_push (l);
  }
  else {
    if (fdc_max == 0) {
      /* An eighth of what the process may open (two files a layer),
       * leaving the rest to FUSE, NBD connections and layers being
       * filled.  Reading a point whose chain is deeper than this opens
       * and closes files often. */
      struct rlimit rl;
      fdc_max = FD_CACHE_MAX;
      if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur / 8 < fdc_max)
        fdc_max = MAX (rl.rlim_cur / 8, 4);
    }
    fdc_make_room (fdc_max);
    fd = open_cached (l->dir, "data");
    if (fd >= 0 && (l->rindex_fd = open_cached (l->dir, "index")) == -1) {
      close (fd);
      fd = -1;
    }
    if (fd == -1) {
      pthread_mutex_unlock (&fdc_lock);
      return -1;
    }
    l->data_fd = fd;
    fdc_open++;
    fdc_push (l);
  }
  l->fd_users++;
  fd = l->data_fd;
  *ifd = l->rindex_fd;
  pthread_mutex_unlock (&fdc_lock);
  return fd;
}

static void
data_fd_put (struct layer *l)
{
  if (l->fd_pinned)
    return;
  pthread_mutex_lock (&fdc_lock);
  l->fd_users--;
  pthread_mutex_unlock (&fdc_lock);
}

/* ---- open / create ---------------------------------------------------- */

/* Layers' ids: never 0, never reused (a freed layer's address may be). */
static uint64_t next_id;

static struct layer *
layer_alloc (void)
{
  struct layer *l = calloc (1, sizeof *l);

  if (l == NULL)
    return NULL;
  l->pending = calloc (1, sizeof (struct pending));
  if (l->pending == NULL) {
    free (l);
    return NULL;
  }
  pthread_rwlock_init (&l->lock, NULL);
  pthread_mutex_init (&l->sync_lock, NULL);
  pthread_mutex_init (&l->write_lock, NULL);
  pthread_mutex_init (&l->resolve_lock, NULL);
  pthread_mutex_init (&l->load_lock, NULL);
  l->data_fd = l->wdata_fd = l->direct_fd = l->index_fd = l->rindex_fd = -1;
  l->id = __atomic_add_fetch (&next_id, 1, __ATOMIC_RELAXED);
  return l;
}

/* Free what layer_load read: the set, the block states, the record
 * map.  Counts and the index position are the callers' to reset. */
static void
free_blocks (struct layer *l)
{
  bitmap_free (&l->changed);
  bitmap_free (&l->ready);
  bitmap_free (&l->present);
  free (l->recno);
  free (l->rank);
  l->recno = l->rank = NULL;
  sums_free (&l->unsynced);
}

void
layer_close (struct layer *l)
{
  struct pending *p;

  if (l == NULL)
    return;
  p = l->pending;
  if (p)
    free (p->v);
  free (p);
  if (l->wdata_fd >= 0 && l->wdata_fd != l->data_fd)
    close (l->wdata_fd);
  if (l->direct_fd >= 0)
    close (l->direct_fd);
  if (!l->fd_pinned) {
    pthread_mutex_lock (&fdc_lock);
    if (l->data_fd >= 0) {
      fdc_unlink (l);
      fdc_open--;
      close (l->data_fd);
      close (l->rindex_fd);
    }
    pthread_mutex_unlock (&fdc_lock);
  }
  else if (l->data_fd >= 0)
    close (l->data_fd);
  if (l->index_fd >= 0)
    close (l->index_fd);         /* releases the writer lock */
  free_blocks (l);
  layer_meta_clear (&l->meta);
  free (l->load_error);
  free (l->dir);
  pthread_mutex_destroy (&l->load_lock);
  pthread_rwlock_destroy (&l->lock);
  pthread_mutex_destroy (&l->sync_lock);
  pthread_mutex_destroy (&l->write_lock);
  pthread_mutex_destroy (&l->resolve_lock);
  if (l->resolve_cache_free)
    l->resolve_cache_free (l->resolve_cache);
  free (l);
}

/* Build the rank directory of the set and an empty record map. */
static int
make_rank (struct layer *l)
{
  size_t words = (l->nblocks + 63) / 64;
  uint64_t n = 0;

  if (l->nchanged >= UINT32_MAX) {
    err_set (EFBIG, "snapshot %s: too many blocks for one layer",
             l->meta.snapshot);
    return -1;
  }
  l->recno = calloc (l->nchanged ? l->nchanged : 1, sizeof *l->recno);
  if (l->recno == NULL)
    goto nomem;
  if (l->meta.full)
    return 0;
  l->rank = malloc ((words ? words : 1) * sizeof *l->rank);
  if (l->rank == NULL)
    goto nomem;
  for (size_t w = 0; w < words; w++) {
    l->rank[w] = n;
    n += __builtin_popcountll (l->changed.words[w]);
  }
  return 0;
 nomem:
  err_set (ENOMEM, "out of memory");
  return -1;
}

/* The place of block B (in the set) among the blocks of the set. */
static inline uint64_t
set_rank (const struct layer *l, uint64_t b)
{
  if (l->rank == NULL)
    return b;
  return l->rank[b >> 6] + __builtin_popcountll (
    l->changed.words[b >> 6] & ((UINT64_C (1) << (b & 63)) - 1));
}

static int
load_changed (struct layer *l)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_FREE uint8_t *buf = NULL;
  size_t len;

  if (bitmap_init (&l->present, l->nblocks) == -1
      || bitmap_init (&l->ready, l->nblocks) == -1)
    return -1;
  if (l->meta.full) {
    if (bitmap_init (&l->changed, l->nblocks) == -1)
      return -1;
    bitmap_set_all (&l->changed);
  }
  else {
    if (asprintf (&path, "%s/changed", l->dir) == -1)
      return -1;
    buf = (uint8_t *) read_file (path, cbt_bitmap_bytes (l->nblocks), &len);
    if (buf == NULL) {
      err_sys (errno, "%s", path);
      return -1;
    }
    if (cbt_bitmap_decode (buf, len, l->nblocks, &l->changed) == -1) {
      err_prefix ("%s", path);
      return -1;
    }
  }
  l->nchanged = bitmap_count (&l->changed);
  return 0;
}

/* Apply one durable record, number N in the index, to the in-memory
 * state.  Called with l->lock held exclusively (or before the layer is
 * shared). */
static int
apply_rec (struct layer *l, const struct rec *r, uint64_t n)
{
  uint64_t b;

  if (r->kind == REC_DATA && n > UINT32_MAX) {
    err_set (EFBIG, "snapshot %s: its index has too many records",
             l->meta.snapshot);
    return -1;
  }
  for (b = r->block; b < r->block + r->count; b++) {
    const uint8_t *u;
    bool was_data;

    if (!bitmap_get (&l->changed, b))
      continue;                 /* a valid record of a block not in the set */
    was_data = bitmap_get (&l->present, b) && l->recno[set_rank (l, b)];
    bitmap_set (&l->ready, b);
    if (!bitmap_get (&l->present, b)) {
      bitmap_set (&l->present, b);
      l->npresent++;
    }
    l->recno[set_rank (l, b)] = r->kind == REC_DATA ? n : 0;
    l->nstored += (r->kind == REC_DATA) - was_data;
    /* Its checksum is in the index now (unless a newer put is queued). */
    u = sums_get (&l->unsynced, b);
    if (u && (r->kind != REC_DATA || memcmp (u, r->sum, SUM_LEN) == 0))
      sums_del (&l->unsynced, b);
  }
  return 0;
}

static int
rec_valid (const struct layer *l, const struct rec *r)
{
  if (r->count == 0 || r->block >= l->nblocks
      || r->count > l->nblocks - r->block)
    return 0;
  if (r->kind == REC_DATA)
    return r->count == 1;
  return r->kind == REC_ZERO;
}

/* Call FN for every record of the index at or after byte FROM (the
 * header is not checked here), with its number (its offset / 40).  A
 * record whose check fails is a torn tail when no good record follows
 * it: a crash interrupted its append, and the scan ends before it
 * (where the next writer cuts the file).  One that a good record
 * follows is damage: it is skipped and counted in *DAMAGED, and the
 * block it named stays missing (copied or fetched again).  Cutting
 * there instead would throw away the good records after it.  *END gets
 * the byte after the last good record.  A record whose check passes but
 * which makes no sense is damage no record can be trusted past: -1
 * with err_* and errno EPROTO. */
static int
scan_index (struct layer *l, int fd, const char *path, uint64_t from,
            int (*fn) (struct layer *, const struct rec *, uint64_t),
            uint64_t *end, uint64_t *damaged)
{
  enum { CHUNK = REC_SIZE * 1024 };
  CLEANUP_FREE uint8_t *buf = malloc (CHUNK);
  uint64_t off = from, bad = 0;
  ssize_t r, i;

  if (buf == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  *end = from;
  do {
    r = full_pread (fd, buf, CHUNK, off);
    if (r == -1) {
      err_sys (errno, "read %s", path);
      return -1;
    }
    for (i = 0; i + REC_SIZE <= r; i += REC_SIZE) {
      struct rec rec;
      if (!rec_decode (buf + i, &rec)) {
        bad++;
        continue;
      }
      if (!rec_valid (l, &rec)) {
        err_set (EPROTO, "%s: damaged record at byte %" PRIu64, path,
                 off + i);
        return -1;
      }
      if (fn (l, &rec, (off + i) / REC_SIZE) == -1)
        return -1;
      *damaged += bad;
      bad = 0;
      *end = off + i + REC_SIZE;
    }
    off += i;
  } while (r == CHUNK);
  return 0;
}

/* 0 if the index open as FD (at PATH) starts with its header, else -1
 * with err_* (EPROTO: not an index). */
static int
check_header (int fd, const char *path)
{
  uint8_t hdr[REC_SIZE], want[REC_SIZE];
  ssize_t r;

  header_encode (want);
  r = full_pread (fd, hdr, REC_SIZE, 0);
  if (r == -1) {
    err_sys (errno, "read %s", path);
    return -1;
  }
  if (r != REC_SIZE || memcmp (hdr, want, REC_SIZE) != 0) {
    err_set (EPROTO, "%s: not a cbtfs index", path);
    return -1;
  }
  return 0;
}

/* Read the index from l->index_len (0: from the start, checking the
 * header) and apply its records (scan_index says which count).  Called
 * with l->lock held exclusively, or before l is shared. */
static int
load_index (struct layer *l, int fd, const char *path)
{
  uint64_t from = l->index_len ? l->index_len : REC_SIZE, damaged = 0;

  if (l->index_len == 0 && check_header (fd, path) == -1)
    return -1;
  if (scan_index (l, fd, path, from, apply_rec, &l->index_len,
                  &damaged) == -1)
    return -1;
  if (damaged > 0 && l->damaged_records == 0)
    log_warn ("snapshot %s: %" PRIu64 " records of its index are damaged; "
              "the blocks they named count as missing", l->meta.snapshot,
              damaged);
  l->damaged_records += damaged;
  return 0;
}

/* A second write fd for the data file that bypasses the page cache
 * (-1 where the filesystem cannot): blocks copied into the store are
 * rarely read again soon, and copying them through the page cache costs
 * as much CPU as fetching them.  The file is first given the disk's
 * whole length (holes cost nothing): writes that extend a file cannot
 * overlap (dio.h). */
static int
open_direct (const struct layer *l, const char *path)
{
  int fd = open (path, O_WRONLY | O_DIRECT | O_CLOEXEC);
  off_t len = (off_t) l->nblocks << CHAIN_BLOCK_SHIFT;
  struct stat st;

  if (fd >= 0 && fstat (fd, &st) == 0 && st.st_size < len
      && ftruncate (fd, len) == -1) {
    /* Then writes just take turns. */
  }
  return fd;
}

/* Take the writer lock on a layer's index fd without waiting. */
static int
lock_index (struct layer *l, int fd)
{
  if (flock (fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK)
      err_set (EWOULDBLOCK, "snapshot %s is being filled by another cbtfs "
               "process (a backup, a fetch, or a mount reading from it)",
               l->meta.snapshot);
    else
      err_sys (errno, "lock %s/index", l->dir);
    return -1;
  }
  return 0;
}

/* Cut a torn tail so new records follow the last good one. */
static int
cut_tail (struct layer *l, int fd)
{
  if (ftruncate (fd, l->index_len) == -1 || fsync (fd) == -1) {
    err_sys (errno, "truncate %s/index", l->dir);
    return -1;
  }
  return 0;
}

static char *
path_in (const char *dir, const char *name)
{
  char *p;

  if (asprintf (&p, "%s/%s", dir, name) == -1)
    return NULL;
  return p;
}

/* Read the small file PATH (relative to DIRFD, or AT_FDCWD) into a
 * malloc'd, NUL-terminated buffer of at most MAX bytes; *LEN gets its
 * length.  Reads until a short read (the end of a regular file), so a
 * manifest costs open, one read and close.  NULL with errno. */
static char *
read_small_at (int dirfd, const char *path, size_t max, size_t *len)
{
  CLEANUP_CLOSE int fd = openat (dirfd, path, O_RDONLY | O_CLOEXEC);
  size_t cap = 4096, got = 0;
  char *buf = NULL, *nb;
  ssize_t r;

  if (fd == -1)
    return NULL;
  do {
    if (got == cap - 1 && (cap *= 2) > max + 1) {
      free (buf);
      errno = EFBIG;
      return NULL;
    }
    if ((nb = realloc (buf, cap)) == NULL) {
      free (buf);
      return NULL;
    }
    buf = nb;
    do
      r = pread (fd, buf + got, cap - 1 - got, got);
    while (r == -1 && errno == EINTR);
    if (r == -1) {
      free (buf);
      return NULL;
    }
    got += r;
  } while (got == cap - 1);
  buf[got] = '\0';
  *len = got;
  return buf;
}

/* A layer whose manifest is TEXT (LEN bytes), with nothing else read,
 * in folder DIR, or PARENT_DIR/<its snapshot> when DIR is NULL.  NULL
 * with err_*. */
static struct layer *
layer_from_text (const char *dir, const char *parent_dir, const char *text,
                 size_t len)
{
  struct layer *l = layer_alloc ();

  if (l == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (layer_meta_parse (text, len, &l->meta) == -1)
    goto err;
  l->dir = dir ? strdup (dir) : path_in (parent_dir, l->meta.snapshot);
  if (l->dir == NULL) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  l->nblocks = chain_nblocks (l->meta.size);
  return l;

 err:
  layer_close (l);
  return NULL;
}

/* A layer for DIR with its manifest read and nothing else, or NULL
 * with err_*.  REL is DIR relative to DIRFD (or AT_FDCWD). */
static struct layer *
open_manifest (const char *dir, int dirfd, const char *rel)
{
  CLEANUP_FREE char *mpath = path_in (rel, "layer");
  CLEANUP_FREE char *text = NULL;
  struct layer *l;
  size_t len;

  if (mpath == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  text = read_small_at (dirfd, mpath, 1 << 20, &len);
  if (text == NULL) {
    err_sys (errno, "%s/layer", dir);
    return NULL;
  }
  l = layer_from_text (dir, NULL, text, len);
  if (l == NULL)
    err_prefix ("%s/layer", dir);
  return l;
}

struct layer *
layer_open_lazy (const char *parent_dir, int parent_fd, const char *name)
{
  CLEANUP_FREE char *dir = path_in (parent_dir, name);

  if (dir == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (parent_fd < 0)
    return open_manifest (dir, AT_FDCWD, dir);
  return open_manifest (dir, parent_fd, name);
}

struct layer *
layer_open_lazy_text (const char *parent_dir, const char *text, size_t len)
{
  return layer_from_text (NULL, parent_dir, text, len);
}

struct layer *
layer_open (const char *dir, bool writable)
{
  CLEANUP_FREE char *dpath = path_in (dir, "data");
  CLEANUP_FREE char *ipath = path_in (dir, "index");
  CLEANUP_CLOSE int ifd = -1;
  struct layer *l;

  if (!dpath || !ipath) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  l = open_manifest (dir, AT_FDCWD, dir);
  if (l == NULL)
    return NULL;
  if (load_changed (l) == -1 || make_rank (l) == -1)
    goto err;

  /* Readers open the data file when they read (see the fd cache). */
  if (writable) {
    l->data_fd = open (dpath, O_RDWR | O_CLOEXEC);
    if (l->data_fd == -1) {
      err_sys (errno, "open %s", dpath);
      goto err;
    }
    l->fd_pinned = true;
  }
  ifd = open (ipath, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (ifd == -1) {
    err_sys (errno, "open %s", ipath);
    goto err;
  }
  if (writable && lock_index (l, ifd) == -1)
    goto err;
  if (load_index (l, ifd, ipath) == -1)
    goto err;
  if (writable) {
    if (cut_tail (l, ifd) == -1)
      goto err;
    l->index_fd = ifd;
    l->wdata_fd = l->data_fd;
    l->direct_fd = open_direct (l, dpath);
    ifd = -1;
  }
  l->load_state = LAYER_LOADED;
  return l;

 err:
  layer_close (l);
  return NULL;
}

/* Forget a partly read set and index, so that a later try starts
 * afresh.  Keeps errno. */
static void
unload (struct layer *l)
{
  int e = errno;

  free_blocks (l);
  l->nchanged = l->npresent = l->nstored = 0;
  l->index_len = l->damaged_records = 0;
  l->counts_kept = false;
  errno = e;
}

/* Read the set and the index of a lazily opened layer.  Called with
 * l->load_lock held and l->lock held exclusively.  0, or -1 with err_*
 * and nothing left in memory. */
static int
read_set_and_index (struct layer *l)
{
  CLEANUP_FREE char *ipath = path_in (l->dir, "index");
  int fd, r;

  if (ipath == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  unload (l);                   /* counts kept by layer_unload go */
  if (load_changed (l) == -1 || make_rank (l) == -1) {
    unload (l);
    return -1;
  }
  fd = open (ipath, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    err_sys (errno, "open %s", ipath);
    unload (l);
    return -1;
  }
  r = load_index (l, fd, ipath);
  if (r == -1)
    unload (l);
  close (fd);
  return r;
}

/* Failures that say nothing about the files: the next try may work. */
static bool
is_transient (int e)
{
  return e == ENOMEM || e == EMFILE || e == ENFILE || e == EINTR
    || e == EAGAIN || e == EIO;
}

static int
fail_damaged (struct layer *l)
{
  err_set (EIO, "snapshot %s is damaged: %s", l->meta.snapshot,
           l->load_error ? l->load_error : "(no details: out of memory)");
  return -1;
}

/* Read the set and index once; the new state.  Called with
 * l->load_lock held. */
static int
load_locked (struct layer *l)
{
  int r, e;

  pthread_rwlock_wrlock (&l->lock);
  r = read_set_and_index (l);
  e = errno;
  pthread_rwlock_unlock (&l->lock);
  if (r == 0)
    return LAYER_LOADED;
  if (is_transient (e)) {
    errno = e;
    return LAYER_UNLOADED;
  }
  /* Damage does not heal: remember it and say so once. */
  l->load_error = strdup (err_get ());
  log_error ("damaged layer: %s; reads that need it fail with EIO",
             err_get ());
  return LAYER_DAMAGED;
}

int
layer_load (struct layer *l)
{
  int st = __atomic_load_n (&l->load_state, __ATOMIC_ACQUIRE);

  if (st == LAYER_UNLOADED) {
    pthread_mutex_lock (&l->load_lock);
    st = l->load_state;         /* another thread may have loaded it */
    if (st == LAYER_UNLOADED) {
      st = load_locked (l);
      __atomic_store_n (&l->load_state, st, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock (&l->load_lock);
    if (st == LAYER_UNLOADED)
      return -1;                /* transient: err_* and errno are set */
  }
  if (st == LAYER_DAMAGED)
    return fail_damaged (l);
  return 0;
}

int
layer_make_writable (struct layer *l)
{
  CLEANUP_FREE char *dpath = path_in (l->dir, "data");
  CLEANUP_FREE char *ipath = path_in (l->dir, "index");
  int ifd = -1, wfd = -1, ret = -1;

  if (!dpath || !ipath) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (layer_load (l) == -1)
    return -1;
  pthread_mutex_lock (&l->sync_lock);
  if (l->index_fd >= 0) {
    ret = 0;
    goto out;
  }
  ifd = open (ipath, O_RDWR | O_CLOEXEC);
  wfd = open (dpath, O_RDWR | O_CLOEXEC);
  if (ifd == -1 || wfd == -1) {
    err_sys (errno, "open %s for writing", l->dir);
    goto out;
  }
  if (lock_index (l, ifd) == -1)
    goto out;
  /* Others may have filled it since we read it: learn what they added
   * before appending after them.  Readers keep using data_fd, so the
   * write fd is a second one. */
  pthread_rwlock_wrlock (&l->lock);
  ret = load_index (l, ifd, ipath);
  if (ret == 0)
    ret = cut_tail (l, ifd);
  if (ret == 0) {
    __atomic_store_n (&l->index_fd, ifd, __ATOMIC_RELEASE);
    l->wdata_fd = wfd;
    l->direct_fd = open_direct (l, dpath);
    ifd = wfd = -1;
  }
  pthread_rwlock_unlock (&l->lock);
 out:
  pthread_mutex_unlock (&l->sync_lock);
  if (ifd >= 0)
    close (ifd);
  if (wfd >= 0)
    close (wfd);
  return ret;
}

int
layer_release (struct layer *l)
{
  int ifd = -1, wfd = -1, dfd = -1, ret = 0;

  pthread_mutex_lock (&l->sync_lock);
  pthread_rwlock_wrlock (&l->lock);
  if (l->index_fd >= 0) {
    if (l->fd_pinned || __atomic_load_n (&l->writers, __ATOMIC_ACQUIRE) > 0
        || ((struct pending *) l->pending)->len > 0) {
      errno = EBUSY;
      ret = -1;
    }
    else {
      ifd = l->index_fd;
      wfd = l->wdata_fd;
      dfd = l->direct_fd;
      __atomic_store_n (&l->index_fd, -1, __ATOMIC_RELEASE);
      l->wdata_fd = l->direct_fd = -1;
      l->write_failed = false;  /* fresh files next time */
    }
  }
  pthread_rwlock_unlock (&l->lock);
  pthread_mutex_unlock (&l->sync_lock);
  if (dfd >= 0)
    close (dfd);
  if (wfd >= 0)
    close (wfd);
  if (ifd >= 0)
    close (ifd);                /* releases the writer lock */
  return ret;
}

int
layer_catch_up (struct layer *l)
{
  CLEANUP_FREE char *ipath = NULL;
  CLEANUP_CLOSE int fd = -1;
  int ret = 0;

  if (layer_load (l) == -1)
    return -1;
  /* Whoever fills the layer knows it all: is it us? */
  if (__atomic_load_n (&l->index_fd, __ATOMIC_ACQUIRE) >= 0)
    return 0;
  ipath = path_in (l->dir, "index");
  if (ipath == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  fd = open (ipath, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    err_sys (errno, "open %s", ipath);
    return -1;
  }
  /* A record another writer is appending now may be torn: load_index
   * stops before it and the next call reads it whole. */
  pthread_mutex_lock (&l->sync_lock);
  if (l->index_fd < 0) {
    pthread_rwlock_wrlock (&l->lock);
    ret = load_index (l, fd, ipath);
    pthread_rwlock_unlock (&l->lock);
  }
  pthread_mutex_unlock (&l->sync_lock);
  return ret;
}

static int
write_new (const char *dir, const char *name, const void *data, size_t len)
{
  CLEANUP_FREE char *path = path_in (dir, name);
  CLEANUP_CLOSE int fd = -1;

  if (path == NULL)
    return -1;
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1 || full_write (fd, data, len) == -1 || fsync (fd) == -1) {
    err_sys (errno, "write %s", path);
    return -1;
  }
  return 0;
}

struct layer *
layer_create (const char *parent_dir, const char *tmp_dir,
              const struct layer_meta *meta, const struct bitmap *changed)
{
  CLEANUP_FREE char *stage = NULL, *final = NULL, *text = NULL;
  CLEANUP_FREE uint8_t *bits = NULL;
  uint8_t hdr[REC_SIZE];
  uint64_t nblocks = chain_nblocks (meta->size);

  if (!is_uuid (meta->snapshot)) {
    err_set (EINVAL, "bad snapshot uuid");
    return NULL;
  }
  if (!meta->full && (changed == NULL || changed->nbits != nblocks)) {
    err_set (EINVAL, "changed-block set does not match the disk size");
    return NULL;
  }
  if (asprintf (&stage, "%s/%s.%ld", tmp_dir, meta->snapshot,
                (long) getpid ()) == -1
      || asprintf (&final, "%s/%s", parent_dir, meta->snapshot) == -1
      || (text = layer_meta_format (meta)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (mkdir (stage, 0700) == -1) {
    err_sys (errno, "mkdir %s", stage);
    return NULL;
  }
  header_encode (hdr);
  if (write_new (stage, "layer", text, strlen (text)) == -1
      || write_new (stage, "index", hdr, REC_SIZE) == -1
      || write_new (stage, "data", "", 0) == -1)
    goto err;
  if (!meta->full) {
    bits = malloc (cbt_bitmap_bytes (nblocks) + 1);
    if (bits == NULL)
      goto err;
    cbt_bitmap_encode (changed, bits);
    if (write_new (stage, "changed", bits, cbt_bitmap_bytes (nblocks)) == -1)
      goto err;
  }
  /* Only a whole, durable directory ever appears under its final name. */
  if (fsync_dir (stage) == -1)
    goto err;
  if (rename (stage, final) == -1) {
    err_sys (errno, "rename %s to %s", stage, final);
    goto err;
  }
  if (fsync_dir (parent_dir) == -1)
    return NULL;
  /* Only a cache: without the copy, mounts read the manifest itself. */
  if (manifests_append (parent_dir, text, strlen (text)) == -1)
    log_warn ("%s", err_get ());
  return layer_open (final, true);

 err:
  {
    static const char *const names[] = { "layer", "index", "data", "changed" };
    for (size_t i = 0; i < ARRAY_SIZE (names); i++) {
      CLEANUP_FREE char *p = path_in (stage, names[i]);
      if (p)
        unlink (p);
    }
    rmdir (stage);
  }
  return NULL;
}

/* ---- blocks ----------------------------------------------------------- */

/* Whether ready block B is stored (not all zeros).  Called with
 * l->lock held. */
static bool
is_data (const struct layer *l, uint64_t b)
{
  if (sums_get (&l->unsynced, b))
    return true;
  return bitmap_get (&l->present, b) && l->recno[set_rank (l, b)] != 0;
}

/* Records a thread read last, so that reading blocks in order costs
 * one pread of the index per 102 records, not one per block.  Records
 * a layer's map points to are durable and never rewritten. */
#define RCACHE_RECS 102
static _Thread_local struct {
  uint64_t layer;               /* the layer's id, 0 when empty */
  uint64_t first;               /* number of the first record held */
  size_t len;                   /* bytes held */
  uint8_t buf[RCACHE_RECS * REC_SIZE];
} rcache;

/* Read block B's checksum from its record, number N of the index IFD:
 * the record must still be what the index said.  0, or -1 with err_*
 * and errno EIO. */
static int
record_sum (const struct layer *l, int ifd, uint64_t b, uint64_t n,
            uint8_t sum[SUM_LEN])
{
  uint64_t first = n / RCACHE_RECS * RCACHE_RECS;
  struct rec r;
  ssize_t got;

  if (rcache.layer != l->id || rcache.first != first
      || (n - first + 1) * REC_SIZE > rcache.len) {
    rcache.layer = 0;
    got = full_pread (ifd, rcache.buf, sizeof rcache.buf,
                      (off_t) first * REC_SIZE);
    if (got > 0) {
      rcache.layer = l->id;
      rcache.first = first;
      rcache.len = got;
    }
  }
  if (rcache.layer != l->id || (n - first + 1) * REC_SIZE > rcache.len
      || !rec_decode (rcache.buf + (n - first) * REC_SIZE, &r)
      || r.kind != REC_DATA || r.block != b || r.count != 1) {
    err_set (EIO, "block %" PRIu64 " of snapshot %s: its index record "
             "cannot be read back", b, l->meta.snapshot);
    return -1;
  }
  memcpy (sum, r.sum, SUM_LEN);
  return 0;
}

enum layer_block
layer_block_state (struct layer *l, uint64_t b)
{
  enum layer_block st;

  if (layer_load (l) == -1)
    return LAYER_MISSING;
  if (!bitmap_get (&l->changed, b))
    return LAYER_ABSENT;
  pthread_rwlock_rdlock (&l->lock);
  if (!bitmap_get (&l->ready, b))
    st = LAYER_MISSING;
  else
    st = is_data (l, b) ? LAYER_DATA : LAYER_ZERO;
  pthread_rwlock_unlock (&l->lock);
  return st;
}

int
layer_read_block (struct layer *l, uint64_t b, void *buf)
{
  uint8_t want[SUM_LEN], got[SUM_LEN];
  const uint8_t *s;
  uint64_t n = 0;
  bool present;
  ssize_t r;
  int fd, ifd;

  if (layer_load (l) == -1) {
    errno = EIO;
    return -1;
  }
  pthread_rwlock_rdlock (&l->lock);
  present = bitmap_get (&l->ready, b);
  s = sums_get (&l->unsynced, b);
  if (s)
    memcpy (want, s, SUM_LEN);
  else if (present && bitmap_get (&l->present, b))
    n = l->recno[set_rank (l, b)];
  pthread_rwlock_unlock (&l->lock);

  if (!present) {
    err_set (ENODATA, "block %" PRIu64 " of snapshot %s is not stored",
             b, l->meta.snapshot);
    return -1;
  }
  if (s == NULL && n == 0) {
    memset (buf, 0, CHAIN_BLOCK_SIZE);
    return 0;
  }
  fd = data_fd_get (l, &ifd);
  if (fd == -1) {
    errno = EIO;
    return -1;
  }
  if (s == NULL && record_sum (l, ifd, b, n, want) == -1) {
    data_fd_put (l);
    return -1;
  }
  r = full_pread (fd, buf, CHAIN_BLOCK_SIZE, (off_t) b << CHAIN_BLOCK_SHIFT);
  data_fd_put (l);
  if (r == -1) {
    err_sys (EIO, "read block %" PRIu64 " of snapshot %s: %s", b,
             l->meta.snapshot, strerror (errno));
    return -1;
  }
  /* A short read (truncated data file) reads as zeros and then fails
   * the checksum, as it should. */
  memset ((char *) buf + r, 0, CHAIN_BLOCK_SIZE - r);
  sums_compute (buf, CHAIN_BLOCK_SIZE, got);
  if (memcmp (want, got, SUM_LEN) != 0) {
    err_set (EIO, "block %" PRIu64 " (offset %" PRIu64 ") of snapshot %s "
             "fails its checksum", b, b << CHAIN_BLOCK_SHIFT,
             l->meta.snapshot);
    return -1;
  }
  return 0;
}

int
layer_put_block (struct layer *l, uint64_t b, const void *buf)
{
  return layer_put_run (l, b, 1, buf);
}

/* Write blocks [FIRST+I, FIRST+J) of BUF to the data file in one go. */
static int
write_blocks (struct layer *l, uint64_t first, unsigned i, unsigned j,
              const uint8_t *buf)
{
  int w;

  /* One writer at a time submits: ext4 serialises that part anyway,
   * and makes the writers that wait spin on its inode lock.  Direct
   * writes then overlap (dio.h); buffered ones are quick. */
  const uint8_t *p = buf + ((size_t) i << CHAIN_BLOCK_SHIFT);
  size_t len = (size_t) (j - i) << CHAIN_BLOCK_SHIFT;
  off_t off = (off_t) (first + i) << CHAIN_BLOCK_SHIFT;

  if (l->direct_fd >= 0 && (uintptr_t) p % 4096 == 0)
    w = dio_pwrite (l->direct_fd, p, len, off, &l->write_lock);
  else {
    pthread_mutex_lock (&l->write_lock);
    w = full_pwrite (l->wdata_fd, p, len, off);
    pthread_mutex_unlock (&l->write_lock);
  }
  if (w == -1)
    err_sys (errno, "write %s/data", l->dir);
  return w;
}

/* Count a writer in, if this process fills L: its files then stay open
 * until it leaves (layer_put_run).  0, or -1 with err_* (EBADF). */
static int
join_writers (struct layer *l)
{
  bool filling, failed;

  pthread_rwlock_rdlock (&l->lock);
  filling = l->index_fd >= 0 && !l->write_failed;
  if (filling)
    __atomic_add_fetch (&l->writers, 1, __ATOMIC_ACQUIRE);
  failed = l->write_failed;
  pthread_rwlock_unlock (&l->lock);
  if (failed) {
    err_set (EIO, "snapshot %s: a write to the store failed; keeping no "
             "more blocks in it until it is opened again", l->meta.snapshot);
    return -1;
  }
  if (!filling) {
    err_set (EBADF, "snapshot %s is not being filled by this process",
             l->meta.snapshot);
    return -1;
  }
  return 0;
}

int
layer_put_run (struct layer *l, uint64_t first, unsigned n, const void *buf)
{
  const uint8_t *p = buf;
  CLEANUP_FREE struct rec *r = calloc (n ? n : 1, sizeof *r);
  unsigned i, j;
  int ret = 0;

  if (r == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (i = 0; i < n; i++)
    if (!bitmap_get (&l->changed, first + i)) {
      err_set (EINVAL, "block %" PRIu64 " is not in snapshot %s's set",
               first + i, l->meta.snapshot);
      return -1;
    }
  if (join_writers (l) == -1)
    return -1;
  for (i = 0; i < n; i++) {
    const uint8_t *blk = p + ((size_t) i << CHAIN_BLOCK_SHIFT);
    r[i].block = first + i;
    r[i].count = 1;
    if (is_zero (blk, CHAIN_BLOCK_SIZE))
      r[i].kind = REC_ZERO;
    else {
      r[i].kind = REC_DATA;
      sums_compute (blk, CHAIN_BLOCK_SIZE, r[i].sum);
    }
  }
  /* Stored blocks next to each other go in one write; zeros in none. */
  for (i = 0; i < n; i = j) {
    for (j = i + 1; j < n && r[j].kind == r[i].kind; j++)
      ;
    if (r[i].kind == REC_DATA && write_blocks (l, first, i, j, p) == -1) {
      ret = -1;
      break;
    }
  }
  pthread_rwlock_wrlock (&l->lock);
  /* A sync that failed meanwhile may have lost these bytes too. */
  if (ret == 0 && l->write_failed) {
    err_set (EIO, "snapshot %s: a write to the store failed; block %"
             PRIu64 " given up", l->meta.snapshot, first);
    ret = -1;
  }
  /* Ready now: the bytes are written and the checksums are known. */
  for (i = 0; i < n && ret == 0; i++) {
    ret = pending_add (l, &r[i]);
    if (ret == 0 && r[i].kind == REC_DATA)
      ret = sums_put (&l->unsynced, first + i, r[i].sum);
    else if (ret == 0)
      sums_del (&l->unsynced, first + i);
    if (ret == 0)
      bitmap_set (&l->ready, first + i);
    if (ret == -1)
      err_set (ENOMEM, "out of memory");
  }
  /* Left under the lock, with the records queued: layer_release sees
   * either a writer or pending records, never neither too early. */
  __atomic_sub_fetch (&l->writers, 1, __ATOMIC_RELEASE);
  pthread_rwlock_unlock (&l->lock);
  return ret;
}

uint64_t
layer_pending_bytes (struct layer *l)
{
  uint64_t n;

  pthread_rwlock_rdlock (&l->lock);
  n = (uint64_t) ((struct pending *) l->pending)->len * CHAIN_BLOCK_SIZE;
  pthread_rwlock_unlock (&l->lock);
  return n;
}

static int
cmp_rec (const void *a, const void *b)
{
  const struct rec *x = a, *y = b;

  return x->block < y->block ? -1 : x->block > y->block;
}

/* Encode V (sorted) into OUT, merging runs of zero blocks into one
 * record; AT[i] gets the number of the record that holds V[i] among
 * those written.  Returns the number of bytes. */
static size_t
encode_runs (struct rec *v, size_t n, uint8_t *out, size_t *at)
{
  size_t i, o = 0;

  for (i = 0; i < n;) {
    struct rec r = v[i];
    at[i++] = o / REC_SIZE;
    if (r.kind == REC_ZERO)
      while (i < n && v[i].kind == REC_ZERO && v[i].block == r.block + r.count
             && r.count < UINT32_MAX) {
        r.count++;
        at[i++] = o / REC_SIZE;
      }
    rec_encode (&r, out + o);
    o += REC_SIZE;
  }
  return o;
}

/* After a failed sync: forget every block of BATCH and of the queue
 * that is not present, and refuse puts until the layer is released or
 * reopened.  Linux reports a failed writeback once, and the pages it
 * could not write count as clean afterwards: another fsync would
 * succeed, and records would vouch for data that never reached the
 * disk.  Blocks written before the failure may have been among them,
 * so every one not yet durable goes; they are fetched or copied again.
 * Their bytes are punched out too: ext4 leaves a range whose first
 * writeback failed allocated but unwritten, and a buffered rewrite of
 * it then reads back as zeros (tests/test-store-faults.py).  Called
 * with sync_lock held. */
static void
give_up (struct layer *l, struct pending *batch)
{
  struct pending *q;

  pthread_rwlock_wrlock (&l->lock);
  l->write_failed = true;
  q = l->pending;
  for (int k = 0; k < 2; k++) {
    struct pending *p = k == 0 ? batch : q;
    for (size_t i = 0; i < p->len; i++) {
      const struct rec *r = &p->v[i];
      for (uint64_t b = r->block; b < r->block + r->count; b++)
        if (!bitmap_get (&l->present, b)) {
          bitmap_clear (&l->ready, b);
          sums_del (&l->unsynced, b);
        }
      if (r->kind == REC_DATA && !bitmap_get (&l->present, r->block)
          && fallocate (l->wdata_fd,
                        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        (off_t) r->block << CHAIN_BLOCK_SHIFT,
                        CHAIN_BLOCK_SIZE) == -1)
        log_debug ("%s/data: cannot punch block %" PRIu64 ": %m", l->dir,
                   r->block);
    }
  }
  q->len = 0;
  pthread_rwlock_unlock (&l->lock);
}

int
layer_sync (struct layer *l)
{
  struct pending batch = { 0 }, *p;
  CLEANUP_FREE uint8_t *out = NULL;
  CLEANUP_FREE size_t *at = NULL;
  uint64_t first;
  size_t len, i;
  int ret = -1;

  pthread_mutex_lock (&l->sync_lock);
  pthread_rwlock_wrlock (&l->lock);
  p = l->pending;
  batch = *p;
  memset (p, 0, sizeof *p);
  pthread_rwlock_unlock (&l->lock);

  if (batch.len == 0) {
    ret = 0;
    goto out;
  }
  qsort (batch.v, batch.len, sizeof *batch.v, cmp_rec);
  out = malloc (batch.len * REC_SIZE);
  at = malloc (batch.len * sizeof *at);
  if (out == NULL || at == NULL) {
    err_set (ENOMEM, "out of memory");
    goto fail;
  }
  len = encode_runs (batch.v, batch.len, out, at);
  /* Data first, then the records that vouch for it (FORMAT.md). */
  if (fdatasync (l->wdata_fd) == -1) {
    err_sys (errno, "fsync %s/data", l->dir);
    goto fail;
  }
  if (full_pwrite (l->index_fd, out, len, l->index_len) == -1
      || fdatasync (l->index_fd) == -1) {
    err_sys (errno, "write %s/index", l->dir);
    /* Whatever part landed is cut off by the next writer's open. */
    if (ftruncate (l->index_fd, l->index_len) == -1) {
      /* The torn tail is ignored by readers anyway. */
    }
    goto fail;
  }
  first = l->index_len / REC_SIZE;
  l->index_len += len;

  pthread_rwlock_wrlock (&l->lock);
  for (i = 0; i < batch.len; i++)
    if (apply_rec (l, &batch.v[i], first + at[i]) == -1)
      break;
  pthread_rwlock_unlock (&l->lock);
  ret = i == batch.len ? 0 : -1;
  goto out;

 fail:
  give_up (l, &batch);
 out:
  free (batch.v);
  pthread_mutex_unlock (&l->sync_lock);
  return ret;
}

/* scan_index's FN for layer_check_complete: presence only, no sums. */
static int
mark_present (struct layer *l, const struct rec *r, uint64_t n)
{
  (void) n;
  for (uint64_t b = r->block; b < r->block + r->count; b++)
    if (!bitmap_get (&l->present, b)) {
      bitmap_set (&l->present, b);
      l->npresent += bitmap_get (&l->changed, b);
    }
  return 0;
}

int
layer_check_complete (const char *dir)
{
  CLEANUP_FREE char *ipath = path_in (dir, "index");
  CLEANUP_CLOSE int fd = -1;
  uint64_t end, damaged = 0;
  struct layer *l;
  int ret = -1;

  if (ipath == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  l = open_manifest (dir, AT_FDCWD, dir);
  if (l == NULL)
    return -1;
  if (load_changed (l) == -1)
    goto out;
  fd = open (ipath, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    err_sys (errno, "open %s", ipath);
    goto out;
  }
  if (check_header (fd, ipath) == -1)
    goto out;
  if (scan_index (l, fd, ipath, REC_SIZE, mark_present, &end, &damaged) == -1)
    goto out;
  if (l->npresent != l->nchanged) {
    err_set (ENODATA, "snapshot %s: %" PRIu64 " of %" PRIu64 " blocks are "
             "not in the store", l->meta.snapshot, l->nchanged - l->npresent,
             l->nchanged);
    goto out;
  }
  ret = 0;
 out:
  layer_close (l);
  return ret;
}

int
layer_unload (struct layer *l)
{
  if (__atomic_load_n (&l->load_state, __ATOMIC_ACQUIRE) != LAYER_LOADED)
    return 0;
  if (l->index_fd >= 0 || l->fd_pinned) {
    errno = EBUSY;
    return -1;
  }
  free_blocks (l);
  l->index_len = 0;
  if (l->resolve_cache_free)
    l->resolve_cache_free (l->resolve_cache);
  l->resolve_cache = NULL;
  l->resolve_tried = false;
  l->counts_kept = true;
  __atomic_store_n (&l->load_state, LAYER_UNLOADED, __ATOMIC_RELEASE);
  return 0;
}

/* Whether L answers counts from those layer_unload kept. */
static bool
counts_only (const struct layer *l)
{
  return l->counts_kept
    && __atomic_load_n (&l->load_state, __ATOMIC_ACQUIRE) == LAYER_UNLOADED;
}

bool
layer_complete (struct layer *l)
{
  bool done;

  if (counts_only (l))
    return l->npresent == l->nchanged;
  if (layer_load (l) == -1)
    return false;
  pthread_rwlock_rdlock (&l->lock);
  done = l->npresent == l->nchanged;
  pthread_rwlock_unlock (&l->lock);
  return done;
}

void
layer_counts (struct layer *l, uint64_t *present, uint64_t *stored)
{
  if (counts_only (l)) {
    *present = l->npresent;
    *stored = l->nstored;
    return;
  }
  if (layer_load (l) == -1) {
    *present = *stored = 0;
    return;
  }
  pthread_rwlock_rdlock (&l->lock);
  *present = l->npresent;
  *stored = l->nstored + l->unsynced.len;
  pthread_rwlock_unlock (&l->lock);
}
