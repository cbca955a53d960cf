/* The contract of chain/store/store.h, checked on a backend through
 * the interface alone: what any backend must do.  Built twice: as
 * test-store-backend on the directory backend, and with STORE_S3 as
 * test-store-backend-s3, which runs the same checks on the object
 * store backend in fresh prefixes of the bucket CBTFS_TEST_STORE
 * names (s3://BUCKET; tests/test-store-backend-s3.py starts RGW and
 * sets the AWS_* environment).  What only the directory format
 * promises is tested in test-store.c. */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chain/store/store.h"
#include "common/error.h"
#ifdef STORE_S3
#include "s3/s3.h"
#endif
#include "common/util.h"
#include "check.h"

#define DISK "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define SNAP "11111111-2222-3333-4444-555555555555"
#define SNAP2 "11111111-2222-3333-4444-666666666666"
#define BS 65536

static const char *self;        /* this program, to run it again */
static const char head[41] = "HEADER: the core bytes, not the store one";

static struct store *
fresh_store (char **dir)
{
  char *path;
  struct store *s;

  *dir = make_tmpdir ();
#ifdef STORE_S3
  {
    static unsigned n;
    const char *bucket = getenv ("CBTFS_TEST_STORE");
    char id[UUID_LEN + 1];
    CHECK (bucket != NULL && make_uuid (id) == 0);
    CHECK (asprintf (&path, "%s/t%u-%s", bucket, n++, id) > 0);
  }
#else
  CHECK (asprintf (&path, "%s/s", *dir) > 0);
#endif
  s = store_open (path, true);
  if (s == NULL)
    fprintf (stderr, "store_open %s: %s\n", path, err_get ());
  CHECK (s != NULL);
  free (path);
  return s;
}

static void
check_note (struct store *s, const char *want)
{
  size_t len;
  char *got = store_note_read (s, DISK, "verified", 1 << 20, &len);

  CHECK (got != NULL && len == strlen (want) && memcmp (got, want, len) == 0);
  CHECK (got[len] == '\0');
  free (got);
}

/* A new store has an identity; names that are not uuids never reach
 * the backend; what is listed is sorted. */
static void
test_names (void)
{
  char *dir, **names;
  struct store *s = fresh_store (&dir);
  uid_t uid;
  gid_t gid;
  mode_t mode;
  size_t n;

  CHECK (is_uuid (s->id));
  CHECK (store_owner (s, &uid, &gid, &mode) == 0 && uid == getuid ()
         && (mode & 077) == 0);
  CHECK (store_list (s, NULL, &names, &n) == 0 && n == 0);
  store_names_free (names, n);
  CHECK_FAILS (store_disk_prepare (s, "../../etc"), EINVAL, "not a disk uuid");
  CHECK (store_list (s, "../x", &names, &n) == -1 && errno == EINVAL);
  CHECK (store_disk_prepare (s, SNAP2) == 0);
  CHECK (store_disk_prepare (s, DISK) == 0);
  CHECK (store_disk_prepare (s, DISK) == 0);          /* idempotent */
  CHECK (store_list (s, NULL, &names, &n) == 0 && n == 2);
  CHECK (strcmp (names[0], SNAP2) == 0 && strcmp (names[1], DISK) == 0);
  CHECK (store_names_find (names, n, DISK) == 1);
  CHECK (store_names_find (names, n, SNAP) == -1);
  store_names_free (names, n);
  /* A disk with no layers, and one never made, list as empty. */
  CHECK (store_list (s, DISK, &names, &n) == 0 && n == 0);
  CHECK (store_list (s, SNAP, &names, &n) == 0 && n == 0);
  CHECK (store_has_layer (s, DISK, SNAP) == 0);
  CHECK (store_has_layer (s, DISK, "not-a-uuid") == 0);
  store_close (s);
  rm_rf (dir);
}

/* Notes keep records in order; a torn last record gets a newline
 * before the next; names are plain words. */
static void
test_notes (void)
{
  char *dir;
  struct store *s = fresh_store (&dir);
  size_t len;

  CHECK (store_disk_prepare (s, DISK) == 0);
  errno = 0;
  CHECK (store_note_read (s, DISK, "verified", 100, &len) == NULL
         && errno == ENOENT);
  CHECK (store_note_append (s, DISK, "verified", "\nA\n", 3, false) == 0);
  CHECK (store_note_append (s, DISK, "verified", "B\n", 2, true) == 0);
  check_note (s, "\nA\nB\n");
  CHECK (store_note_append (s, DISK, "verified", "C", 1, true) == 0);
  CHECK (store_note_append (s, DISK, "verified", "D\n", 2, true) == 0);
  check_note (s, "\nA\nB\nC\nD\n");
  CHECK (store_note_read (s, DISK, "verified", 4, &len) == NULL
         && errno == EFBIG);
  CHECK_FAILS (store_note_append (s, DISK, "../x", "E\n", 2, true), EINVAL,
               "not a note name");
  CHECK (store_note_read (s, DISK, "Verified", 100, &len) == NULL
         && errno == EINVAL);
  /* A note is replaced whole, or removed. */
  CHECK (store_note_replace (s, DISK, "verified", "\nZ\n", 3) == 0);
  check_note (s, "\nZ\n");
  CHECK (store_note_append (s, DISK, "verified", "Y\n", 2, false) == 0);
  check_note (s, "\nZ\nY\n");
  CHECK (store_note_replace (s, DISK, "verified", "", 0) == 0);
  CHECK (store_note_read (s, DISK, "verified", 100, &len) == NULL
         && errno == ENOENT);
  CHECK (store_note_replace (s, DISK, "verified", "", 0) == 0);

  /* Many appends read back whole and in order (an object store folds
   * them into bases on the way). */
  {
    char want[200 * 8 + 1] = "", rec[16];
    char *got;
    for (int i = 0; i < 150; i++) {
      snprintf (rec, sizeof rec, "r%03d\n", i);
      CHECK (store_note_append (s, DISK, "names", rec, strlen (rec), false)
             == 0);
      strcat (want, rec);
    }
    got = store_note_read (s, DISK, "names", 1 << 20, &len);
    CHECK (got && len == strlen (want) && strcmp (got, want) == 0);
    free (got);
  }
  store_close (s);
  rm_rf (dir);
}

/* In a process of its own (this program run again), try to become the
 * writer of layer SNAP of DISK in the store WHERE: 0 if refused with
 * EWOULDBLOCK. */
static int
try_writer (const char *where)
{
  struct store *s = store_open (where, false);
  struct store_layer *h = s ? store_layer_open (s, DISK, SNAP) : NULL;
  int r = h && store_writer_open (h, 8) == -1 && errno == EWOULDBLOCK ? 0 : 1;

  store_layer_close (h);
  store_close (s);
  return r;
}

/* Whether another process is refused the writer's place (not a fork:
 * the lock is per open file, and a fork would share this one's). */
static bool
refused_elsewhere (const char *where)
{
  pid_t pid = fork ();
  int status;

  CHECK (pid >= 0);
  if (pid == 0) {
    execl (self, self, "--try-writer", where, (char *) NULL);
    _exit (2);
  }
  CHECK (waitpid (pid, &status, 0) == pid);
  CHECK (WIFEXITED (status) && WEXITSTATUS (status) != 2);
  return WEXITSTATUS (status) == 0;
}

/* A layer is created whole or not at all, then filled by one writer:
 * blocks first, then the records that vouch for them. */
static void
test_layer (void)
{
  char *dir, *text, **names;
  struct store *s = fresh_store (&dir);
  struct store_layer *h, *h2;
  uint8_t *blocks = malloc (2 * BS), *got = malloc (BS);
  char idx[128];
  uint64_t used, used2, g0, g1;
  size_t len, n;

  for (size_t i = 0; i < 2 * BS; i++)
    blocks[i] = i * 7 + 3;
  CHECK (store_disk_prepare (s, DISK) == 0);
  CHECK_FAILS (store_layer_create (s, DISK, "x", "M", 1, NULL, 0, head, 40),
               EINVAL, "not a snapshot uuid");
  CHECK (store_layer_create (s, DISK, SNAP, "manifest\n", 9, "set", 3,
                             head, 40) == 0);
  CHECK (store_layer_create (s, DISK, SNAP, "other\n", 6, NULL, 0,
                             head, 40) == -1 && errno == EEXIST);
  CHECK (store_layer_create (s, DISK, SNAP2, "full\n", 5, NULL, 0,
                             head, 40) == 0);
  CHECK (store_has_layer (s, DISK, SNAP) == 1);
  CHECK (store_list (s, DISK, &names, &n) == 0 && n == 2
         && strcmp (names[0], SNAP) == 0);
  store_names_free (names, n);

  /* What was created reads back as given. */
  text = store_manifest_read (s, DISK, SNAP, 100, &len);
  CHECK (text && len == 9 && strcmp (text, "manifest\n") == 0);
  free (text);
  CHECK (store_manifest_read (s, DISK, SNAP, 4, &len) == NULL);
  h = store_layer_open (s, DISK, SNAP);
  CHECK (h != NULL && strstr (store_layer_where (h), SNAP) != NULL);
  text = store_set_read (h, 100, &len);
  CHECK (text && len == 3 && memcmp (text, "set", 3) == 0);
  free (text);
  CHECK (store_index_read (h, idx, sizeof idx, 0) == 40
         && memcmp (idx, head, 40) == 0);
  CHECK (store_index_read (h, idx, sizeof idx, 40) == 0);

  /* One writer: another handle, here or in another process, waits. */
  h2 = store_layer_open (s, DISK, SNAP);
  CHECK (h2 != NULL);
  CHECK (store_writer_open (h, 8) == 0 && store_writer_open (h, 8) == 0);
  CHECK_FAILS (store_writer_open (h2, 8), EWOULDBLOCK, "another cbtfs");
  CHECK (refused_elsewhere (s->where));

  /* Blocks, then records at the index's end; committed records read
   * back from any handle. */
  CHECK (store_layer_usage (h, &used) == 0);
  CHECK (store_blocks_write (h, 2, blocks, 2 * BS) == 0);
  CHECK (store_commit (h, "R1R1R1R1", 8, 40) == 0);
  /* Two stored blocks take at least their bytes. */
  CHECK (store_layer_usage (h2, &used2) == 0 && used2 >= used + 2 * BS);
  CHECK (store_index_read (h2, idx, sizeof idx, 0) == 48
         && memcmp (idx + 40, "R1R1R1R1", 8) == 0);
  CHECK (store_block_read (h2, 3, got) == BS
         && memcmp (got, blocks + BS, BS) == 0);
  CHECK (store_commit (h, "R2", 2, 48) == 0);
  CHECK (store_index_read (h2, idx, sizeof idx, 44) == 6
         && memcmp (idx, "R1R1R2", 6) == 0);
  /* A torn tail is cut where the core says; an object store's index
   * objects are whole or absent, so there it has none to cut. */
#ifndef STORE_S3
  CHECK (store_index_cut (h, 48) == 0);
  CHECK (store_index_read (h2, idx, sizeof idx, 0) == 48);
#else
  CHECK (store_index_cut (h, 50) == 0);
  CHECK_FAILS (store_index_cut (h, 48), EIO, "never needs");
#endif
  store_blocks_drop (h, 3, 1);

  /* Closing the writer side lets another become the writer. */
  store_writer_close (h);
  store_writer_close (h);                             /* idempotent */
  CHECK (store_writer_open (h2, 8) == 0);
  store_layer_close (h2);
  CHECK (store_writer_open (h, 8) == 0);
  store_layer_close (h);                              /* writer side too */
  CHECK (!refused_elsewhere (s->where));   /* the lock went with it */

  /* A full layer has no set. */
  h = store_layer_open (s, DISK, SNAP2);
  CHECK (h && store_set_read (h, 100, &len) == NULL);
  store_layer_close (h);

  /* A removed layer is gone at once, and only it. */
  CHECK (store_lock (s, "backup", 0) == 0);
  CHECK (store_generation (s, &g0) == 0);
#ifdef STORE_S3
  /* A reader already on it reads on: its objects go with the sweep,
   * once the generation has moved. */
  h = store_layer_open (s, DISK, SNAP);
  CHECK (h && store_index_read (h, idx, sizeof idx, 0) == 50);
#endif
  CHECK (store_layer_remove (s, DISK, SNAP) == 0);
  CHECK (store_generation (s, &g1) == 0 && g1 != g0);
#ifdef STORE_S3
  text = store_set_read (h, 100, &len);
  CHECK (text && len == 3 && memcmp (text, "set", 3) == 0);
  free (text);
  CHECK (store_block_read (h, 2, got) == BS
         && memcmp (got, blocks, BS) == 0);
  store_layer_close (h);
#endif
  CHECK (store_has_layer (s, DISK, SNAP) == 0);
  CHECK (store_manifest_read (s, DISK, SNAP, 100, &len) == NULL);
  CHECK (store_list (s, DISK, &names, &n) == 0 && n == 1
         && strcmp (names[0], SNAP2) == 0);
  store_names_free (names, n);
  CHECK_FAILS (store_layer_remove (s, DISK, SNAP), ENOENT, SNAP);
  CHECK (store_layer_remove (s, DISK, "x") == -1 && errno == EINVAL);
  free (blocks);
  free (got);
  store_close (s);
  rm_rf (dir);
}

/* Reading a layer's many blocks: sequentially (an object store reads
 * ahead), from several threads at once, in a scattered order, and a
 * handle closed while what it read ahead may still be on its way. */
#define RA_BLOCKS 424           /* three packs of an object store, and more */
#define RA_THREADS 4

static void
ra_fill (uint8_t *p, uint64_t b)
{
  for (size_t i = 0; i < BS; i++)
    p[i] = (uint8_t) (b * 131 + i * 7 + (i >> 9));
}

/* Whether block B of H reads back as written. */
static bool
ra_good (struct store_layer *h, uint64_t b, uint8_t *got, uint8_t *want)
{
  ra_fill (want, b);
  return store_block_read (h, b, got) == BS && memcmp (got, want, BS) == 0;
}

struct ra_reader {
  struct store_layer *h;
  uint64_t first;
  bool ok;
};

static void *
ra_read (void *arg)
{
  struct ra_reader *r = arg;
  uint8_t *got = malloc (BS), *want = malloc (BS);

  r->ok = got && want;
  for (uint64_t i = 0; i < RA_BLOCKS && r->ok; i++)
    r->ok = ra_good (r->h, (r->first + i) % RA_BLOCKS, got, want);
  free (got);
  free (want);
  return NULL;
}

static void
test_read_ahead (void)
{
  char *dir;
  struct store *s = fresh_store (&dir);
  struct store_layer *h;
  struct ra_reader rd[RA_THREADS];
  pthread_t th[RA_THREADS];
  uint8_t *got = malloc (BS), *want = malloc (BS);

  CHECK (got && want);
  CHECK (store_disk_prepare (s, DISK) == 0);
  CHECK (store_layer_create (s, DISK, SNAP, "m\n", 2, NULL, 0, head, 40)
         == 0);
  h = store_layer_open (s, DISK, SNAP);
  CHECK (h && store_writer_open (h, RA_BLOCKS) == 0);
  /* Two halves interleaved, as concurrent writers leave them: a
   * pack's places are not in block order. */
  for (uint64_t i = 0; i < RA_BLOCKS / 2; i++)
    for (uint64_t b = i; b < RA_BLOCKS; b += RA_BLOCKS / 2) {
      ra_fill (want, b);
      CHECK (store_blocks_write (h, b, want, BS) == 0);
    }
  CHECK (store_commit (h, "R", 1, 40) == 0);
  store_layer_close (h);

  h = store_layer_open (s, DISK, SNAP);
  CHECK (h != NULL);
  for (uint64_t b = 0; b < RA_BLOCKS; b++)
    CHECK (ra_good (h, b, got, want));
  /* A jump back, then strides: nothing read ahead is taken amiss. */
  for (uint64_t i = 0; i < RA_BLOCKS; i++)
    CHECK (ra_good (h, i * 97 % RA_BLOCKS, got, want));
  store_layer_close (h);

  h = store_layer_open (s, DISK, SNAP);
  CHECK (h != NULL);
  for (size_t t = 0; t < RA_THREADS; t++) {
    rd[t] = (struct ra_reader) { .h = h, .first = t * RA_BLOCKS / 8 };
    CHECK (pthread_create (&th[t], NULL, ra_read, &rd[t]) == 0);
  }
  for (size_t t = 0; t < RA_THREADS; t++) {
    CHECK (pthread_join (th[t], NULL) == 0);
    CHECK (rd[t].ok);
  }
  store_layer_close (h);

  /* Closed just after a reader started forward. */
  h = store_layer_open (s, DISK, SNAP);
  CHECK (h != NULL);
  for (uint64_t b = 100; b < 104; b++)
    CHECK (ra_good (h, b, got, want));
  store_layer_close (h);

  free (got);
  free (want);
  store_close (s);
  rm_rf (dir);
}

/* A layer is replaced by a stage, which starts with another layer's
 * blocks, is invisible until swapped in, and is gone if closed first. */
static void
test_replace (void)
{
  char *dir, *text, **names;
  struct store *s = fresh_store (&dir);
  struct store_layer *h, *st;
  uint8_t *blk = malloc (BS), *got = malloc (BS);
  char idx[128];
  size_t len, n;
  uint64_t g0, g1, g2;

  CHECK (store_disk_prepare (s, DISK) == 0 && store_lock (s, "prune", 0) == 0);
  CHECK (store_generation (s, &g0) == 0);
  CHECK (store_layer_create (s, DISK, SNAP, "old\n", 4, "s1", 2, head, 40)
         == 0);
  CHECK (store_generation (s, &g1) == 0 && g1 != g0);
  CHECK (store_layer_create (s, DISK, SNAP2, "base\n", 5, "s2", 2, head, 40)
         == 0);
  CHECK (store_generation (s, &g2) == 0 && g2 != g1 && g2 != g0);
  /* SNAP2 stores block 5. */
  h = store_layer_open (s, DISK, SNAP2);
  memset (blk, 5, BS);
  CHECK (h && store_writer_open (h, 8) == 0
         && store_blocks_write (h, 5, blk, BS) == 0
         && store_commit (h, "B5", 2, 40) == 0);
  store_layer_close (h);
  /* Blocks, other notes and stages change nothing a mount shows; the
   * checks' note does (MD5SUMS). */
  CHECK (store_note_append (s, DISK, "manifests", "x\n", 2, false) == 0);
  CHECK (store_generation (s, &g1) == 0 && g1 == g2);
  CHECK (store_note_append (s, DISK, "verified", "x\n", 2, false) == 0);
  CHECK (store_generation (s, &g1) == 0 && g1 != g2);
  g2 = g1;

  /* A stage closed unswapped leaves nothing behind. */
  st = store_layer_stage (s, DISK, SNAP, SNAP2, "gone\n", 5, NULL, 0, head,
                          40, 8);
  CHECK (st != NULL);
  store_layer_close (st);
  text = store_manifest_read (s, DISK, SNAP, 100, &len);
  CHECK (text && strcmp (text, "old\n") == 0);
  free (text);

  /* Stage SNAP's replacement on SNAP2's blocks, add block 1. */
  CHECK (store_layer_stage (s, DISK, SNAP, "x", "m\n", 2, NULL, 0, head, 40,
                            8) == NULL && errno == EINVAL);
  st = store_layer_stage (s, DISK, SNAP, SNAP2, "new\n", 4, "s3", 2, head,
                          40, 8);
  CHECK (st != NULL);
  memset (blk, 1, BS);
  CHECK (store_blocks_write (st, 1, blk, BS) == 0
         && store_commit (st, "B1B5", 4, 40) == 0);
  /* Invisible until swapped. */
  text = store_manifest_read (s, DISK, SNAP, 100, &len);
  CHECK (text && strcmp (text, "old\n") == 0);
  free (text);
  CHECK (store_generation (s, &g1) == 0 && g1 == g2);
#ifdef STORE_S3
  /* A reader of the old version: its objects outlast the swap (they go
   * with the sweep, once the generation has moved), so it reads on. */
  h = store_layer_open (s, DISK, SNAP);
  CHECK (h && store_index_read (h, idx, sizeof idx, 0) == 40);
#endif
  CHECK (store_layer_replace (st) == 0);
  store_layer_close (st);
  CHECK (store_generation (s, &g1) == 0 && g1 != g2);
#ifdef STORE_S3
  text = store_set_read (h, 100, &len);
  CHECK (text && len == 2 && memcmp (text, "s1", 2) == 0);
  free (text);
  CHECK (store_index_read (h, idx, sizeof idx, 0) == 40
         && memcmp (idx, head, 40) == 0);
  store_layer_close (h);
#endif

  /* SNAP is the new layer now: its manifest, set, index and blocks,
   * the base's among them; SNAP2 is untouched; nothing else listed. */
  text = store_manifest_read (s, DISK, SNAP, 100, &len);
  CHECK (text && strcmp (text, "new\n") == 0);
  free (text);
  h = store_layer_open (s, DISK, SNAP);
  text = h ? store_set_read (h, 100, &len) : NULL;
  CHECK (text && len == 2 && memcmp (text, "s3", 2) == 0);
  free (text);
  CHECK (store_index_read (h, idx, sizeof idx, 0) == 44
         && memcmp (idx, head, 40) == 0 && memcmp (idx + 40, "B1B5", 4) == 0);
  CHECK (store_block_read (h, 1, got) == BS && got[0] == 1
         && got[BS - 1] == 1);
  CHECK (store_block_read (h, 5, got) == BS && got[0] == 5
         && got[BS - 1] == 5);
  store_layer_close (h);
  h = store_layer_open (s, DISK, SNAP2);
  CHECK (h && store_block_read (h, 5, got) == BS && got[0] == 5);
  CHECK (store_index_read (h, idx, sizeof idx, 0) == 42);
  store_layer_close (h);
  CHECK (store_list (s, DISK, &names, &n) == 0 && n == 2);
  store_names_free (names, n);
  free (blk);
  free (got);
  store_close (s);
  rm_rf (dir);
}

/* The child of test_lock_wait: lock WHERE as "prune", say so on
 * READY, and release the lock once what comes on TALK (the waiter's
 * stderr) says that it waits for this process; exit 0 if it said so
 * exactly once.  Not a function that returns: the parent's state is
 * not this process's to free. */
static void __attribute__ ((__noreturn__))
lock_holder (const char *where, int ready, int talk)
{
  struct store *s = store_open (where, false);
  char heard[4096], want[128], *at;
  size_t len = 0;
  ssize_t n;
  bool released = false;

  if (s == NULL || store_lock (s, "prune", 0) == -1
      || write (ready, "L", 1) != 1)
    _exit (2);
  snprintf (want, sizeof want, "in use by cbtfs prune (pid %ld",
            (long) getpid ());
  while (len < sizeof heard - 1
         && (n = read (talk, heard + len, sizeof heard - 1 - len)) > 0) {
    len += n;
    heard[len] = '\0';
    if (!released && strstr (heard, "waiting up to")) {
      store_close (s);                  /* the lock goes with it */
      released = true;
    }
  }
  if (!released)
    _exit (3);
  at = strstr (heard, "waiting up to");
  if (strstr (heard, want) == NULL || strstr (at + 1, "waiting up to"))
    _exit (4);
  _exit (0);
}

/* A wait that outlasts the holder ends with the lock.  The holder is
 * another process (a fork: this one holds no lock when it forks, so
 * the child shares none of its locks), told to release the lock by
 * what the waiter logs, so that the lock is surely released while
 * store_lock waits, not before it starts. */
static void
test_lock_wait (void)
{
  char *dir, c, want[128];
  struct store *s = fresh_store (&dir);
  int ready[2], talk[2], saved, status, r;
  double t;
  pid_t pid;

  CHECK (pipe (ready) == 0 && pipe (talk) == 0);
  pid = fork ();
  CHECK (pid >= 0);
  if (pid == 0) {
    close (ready[0]);
    close (talk[1]);
    lock_holder (s->where, ready[1], talk[0]);
  }
  close (ready[1]);
  close (talk[0]);
  CHECK (read (ready[0], &c, 1) == 1);
  close (ready[0]);

  /* Refused at once, naming the child. */
  snprintf (want, sizeof want, "is in use by cbtfs prune (pid %ld, since ",
            (long) pid);
  CHECK_FAILS (store_lock (s, "backup", 0), EWOULDBLOCK, want);

  /* Waiting: the info line goes to the child, which then releases. */
  fflush (stderr);
  CHECK ((saved = dup (STDERR_FILENO)) >= 0);
  CHECK (dup2 (talk[1], STDERR_FILENO) == STDERR_FILENO);
  close (talk[1]);
  t = now_monotonic ();
  r = store_lock (s, "backup", 60);
  t = now_monotonic () - t;
  CHECK (dup2 (saved, STDERR_FILENO) == STDERR_FILENO);  /* EOF for it */
  close (saved);
  if (r == -1)
    fprintf (stderr, "store_lock: %s\n", err_get ());
  CHECK (r == 0 && t < 60);
  CHECK (waitpid (pid, &status, 0) == pid);
  CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  store_close (s);
  rm_rf (dir);
}

/* The lock shared by backups: an object store lets several hold it,
 * each disk taken by one of them at a time, while the exclusive lock
 * waits for them all and they for it; a directory store has only the
 * exclusive lock, which store_lock_shared then takes. */
static void
test_lock_shared (void)
{
  char *dir, want[256];
  struct store *s = fresh_store (&dir), *s2, *s3;

  s2 = store_open (s->where, false);
  s3 = store_open (s->where, false);
  CHECK (s2 && s3);
  CHECK_FAILS (store_lock_shared (s, "backup", -1), EINVAL, "lock wait");
  CHECK (store_lock_shared (s, "backup", 0) == 0);
  CHECK_FAILS (store_disk_lock (s, "../x", "backup", 0), EINVAL, "uuid");
  CHECK (store_disk_lock (s, DISK, "backup", 0) == 0);
  snprintf (want, sizeof want, "the store %s is in use by cbtfs backup "
            "(pid %ld, since ", s->where, (long) getpid ());
  CHECK_FAILS (store_lock (s3, "prune", 0), EWOULDBLOCK, want);
#ifdef STORE_S3
  /* A second backup shares the store, and waits only for DISK. */
  CHECK (store_lock_shared (s2, "backup", 0) == 0);
  snprintf (want, sizeof want, "the disk %s of the store %s is in use by "
            "cbtfs backup (pid %ld, since ", DISK, s->where,
            (long) getpid ());
  CHECK_FAILS (store_disk_lock (s2, DISK, "backup", 0), EWOULDBLOCK, want);
  CHECK (store_disk_lock (s2, SNAP, "backup", 0) == 0);
  store_disk_unlock (s, DISK);
  CHECK (store_disk_lock (s2, DISK, "backup", 0) == 0);
  store_close (s);
  /* The exclusive lock waits for the last share. */
  snprintf (want, sizeof want, "the store %s is in use by cbtfs backup "
            "(pid %ld, since ", s2->where, (long) getpid ());
  CHECK_FAILS (store_lock (s3, "prune", 0.3), EWOULDBLOCK, want);
  CHECK (strstr (err_get (), "gave up after 0.3 s"));
  store_close (s2);
  CHECK (store_lock (s3, "prune", 0) == 0);
  /* And shares wait for it. */
  s = store_open (s3->where, false);
  snprintf (want, sizeof want, "the store %s is in use by cbtfs prune "
            "(pid %ld, since ", s3->where, (long) getpid ());
  CHECK (s && store_lock_shared (s, "backup", 0) == -1
         && errno == EWOULDBLOCK && strstr (err_get (), want));
  store_close (s);
#else
  /* Backups take turns; disk locks cost nothing. */
  CHECK_FAILS (store_lock_shared (s2, "backup", 0), EWOULDBLOCK, want);
  store_close (s);
  CHECK (store_lock_shared (s2, "backup", 0) == 0
         && store_disk_lock (s2, DISK, "backup", 0) == 0);
  store_close (s2);
#endif
  store_close (s3);
  rm_rf (dir);
}

/* The store lock: one holder at a time; whoever is refused learns who
 * holds it, at once or after a bounded wait. */
static void
test_lock (void)
{
  char *dir, want[128];
  struct store *s = fresh_store (&dir), *s2;
  double t;

  s2 = store_open (s->where, false);
  CHECK (s2 && strcmp (s2->id, s->id) == 0);
  CHECK_FAILS (store_lock (s, "Back up", 0), EINVAL, "not a command name");
  CHECK_FAILS (store_lock (s, "", 0), EINVAL, "not a command name");
  CHECK_FAILS (store_lock (s, "backup", -1), EINVAL, "lock wait");
  CHECK (store_lock (s, "prune", 0) == 0);

  /* WAIT 0: refused at once, in one line naming the holder (here this
   * process: the lock is per open file). */
  snprintf (want, sizeof want, "the store %s is in use by cbtfs prune "
            "(pid %ld, since ", s->where, (long) getpid ());
  t = now_monotonic ();
  CHECK_FAILS (store_lock (s2, "backup", 0), EWOULDBLOCK, want);
  CHECK (now_monotonic () - t < 0.5);
  CHECK (strstr (err_get (), " UTC)") && !strstr (err_get (), "gave up")
         && !strchr (err_get (), '\n'));

  /* A wait that runs out says how long it waited. */
  t = now_monotonic ();
  CHECK_FAILS (store_lock (s2, "backup", 0.3), EWOULDBLOCK, want);
  CHECK (now_monotonic () - t >= 0.3);
#ifdef STORE_S3
  /* A lease also says until when it holds unless renewed. */
  CHECK (strstr (err_get (), " UTC) until ")
         && strstr (err_get (), " UTC unless renewed; gave up after 0.3 s"));
#else
  CHECK (strstr (err_get (), " UTC); gave up after 0.3 s"));
#endif

  store_close (s);
  CHECK (store_lock (s2, "forget", 0) == 0);
  store_close (s2);
  rm_rf (dir);

  test_lock_wait ();
  test_lock_shared ();
}

/* Filling marks: set before a layer exists, listed as DISK/SNAPSHOT,
 * cleared by their end (moving the generation) and by the next lock
 * holder (a crashed run's). */
static void
test_filling (void)
{
  char *dir, **names;
  struct store *s = fresh_store (&dir), *s2;
  uint64_t g0, g1;
  size_t n;

  CHECK (store_filling_list (s, &names, &n) == 0 && n == 0);
  store_names_free (names, n);
  CHECK_FAILS (store_filling_begin (s, DISK, "../x"), EINVAL, "uuid");
  CHECK (store_filling_begin (s, DISK, SNAP2) == 0);
  CHECK (store_filling_begin (s, DISK, SNAP) == 0);
  CHECK (store_filling_begin (s, DISK, SNAP) == 0);    /* idempotent */
  s2 = store_open (s->where, false);
  CHECK (s2 && store_filling_list (s2, &names, &n) == 0 && n == 2
         && strcmp (names[0], DISK "/" SNAP) == 0
         && strcmp (names[1], DISK "/" SNAP2) == 0);
  store_names_free (names, n);
  CHECK (store_generation (s, &g0) == 0);
  CHECK (store_filling_end (s, DISK, SNAP) == 0);
  CHECK (store_generation (s, &g1) == 0 && g1 != g0);
  CHECK (store_filling_end (s, DISK, SNAP) == 0);      /* idempotent */
  CHECK (store_filling_list (s2, &names, &n) == 0 && n == 1
         && strcmp (names[0], DISK "/" SNAP2) == 0);
  store_names_free (names, n);
  /* The lock holder is the only run that marks: what it finds is a
   * crashed run's. */
  CHECK (store_lock (s2, "backup", 0) == 0);
  CHECK (store_filling_list (s, &names, &n) == 0 && n == 0);
  store_names_free (names, n);
  store_close (s2);
  store_close (s);
  rm_rf (dir);
}

int
main (int argc, char **argv)
{
#ifdef STORE_S3
  CHECK (s3_global_init () == 0 && store_backend_add (&store_s3) == 0);
#endif
  if (argc == 3 && strcmp (argv[1], "--try-writer") == 0)
    return try_writer (argv[2]);
  self = argv[0];
  test_names ();
  test_notes ();
  test_layer ();
  test_read_ahead ();
  test_replace ();
  test_lock ();
  test_filling ();
  return 0;
}
