/* cbtfs: a layer in the object store backend (s3store.h).
 *
 * Blocks arrive in packs: a writer gathers the blocks it is given into
 * a buffer and, every S3STORE_PACK_BLOCKS blocks, puts the buffer as
 * the next pack object.  A commit puts what is gathered as one more
 * pack, then one index object naming the packs put since the last
 * commit (which block is at which place in each) and carrying the
 * core's records.  The layer's index is the concatenation of its index
 * objects' records; where a block lives is what the newest index
 * object naming it says.  A pack no index object names (a crash, a
 * failed commit) is never read; the next writer removes it.
 *
 * Index object SEQ >= 1 (little-endian):
 *   "CBTFS-I1"  magic, 8 bytes
 *   u32 packs, then per pack: u32 its SEQ, u32 blocks, u64 block × blocks
 *   u64 length of the records, the records
 *   u64 XXH3-64 of everything before
 * Index object 0 is the core's header alone, as store_layer_create was
 * given it.
 *
 * Reads fetch a run of up to READ_RUN blocks of a pack in one ranged
 * GET and keep the last few runs: reading in order costs one request
 * per run, not one per block.
 *
 * Thread model: `lock` (a rwlock) guards the index, the block map and
 * the pack sizes: readers share it, loading more of the index takes it
 * exclusively.  `wlock` guards the writer's buffer and uploads; pack
 * uploads run outside it, from the writing threads, and `idle` tells
 * a commit when the last has ended.  `clock` guards the run cache;
 * requests never run under it.  No request runs under `lock` either,
 * except the loading of index objects.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "../../common/cleanup.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/util.h"
#include "s3store.h"

#define BLOCK_SHIFT 16
#define BLOCK_SIZE (1u << BLOCK_SHIFT)
#define READ_RUN 16             /* blocks per read request at most */
#define CACHE_RUNS 8            /* runs kept per layer */
#define INDEX_MAGIC "CBTFS-I1"

/* A pack put since the last commit. */
struct upload {
  uint32_t seq, n;
  uint64_t *blocks;             /* owned */
};

/* A run of blocks read from a pack, kept for readers that follow. */
struct run {
  uint32_t pack, slot, n;       /* n 0: empty */
  uint64_t used;                /* for LRU */
  uint8_t *buf;                 /* n blocks (owned) */
};

struct s3_layer {
  struct store_layer base;
  struct s3_store *ss;
  char *where;                  /* s3://…/layers/D/S, for messages */
  char *prefix;                 /* P/layers/D/S/ */
  char *snapshot;

  pthread_rwlock_t lock;
  bool loaded;                  /* index objects 0..nobj-1 read */
  uint32_t nobj;
  uint8_t *index;               /* the core's bytes */
  uint64_t ilen;
  size_t icap;
  uint64_t *mkey, *mval;        /* block+1 -> pack << 32 | slot; 0 empty */
  size_t mcap, mlen;
  uint32_t *packn;              /* blocks of each pack named, by SEQ */
  size_t npackn;

  pthread_mutex_t wlock;
  pthread_cond_t idle;
  bool writing;
  char *lease;                  /* P/layers/D/S/writer while writing */
  uint32_t next_pack;
  uint8_t *pbuf;                /* blocks gathered, S3STORE_PACK_BLOCKS */
  uint64_t *pblocks;
  uint32_t pn;
  struct upload *ups;
  size_t nups, upcap;
  unsigned inflight;
  int failed;                   /* errno of a failed pack put, or 0 */
  char failed_msg[512];

  pthread_mutex_t clock;
  struct run runs[CACHE_RUNS];
  uint64_t tick;
};

static inline struct s3_layer *
sl_of (struct store_layer *h)
{
  return (struct s3_layer *) h;
}

struct store_layer *
s3store_layer_open (struct store *s, const char *disk, const char *snapshot)
{
  struct s3_store *ss = s3store_of (s);
  struct s3_layer *l = calloc (1, sizeof *l);

  if (l == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  l->base.store = s;
  l->ss = ss;
  pthread_rwlock_init (&l->lock, NULL);
  pthread_mutex_init (&l->wlock, NULL);
  pthread_cond_init (&l->idle, NULL);
  pthread_mutex_init (&l->clock, NULL);
  if (asprintf (&l->where, "%s/layers/%s/%s", s->where, disk, snapshot) == -1)
    l->where = NULL;
  l->prefix = s3store_key (ss, "layers/%s/%s/", disk, snapshot);
  l->snapshot = strdup (snapshot);
  if (l->where == NULL || l->prefix == NULL || l->snapshot == NULL) {
    err_set (ENOMEM, "out of memory");
    s3store_layer_close (&l->base);
    return NULL;
  }
  return &l->base;
}

void
s3store_layer_close (struct store_layer *h)
{
  struct s3_layer *l;

  if (h == NULL)
    return;
  l = sl_of (h);
  s3store_writer_close (h);
  for (size_t i = 0; i < CACHE_RUNS; i++)
    free (l->runs[i].buf);
  free (l->index);
  free (l->mkey);
  free (l->mval);
  free (l->packn);
  pthread_rwlock_destroy (&l->lock);
  pthread_mutex_destroy (&l->wlock);
  pthread_cond_destroy (&l->idle);
  pthread_mutex_destroy (&l->clock);
  free (l->where);
  free (l->prefix);
  free (l->snapshot);
  free (l);
}

const char *
s3store_layer_where (const struct store_layer *h)
{
  return ((const struct s3_layer *) h)->where;
}

char *
s3store_set_read (struct store_layer *h, size_t max, size_t *len)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *key = NULL;
  void *buf;
  char *text;
  size_t n;

  if (asprintf (&key, "%sset", l->prefix) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  if (s3store_get (l->ss, key, 0, 0, &buf, &n) == -1)
    return NULL;
  if (n > max) {
    free (buf);
    err_set (EFBIG, "%s/set: larger than %zu bytes", l->where, max);
    return NULL;
  }
  text = realloc (buf, n + 1);
  if (text == NULL) {
    free (buf);
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  text[n] = '\0';
  *len = n;
  return text;
}

static int
add_size (void *opaque, const char *key, uint64_t size)
{
  (void) key;
  *(uint64_t *) opaque += size;
  return 0;
}

int
s3store_usage (struct store_layer *h, uint64_t *bytes)
{
  struct s3_layer *l = sl_of (h);

  *bytes = 0;
  return s3store_list (l->ss, l->prefix, NULL, add_size, bytes);
}

/* ---- the block map ---------------------------------------------------- */

static size_t
slot_of (uint64_t key, size_t cap)
{
  return (size_t) (XXH3_64bits (&key, sizeof key) & (cap - 1));
}

/* Whether block B is in the map: *PACK and *SLOT say where.  Called
 * with l->lock held. */
static bool
map_get (const struct s3_layer *l, uint64_t b, uint32_t *pack, uint32_t *slot)
{
  if (l->mcap == 0)
    return false;
  for (size_t i = slot_of (b + 1, l->mcap);; i = (i + 1) & (l->mcap - 1)) {
    if (l->mkey[i] == 0)
      return false;
    if (l->mkey[i] == b + 1) {
      *pack = (uint32_t) (l->mval[i] >> 32);
      *slot = (uint32_t) l->mval[i];
      return true;
    }
  }
}

static void
map_put_nogrow (uint64_t *keys, uint64_t *vals, size_t cap, uint64_t key,
                uint64_t val, size_t *len)
{
  size_t i = slot_of (key, cap);

  while (keys[i] != 0 && keys[i] != key)
    i = (i + 1) & (cap - 1);
  if (keys[i] == 0)
    (*len)++;
  keys[i] = key;
  vals[i] = val;
}

/* Block B is at SLOT of PACK (newer entries win).  Called with l->lock
 * held exclusively. */
static int
map_put (struct s3_layer *l, uint64_t b, uint32_t pack, uint32_t slot)
{
  if ((l->mlen + 1) * 10 > l->mcap * 7) {
    size_t ncap = l->mcap ? l->mcap * 2 : 1024, nlen = 0;
    uint64_t *nk = calloc (ncap, sizeof *nk), *nv = calloc (ncap, sizeof *nv);
    if (nk == NULL || nv == NULL) {
      free (nk);
      free (nv);
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    for (size_t i = 0; i < l->mcap; i++)
      if (l->mkey[i])
        map_put_nogrow (nk, nv, ncap, l->mkey[i], l->mval[i], &nlen);
    free (l->mkey);
    free (l->mval);
    l->mkey = nk;
    l->mval = nv;
    l->mcap = ncap;
    l->mlen = nlen;
  }
  map_put_nogrow (l->mkey, l->mval, l->mcap, b + 1,
                  (uint64_t) pack << 32 | slot, &l->mlen);
  return 0;
}

/* Pack SEQ holds N blocks.  Called with l->lock held exclusively. */
static int
packn_set (struct s3_layer *l, uint32_t seq, uint32_t n)
{
  if (seq >= l->npackn) {
    size_t ncap = l->npackn ? l->npackn : 64;
    uint32_t *nv;
    while (ncap <= seq)
      ncap *= 2;
    nv = realloc (l->packn, ncap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    memset (nv + l->npackn, 0, (ncap - l->npackn) * sizeof *nv);
    l->packn = nv;
    l->npackn = ncap;
  }
  l->packn[seq] = n;
  return 0;
}

/* Append N bytes of the core's records.  Called with l->lock held
 * exclusively. */
static int
index_add (struct s3_layer *l, const void *p, size_t n)
{
  if (l->ilen + n > l->icap) {
    size_t ncap = l->icap ? l->icap : 4096;
    uint8_t *nv;
    while (ncap < l->ilen + n)
      ncap *= 2;
    if ((nv = realloc (l->index, ncap)) == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    l->index = nv;
    l->icap = ncap;
  }
  memcpy (l->index + l->ilen, p, n);
  l->ilen += n;
  return 0;
}

/* ---- index objects ---------------------------------------------------- */

/* Apply index object SEQ (>= 1), LEN bytes at P.  Called with l->lock
 * held exclusively. */
static int
apply_index_object (struct s3_layer *l, uint32_t seq, const uint8_t *p,
                    size_t len)
{
  const uint8_t *end = p + len, *q = p + 8;
  uint32_t npacks;
  uint64_t rlen;

  if (len < 8 + 4 + 8 + 8 || memcmp (p, INDEX_MAGIC, 8) != 0
      || get_le64 (end - 8) != XXH3_64bits (p, len - 8))
    goto bad;
  end -= 8;
  npacks = get_le32 (q);
  q += 4;
  for (uint32_t i = 0; i < npacks; i++) {
    uint32_t pseq, n;
    if (end - q < 8)
      goto bad;
    pseq = get_le32 (q);
    n = get_le32 (q + 4);
    q += 8;
    if (n > S3STORE_PACK_BLOCKS || (size_t) (end - q) / 8 < n)
      goto bad;
    if (packn_set (l, pseq, n) == -1)
      return -1;
    for (uint32_t j = 0; j < n; j++, q += 8)
      if (map_put (l, get_le64 (q), pseq, j) == -1)
        return -1;
  }
  if (end - q < 8)
    goto bad;
  rlen = get_le64 (q);
  q += 8;
  if ((uint64_t) (end - q) != rlen)
    goto bad;
  return index_add (l, q, rlen);

 bad:
  err_set (EIO, "%s/i/%010" PRIu32 ": damaged index object", l->where, seq);
  return -1;
}

struct seqs {
  uint32_t *v;
  size_t n, cap;
  size_t cut;
};

/* s3store_list's callback: the SEQ of each key "…/SEQ". */
static int
collect_seq (void *opaque, const char *key, uint64_t size)
{
  struct seqs *s = opaque;
  const char *name = key + s->cut;
  unsigned v;
  int used;

  (void) size;
  if (strlen (key) < s->cut || sscanf (name, "%10u%n", &v, &used) != 1
      || used != 10 || name[10] != '\0')
    return 0;
  if (s->n == s->cap) {
    size_t ncap = s->cap ? s->cap * 2 : 64;
    uint32_t *nv = realloc (s->v, ncap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    s->v = nv;
    s->cap = ncap;
  }
  s->v[s->n++] = v;
  return 0;
}

/* The SEQs under the layer's SUB ("i/", "p/") after AFTER (or all). */
static int
list_seqs (struct s3_layer *l, const char *sub, const uint32_t *after,
           struct seqs *s)
{
  CLEANUP_FREE char *prefix = NULL, *from = NULL;

  memset (s, 0, sizeof *s);
  if (asprintf (&prefix, "%s%s", l->prefix, sub) == -1
      || (after && asprintf (&from, "%s%010" PRIu32, prefix, *after) == -1)) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  s->cut = strlen (prefix);
  if (s3store_list (l->ss, prefix, from, collect_seq, s) == -1) {
    free (s->v);
    return -1;
  }
  return 0;
}

/* Read the index objects written since the last look, in order, up to
 * the first gap (one being written now).  Called with l->lock held
 * exclusively. */
static int
load_more (struct s3_layer *l)
{
  uint32_t last = l->nobj - 1;
  struct seqs s;
  int ret = 0;

  if (list_seqs (l, "i/", l->nobj ? &last : NULL, &s) == -1)
    return -1;
  for (size_t i = 0; i < s.n && s.v[i] == l->nobj; i++) {
    CLEANUP_FREE char *key = NULL;
    void *buf;
    size_t len;
    if (asprintf (&key, "%si/%010" PRIu32, l->prefix, s.v[i]) == -1) {
      err_set (ENOMEM, "out of memory");
      ret = -1;
      break;
    }
    if (s3store_get (l->ss, key, 0, 0, &buf, &len) == -1) {
      ret = -1;
      break;
    }
    ret = s.v[i] == 0 ? index_add (l, buf, len)
      : apply_index_object (l, s.v[i], buf, len);
    free (buf);
    if (ret == -1)
      break;
    l->nobj++;
  }
  if (ret == 0 && l->nobj == 0) {
    err_set (ENOENT, "%s: no such layer (its index is missing)", l->where);
    ret = -1;
  }
  free (s.v);
  if (ret == 0)
    l->loaded = true;
  return ret;
}

ssize_t
s3store_index_read (struct store_layer *h, void *buf, size_t len,
                    uint64_t off)
{
  struct s3_layer *l = sl_of (h);
  ssize_t n;

  pthread_rwlock_rdlock (&l->lock);
  /* Past what we know: another process may have committed more (our
   * own commits are known as they land).  The core reads past the end
   * once per scan of the index and once per window of records it
   * keeps (layer-blocks.c), so this lists the index objects rarely. */
  if (!l->loaded || (off + len > l->ilen && !l->writing)) {
    pthread_rwlock_unlock (&l->lock);
    pthread_rwlock_wrlock (&l->lock);
    if ((!l->loaded || (off + len > l->ilen && !l->writing))
        && load_more (l) == -1) {
      pthread_rwlock_unlock (&l->lock);
      return -1;
    }
  }
  n = off >= l->ilen ? 0 : (ssize_t) MIN ((uint64_t) len, l->ilen - off);
  if (n > 0)
    memcpy (buf, l->index + off, n);
  pthread_rwlock_unlock (&l->lock);
  return n;
}

/* ---- reading blocks --------------------------------------------------- */

/* Copy block (PACK, SLOT) from a kept run into BUF: whether it was. */
static bool
from_runs (struct s3_layer *l, uint32_t pack, uint32_t slot, void *buf)
{
  bool hit = false;

  pthread_mutex_lock (&l->clock);
  for (size_t i = 0; i < CACHE_RUNS; i++) {
    struct run *r = &l->runs[i];
    if (r->n && r->pack == pack && slot >= r->slot && slot < r->slot + r->n) {
      memcpy (buf, r->buf + ((size_t) (slot - r->slot) << BLOCK_SHIFT),
              BLOCK_SIZE);
      r->used = ++l->tick;
      hit = true;
      break;
    }
  }
  pthread_mutex_unlock (&l->clock);
  return hit;
}

/* Keep the run of N blocks in P (taking it) from SLOT of PACK. */
static void
keep_run (struct s3_layer *l, uint32_t pack, uint32_t slot, uint32_t n,
          uint8_t *p)
{
  struct run *victim;

  pthread_mutex_lock (&l->clock);
  victim = &l->runs[0];
  for (size_t i = 1; i < CACHE_RUNS; i++)
    if (l->runs[i].used < victim->used)
      victim = &l->runs[i];
  free (victim->buf);
  victim->pack = pack;
  victim->slot = slot;
  victim->n = n;
  victim->buf = p;
  victim->used = ++l->tick;
  pthread_mutex_unlock (&l->clock);
}

ssize_t
s3store_block_read (struct store_layer *h, uint64_t b, void *buf)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *key = NULL;
  uint32_t pack, slot, n = 0;
  bool found;
  void *p;
  size_t got;

  pthread_rwlock_rdlock (&l->lock);
  found = map_get (l, b, &pack, &slot);
  if (found)
    n = pack < l->npackn ? l->packn[pack] : 0;
  pthread_rwlock_unlock (&l->lock);
  if (!found || slot >= n) {
    err_set (EIO, "%s: block %" PRIu64 " is in no pack", l->where, b);
    return -1;
  }
  if (from_runs (l, pack, slot, buf))
    return BLOCK_SIZE;
  n = MIN (n - slot, READ_RUN);
  if (asprintf (&key, "%sp/%010" PRIu32, l->prefix, pack) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (s3store_get (l->ss, key, (uint64_t) slot << BLOCK_SHIFT,
                   (uint64_t) n << BLOCK_SHIFT, &p, &got) == -1)
    return -1;
  /* A pack cut short: what is there is given, the rest is damage the
   * core's checksums find. */
  if (got < BLOCK_SIZE) {
    memcpy (buf, p, got);
    free (p);
    return got;
  }
  memcpy (buf, p, BLOCK_SIZE);
  if ((got >> BLOCK_SHIFT) > 1)
    keep_run (l, pack, slot, got >> BLOCK_SHIFT, p);
  else
    free (p);
  return BLOCK_SIZE;
}

/* ---- writing ---------------------------------------------------------- */

static int
delete_pack (struct s3_layer *l, uint32_t seq)
{
  CLEANUP_FREE char *key = NULL;

  if (asprintf (&key, "%sp/%010" PRIu32, l->prefix, seq) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return s3store_delete (l->ss, key);
}

/* Remove the packs no index object names (a crashed or failed
 * writer's) and number new ones after every pack there is.  Called as
 * the writer, with l->lock held exclusively. */
static int
clear_unnamed_packs (struct s3_layer *l)
{
  struct seqs s;

  if (list_seqs (l, "p/", NULL, &s) == -1)
    return -1;
  l->next_pack = 0;
  for (size_t i = 0; i < l->npackn; i++)
    if (l->packn[i])
      l->next_pack = i + 1;
  for (size_t i = 0; i < s.n; i++) {
    if (s.v[i] >= l->next_pack)
      l->next_pack = s.v[i] + 1;
    if ((s.v[i] >= l->npackn || l->packn[s.v[i]] == 0)
        && delete_pack (l, s.v[i]) == -1)
      log_warn ("%s", err_get ());
  }
  free (s.v);
  return 0;
}

int
s3store_writer_open (struct store_layer *h, uint64_t nblocks)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *what = NULL;
  int ret = -1;

  (void) nblocks;
  pthread_mutex_lock (&l->wlock);
  if (l->writing) {
    pthread_mutex_unlock (&l->wlock);
    return 0;
  }
  if (asprintf (&l->lease, "%swriter", l->prefix) == -1
      || asprintf (&what, "snapshot %s", l->snapshot) == -1) {
    l->lease = NULL;
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  if (s3store_lease_take (l->ss, l->lease, "fill", what) == -1) {
    if (errno == EWOULDBLOCK) {
      char msg[512];
      snprintf (msg, sizeof msg, "%s", err_get ());
      err_set (EWOULDBLOCK, "%s (another cbtfs process: a backup, a fetch, "
               "or a mount reading from it)", msg);
    }
    free (l->lease);
    l->lease = NULL;
    goto out;
  }
  pthread_rwlock_wrlock (&l->lock);
  ret = load_more (l);
  if (ret == 0)
    ret = clear_unnamed_packs (l);
  if (ret == 0)
    l->writing = true;
  pthread_rwlock_unlock (&l->lock);
  if (ret == -1) {
    s3store_delete (l->ss, l->lease);
    free (l->lease);
    l->lease = NULL;
  }
 out:
  pthread_mutex_unlock (&l->wlock);
  return ret;
}

int
s3store_index_cut (struct store_layer *h, uint64_t len)
{
  struct s3_layer *l = sl_of (h);

  /* Index objects are whole or absent: there is never a torn tail. */
  if (len == l->ilen)
    return 0;
  err_set (EIO, "%s: its index would have to be cut to %" PRIu64 " of %"
           PRIu64 " bytes, which an object store's never needs", l->where,
           len, l->ilen);
  return -1;
}

/* Put the gathered pack (taken from L under wlock) as pack SEQ, then
 * record it, or the failure, under wlock.  Called without wlock. */
static void
put_pack (struct s3_layer *l, uint32_t seq, uint8_t *buf, uint64_t *blocks,
          uint32_t n)
{
  CLEANUP_FREE char *key = NULL;
  int r = -1;

  if (asprintf (&key, "%sp/%010" PRIu32, l->prefix, seq) == -1)
    err_set (ENOMEM, "out of memory");
  else
    r = s3store_put (l->ss, key, buf, (size_t) n << BLOCK_SHIFT, false);
  free (buf);
  pthread_mutex_lock (&l->wlock);
  if (r == 0 && l->nups == l->upcap) {
    size_t ncap = l->upcap ? l->upcap * 2 : 16;
    struct upload *nv = realloc (l->ups, ncap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      r = -1;
    }
    else {
      l->ups = nv;
      l->upcap = ncap;
    }
  }
  if (r == 0)
    l->ups[l->nups++] = (struct upload) { .seq = seq, .n = n,
                                          .blocks = blocks };
  else {
    free (blocks);
    if (!l->failed) {
      l->failed = errno ? errno : EIO;
      snprintf (l->failed_msg, sizeof l->failed_msg, "%s", err_get ());
    }
  }
  l->inflight--;
  pthread_cond_broadcast (&l->idle);
  pthread_mutex_unlock (&l->wlock);
}

/* Take the gathered blocks as the next pack.  Called with wlock held;
 * the caller puts it (put_pack) without it. */
static uint32_t
take_pack (struct s3_layer *l, uint8_t **buf, uint64_t **blocks, uint32_t *n)
{
  *buf = l->pbuf;
  *blocks = l->pblocks;
  *n = l->pn;
  l->pbuf = NULL;
  l->pblocks = NULL;
  l->pn = 0;
  l->inflight++;
  return l->next_pack++;
}

int
s3store_blocks_write (struct store_layer *h, uint64_t first, const void *buf,
                      size_t len)
{
  struct s3_layer *l = sl_of (h);
  const uint8_t *p = buf;

  for (size_t i = 0; i < len >> BLOCK_SHIFT; i++) {
    uint8_t *pb;
    uint64_t *bl;
    uint32_t n, seq;
    pthread_mutex_lock (&l->wlock);
    if (l->pbuf == NULL) {
      l->pbuf = malloc ((size_t) S3STORE_PACK_BLOCKS << BLOCK_SHIFT);
      l->pblocks = malloc (S3STORE_PACK_BLOCKS * sizeof *l->pblocks);
      if (l->pbuf == NULL || l->pblocks == NULL) {
        free (l->pbuf);
        free (l->pblocks);
        l->pbuf = NULL;
        l->pblocks = NULL;
        pthread_mutex_unlock (&l->wlock);
        err_set (ENOMEM, "out of memory");
        return -1;
      }
    }
    memcpy (l->pbuf + ((size_t) l->pn << BLOCK_SHIFT),
            p + (i << BLOCK_SHIFT), BLOCK_SIZE);
    l->pblocks[l->pn++] = first + i;
    if (l->pn < S3STORE_PACK_BLOCKS) {
      pthread_mutex_unlock (&l->wlock);
      continue;
    }
    seq = take_pack (l, &pb, &bl, &n);
    pthread_mutex_unlock (&l->wlock);
    put_pack (l, seq, pb, bl, n);
  }
  return 0;
}

/* The index object for the packs put since the last commit and RECS
 * (malloc'd, *LEN bytes).  Called with wlock held. */
static uint8_t *
index_object (struct s3_layer *l, const void *recs, size_t rlen, size_t *len)
{
  size_t n = 8 + 4 + 8 + rlen + 8;
  uint8_t *o, *q;

  for (size_t i = 0; i < l->nups; i++)
    n += 8 + 8 * (size_t) l->ups[i].n;
  if ((o = malloc (n)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  memcpy (o, INDEX_MAGIC, 8);
  put_le32 (o + 8, (uint32_t) l->nups);
  q = o + 12;
  for (size_t i = 0; i < l->nups; i++) {
    put_le32 (q, l->ups[i].seq);
    put_le32 (q + 4, l->ups[i].n);
    q += 8;
    for (uint32_t j = 0; j < l->ups[i].n; j++, q += 8)
      put_le64 (q, l->ups[i].blocks[j]);
  }
  put_le64 (q, rlen);
  memcpy (q + 8, recs, rlen);
  q += 8 + rlen;
  put_le64 (q, XXH3_64bits (o, q - o));
  *len = n;
  return o;
}

/* Forget the packs put since the last commit.  Called with wlock. */
static void
drop_uploads (struct s3_layer *l)
{
  for (size_t i = 0; i < l->nups; i++)
    free (l->ups[i].blocks);
  l->nups = 0;
  l->failed = 0;
}

/* What the committed index object SEQ (packs in l->ups, RECS) adds to
 * the map and the index.  Called with wlock held. */
static int
apply_commit (struct s3_layer *l, const void *recs, size_t rlen)
{
  int ret = 0;

  pthread_rwlock_wrlock (&l->lock);
  for (size_t i = 0; i < l->nups && ret == 0; i++) {
    ret = packn_set (l, l->ups[i].seq, l->ups[i].n);
    for (uint32_t j = 0; j < l->ups[i].n && ret == 0; j++)
      ret = map_put (l, l->ups[i].blocks[j], l->ups[i].seq, j);
  }
  if (ret == 0)
    ret = index_add (l, recs, rlen);
  if (ret == 0)
    l->nobj++;
  pthread_rwlock_unlock (&l->lock);
  return ret;
}

int
s3store_commit (struct store_layer *h, const void *recs, size_t len,
                uint64_t at)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *key = NULL;
  CLEANUP_FREE uint8_t *obj = NULL;
  size_t olen;
  int ret = -1;

  pthread_mutex_lock (&l->wlock);
  while (l->inflight > 0)
    pthread_cond_wait (&l->idle, &l->wlock);
  if (l->pn > 0) {
    uint8_t *pb;
    uint64_t *bl;
    uint32_t n, seq = take_pack (l, &pb, &bl, &n);
    pthread_mutex_unlock (&l->wlock);
    put_pack (l, seq, pb, bl, n);
    pthread_mutex_lock (&l->wlock);
  }
  if (l->failed) {
    err_set (l->failed, "%s", l->failed_msg);
    goto out;
  }
  if (at != l->ilen) {
    err_set (EIO, "%s: a commit at byte %" PRIu64 " of an index of %" PRIu64,
             l->where, at, l->ilen);
    goto out;
  }
  obj = index_object (l, recs, len, &olen);
  if (obj == NULL
      || asprintf (&key, "%si/%010" PRIu32, l->prefix, l->nobj) == -1)
    goto out;
  if (s3store_put (l->ss, key, obj, olen, true) == -1)
    goto out;
  ret = apply_commit (l, recs, len);
 out:
  drop_uploads (l);
  pthread_mutex_unlock (&l->wlock);
  return ret;
}

/* Blocks no record names are in packs no index object will name (or
 * not put yet): they are never read, and go with the next writer. */
void
s3store_blocks_drop (struct store_layer *h, uint64_t first, uint64_t n)
{
  (void) h;
  (void) first;
  (void) n;
}

void
s3store_writer_close (struct store_layer *h)
{
  struct s3_layer *l = sl_of (h);

  pthread_mutex_lock (&l->wlock);
  while (l->inflight > 0)
    pthread_cond_wait (&l->idle, &l->wlock);
  free (l->pbuf);
  free (l->pblocks);
  l->pbuf = NULL;
  l->pblocks = NULL;
  l->pn = 0;
  drop_uploads (l);
  free (l->ups);
  l->ups = NULL;
  l->upcap = 0;
  if (l->lease) {
    if (s3store_delete (l->ss, l->lease) == -1)
      log_warn ("%s: cannot let its writer's lease go: %s", l->where,
                err_get ());
    free (l->lease);
    l->lease = NULL;
  }
  pthread_rwlock_wrlock (&l->lock);
  l->writing = false;
  pthread_rwlock_unlock (&l->lock);
  pthread_mutex_unlock (&l->wlock);
}
