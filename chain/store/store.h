/* cbtfs: the store interface: the operations the core needs from the
 * place backups live, and nothing else.
 *
 * A store holds disks (named by their live VDI's uuid); a disk holds
 * layers (named by their snapshot's uuid) and a few notes.  A layer is
 * a set of objects the core writes in one order and reads back:
 *
 *   manifest  what the layer is (text, chain/manifest.h); written once
 *   set       which blocks it holds (absent for a full layer); written once
 *   index     a stream of records (chain/index.h) vouching for blocks:
 *             it only grows, by whole batches, each made durable after
 *             the blocks it names
 *   blocks    64 KiB blocks addressed by number, written before the
 *             records that vouch for them
 *
 * The core asks only for blocks a durable record names or that its
 * writer wrote since the last commit (read back through the same
 * handle before their records are durable), never rewrites one a
 * record names, and never reads an index record past what a commit
 * returned.  So a backend may keep blocks anywhere: the
 * directory backend (posix.c) writes block b at b * 64 KiB of one
 * sparse file and appends records to one file; an object backend can
 * put each batch of blocks in a new immutable object with a small
 * index object of its own, and present the index as the concatenation
 * of its committed index objects.  FORMAT.md maps the directory layout
 * onto these operations.
 *
 * Crash guarantees every backend gives:
 *  - store_layer_create is atomic: a layer is listed with its manifest,
 *    set and an index holding the header, or not at all.
 *  - store_commit makes the blocks written so far durable before the
 *    records it appends; after a crash the index ends after a whole
 *    committed batch, or (directory backend) with a torn tail that the
 *    core detects (index records carry their own check) and cuts with
 *    store_index_cut once it holds the writer lock.
 *  - store_layer_remove is atomic too: a layer is listed whole, or not
 *    at all (what it held may be freed after a crash, by the next
 *    store_lock).
 *  - A note append is atomic per record when DURABLE, or may be lost
 *    or torn otherwise (readers must tolerate torn records).
 *
 * Thread model: a struct store may be used from any number of threads
 * once open (the backend guards what it shares); store_lock (which may
 * sleep while another process holds the lock) and store_close are for
 * one thread.  A struct store_layer may be read from any number of
 * threads at once; store_blocks_write may be called from several
 * threads at once (for different blocks); store_commit,
 * store_index_cut, store_writer_open and store_writer_close are
 * serialised by the caller (chain/layer.c holds its sync lock), and
 * are never called while a store_blocks_write is running.
 *
 * Other processes: readers never lock.  At most one process at a time
 * writes a layer (store_writer_open takes its writer lock), and one
 * command at a time (forget, prune, copy) writes the store
 * (store_lock), or backups do, each writing the disks it took alone
 * (store_lock_shared, store_disk_lock).
 *
 * Every function returns 0 / a pointer, or -1 / NULL with err_* set
 * (common/error.h) and errno saying why.
 */
#ifndef CBTFS_CHAIN_STORE_STORE_H
#define CBTFS_CHAIN_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../common/util.h"

/* The format this cbtfs makes and upgrades stores to; it reads 1 too.
 * Format 2 allows a layer to be replaced by a merged one (prune), which
 * cbtfs of format 1 would not expect (FORMAT.md). */
#define STORE_FORMAT 2

/* The longest command name store_lock records as the lock's holder. */
#define STORE_WHO_MAX 16

struct store;                   /* an open store */
struct store_layer;             /* a backend's handle on one layer */

/* ---- what a backend implements ---------------------------------------
 * One struct of functions per backend, as nbdkit's backends are: a new
 * backend is a new file in this folder and one line in store.c.  The
 * functions below dispatch to it; their contracts are those of the
 * public functions of the same name. */
struct store_backend {
  const char *name;
  /* Bytes of blocks a writer should gather between commits: a commit
   * stalls the writer until what it gathered is durable, which costs
   * an object store (uploads in flight) more than a file system. */
  uint64_t commit_bytes;
  /* Whether WHERE names a store of this backend. */
  bool (*claims) (const char *where);
  struct store *(*open) (const char *where, bool create);
  void (*close) (struct store *s);
  int (*lock) (struct store *s, const char *who, double wait);
  /* Optional: a backend without them has only the exclusive lock
   * (store_lock_shared takes that, and store_disk_lock is a no-op). */
  int (*lock_shared) (struct store *s, const char *who, double wait);
  int (*disk_lock) (struct store *s, const char *disk, const char *who,
                    double wait);
  void (*disk_unlock) (struct store *s, const char *disk);
  int (*owner) (struct store *s, uid_t *uid, gid_t *gid, mode_t *mode);
  int (*disk_prepare) (struct store *s, const char *disk);
  int (*list) (struct store *s, const char *disk, char ***names, size_t *n);
  int (*has_layer) (struct store *s, const char *disk, const char *snapshot);
  char *(*note_read) (struct store *s, const char *disk, const char *note,
                      size_t max, size_t *len);
  int (*note_append) (struct store *s, const char *disk, const char *note,
                      const void *rec, size_t len, bool durable);
  int (*layer_remove) (struct store *s, const char *disk,
                       const char *snapshot);
  int (*upgrade) (struct store *s);
  int (*note_replace) (struct store *s, const char *disk, const char *note,
                       const void *rec, size_t len);
  struct store_layer *(*layer_stage) (struct store *s, const char *disk,
                                      const char *snapshot, const char *base,
                                      const void *manifest, size_t mlen,
                                      const void *set, size_t slen,
                                      const void *head, size_t hlen,
                                      uint64_t nblocks);
  int (*layer_replace) (struct store_layer *h);
  char *(*manifest_read) (struct store *s, const char *disk,
                          const char *snapshot, size_t max, size_t *len);
  int (*layer_create) (struct store *s, const char *disk, const char *snapshot,
                       const void *manifest, size_t mlen,
                       const void *set, size_t slen,
                       const void *head, size_t hlen);

  struct store_layer *(*layer_open) (struct store *s, const char *disk,
                                     const char *snapshot);
  void (*layer_close) (struct store_layer *h);
  const char *(*layer_where) (const struct store_layer *h);
  char *(*set_read) (struct store_layer *h, size_t max, size_t *len);
  int (*usage) (struct store_layer *h, uint64_t *bytes);
  ssize_t (*index_read) (struct store_layer *h, void *buf, size_t len,
                         uint64_t off);
  ssize_t (*block_read) (struct store_layer *h, uint64_t b, void *buf);
  int (*writer_open) (struct store_layer *h, uint64_t nblocks);
  int (*index_cut) (struct store_layer *h, uint64_t len);
  int (*blocks_write) (struct store_layer *h, uint64_t first,
                       const void *buf, size_t len);
  int (*commit) (struct store_layer *h, const void *recs, size_t len,
                 uint64_t at);
  void (*blocks_drop) (struct store_layer *h, uint64_t first, uint64_t n);
  void (*writer_close) (struct store_layer *h);
  int (*generation) (struct store *s, uint64_t *gen);
  /* Set (ON) or clear the mark that DISK's SNAPSHOT is being filled. */
  int (*filling_mark) (struct store *s, const char *disk,
                       const char *snapshot, bool on);
  /* The marks set now, as "DISK/SNAPSHOT" names. */
  int (*filling_list) (struct store *s, char ***names, size_t *n);
  /* Tell readers that what a mount shows changed (a layer made,
   * replaced, removed; a verified note appended): store.c calls it
   * after each; best effort. */
  void (*changed) (struct store *s);
};

/* What every backend's struct store starts with. */
struct store {
  const struct store_backend *be;
  char *where;                  /* as given, for messages (owned) */
  char id[UUID_LEN + 1];        /* the store's identity; "" in a store made
                                   before ids until store_lock gives one */
  int format;                   /* 1 or STORE_FORMAT, as found or made */
  bool shared;                  /* it holds the lock shared (store_lock_shared) */
};

/* What every backend's struct store_layer starts with. */
struct store_layer {
  struct store *store;          /* borrowed: outlives the handle */
};

/* ---- backends ---------------------------------------------------------- */

/* Let store_open try BE (before the directory backend, which takes
 * every name): the object store backend is added by the programs that
 * link it, so that chain/ itself needs no HTTP library.  Call before
 * any thread opens a store. */
extern int store_backend_add (const struct store_backend *be)
  __attribute__ ((__nonnull__ (1)));

/* The marker every store has (FORMAT.md): its name, and its text. */
#define STORE_MARKER "cbtfs-store"

/* Parse marker TEXT (NUL-terminated) of the store WHERE: its format
 * into *FORMAT, its id into ID ("" when it has none).  EPROTO with
 * err_* for a marker this cbtfs cannot read. */
extern int store_marker_parse (const char *where, const char *text,
                               int *format, char id[UUID_LEN + 1])
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* The marker text of a store of FORMAT with id ID into BUF (LEN
 * bytes; 64 + UUID_LEN is enough): its length. */
extern size_t store_marker_format (int format, const char *id, char *buf,
                                   size_t len)
  __attribute__ ((__nonnull__ (2, 3)));

/* ---- the store -------------------------------------------------------- */

/* Open the store WHERE (a directory path).  With CREATE, a missing or
 * empty directory becomes a new store.  NULL with err_* ("… is not a
 * cbtfs store", "… has store format 2, this cbtfs reads 1"). */
extern struct store *store_open (const char *where, bool create)
  __attribute__ ((__nonnull__ (1)));

/* Release the lock if held and free; NULL is a no-op.  Layers opened
 * from S must be closed first. */
extern void store_close (struct store *s);

/* Take the store's writer lock for the command WHO ("backup",
 * "forget", "prune": a plain lowercase word), record WHO as its holder
 * (with the process and the time), clear what a crashed writer left
 * half made, and give a store made before ids its identity.
 *
 * While another process holds the lock, wait up to WAIT seconds for
 * it (0: not at all), saying once at info level (common/log.h) that it
 * waits and for whom.  -1 with err_*: errno EWOULDBLOCK when the lock
 * stayed held, in one line naming the holder as its record says ("the
 * store /x is in use by cbtfs prune (pid 1234, since 2026-12-03
 * 12:03:04 UTC); gave up after 60 s", without the "gave up" part when
 * WAIT is 0, and "another cbtfs process" for a holder whose record is
 * missing, partial or garbled); EINVAL for a WHO that is no plain word
 * or a negative WAIT. */
extern int store_lock (struct store *s, const char *who, double wait)
  __attribute__ ((__nonnull__ (1, 2)));

/* Take the store's lock as one of several backups: others may hold it
 * the same way at once, each writing disks it took with
 * store_disk_lock, while prune, forget and copy (store_lock) wait for
 * them all, and they for those.  As store_lock otherwise (WHO, WAIT,
 * the messages), except that it clears only what it may: what a
 * crashed run left of a disk is cleared by the next store_disk_lock of
 * that disk.  A backend with no shared lock (the directory backend)
 * takes the exclusive one: its backups take turns. */
extern int store_lock_shared (struct store *s, const char *who, double wait)
  __attribute__ ((__nonnull__ (1, 2)));

/* Holding the lock shared: take DISK for this process alone (its one
 * backup at a time), waiting up to WAIT seconds as store_lock does
 * (EWOULDBLOCK naming the holder: "the disk D of the store S is in use
 * by cbtfs backup (pid …)"), then clear what a crashed run left of it
 * (filling marks, objects no layer uses).  0 at once when S is locked
 * exclusively (store_lock) or its backend has no shared lock.  Any
 * thread; store_disk_unlock lets it go, store_close lets every one go. */
extern int store_disk_lock (struct store *s, const char *disk,
                            const char *who, double wait)
  __attribute__ ((__nonnull__ (1, 2, 3)));
extern void store_disk_unlock (struct store *s, const char *disk)
  __attribute__ ((__nonnull__ (1, 2)));

/* How many bytes of blocks a writer of S should write between commits
 * (store_commit): what a crash may cost, against what a commit stalls. */
extern uint64_t store_commit_bytes (const struct store *s)
  __attribute__ ((__nonnull__ (1)));

/* Make S a store of format STORE_FORMAT, durably; a no-op when it is
 * one.  Holder of the store lock only, before S changes in a way only
 * format 2 allows (replacing a layer). */
extern int store_upgrade (struct store *s) __attribute__ ((__nonnull__ (1)));

/* Who may read what S holds: *UID and *GID own it and *MODE holds the
 * permission bits (a directory store's own; a store with no owners of
 * its own answers with the calling process's and 0700). */
extern int store_owner (struct store *s, uid_t *uid, gid_t *gid,
                        mode_t *mode)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* Into *GEN, a number that changes whenever a writer has made,
 * replaced or removed a layer of S since, or appended to a disk's
 * `verified` note: a mount polls it to follow the store.  A change a writer made just before it died may go unseen
 * until the next one.  0 or -1 with err_*. */
extern int store_generation (struct store *s, uint64_t *gen)
  __attribute__ ((__nonnull__ (1, 2)));

/* Mark DISK's layer SNAPSHOT as being filled by the run that makes it,
 * durably, before that run creates it (store_layer_create): a mount
 * does not show a marked layer, so no reader meets a point (nor a
 * `latest`) whose blocks are still on their way.  store_lock clears
 * every mark (a crashed run's: the lock holder is the only run), and
 * store_disk_lock the marks of its disk. */
extern int store_filling_begin (struct store *s, const char *disk,
                                const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* The run is done with the layer (filled it, or gave up: what is
 * missing then reads as an incomplete point's does): clear the mark
 * and move the generation, so that mounts show it.  Idempotent. */
extern int store_filling_end (struct store *s, const char *disk,
                              const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* The layers marked now, as "DISK/SNAPSHOT" names, sorted (*NAMES as
 * store_list gives them). */
extern int store_filling_list (struct store *s, char ***names, size_t *n)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Make DISK (a uuid) ready to receive layers.  Idempotent. */
extern int store_disk_prepare (struct store *s, const char *disk)
  __attribute__ ((__nonnull__ (1, 2)));

/* The disks of S (DISK NULL) or the layers of DISK, by name, sorted;
 * *NAMES is a malloc'd array of malloc'd strings (store_names_free).
 * Only uuid names are listed; a disk with no layers is an empty list. */
extern int store_list (struct store *s, const char *disk, char ***names,
                       size_t *n)
  __attribute__ ((__nonnull__ (1, 3, 4)));
extern void store_names_free (char **names, size_t n);

/* Sort NAMES (N of them) as store_list sorts them (bytes). */
extern void store_names_sort (char **names, size_t n);

/* Whether NAME is "DISK<SEP>SNAPSHOT" (two uuids), turned then into
 * "DISK/SNAPSHOT" (as store_filling_list gives the layers it names). */
extern bool store_pair_name (char *name, char sep)
  __attribute__ ((__nonnull__ (1)));

/* The index of NAME in NAMES (N of them, sorted as store_list sorts
 * them), or -1. */
extern ssize_t store_names_find (char *const *names, size_t n,
                                 const char *name)
  __attribute__ ((__nonnull__ (3)));

/* 1 if DISK holds a layer SNAPSHOT, 0 if it surely does not (SNAPSHOT
 * is no uuid, or there is none), -1 with err_* when that cannot be
 * told (then treat the snapshot as recorded). */
extern int store_has_layer (struct store *s, const char *disk,
                            const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* ---- notes: a disk's small append-only records ------------------------
 * NOTE is a plain name ("manifests", "verified").  Records are the
 * caller's bytes; the backend keeps their order.  A record a crash
 * tore may be read back cut short, and then a record may follow it on
 * the same line: callers start records with a newline and check them. */

/* Everything appended to NOTE of DISK so far, in a malloc'd buffer of
 * *LEN bytes plus a NUL (caller frees); at most MAX bytes (else EFBIG).
 * NULL with errno ENOENT when there is none. */
extern char *store_note_read (struct store *s, const char *disk,
                              const char *note, size_t max, size_t *len)
  __attribute__ ((__nonnull__ (1, 2, 3, 5)));

/* Append REC (LEN bytes) to NOTE of DISK, durably when DURABLE.  When
 * the note's last record was torn (it does not end with a newline), a
 * newline goes first, so that REC starts a line. */
extern int store_note_append (struct store *s, const char *disk,
                              const char *note, const void *rec, size_t len,
                              bool durable)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* Replace NOTE of DISK by REC (LEN bytes; with LEN 0 the note is
 * gone), atomically and durably: a reader sees the old note or the new
 * one, also after a crash.  The caller holds the store lock. */
extern int store_note_replace (struct store *s, const char *disk,
                               const char *note, const void *rec, size_t len)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* ---- layers ----------------------------------------------------------- */

/* Create layer SNAPSHOT of DISK atomically, durably, with MANIFEST, SET
 * (NULL for a full layer) and an index holding HEAD, and no blocks.
 * EEXIST when it is there already. */
extern int store_layer_create (struct store *s, const char *disk,
                               const char *snapshot,
                               const void *manifest, size_t mlen,
                               const void *set, size_t slen,
                               const void *head, size_t hlen)
  __attribute__ ((__nonnull__ (1, 2, 3, 4, 8)));

/* Remove layer SNAPSHOT of DISK: from the moment this returns it is
 * not listed, durably; ENOENT when there is none.  The caller holds the
 * store lock, and no process is the layer's writer.  Handles opened
 * before may fail their reads afterwards (never return other data). */
extern int store_layer_remove (struct store *s, const char *disk,
                               const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* ---- replacing a layer (prune's merges) -------------------------------
 * A layer is replaced whole, never changed in place where readers look:
 * the new one is built aside ("staged"), then swapped in atomically. */

/* Stage a replacement for layer SNAPSHOT of DISK, holding MANIFEST, SET
 * (NULL: a full layer) and an index holding HEAD, whose blocks start as
 * those of layer BASE of DISK (SNAPSHOT itself or another layer),
 * shared with it where the backend can rather than copied: no record
 * vouches for them until the caller commits one.  Returns a handle
 * that is the stage's writer (store_blocks_write, store_commit,
 * store_blocks_drop, for NBLOCKS blocks), invisible to readers until
 * store_layer_replace; store_layer_close without it discards the stage.
 * Writing or dropping a block of the stage may change that block in
 * BASE too (the directory backend shares the file): the caller writes
 * only blocks BASE's readers never read (not in its set) or changes
 * BASE only when BASE is going away.  The caller holds the store lock
 * and is the writer of SNAPSHOT and BASE. */
extern struct store_layer *store_layer_stage (struct store *s,
                                              const char *disk,
                                              const char *snapshot,
                                              const char *base,
                                              const void *manifest,
                                              size_t mlen,
                                              const void *set, size_t slen,
                                              const void *head, size_t hlen,
                                              uint64_t nblocks)
  __attribute__ ((__nonnull__ (1, 2, 3, 4, 5, 9)));

/* Put the stage H in place of its layer, atomically and durably: a
 * reader lists the old layer or the new one, never neither, and what
 * only the old one held is freed.  H's writer side is closed; close H
 * with store_layer_close.  EOPNOTSUPP when the backend cannot swap
 * atomically where the store lives (then nothing changed). */
extern int store_layer_replace (struct store_layer *h)
  __attribute__ ((__nonnull__ (1)));

/* The manifest of layer SNAPSHOT of DISK (malloc'd, NUL-terminated,
 * *LEN bytes, at most MAX). */
extern char *store_manifest_read (struct store *s, const char *disk,
                                  const char *snapshot, size_t max,
                                  size_t *len)
  __attribute__ ((__nonnull__ (1, 2, 3, 5)));

/* A handle on layer SNAPSHOT of DISK for reading; cheap (what it needs
 * is opened when first read, and given back under pressure).  S must
 * outlive it.  Does not check that the layer exists: the first read
 * does. */
extern struct store_layer *store_layer_open (struct store *s,
                                             const char *disk,
                                             const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Close H (and its writer side, releasing the writer lock); NULL is a
 * no-op. */
extern void store_layer_close (struct store_layer *h);

/* Where H lives, for messages ("STORE/disks/D/S"); borrowed from H. */
extern const char *store_layer_where (const struct store_layer *h)
  __attribute__ ((__nonnull__ (1)));

/* Bytes H's layer takes in the store now: what its objects occupy (a
 * sparse file's allocation, not its length). */
extern int store_layer_usage (struct store_layer *h, uint64_t *bytes)
  __attribute__ ((__nonnull__ (1, 2)));

/* H's set (malloc'd, *LEN bytes, at most MAX). */
extern char *store_set_read (struct store_layer *h, size_t max, size_t *len)
  __attribute__ ((__nonnull__ (1, 3)));

/* Up to LEN bytes of H's index from byte OFF into BUF: the bytes read
 * (fewer only at its end), or -1. */
extern ssize_t store_index_read (struct store_layer *h, void *buf, size_t len,
                                 uint64_t off)
  __attribute__ ((__nonnull__ (1, 2)));

/* Block B of H into BUF (64 KiB): the bytes read, fewer when the
 * stored block is cut short (the rest of BUF is then the caller's to
 * treat as damage), or -1. */
extern ssize_t store_block_read (struct store_layer *h, uint64_t b, void *buf)
  __attribute__ ((__nonnull__ (1, 3)));

/* Become H's one writer (of NBLOCKS blocks): take its writer lock
 * without waiting (EWOULDBLOCK: another process writes it) and open
 * what writing needs.  Idempotent. */
extern int store_writer_open (struct store_layer *h, uint64_t nblocks)
  __attribute__ ((__nonnull__ (1)));

/* Cut H's index to LEN bytes (a torn tail after a crash), durably.
 * Writer only. */
extern int store_index_cut (struct store_layer *h, uint64_t len)
  __attribute__ ((__nonnull__ (1)));

/* Write LEN bytes (whole blocks) of BUF as blocks FIRST, FIRST+1, …;
 * not durable until store_commit.  Writer only; thread-safe. */
extern int store_blocks_write (struct store_layer *h, uint64_t first,
                               const void *buf, size_t len)
  __attribute__ ((__nonnull__ (1, 3)));

/* Make every block written so far durable, then append RECS (LEN
 * bytes) to the index at byte AT (its current end) durably.  On
 * failure nothing of RECS counts (a partial append is cut or left as a
 * torn tail), and blocks written since the last commit may be lost:
 * the caller must not vouch for them later (Linux reports a failed
 * writeback once).  Writer only. */
extern int store_commit (struct store_layer *h, const void *recs, size_t len,
                         uint64_t at)
  __attribute__ ((__nonnull__ (1, 2)));

/* Forget N blocks from FIRST that no record names (given up after a
 * failed commit), freeing their space where the backend can.  Best
 * effort.  Writer only. */
extern void store_blocks_drop (struct store_layer *h, uint64_t first,
                               uint64_t n)
  __attribute__ ((__nonnull__ (1)));

/* Stop writing H: release its writer lock.  Idempotent. */
extern void store_writer_close (struct store_layer *h)
  __attribute__ ((__nonnull__ (1)));

/* The directory backend (posix.c). */
extern const struct store_backend store_posix;

/* The object store backend (s3store.c): stores named
 * s3://BUCKET[/PREFIX] in S3-compatible object storage.  Programs that
 * link it add it with store_backend_add. */
extern const struct store_backend store_s3;

/* How the object store backend reaches its server: from the
 * environment, read when a store is opened:
 *   AWS_ENDPOINT_URL       https://HOST[:PORT] (default: AWS's for the region)
 *   AWS_REGION             (or AWS_DEFAULT_REGION; default us-east-1)
 *   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   required
 *   AWS_CA_BUNDLE          PEM CA bundle (default: the system's)
 *   CBTFS_S3_PATH_STYLE    yes: HOST/BUCKET addressing, not BUCKET.HOST
 *   CBTFS_S3_ALLOW_HTTP    yes: accept a plain http:// endpoint
 *   CBTFS_S3_TIMEOUT       seconds per request (default 60)
 *   CBTFS_S3_LEASE_SECONDS seconds a lease lasts unrenewed (default 120)
 *   CBTFS_ENCRYPT_KEY_FILE the key of an encrypted store (s3crypt.h): a
 *                          store made encrypted, one opened checked; a
 *                          directory store refuses it */

#endif /* CBTFS_CHAIN_STORE_STORE_H */
