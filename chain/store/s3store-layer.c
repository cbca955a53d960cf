/* cbtfs: a layer in the object store backend (s3store.h).
 *
 * A layer has versions: its root names the current one, and a prune's
 * merge (a stage) builds the next beside it and then puts the root
 * again.  A version's blocks live in packs: a writer gathers the
 * blocks it is given into a buffer and, every S3STORE_PACK_BLOCKS
 * blocks, puts the buffer as its next pack P/packs/D/S.V.SEQ.  A
 * commit puts what is gathered as one more pack, then one index object
 * naming the packs put since the last commit (which block is at which
 * place in each) and carrying the core's records.  The version's index
 * is the concatenation of its index objects' records; where a block
 * lives is what the newest index object naming it says.  A stage
 * starts with an index object naming its base's packs, which it uses
 * where they are: a merge costs what changes, not the base's size.  A
 * pack no current version names (a crash, a failed commit, a replaced
 * version, a removed layer) is never read, and is deleted by the
 * layer's next writer or by the sweep (s3store-sweep.c).
 *
 * Index object SEQ >= 1 (little-endian):
 *   "CBTFS-I2"  magic, 8 bytes
 *   u32 packs, then per pack: its layer's uuid (36 bytes), u32 version,
 *     u32 SEQ, u32 blocks n, u64 block × n (UINT64_MAX: a place unused)
 *   u64 length of the records, the records
 *   u64 XXH3-64 of everything before
 * Index object 0 is the core's header alone, as it was given.
 *
 * Reads fetch a run of up to READ_RUN blocks of a pack in one ranged
 * GET and keep the last few runs: reading in order costs one request
 * per run, not one per block.  A reader going forward finds the runs
 * ahead of it fetched already (s3store-prefetch.c).
 *
 * Thread model: `lock` (a rwlock) guards the version, the index, the
 * block map and the pack table: readers share it, loading more of the
 * index takes it exclusively.  `wlock` guards the writer's buffer and
 * uploads; pack uploads run outside it, on the store's upload threads
 * (s3store-upload.c) or a commit's, and `idle` tells a commit when the
 * last has ended; a writer's first blocks list (and clear) its
 * version's packs under `wlock`, once, so that no other thread numbers
 * a pack meanwhile.  `clock` guards the run cache; requests never run
 * under it.  No request runs under `lock` either, except loading (the
 * root, the index objects) and a writer's check of the root.
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

#define BLOCK_SHIFT S3STORE_BLOCK_SHIFT
#define BLOCK_SIZE (1u << BLOCK_SHIFT)
#define READ_RUN 16             /* blocks per read request at most */
#define CACHE_RUNS 8            /* runs kept per layer */
#define INDEX_MAGIC "CBTFS-I2"
#define NO_BLOCK UINT64_MAX         /* a pack place no block uses */
#define VERSION_LEN 10

/* A pack, as index objects name it. */
struct pack {
  char owner[UUID_LEN + 1];     /* the layer that put it */
  uint32_t version, seq, n;     /* n: places (blocks) it has */
};

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
  char *vprefix;                /* P/layers/D/S/V/ once the version is known */
  char *packs;                  /* P/packs/D/ */
  char *disk, *snapshot;

  /* A stage (s3store_layer_stage): the version it builds, and the root
   * it puts when swapped in. */
  bool stage, replaced;
  char *manifest;
  size_t man_len;

  pthread_rwlock_t lock;
  uint32_t version;             /* 0 until read from the root */
  bool loaded;                  /* index objects 0..nobj-1 read */
  bool fresh;                   /* listed for a scan that began since */
  uint32_t nobj;
  uint8_t *index;               /* the core's bytes */
  uint64_t ilen;
  size_t icap;
  uint64_t *mkey, *mval;        /* block+1 -> pack << 32 | place; 0 empty */
  size_t mcap, mlen;
  struct pack *pk;              /* the packs named, by number */
  size_t npk, pkcap;

  pthread_mutex_t wlock;
  pthread_cond_t idle;
  bool writing;
  struct s3store_lease *lease;  /* P/layers/D/S/writer while writing */
  bool numbered;                /* next_pack known, unnamed packs cleared */
  uint32_t next_pack;
  uint8_t *pbuf;                /* blocks gathered, S3STORE_PACK_BLOCKS */
  uint64_t *pblocks;
  uint32_t pn;
  struct upload *ups;
  size_t nups, upcap;
  unsigned inflight;
  int failed;                   /* errno of a failed pack put, or 0 */
  enum err_class failed_class;
  char failed_msg[512];

  pthread_mutex_t clock;
  struct run runs[CACHE_RUNS];
  uint64_t tick;

  struct s3store_stream *ahead; /* read-ahead, or NULL (owned) */
};

static inline struct s3_layer *
sl_of (struct store_layer *h)
{
  return (struct s3_layer *) h;
}

static const struct s3store_layout layout;

static struct s3_layer *
layer_new (struct store *s, const char *disk, const char *snapshot)
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
  l->packs = s3store_key (ss, "packs/%s/", disk);
  l->disk = strdup (disk);
  l->snapshot = strdup (snapshot);
  if (l->where == NULL || l->prefix == NULL || l->packs == NULL
      || l->disk == NULL || l->snapshot == NULL) {
    err_set (ENOMEM, "out of memory");
    s3store_layer_close (&l->base);
    return NULL;
  }
  /* Without it, reads only go slower. */
  l->ahead = s3store_stream_new (ss, &layout, l, l->disk);
  return l;
}

/* Read the version L reads from now on.  Called with l->lock held
 * exclusively, or before L is shared. */
static int
set_version (struct s3_layer *l, uint32_t version)
{
  free (l->vprefix);
  l->version = version;
  if (asprintf (&l->vprefix, "%s%010" PRIu32 "/", l->prefix, version) == -1) {
    l->vprefix = NULL;
    l->version = 0;
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

struct store_layer *
s3store_layer_open (struct store *s, const char *disk, const char *snapshot)
{
  struct s3_layer *l = layer_new (s, disk, snapshot);

  return l ? &l->base : NULL;
}

/* The prefix of the packs this version puts: P/packs/D/S.V. */
static char *
own_packs (const struct s3_layer *l)
{
  char *p;

  if (asprintf (&p, "%s%s.%010" PRIu32 ".", l->packs, l->snapshot,
                l->version) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return p;
}

/* A stage closed before it was swapped in leaves nothing behind. */
static void
discard_stage (struct s3_layer *l)
{
  CLEANUP_FREE char *packs = NULL;

  if (l->vprefix == NULL || (packs = own_packs (l)) == NULL)
    return;
  if (s3store_delete_all (l->ss, l->vprefix) == -1
      || s3store_delete_all (l->ss, packs) == -1)
    log_warn ("%s: an unfinished merge's objects stay: %s (the next sweep "
              "removes its packs)", l->where, err_get ());
}

void
s3store_layer_close (struct store_layer *h)
{
  struct s3_layer *l;

  if (h == NULL)
    return;
  l = sl_of (h);
  s3store_stream_free (l->ahead);
  s3store_writer_close (h);
  if (l->stage && !l->replaced)
    discard_stage (l);
  for (size_t i = 0; i < CACHE_RUNS; i++)
    free (l->runs[i].buf);
  free (l->index);
  free (l->mkey);
  free (l->mval);
  free (l->pk);
  pthread_rwlock_destroy (&l->lock);
  pthread_mutex_destroy (&l->wlock);
  pthread_cond_destroy (&l->idle);
  pthread_mutex_destroy (&l->clock);
  free (l->where);
  free (l->prefix);
  free (l->vprefix);
  free (l->packs);
  free (l->disk);
  free (l->snapshot);
  free (l->manifest);
  free (l);
}

const char *
s3store_layer_where (const struct store_layer *h)
{
  return ((const struct s3_layer *) h)->where;
}

/* ---- the block map ---------------------------------------------------- */

static size_t
slot_of (uint64_t key, size_t cap)
{
  return (size_t) (XXH3_64bits (&key, sizeof key) & (cap - 1));
}

/* Whether block B is in the map: *PACK (a number in l->pk) and *PLACE
 * say where.  Called with l->lock held. */
static bool
map_get (const struct s3_layer *l, uint64_t b, uint32_t *pack,
         uint32_t *place)
{
  if (l->mcap == 0)
    return false;
  for (size_t i = slot_of (b + 1, l->mcap);; i = (i + 1) & (l->mcap - 1)) {
    if (l->mkey[i] == 0)
      return false;
    if (l->mkey[i] == b + 1) {
      *pack = (uint32_t) (l->mval[i] >> 32);
      *place = (uint32_t) l->mval[i];
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

/* Block B is at PLACE of pack PACK (newer entries win).  Called with
 * l->lock held exclusively. */
static int
map_put (struct s3_layer *l, uint64_t b, uint32_t pack, uint32_t place)
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
                  (uint64_t) pack << 32 | place, &l->mlen);
  return 0;
}

/* Add pack OWNER.VERSION.SEQ of N places to the table: its number into
 * *AT.  Called with l->lock held exclusively. */
static int
pack_add (struct s3_layer *l, const char *owner, uint32_t version,
          uint32_t seq, uint32_t n, uint32_t *at)
{
  if (l->npk == UINT32_MAX) {
    err_set (EFBIG, "%s: too many packs", l->where);
    return -1;
  }
  if (l->npk == l->pkcap) {
    size_t ncap = l->pkcap ? l->pkcap * 2 : 64;
    struct pack *nv = realloc (l->pk, ncap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    l->pk = nv;
    l->pkcap = ncap;
  }
  memcpy (l->pk[l->npk].owner, owner, UUID_LEN);
  l->pk[l->npk].owner[UUID_LEN] = '\0';
  l->pk[l->npk].version = version;
  l->pk[l->npk].seq = seq;
  l->pk[l->npk].n = n;
  *at = (uint32_t) l->npk++;
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

/* A parsed index object: where its pack entries and records are. */
struct iobj {
  const uint8_t *packs, *packs_end;
  uint32_t npacks;
  const uint8_t *recs;
  uint64_t rlen;
};

/* Check an index object (LEN bytes at P) and find its parts: 0, or -1
 * for a damaged one (no err_*: the caller names it). */
static int
iobj_parse (const uint8_t *p, size_t len, struct iobj *o)
{
  const uint8_t *end = p + len, *q = p + 8;

  if (len < 8 + 4 + 8 + 8 || memcmp (p, INDEX_MAGIC, 8) != 0
      || get_le64 (end - 8) != XXH3_64bits (p, len - 8))
    return -1;
  end -= 8;
  o->npacks = get_le32 (q);
  q += 4;
  o->packs = q;
  for (uint32_t i = 0; i < o->npacks; i++) {
    uint32_t n;
    if (end - q < UUID_LEN + 12)
      return -1;
    n = get_le32 (q + UUID_LEN + 8);
    q += UUID_LEN + 12;
    if (n > S3STORE_PACK_BLOCKS || (size_t) (end - q) / 8 < n)
      return -1;
    q += 8 * (size_t) n;
  }
  o->packs_end = q;
  if (end - q < 8)
    return -1;
  o->rlen = get_le64 (q);
  q += 8;
  if ((uint64_t) (end - q) != o->rlen)
    return -1;
  o->recs = q;
  return 0;
}

/* The pack entry at *Q of an iobj: its fields, and *Q moved past it. */
static void
entry_next (const uint8_t **q, char owner[UUID_LEN + 1], uint32_t *version,
            uint32_t *seq, uint32_t *n, const uint8_t **blocks)
{
  memcpy (owner, *q, UUID_LEN);
  owner[UUID_LEN] = '\0';
  *version = get_le32 (*q + UUID_LEN);
  *seq = get_le32 (*q + UUID_LEN + 4);
  *n = get_le32 (*q + UUID_LEN + 8);
  *blocks = *q + UUID_LEN + 12;
  *q = *blocks + 8 * (size_t) *n;
}

int
s3store_index_packs (const uint8_t *p, size_t len, s3store_pack_fn fn,
                     void *opaque)
{
  const uint8_t *q, *blocks;
  char owner[UUID_LEN + 1], name[UUID_LEN + 32];
  uint32_t version, seq, n;
  struct iobj o;

  if (iobj_parse (p, len, &o) == -1) {
    err_set (EIO, "a damaged index object");
    return -1;
  }
  for (q = o.packs; q < o.packs_end;) {
    entry_next (&q, owner, &version, &seq, &n, &blocks);
    snprintf (name, sizeof name, "%s.%010" PRIu32 ".%010" PRIu32, owner,
              version, seq);
    if (fn (opaque, name) == -1)
      return -1;
  }
  return 0;
}

/* Apply index object SEQ (>= 1), LEN bytes at P.  Called with l->lock
 * held exclusively. */
static int
apply_index_object (struct s3_layer *l, uint32_t seq, const uint8_t *p,
                    size_t len)
{
  const uint8_t *q, *blocks;
  char owner[UUID_LEN + 1];
  uint32_t version, pseq, n, at;
  struct iobj o;

  if (iobj_parse (p, len, &o) == -1) {
    err_set (EIO, "%s/i/%010" PRIu32 ": damaged index object", l->where,
             seq);
    return -1;
  }
  for (q = o.packs; q < o.packs_end;) {
    entry_next (&q, owner, &version, &pseq, &n, &blocks);
    if (!is_uuid (owner)) {
      err_set (EIO, "%s/i/%010" PRIu32 ": damaged index object", l->where,
               seq);
      return -1;
    }
    if (pack_add (l, owner, version, pseq, n, &at) == -1)
      return -1;
    for (uint32_t j = 0; j < n; j++) {
      uint64_t b = get_le64 (blocks + 8 * (size_t) j);
      if (b != NO_BLOCK && map_put (l, b, at, j) == -1)
        return -1;
    }
  }
  return index_add (l, o.recs, o.rlen);
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

/* The SEQs of keys PREFIX + SEQ, after AFTER (or all). */
static int
list_seqs (struct s3_layer *l, const char *prefix, const uint32_t *after,
           struct seqs *s)
{
  CLEANUP_FREE char *from = NULL;

  memset (s, 0, sizeof *s);
  if (after && asprintf (&from, "%s%010" PRIu32, prefix, *after) == -1) {
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
 * the first gap (one being written now); first, the version to read.
 * Called with l->lock held exclusively. */
static int
load_more (struct s3_layer *l)
{
  CLEANUP_FREE char *iprefix = NULL;
  uint32_t last = l->nobj - 1, v;
  struct seqs s;
  int ret = 0;

  if (l->version == 0) {
    if (s3store_root_read (l->ss, l->disk, l->snapshot, &v, NULL, 0,
                           NULL) == -1) {
      if (errno == ENOENT)
        err_set (ENOENT, "%s: no such layer", l->where);
      return -1;
    }
    if (set_version (l, v) == -1)
      return -1;
  }
  if (asprintf (&iprefix, "%si/", l->vprefix) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (list_seqs (l, iprefix, l->nobj ? &last : NULL, &s) == -1)
    return -1;
  for (size_t i = 0; i < s.n && s.v[i] == l->nobj; i++) {
    CLEANUP_FREE char *key = NULL;
    void *buf;
    size_t len;
    if (asprintf (&key, "%s%010" PRIu32, iprefix, s.v[i]) == -1) {
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
  l->fresh = false;
  return ret;
}

/* Make sure L knows its version and index; FOR_SCAN when the core reads
 * the index next (its set is read just before it).  Called without
 * l->lock. */
static int
ensure_loaded (struct s3_layer *l, bool for_scan)
{
  int ret = 0;

  pthread_rwlock_wrlock (&l->lock);
  if (!l->loaded) {
    ret = load_more (l);
    l->fresh = ret == 0 && for_scan;
  }
  pthread_rwlock_unlock (&l->lock);
  return ret;
}

/* Whether a read of the index up to END must list its objects again:
 * past what we know, another process may have committed more (our own
 * commits are known as they land).  The core reads past the end once
 * per scan of the index and once per window of records it keeps
 * (layer-blocks.c), so this lists rarely; and the listing a scan
 * began with (its first load) serves the first read past the end, which
 * comes a moment later, in the same scan.  Called with l->lock held;
 * CONSUME (with it held exclusively) takes that listing's turn. */
static bool
must_list (struct s3_layer *l, uint64_t end, bool consume)
{
  if (!l->loaded)
    return true;
  if (end <= l->ilen || l->writing)
    return false;
  if (!l->fresh)
    return true;
  if (consume)
    l->fresh = false;
  return !consume;
}

ssize_t
s3store_index_read (struct store_layer *h, void *buf, size_t len,
                    uint64_t off)
{
  struct s3_layer *l = sl_of (h);
  ssize_t n;

  pthread_rwlock_rdlock (&l->lock);
  if (must_list (l, off + len, false)) {
    bool first = !l->loaded;
    pthread_rwlock_unlock (&l->lock);
    pthread_rwlock_wrlock (&l->lock);
    first = first && !l->loaded;
    if (must_list (l, off + len, true)) {
      if (load_more (l) == -1) {
        pthread_rwlock_unlock (&l->lock);
        return -1;
      }
      /* A scan begins with the header: this listing serves its end. */
      l->fresh = first;
    }
  }
  n = off >= l->ilen ? 0 : (ssize_t) MIN ((uint64_t) len, l->ilen - off);
  if (n > 0)
    memcpy (buf, l->index + off, n);
  pthread_rwlock_unlock (&l->lock);
  return n;
}

char *
s3store_set_read (struct store_layer *h, size_t max, size_t *len)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *key = NULL;

  if (ensure_loaded (l, true) == -1)
    return NULL;
  if (asprintf (&key, "%sset", l->vprefix) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return s3store_read (l->ss, key, max, len);
}

static int
add_size (void *opaque, const char *key, uint64_t size)
{
  (void) key;
  *(uint64_t *) opaque += size;
  return 0;
}

/* What the layer's version takes: its own objects, and the blocks of
 * every pack it reads from (a pack two layers share counts for both,
 * as a directory store's linked file does). */
int
s3store_usage (struct store_layer *h, uint64_t *bytes)
{
  struct s3_layer *l = sl_of (h);
  uint64_t own = 0, blocks = 0;

  if (ensure_loaded (l, false) == -1
      || s3store_list (l->ss, l->vprefix, NULL, add_size, &own) == -1)
    return -1;
  pthread_rwlock_rdlock (&l->lock);
  for (size_t i = 0; i < l->npk; i++)
    blocks += l->pk[i].n;
  pthread_rwlock_unlock (&l->lock);
  *bytes = own + blocks * s3store_block_bytes (l->ss);
  return 0;
}

/* ---- reading blocks --------------------------------------------------- */

/* Copy block (PACK, PLACE) from a kept run into BUF: whether it was. */
static bool
from_runs (struct s3_layer *l, uint32_t pack, uint32_t place, void *buf)
{
  bool hit = false;

  pthread_mutex_lock (&l->clock);
  for (size_t i = 0; i < CACHE_RUNS; i++) {
    struct run *r = &l->runs[i];
    if (r->n && r->pack == pack && place >= r->slot
        && place < r->slot + r->n) {
      memcpy (buf, r->buf + ((size_t) (place - r->slot) << BLOCK_SHIFT),
              BLOCK_SIZE);
      r->used = ++l->tick;
      hit = true;
      break;
    }
  }
  pthread_mutex_unlock (&l->clock);
  return hit;
}

/* Keep the run of N blocks in P (taking it) from PLACE of PACK. */
static void
keep_run (struct s3_layer *l, uint32_t pack, uint32_t place, uint32_t n,
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
  victim->slot = place;
  victim->n = n;
  victim->buf = p;
  victim->used = ++l->tick;
  pthread_mutex_unlock (&l->clock);
}

/* The key of pack PK (malloc'd). */
static char *
pack_key (const struct s3_layer *l, const struct pack *pk)
{
  char *key;

  if (asprintf (&key, "%s%s.%010" PRIu32 ".%010" PRIu32, l->packs, pk->owner,
                pk->version, pk->seq) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return key;
}

/* Block B, which this handle's writer wrote since its last commit (no
 * index object names it yet): from the gathered buffer, or from a pack
 * put since the commit, once the puts in flight have ended.  The newest
 * write of B wins.  Called without locks. */
static ssize_t
unnamed_block (struct s3_layer *l, uint64_t b, void *buf)
{
  CLEANUP_FREE char *prefix = NULL, *key = NULL;
  uint32_t seq = 0, place = 0;
  bool found = false;
  void *p;
  size_t got;

  pthread_mutex_lock (&l->wlock);
  while (l->inflight > 0)
    pthread_cond_wait (&l->idle, &l->wlock);
  for (uint32_t i = l->pn; i-- > 0;)
    if (l->pblocks[i] == b) {
      memcpy (buf, l->pbuf + ((size_t) i << BLOCK_SHIFT), BLOCK_SIZE);
      pthread_mutex_unlock (&l->wlock);
      return BLOCK_SIZE;
    }
  /* Packs finish in any order: the newest is the highest number. */
  for (size_t u = 0; u < l->nups; u++)
    for (uint32_t j = 0; j < l->ups[u].n; j++)
      if (l->ups[u].blocks[j] == b
          && (!found || l->ups[u].seq > seq
              || (l->ups[u].seq == seq && j > place))) {
        seq = l->ups[u].seq;
        place = j;
        found = true;
      }
  pthread_mutex_unlock (&l->wlock);
  if (!found) {
    err_set (EIO, "%s: block %" PRIu64 " is in no pack", l->where, b);
    return -1;
  }
  if ((prefix = own_packs (l)) == NULL
      || asprintf (&key, "%s%010" PRIu32, prefix, seq) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (s3store_pack_get (l->ss, key, place, 1, &p, &got) == -1)
    return -1;
  memcpy (buf, p, MIN (got, (size_t) BLOCK_SIZE));
  free (p);
  return got;
}

ssize_t
s3store_block_read (struct store_layer *h, uint64_t b, void *buf)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *key = NULL;
  struct s3store_cache *cache;
  struct pack pk;
  const char *name;
  uint32_t pack, place, n = 0;
  bool found;
  void *p;
  size_t got;

  pthread_rwlock_rdlock (&l->lock);
  found = map_get (l, b, &pack, &place);
  if (!found && !l->writing) {
    /* Named by an index object this handle has not read yet. */
    pthread_rwlock_unlock (&l->lock);
    pthread_rwlock_wrlock (&l->lock);
    found = map_get (l, b, &pack, &place);
    if (!found && load_more (l) == -1) {
      pthread_rwlock_unlock (&l->lock);
      return -1;
    }
    found = found || map_get (l, b, &pack, &place);
  }
  if (found)
    pk = l->pk[pack];
  pthread_rwlock_unlock (&l->lock);
  if (!found)
    return unnamed_block (l, b, buf);
  n = pk.n;
  if (place >= n) {
    err_set (EIO, "%s: block %" PRIu64 " is in no pack", l->where, b);
    return -1;
  }
  /* A run read before or ahead: no request, and no key to make. */
  if (from_runs (l, pack, place, buf)
      || (l->ahead && s3store_stream_take (l->ahead, b, pack, place, buf)))
    return BLOCK_SIZE;
  if ((key = pack_key (l, &pk)) == NULL)
    return -1;
  cache = l->ss->cache;
  name = key + strlen (l->packs);
  if (cache && s3store_cache_get (cache, l->disk, name, place, buf))
    return BLOCK_SIZE;
  if (l->ahead && s3store_stream_miss (l->ahead, b, pack, place, buf))
    return BLOCK_SIZE;
  n = MIN (n - place, READ_RUN);
  if (s3store_pack_get (l->ss, key, place, n, &p, &got) == -1)
    return -1;
  if (cache && got >= BLOCK_SIZE)
    s3store_cache_put (cache, l->disk, name, place, got >> BLOCK_SHIFT, p);
  /* A pack cut short: what is there is given, the rest is damage the
   * core's checksums find. */
  if (got < BLOCK_SIZE) {
    memcpy (buf, p, got);
    free (p);
    return got;
  }
  memcpy (buf, p, BLOCK_SIZE);
  if ((got >> BLOCK_SHIFT) > 1)
    keep_run (l, pack, place, got >> BLOCK_SHIFT, p);
  else
    free (p);
  return BLOCK_SIZE;
}

/* s3store_layout's calls, for the layer's stream. */
static bool
layout_locate (void *opaque, uint64_t b, uint32_t *pack, uint32_t *place,
               uint32_t *places)
{
  struct s3_layer *l = opaque;
  bool found;

  pthread_rwlock_rdlock (&l->lock);
  found = map_get (l, b, pack, place);
  if (found)
    *places = l->pk[*pack].n;
  pthread_rwlock_unlock (&l->lock);
  return found && *place < *places;
}

static char *
layout_key (void *opaque, uint32_t pack, const char **name)
{
  struct s3_layer *l = opaque;
  struct pack pk;
  char *key;

  pthread_rwlock_rdlock (&l->lock);
  pk = l->pk[pack];
  pthread_rwlock_unlock (&l->lock);
  if ((key = pack_key (l, &pk)) != NULL)
    *name = key + strlen (l->packs);
  return key;
}

static const struct s3store_layout layout = {
  .locate = layout_locate,
  .key = layout_key,
};

/* ---- writing ---------------------------------------------------------- */

/* Remove this version's packs no index object names (a crashed or
 * failed writer's) and number new ones after every one there is.
 * Called as the writer, with l->wlock held (not l->lock). */
static int
clear_unnamed_packs (struct s3_layer *l)
{
  CLEANUP_FREE char *prefix = own_packs (l);
  struct seqs s;

  if (prefix == NULL || list_seqs (l, prefix, NULL, &s) == -1)
    return -1;
  l->next_pack = 0;
  pthread_rwlock_rdlock (&l->lock);
  for (size_t i = 0; i < l->npk; i++)
    if (l->pk[i].version == l->version
        && strcmp (l->pk[i].owner, l->snapshot) == 0
        && l->pk[i].seq >= l->next_pack)
      l->next_pack = l->pk[i].seq + 1;
  pthread_rwlock_unlock (&l->lock);
  for (size_t i = 0; i < s.n; i++) {
    CLEANUP_FREE char *key = NULL;
    bool named = s.v[i] < l->next_pack;
    if (s.v[i] >= l->next_pack)
      l->next_pack = s.v[i] + 1;
    /* Below the highest named, every pack this version put is named:
     * packs are put, and named, in order.  Above it, none is. */
    if (named)
      continue;
    if (asprintf (&key, "%s%010" PRIu32, prefix, s.v[i]) == -1
        || s3store_delete (l->ss, key) == -1)
      log_warn ("%s: %s", l->where, err_get ());
  }
  free (s.v);
  return 0;
}

/* A handle that read a version a prune has since replaced must not
 * write into it: what it put would never be read.  Called with
 * l->lock held. */
static int
check_current (struct s3_layer *l)
{
  uint32_t v;

  if (s3store_root_read (l->ss, l->disk, l->snapshot, &v, NULL, 0, NULL)
      == -1)
    return -1;
  if (v == l->version)
    return 0;
  err_set (ESTALE, "%s was replaced (version %" PRIu32 ", not %" PRIu32
           "): open it again", l->where, v, l->version);
  return -1;
}

int
s3store_writer_open (struct store_layer *h, uint64_t nblocks)
{
  struct s3_layer *l = sl_of (h);
  CLEANUP_FREE char *what = NULL, *key = NULL;
  int ret = -1;

  (void) nblocks;
  pthread_mutex_lock (&l->wlock);
  if (l->writing) {
    pthread_mutex_unlock (&l->wlock);
    return 0;
  }
  if (asprintf (&key, "%swriter", l->prefix) == -1
      || asprintf (&what, "snapshot %s", l->snapshot) == -1) {
    key = NULL;
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  l->lease = s3store_lease_take (l->ss, key, "fill", what);
  if (l->lease == NULL) {
    if (errno == EWOULDBLOCK) {
      char msg[512];
      snprintf (msg, sizeof msg, "%s", err_get ());
      err_set (EWOULDBLOCK, "%s (another cbtfs process: a backup, a fetch, "
               "or a mount reading from it)", msg);
    }
    goto out;
  }
  pthread_rwlock_wrlock (&l->lock);
  ret = load_more (l);
  if (ret == 0)
    ret = check_current (l);
  /* Packs are numbered (and a crashed writer's cleared) at the first
   * block written: a writer that only holds the layer (a prune's) costs
   * no listing of them. */
  l->numbered = false;
  if (ret == 0)
    l->writing = true;
  pthread_rwlock_unlock (&l->lock);
  if (ret == -1) {
    s3store_lease_end (l->lease);
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
  CLEANUP_FREE char *prefix = own_packs (l), *key = NULL;
  int r = -1;

  if (prefix && asprintf (&key, "%s%010" PRIu32, prefix, seq) == -1) {
    key = NULL;
    err_set (ENOMEM, "out of memory");
  }
  if (key)
    r = s3store_pack_put (l->ss, key, buf, n);
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
      l->failed_class = err_class ();
      snprintf (l->failed_msg, sizeof l->failed_msg, "%s", err_get ());
    }
  }
  l->inflight--;
  pthread_cond_broadcast (&l->idle);
  pthread_mutex_unlock (&l->wlock);
}

/* A full pack on its way to an upload thread. */
struct pack_job {
  struct s3_layer *l;
  uint32_t seq, n;
  uint8_t *buf;
  uint64_t *blocks;
};

static void
run_pack_job (void *opaque)
{
  struct pack_job *j = opaque;

  put_pack (j->l, j->seq, j->buf, j->blocks, j->n);
  free (j);
}

/* Put the pack on an upload thread (or, failing that, here). */
static void
queue_pack (struct s3_layer *l, uint32_t seq, uint8_t *buf, uint64_t *blocks,
            uint32_t n)
{
  struct pack_job *j = malloc (sizeof *j);

  if (j) {
    *j = (struct pack_job) { .l = l, .seq = seq, .n = n, .buf = buf,
                             .blocks = blocks };
    if (s3store_upload (l->ss, run_pack_job, j) == 0)
      return;
    free (j);
  }
  put_pack (l, seq, buf, blocks, n);
}

/* Take the gathered blocks as the next pack.  Called with wlock held;
 * the caller puts it (put_pack, queue_pack) without it. */
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

/* The failed put's error as the current one.  Called with wlock. */
static void
failed_error (struct s3_layer *l)
{
  err_set (l->failed, "%s", l->failed_msg);
  err_set_class (l->failed_class);
}

int
s3store_blocks_write (struct store_layer *h, uint64_t first, const void *buf,
                      size_t len)
{
  struct s3_layer *l = sl_of (h);
  const uint8_t *p = buf;

  pthread_mutex_lock (&l->wlock);
  if (!l->numbered) {
    if (clear_unnamed_packs (l) == -1) {
      pthread_mutex_unlock (&l->wlock);
      return -1;
    }
    l->numbered = true;
  }
  pthread_mutex_unlock (&l->wlock);
  for (size_t i = 0; i < len >> BLOCK_SHIFT; i++) {
    uint8_t *pb;
    uint64_t *bl;
    uint32_t n, seq;
    pthread_mutex_lock (&l->wlock);
    /* A pack that did not go up fails the next commit: stop reading
     * blocks for it now rather than upload more that will not count. */
    if (l->failed) {
      failed_error (l);
      pthread_mutex_unlock (&l->wlock);
      return -1;
    }
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
    queue_pack (l, seq, pb, bl, n);
  }
  return 0;
}

/* An index object naming NPACKS packs, each by FN's answer for pack I
 * (its owner, version, seq, places and blocks), with RLEN bytes of
 * RECS (malloc'd, *LEN bytes). */
typedef void (*entry_fn) (void *opaque, size_t i, const char **owner,
                          uint32_t *version, uint32_t *seq, uint32_t *n,
                          const uint64_t **blocks);

static uint8_t *
index_object (size_t npacks, entry_fn fn, void *opaque, const void *recs,
              size_t rlen, size_t *len)
{
  size_t n = 8 + 4 + 8 + rlen + 8;
  const char *owner;
  const uint64_t *blocks;
  uint32_t version, seq, nb;
  uint8_t *o, *q;

  for (size_t i = 0; i < npacks; i++) {
    fn (opaque, i, &owner, &version, &seq, &nb, &blocks);
    n += UUID_LEN + 12 + 8 * (size_t) nb;
  }
  if ((o = malloc (n)) == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  memcpy (o, INDEX_MAGIC, 8);
  put_le32 (o + 8, (uint32_t) npacks);
  q = o + 12;
  for (size_t i = 0; i < npacks; i++) {
    fn (opaque, i, &owner, &version, &seq, &nb, &blocks);
    memcpy (q, owner, UUID_LEN);
    put_le32 (q + UUID_LEN, version);
    put_le32 (q + UUID_LEN + 4, seq);
    put_le32 (q + UUID_LEN + 8, nb);
    q += UUID_LEN + 12;
    for (uint32_t j = 0; j < nb; j++, q += 8)
      put_le64 (q, blocks[j]);
  }
  put_le64 (q, rlen);
  if (rlen)
    memcpy (q + 8, recs, rlen);
  q += 8 + rlen;
  put_le64 (q, XXH3_64bits (o, q - o));
  *len = n;
  return o;
}

/* index_object's FN for the packs this writer put (l->ups). */
static void
upload_entry (void *opaque, size_t i, const char **owner, uint32_t *version,
              uint32_t *seq, uint32_t *n, const uint64_t **blocks)
{
  struct s3_layer *l = opaque;

  *owner = l->snapshot;
  *version = l->version;
  *seq = l->ups[i].seq;
  *n = l->ups[i].n;
  *blocks = l->ups[i].blocks;
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

/* What the committed index object (packs in l->ups, RECS) adds to the
 * map and the index.  Called with wlock held. */
static int
apply_commit (struct s3_layer *l, const void *recs, size_t rlen)
{
  uint32_t at;
  int ret = 0;

  pthread_rwlock_wrlock (&l->lock);
  for (size_t i = 0; i < l->nups && ret == 0; i++) {
    ret = pack_add (l, l->snapshot, l->version, l->ups[i].seq, l->ups[i].n,
                    &at);
    for (uint32_t j = 0; j < l->ups[i].n && ret == 0; j++)
      ret = map_put (l, l->ups[i].blocks[j], at, j);
  }
  if (ret == 0)
    ret = index_add (l, recs, rlen);
  if (ret == 0)
    l->nobj++;
  pthread_rwlock_unlock (&l->lock);
  return ret;
}

/* Put index object SEQ of this version (create-only: nobody else
 * writes it). */
static int
put_index_object (struct s3_layer *l, uint32_t seq, const uint8_t *obj,
                  size_t len)
{
  CLEANUP_FREE char *key = NULL;

  if (asprintf (&key, "%si/%010" PRIu32, l->vprefix, seq) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return s3store_put (l->ss, key, obj, len, true);
}

/* The index object is what makes a commit's blocks part of the layer:
 * put it only while this writer surely holds its leases (a stage's is
 * its caller's store lock), so that a writer that lost one leaves what
 * a crash leaves. */
static int
still_writer (struct s3_layer *l)
{
  if (l->lease && s3store_lease_check (l->lease) == -1)
    return -1;
  return s3store_may_change (l->ss);
}

int
s3store_commit (struct store_layer *h, const void *recs, size_t len,
                uint64_t at)
{
  struct s3_layer *l = sl_of (h);
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
    failed_error (l);
    goto out;
  }
  if (at != l->ilen) {
    err_set (EIO, "%s: a commit at byte %" PRIu64 " of an index of %" PRIu64,
             l->where, at, l->ilen);
    goto out;
  }
  obj = index_object (l->nups, upload_entry, l, recs, len, &olen);
  if (obj == NULL || still_writer (l) == -1
      || put_index_object (l, l->nobj, obj, olen) == -1)
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
    if (s3store_lease_end (l->lease) == -1)
      log_warn ("%s: cannot let its writer's lease go: %s (it is "
                "taken over once it expires)", l->where, err_get ());
    l->lease = NULL;
  }
  pthread_rwlock_wrlock (&l->lock);
  l->writing = false;
  pthread_rwlock_unlock (&l->lock);
  pthread_mutex_unlock (&l->wlock);
}

/* ---- stages (prune's merges) ------------------------------------------ */

/* The base's packs as the stage names them: per pack, which block is
 * at each place (NO_BLOCK where none the base reads). */
struct inherit {
  const struct s3_layer *base;
  uint64_t **places;            /* per pack of the base, n entries */
  uint32_t *used;               /* the packs with a block the base reads */
};

static void
inherit_entry (void *opaque, size_t i, const char **owner, uint32_t *version,
               uint32_t *seq, uint32_t *n, const uint64_t **blocks)
{
  struct inherit *in = opaque;
  const struct pack *pk = &in->base->pk[in->used[i]];

  *owner = pk->owner;
  *version = pk->version;
  *seq = pk->seq;
  *n = pk->n;
  *blocks = in->places[in->used[i]];
}

/* Index object 1 of stage ST: the packs of BASE with the blocks BASE
 * reads from them, as the stage's own (no record vouches for them
 * yet), and the same map and pack table in ST.  A pack of which BASE
 * reads nothing is left out. */
static int
inherit (struct s3_layer *st, struct s3_layer *base)
{
  struct inherit in = { .base = base };
  CLEANUP_FREE uint8_t *obj = NULL;
  size_t olen, used = 0;
  int ret = -1;

  in.places = calloc (base->npk ? base->npk : 1, sizeof *in.places);
  in.used = malloc ((base->npk ? base->npk : 1) * sizeof *in.used);
  if (in.places == NULL || in.used == NULL) {
    free (in.places);
    free (in.used);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < base->mcap; i++) {
    uint32_t p, place;
    if (base->mkey[i] == 0)
      continue;
    p = (uint32_t) (base->mval[i] >> 32);
    place = (uint32_t) base->mval[i];
    if (in.places[p] == NULL) {
      if ((in.places[p] = malloc (base->pk[p].n * sizeof (uint64_t))) == NULL)
        goto nomem;
      for (uint32_t j = 0; j < base->pk[p].n; j++)
        in.places[p][j] = NO_BLOCK;
      in.used[used++] = p;
    }
    in.places[p][place] = base->mkey[i] - 1;
  }
  if (used > 0) {
    obj = index_object (used, inherit_entry, &in, NULL, 0, &olen);
    if (obj == NULL || put_index_object (st, 1, obj, olen) == -1)
      goto out;
    pthread_rwlock_wrlock (&st->lock);
    ret = apply_index_object (st, 1, obj, olen);
    if (ret == 0)
      st->nobj++;
    pthread_rwlock_unlock (&st->lock);
  }
  else
    ret = 0;
  goto out;

 nomem:
  err_set (ENOMEM, "out of memory");
 out:
  for (size_t i = 0; i < base->npk; i++)
    free (in.places[i]);
  free (in.places);
  free (in.used);
  return ret;
}

/* Put the stage's first objects (set, header) and its base's packs. */
static int
stage_begin (struct s3_layer *st, const char *base, const void *set,
             size_t slen, const void *head, size_t hlen)
{
  CLEANUP_FREE char *skey = NULL, *ikey = NULL, *packs = own_packs (st);
  struct s3_layer *b;
  int ret;

  /* A stage of this version a crash left: gone first. */
  if (packs == NULL || s3store_delete_all (st->ss, st->vprefix) == -1
      || s3store_delete_all (st->ss, packs) == -1)
    return -1;
  if (asprintf (&skey, "%sset", st->vprefix) == -1
      || asprintf (&ikey, "%si/%010u", st->vprefix, 0u) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if ((set && s3store_put (st->ss, skey, set, slen, false) == -1)
      || s3store_put (st->ss, ikey, head, hlen, true) == -1)
    return -1;
  pthread_rwlock_wrlock (&st->lock);
  ret = index_add (st, head, hlen);
  st->nobj = 1;
  st->loaded = true;
  pthread_rwlock_unlock (&st->lock);
  if (ret == -1)
    return -1;
  b = layer_new (st->base.store, st->disk, base);
  if (b == NULL)
    return -1;
  ret = ensure_loaded (b, false);
  if (ret == 0)
    ret = inherit (st, b);
  s3store_layer_close (&b->base);
  return ret;
}

struct store_layer *
s3store_layer_stage (struct store *s, const char *disk, const char *snapshot,
                     const char *base, const void *manifest, size_t mlen,
                     const void *set, size_t slen, const void *head,
                     size_t hlen, uint64_t nblocks)
{
  struct s3_store *ss = s3store_of (s);
  struct s3_layer *st;
  uint32_t v;

  (void) nblocks;
  if (s3store_root_read (ss, disk, snapshot, &v, NULL, 0, NULL) == -1)
    return NULL;
  if (v == UINT32_MAX) {
    err_set (EFBIG, "%s: layer %s has no version left", s->where, snapshot);
    return NULL;
  }
  st = layer_new (s, disk, snapshot);
  if (st == NULL)
    return NULL;
  st->stage = true;
  st->manifest = malloc (mlen ? mlen : 1);
  if (st->manifest == NULL) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  memcpy (st->manifest, manifest, mlen);
  st->man_len = mlen;
  /* What the old version held, and what this one leaves if it is never
   * swapped in, go with the sweep. */
  if (set_version (st, v + 1) == -1 || s3store_sweep_mark (ss, disk) == -1
      || stage_begin (st, base, set, slen, head, hlen) == -1)
    goto err;
  /* The stage is its own writer: its version is nobody else's yet, and
   * the caller is the writer of the layer (store.h). */
  pthread_rwlock_wrlock (&st->lock);
  st->writing = true;
  st->numbered = true;          /* stage_begin cleared its version */
  st->next_pack = 0;
  pthread_rwlock_unlock (&st->lock);
  return &st->base;

 err:
  s3store_layer_close (&st->base);
  return NULL;
}

/* The root's PUT is the swap: from it on, readers that open the layer
 * read the new version.  The old version's objects, and its packs,
 * which the new one may use, go with the sweep: only after the store's
 * generation has moved (store.c moves it when this returns), so that a
 * reader still on the old version finds, when its read fails, that
 * there is a newer store to read (fs.c, read_again).  Deleting them
 * here raced those readers: they failed before the generation moved,
 * found none newer, and gave the kept point EIO. */
int
s3store_layer_replace (struct store_layer *h)
{
  struct s3_layer *l = sl_of (h);

  if (!l->stage || l->replaced) {
    err_set (EINVAL, "%s: not a stage", l->where);
    return -1;
  }
  pthread_mutex_lock (&l->wlock);
  while (l->inflight > 0)
    pthread_cond_wait (&l->idle, &l->wlock);
  pthread_mutex_unlock (&l->wlock);
  if (s3store_root_put (l->ss, l->disk, l->snapshot, l->version, l->manifest,
                        l->man_len, false) == -1)
    return -1;
  l->replaced = true;
  pthread_rwlock_wrlock (&l->lock);
  l->writing = false;
  pthread_rwlock_unlock (&l->lock);
  return 0;
}
