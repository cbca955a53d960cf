/* cbtfs: the object store backend's own parts, shared by s3store.c
 * (the store), s3store-layer.c (its layers) and s3store-sweep.c (the
 * removal of packs no layer uses).  Nothing outside this folder
 * includes it.  The layout is FORMAT.md's "Object stores":
 *
 *   P/cbtfs-store                 marker, as a directory store's
 *   P/lock                        lease of the one prune, forget or copy
 *   P/shares/ID                   lease of a backup sharing the store
 *   P/disklocks/D                 lease of the one backup of disk D
 *   P/generation                  a decimal count of changes (for mounts)
 *   P/trash/D/S                   a layer being removed (earlier builds)
 *   P/sweep/D                     disk D may hold objects no layer uses
 *   P/disks/D                     one empty object per disk
 *   P/roots/D/S                   layer S of disk D: "cbtfs-root 1 V\n" and
 *                                 its manifest; the layer exists when this
 *                                 object does, and is its version V
 *   P/notes/D/NOTE/SEQ[.base]     a note's records, one object each
 *   P/layers/D/S/writer           lease of the layer's one writer
 *   P/layers/D/S/V/set            version V's block set
 *   P/layers/D/S/V/i/SEQ          version V's index objects: SEQ 0 the
 *                                 core's header, then one per commit
 *   P/packs/D/S.V.SEQ             packs: blocks, 64 KiB each, back to back,
 *                                 put by version V of layer S, used by
 *                                 any layer whose index objects name them
 *
 * P is the store's prefix in its bucket ("" or "a/b/"); V and SEQ are
 * ten decimal digits, so that names sort as numbers.  Objects are
 * written once and never changed, except the roots (a new version),
 * `generation` and the leases.  In an encrypted store (s3crypt.h,
 * FORMAT.md "Encrypted object stores") every object but the marker is
 * sealed on its way through s3store_put, s3store_get and the pack
 * calls: nothing above them sees anything but plaintext.
 */
#ifndef CBTFS_CHAIN_STORE_S3STORE_H
#define CBTFS_CHAIN_STORE_S3STORE_H

#include <pthread.h>

#include "../../s3/s3.h"
#include "store.h"

/* A disk held by a backup that holds the store's lock shared. */
struct s3store_held {
  char disk[UUID_LEN + 1];
  struct s3store_lease *lease;  /* P/disklocks/DISK */
  bool marked;                  /* sweep it when letting it go */
};

/* Blocks in a pack: 8 MiB objects, large enough that a request's cost
 * is small next to its bytes, small enough to hold a few in memory. */
#define S3STORE_PACK_BLOCKS 128
#define S3STORE_BLOCK_SHIFT 16          /* blocks of 64 KiB */

struct s3crypt;

struct s3_store {
  struct store base;
  struct s3_opts o;             /* strings owned: endpoint, region, bucket,
                                   access_key, secret_key (a secret),
                                   ca_file */
  char *prefix;                 /* "" or "a/b/" (owned) */
  struct s3store_lease *lock;   /* P/lock while this process holds it */
  bool marked;                  /* it put a sweep mark (s3store_sweep_mark) */
  char **marks;                 /* the disks it marked holding the lock */
  size_t nmarks;
  struct s3store_lease *share;  /* P/shares/ID while it holds the lock
                                   shared (store_lock_shared) */
  pthread_mutex_t held_lock;    /* guards held, nheld, heldcap */
  struct s3store_held *held;    /* the disks it holds, shared */
  size_t nheld, heldcap;

  pthread_mutex_t pool_lock;    /* guards idle, nidle */
  s3_client **idle;             /* clients no thread uses now */
  size_t nidle, cap;

  struct s3store_uploads *up;   /* pack uploads (s3store-upload.c); NULL
                                   until the first */
  struct s3store_cache *cache;  /* blocks kept on this machine, or NULL */
  struct s3crypt *crypt;        /* the store's keys (s3crypt.h), or NULL
                                   for a store that is not encrypted */
  struct s3store_prefetch *pf;  /* read-ahead (s3store-prefetch.c); NULL
                                   until the first layer opens */
};

/* ---- the local cache (s3store-cache.c) ---------------------------------
 * Blocks read from packs, kept in a directory of this machine for the
 * next read (CBTFS_S3_CACHE, at most CBTFS_S3_CACHE_SIZE bytes). */
struct s3store_cache;

/* The cache in DIR (made 0700 if missing; refused unless it is this
 * user's alone) for the store STORE_ID, of at most MAX bytes.  NULL
 * with err_*. */
extern struct s3store_cache *s3store_cache_open (const char *dir,
                                                 uint64_t max,
                                                 const char *store_id);
extern void s3store_cache_close (struct s3store_cache *c);

/* Block at PLACE of pack PACK of DISK into BUF (64 KiB), if it is kept
 * and reads back as it was kept. */
extern bool s3store_cache_get (struct s3store_cache *c, const char *disk,
                               const char *pack, uint32_t place, void *buf);

/* Keep N blocks of BUF from PLACE of pack PACK of DISK; best effort. */
extern void s3store_cache_put (struct s3store_cache *c, const char *disk,
                               const char *pack, uint32_t place, uint32_t n,
                               const void *buf);

/* ---- uploads (s3store-upload.c) -----------------------------------------
 * Writers hand full packs to a few threads of the store's, so that the
 * threads that read the blocks (NBD copies) go on while packs go up.
 * At most S3STORE_UPLOADS puts run at once and as many more wait: a
 * writer that would queue another waits for a place. */
#define S3STORE_UPLOADS 4

/* Run FN (OPAQUE) on an upload thread: 0, or -1 with err_* (and FN
 * not run). */
extern int s3store_upload (struct s3_store *ss, void (*fn) (void *),
                           void *opaque);

/* Stop the upload threads once the queue is empty (store close). */
extern void s3store_uploads_end (struct s3_store *ss);

/* ---- read-ahead (s3store-prefetch.c) -----------------------------------
 * A layer handle's reads are a stream: once they go forward, the runs
 * holding the layer's next blocks are fetched ahead of the reader on a
 * few threads of the store's (within a bound on memory per store), and
 * kept in memory until read; random reads read nothing ahead. */
struct s3store_prefetch;
struct s3store_stream;

/* What a stream asks of its layer (opaque LAYER), from reader threads:
 * where block B is (its pack's number, place and the pack's places),
 * false when no index object read so far names it; the key of pack
 * PACK (malloc'd, NULL when out of memory), *NAME set to the pack's
 * name in it. */
struct s3store_layout {
  bool (*locate) (void *layer, uint64_t b, uint32_t *pack, uint32_t *place,
                  uint32_t *places);
  char *(*key) (void *layer, uint32_t pack, const char **name);
};

/* A stream for the layer LAYER of DISK (both kept, not owned: they
 * outlive it), or NULL with err_*. */
extern struct s3store_stream *s3store_stream_new (struct s3_store *ss,
                                                  const struct s3store_layout
                                                  *lay, void *layer,
                                                  const char *disk);

/* End ST once its layer has no reader: its runs go, after waiting for
 * the GETs of them in flight. */
extern void s3store_stream_free (struct s3store_stream *st);

/* Block B, at PLACE of pack PACK, into BUF from what was read ahead
 * (waiting for its GET if it is in flight): whether it was there. */
extern bool s3store_stream_take (struct s3store_stream *st, uint64_t b,
                                 uint32_t pack, uint32_t place, void *buf);

/* Block B, which is neither read ahead nor in the local cache: when
 * the reader goes forward, plan the blocks ahead and read B's run now,
 * then as s3store_stream_take; false, and the caller reads it. */
extern bool s3store_stream_miss (struct s3store_stream *st, uint64_t b,
                                 uint32_t pack, uint32_t place, void *buf);

/* Stop the read-ahead threads (store close, once no layer is open). */
extern void s3store_prefetch_end (struct s3_store *ss);

static inline struct s3_store *
s3store_of (struct store *s)
{
  return (struct s3_store *) s;
}

/* PREFIX + the formatted rest (malloc'd), or NULL with err_*. */
extern char *s3store_key (struct s3_store *ss, const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 2, 3)));

/* A client for one request or a run of them, and giving it back. */
extern s3_client *s3store_client (struct s3_store *ss);
extern void s3store_release (struct s3_store *ss, s3_client *c);

/* s3.h's calls through a pooled client.  In an encrypted store, put
 * seals the content and get opens it (a range is cut from the whole
 * content), failing with EIO when it does not authenticate. */
extern int s3store_put (struct s3_store *ss, const char *key, const void *buf,
                        size_t len, bool create_only);
extern int s3store_get (struct s3_store *ss, const char *key, uint64_t off,
                        uint64_t len, void **buf, size_t *size);
extern int s3store_head (struct s3_store *ss, const char *key,
                         uint64_t *size);

/* The bytes an encrypted store keeps as KEY for the LEN bytes of BUF
 * (*OUT malloc'd, *N bytes), and back: what put and get do, for the
 * leases, which put the same bytes again to renew them. */
extern int s3store_seal (struct s3_store *ss, const char *key,
                         const void *buf, size_t len, void **out, size_t *n);
extern int s3store_unseal (struct s3_store *ss, const char *key,
                           const void *buf, size_t len, void **out,
                           size_t *n);

/* Put N blocks of BUF as the pack KEY (sealed block by block in an
 * encrypted store). */
extern int s3store_pack_put (struct s3_store *ss, const char *key,
                             const void *buf, uint32_t n);

/* Up to N blocks of pack KEY from PLACE into *BUF (malloc'd), *GOT
 * bytes: fewer where the pack ends (or, encrypted, where a later block
 * fails its check); -1 with EIO when the first block fails it. */
extern int s3store_pack_get (struct s3_store *ss, const char *key,
                             uint32_t place, uint32_t n, void **buf,
                             size_t *got);

/* Bytes a block takes in a pack of SS (for usage). */
extern uint64_t s3store_block_bytes (const struct s3_store *ss);
extern int s3store_delete (struct s3_store *ss, const char *key);

/* Delete PREFIX + each of the N NAMES, in batches of up to
 * S3_DELETE_MAX per request (s3_delete_many); when HOLDER, only while
 * the store lock is surely ours (s3store_may_change, before each
 * batch).  0, or -1 with err_* (some may have gone). */
extern int s3store_delete_names (struct s3_store *ss, const char *prefix,
                                 char *const *names, size_t n, bool holder);

/* KEY read whole into a malloc'd, NUL-terminated buffer of *LEN bytes,
 * at most MAX (else EFBIG). */
extern char *s3store_read (struct s3_store *ss, const char *key, size_t max,
                           size_t *len);
extern int s3store_list (struct s3_store *ss, const char *prefix,
                         const char *after, s3_list_fn fn, void *opaque);

/* Remove every object whose key starts with PREFIX; best effort, 0 or
 * -1 with err_* for the first failure. */
extern int s3store_delete_all (struct s3_store *ss, const char *prefix);

/* ---- leases (s3store-lease.c) -------------------------------------------
 * The store lock and the writer locks: objects put create-only, which
 * their holder renews from a thread of the lease's until it lets them
 * go.  A holder that could not renew for half the lease's time (or
 * found it another's) has lost it and must make nothing visible. */
struct s3store_lease;

/* Take the lease KEY for WHO, without waiting, and keep renewing it:
 * NULL with err_* if not, EWOULDBLOCK naming its holder and when it
 * expires (WHAT says what it guards, for the message) when another
 * holds it.  A lease whose holder is surely gone (holder.h) or that
 * the server says outlived its time is taken over. */
extern struct s3store_lease *s3store_lease_take (struct s3_store *ss,
                                                 const char *key,
                                                 const char *who,
                                                 const char *what);

/* Whether another process holds the lease KEY (of WHAT, for the
 * message) now: 1 with EWOULDBLOCK and err_* naming it, 0 when nobody
 * does (no object, or one whose holder is gone or that outlived its
 * ttl: said at info level, with DOING, unless DOING is NULL), -1 with
 * err_*.  Takes nothing. */
extern int s3store_lease_busy (struct s3_store *ss, const char *key,
                               const char *what, const char *doing);

/* 0 while L is surely still ours, else -1 with ENOLCK and "lost the
 * lease on WHAT: ...".  No request: call it before each put that makes
 * something visible. */
extern int s3store_lease_check (struct s3store_lease *l)
  __attribute__ ((__nonnull__ (1)));

/* Stop renewing L, delete its object if it is still ours (-1 with
 * err_* if that fails) and free L.  NULL is a no-op. */
extern int s3store_lease_end (struct s3store_lease *l);

/* L's key is one no other process puts (a share, named by a uuid of
 * its own): s3store_lease_end deletes it even once lost. */
extern void s3store_lease_own (struct s3store_lease *l)
  __attribute__ ((__nonnull__ (1)));

/* 0 when this process may change SS: it holds no store lock, or holds
 * it still, shared with every disk it took (s3store_lease_check);
 * else -1 with err_*. */
extern int s3store_may_change (struct s3_store *ss);

/* ---- the shared lock (s3store-share.c) ----------------------------------
 * Backups hold the store's lock shared (P/shares/ID) and each disk
 * they write alone (P/disklocks/DISK); prune, forget and copy hold
 * P/lock once no share is live. */

/* The backend's store_lock_shared, store_disk_lock, store_disk_unlock. */
extern int s3store_lock_shared (struct store *s, const char *who,
                                double wait);
extern int s3store_disk_lock (struct store *s, const char *disk,
                              const char *who, double wait);
extern void s3store_disk_unlock (struct store *s, const char *disk);

/* The exclusive lock's holder: wait until DEADLINE (monotonic) for the
 * live shares to go, deleting those whose holders are gone (and their
 * disk leases).  -1 with EWOULDBLOCK naming a holder when time is up. */
extern int s3store_shares_wait (struct s3_store *ss, double deadline,
                                double wait, bool *said);

/* Take the lease KEY, waiting until DEADLINE while another holds it
 * (s3store_lock_waited); NULL with err_*. */
extern struct s3store_lease *s3store_lease_wait (struct s3_store *ss,
                                                 const char *key,
                                                 const char *who,
                                                 const char *what,
                                                 double deadline,
                                                 double wait, bool *said);

/* After a refusal (err_* saying why): say once at info level that we
 * wait (*SAID), sleep a while and 0 to try again; -1 once DEADLINE has
 * passed, the message then saying how long (WAIT s) it waited. */
extern int s3store_lock_waited (double deadline, double wait, bool *said);

/* Let every held disk go (sweeping those marked), then the share. */
extern void s3store_share_end (struct s3_store *ss);

/* DISK, if held, was marked for the sweep (s3store_sweep_mark). */
extern void s3store_share_marked (struct s3_store *ss, const char *disk);

/* s3store_lease_check of the share and of every disk held. */
extern int s3store_share_check (struct s3_store *ss);

/* The root of layer SNAPSHOT of DISK: its version into *VERSION and
 * its manifest (malloc'd, NUL-terminated, *LEN bytes, at most MAX)
 * into *MANIFEST when MANIFEST is not NULL. */
extern int s3store_root_read (struct s3_store *ss, const char *disk,
                              const char *snapshot, uint32_t *version,
                              char **manifest, size_t max, size_t *len);

/* Put the root of layer SNAPSHOT of DISK: VERSION and MANIFEST (MLEN
 * bytes); CREATE_ONLY for a new layer, else a new version of it. */
extern int s3store_root_put (struct s3_store *ss, const char *disk,
                             const char *snapshot, uint32_t version,
                             const void *manifest, size_t mlen,
                             bool create_only);

/* Say that DISK may now hold packs no layer uses (P/sweep/DISK). */
extern int s3store_sweep_mark (struct s3_store *ss, const char *disk);

/* Delete what no layer's current version reads of DISK if it is
 * marked, or of each disk marked when DISK is NULL (s3store-sweep.c);
 * best effort, warning.  The lock holder's, or DISK's holder's. */
extern void s3store_sweep (struct s3_store *ss, const char *disk);

/* Abort the multipart uploads under the prefix that a killed run left
 * (s3store-abandoned.c): the lock holder's; best effort, warning. */
extern void s3store_abandoned (struct s3_store *ss);

/* Call FN for each pack an index object (LEN bytes at P) names, with
 * its name "S.V.SEQ".  0, or -1 with err_* (EIO: damaged). */
typedef int (*s3store_pack_fn) (void *opaque, const char *name);
extern int s3store_index_packs (const uint8_t *p, size_t len,
                                s3store_pack_fn fn, void *opaque);

/* The keys under PREFIX, with PREFIX cut off (malloc'd array of
 * malloc'd strings, store_names_free), sorted as S3 sorts them. */
extern int s3store_keys (struct s3_store *ss, const char *prefix,
                         char ***keys, size_t *n);

/* s3store-layer.c's part of store_s3. */
extern struct store_layer *s3store_layer_open (struct store *s,
                                               const char *disk,
                                               const char *snapshot);
extern void s3store_layer_close (struct store_layer *h);
extern const char *s3store_layer_where (const struct store_layer *h);
extern char *s3store_set_read (struct store_layer *h, size_t max,
                               size_t *len);
extern int s3store_usage (struct store_layer *h, uint64_t *bytes);
extern ssize_t s3store_index_read (struct store_layer *h, void *buf,
                                   size_t len, uint64_t off);
extern ssize_t s3store_block_read (struct store_layer *h, uint64_t b,
                                   void *buf);
extern int s3store_writer_open (struct store_layer *h, uint64_t nblocks);
extern int s3store_index_cut (struct store_layer *h, uint64_t len);
extern int s3store_blocks_write (struct store_layer *h, uint64_t first,
                                 const void *buf, size_t len);
extern int s3store_commit (struct store_layer *h, const void *recs,
                           size_t len, uint64_t at);
extern void s3store_blocks_drop (struct store_layer *h, uint64_t first,
                                 uint64_t n);
extern void s3store_writer_close (struct store_layer *h);
extern struct store_layer *s3store_layer_stage (struct store *s,
                                                const char *disk,
                                                const char *snapshot,
                                                const char *base,
                                                const void *manifest,
                                                size_t mlen, const void *set,
                                                size_t slen, const void *head,
                                                size_t hlen, uint64_t nblocks);
extern int s3store_layer_replace (struct store_layer *h);

#endif /* CBTFS_CHAIN_STORE_S3STORE_H */
