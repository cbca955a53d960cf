/* Unit test: the store directory, layer manifests, index and blocks. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chain/catalog.h"
#include "chain/layer-impl.h"
#include "chain/layer.h"
#include "chain/manifests.h"
#include "chain/store/store.h"
#include "chain/sums.h"
#include "chain/verdict.h"
#include "common/dio.h"
#include "common/error.h"
#include "common/util.h"
#include "check.h"

#define SNAP "11111111-2222-3333-4444-555555555555"
#define DISK "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define VMU  "99999999-8888-7777-6666-555555555555"

static struct layer_meta
sample_meta (uint64_t size, bool full)
{
  struct layer_meta m = { 0 };

  strcpy (m.snapshot, SNAP);
  strcpy (m.disk, DISK);
  strcpy (m.chain, SNAP);
  strcpy (m.vm, VMU);
  m.seq = 1;
  m.time = 1764095684;
  m.size = size;
  m.full = full;
  m.vm_name = (char *) "web\n100%\tserver /x é";
  m.disk_name = (char *) "root disk";
  strcpy (m.userdevice, "0");
  return m;
}

static void
fill (uint8_t *buf, uint64_t b)
{
  for (size_t i = 0; i < CHAIN_BLOCK_SIZE; i++)
    buf[i] = (uint8_t) (b * 31 + i * 7 + 1);
}

/* The store the running test works in, for the shims below: tests
 * name layers by their folders, whose files they damage on purpose. */
static struct store *cur;

/* Make DISK's folder in S (the store the test now works in) and return
 * its path (caller frees). */
static char *
disk_dir (struct store *s, const char *disk)
{
  char *p;

  CHECK (store_disk_prepare (s, disk) == 0);
  CHECK (asprintf (&p, "%s/disks/%s", s->where, disk) > 0);
  cur = s;
  return p;
}

/* The disk and snapshot of layer folder LDIR (".../DISK/SNAP"). */
static void
split_ldir (const char *ldir, char disk[UUID_LEN + 1], char snap[UUID_LEN + 1])
{
  size_t n = strlen (ldir);

  CHECK (n > 2 * UUID_LEN + 1 && ldir[n - UUID_LEN - 1] == '/');
  memcpy (snap, ldir + n - UUID_LEN, UUID_LEN + 1);
  memcpy (disk, ldir + n - 2 * UUID_LEN - 1, UUID_LEN);
  disk[UUID_LEN] = '\0';
}

static struct layer *
open_at (const char *ldir, bool writable)
{
  char disk[UUID_LEN + 1], snap[UUID_LEN + 1];

  split_ldir (ldir, disk, snap);
  return layer_open (cur, disk, snap, writable);
}

static int
complete_at (const char *ldir)
{
  char disk[UUID_LEN + 1], snap[UUID_LEN + 1];

  split_ldir (ldir, disk, snap);
  return layer_check_complete (cur, disk, snap);
}

static mode_t
mode_of (const char *path)
{
  struct stat st;
  CHECK (stat (path, &st) == 0);
  return st.st_mode & 07777;
}

static off_t
size_of (const char *path)
{
  struct stat st;
  CHECK (stat (path, &st) == 0);
  return st.st_size;
}

static void
test_manifest (void)
{
  struct layer_meta m = sample_meta (123456 * 512, false), p;
  char *text = layer_meta_format (&m), *bad;
  size_t len = strlen (text);

  CHECK (layer_meta_parse (text, len, &p) == 0);
  CHECK (strcmp (p.snapshot, SNAP) == 0 && strcmp (p.vm_name, m.vm_name) == 0);
  CHECK (strcmp (p.disk_name, "root disk") == 0 && p.parent[0] == '\0');
  CHECK (p.size == m.size && p.time == m.time && !p.full && p.seq == 1);
  CHECK (!p.lazy);
  CHECK (strchr (text, '\t') == NULL);  /* names never break lines */
  layer_meta_clear (&p);

  /* Lazy layers say so. */
  m.lazy = true;
  {
    char *t2 = layer_meta_format (&m);
    CHECK (strstr (t2, "\nfill lazy\n"));
    CHECK (layer_meta_parse (t2, strlen (t2), &p) == 0 && p.lazy);
    layer_meta_clear (&p);
    free (t2);
  }
  m.lazy = false;

  /* Any change to the text breaks the check line. */
  bad = strdup (text);
  bad[strstr (bad, "seq 1") - bad + 4] = '2';
  CHECK_FAILS (layer_meta_parse (bad, len, &p), EPROTO, "damaged");
  free (bad);
  CHECK_FAILS (layer_meta_parse (text, len - 3, &p), EPROTO, "malformed");
  CHECK_FAILS (layer_meta_parse ("cbtfs-layer 2\n", 14, &p), EPROTO,
               "not a cbtfs layer");
  CHECK_FAILS (layer_meta_parse ("cbtfs-layer 1\nsnapshot ../../etc\n", 33,
                                 &p), EPROTO, "malformed");
  free (text);
}

/* With RECORD in the lock file LOCKF in place of its holder's own (in
 * place: a new file would be another lock), S2 is refused the lock in
 * SUB with the message that names HOLDER. */
static void
refused_naming (struct store *s2, const char *sub, const char *lockf,
                const char *record, const char *holder)
{
  int fd = open (lockf, O_WRONLY | O_TRUNC);
  char want[512];

  CHECK (fd >= 0 && full_write (fd, record, strlen (record)) == 0);
  close (fd);
  snprintf (want, sizeof want, "the store %s is in use by %s", sub, holder);
  CHECK_FAILS (store_lock (s2, "forget", 0), EWOULDBLOCK, want);
  if (strcmp (err_get (), want)) {
    fprintf (stderr, "record %s: got \"%s\"\n", record, err_get ());
    CHECK (!"the message names that holder alone");
  }
}

static void
test_store_dir (void)
{
  char *dir = make_tmpdir (), *sub, *lockf, *text, want[256], holder[64];
  struct store *s, *s2;
  long long since;
  time_t t0 = time (NULL);
  size_t len;
  long pid_max;
  FILE *fp;

  CHECK (asprintf (&sub, "%s/store", dir) > 0);
  CHECK (store_open (sub, false) == NULL && errno == ENOENT);
  CHECK (strstr (err_get (), "not a cbtfs store"));
  s = store_open (sub, true);
  CHECK (s != NULL);
  CHECK (mode_of (sub) == 0700);
  CHECK (store_lock (s, "backup", 0) == 0);

  /* The holder's record (FORMAT.md, `lock`). */
  CHECK (asprintf (&lockf, "%s/lock", sub) > 0);
  CHECK (mode_of (lockf) == 0600);
  text = read_file (lockf, 4096, &len);
  snprintf (want, sizeof want, "pid %ld\ncommand backup\nsince ",
            (long) getpid ());
  CHECK (text && strncmp (text, want, strlen (want)) == 0);
  CHECK (sscanf (text + strlen (want), "%lld", &since) == 1
         && since >= t0 && since <= time (NULL) && text[len - 1] == '\n');
  free (text);
  s2 = store_open (sub, false);
  CHECK (s2 != NULL);
  snprintf (want, sizeof want, "the store %s is in use by cbtfs backup "
            "(pid %ld, since ", sub, (long) getpid ());
  CHECK_FAILS (store_lock (s2, "forget", 0), EWOULDBLOCK, want);

  /* Whatever else the file holds, the message stays one clear line:
   * what it cannot trust it leaves out. */
  refused_naming (s2, sub, lockf, "", "another cbtfs process");
  refused_naming (s2, sub, lockf, "garbage\x01\xff\npid 12ab\npid -4\n"
                  "command rm -rf /\ncommand Backup\nsince -5\n"
                  "since 99999999999999999999\n\n",
                  "another cbtfs process");
  snprintf (want, sizeof want, "pid %ld\ncommand pru", (long) getpid ());
  snprintf (holder, sizeof holder, "another cbtfs process (pid %ld)",
            (long) getpid ());
  refused_naming (s2, sub, lockf, want, holder);        /* cut short */
  refused_naming (s2, sub, lockf, "command prune\nsince 1764763384\n",
                  "cbtfs prune (since 2025-12-03 12:03:04 UTC)");
  /* A record naming a process that is gone is a crashed holder's
   * (pid_max itself is never a process's). */
  fp = fopen ("/proc/sys/kernel/pid_max", "r");
  CHECK (fp && fscanf (fp, "%ld", &pid_max) == 1);
  fclose (fp);
  snprintf (want, sizeof want, "pid %ld\ncommand prune\nsince 1764763384\n",
            pid_max);
  refused_naming (s2, sub, lockf, want, "another cbtfs process");

  /* Released, the record goes with the lock. */
  store_close (s);
  text = read_file (lockf, 4096, &len);
  CHECK (text && len == 0);
  free (text);
  CHECK (store_lock (s2, "forget", 0) == 0);
  store_close (s2);
  free (lockf);
  s = store_open (sub, false);          /* the lock went with its handle */
  CHECK (s && store_lock (s, "backup", 0) == 0);
  store_close (s);

  /* A directory with other files is never taken over. */
  {
    char *other, *f;
    CHECK (asprintf (&other, "%s/other", dir) > 0);
    CHECK (mkdir (other, 0755) == 0);
    CHECK (asprintf (&f, "%s/precious", other) > 0);
    CHECK (write_file_atomic (f, "x", 1, 0644) == 0);
    CHECK (store_open (other, true) == NULL && errno == EEXIST);
    free (f);
    free (other);
  }
  /* A future format is refused, not misread. */
  {
    char *marker;
    CHECK (asprintf (&marker, "%s/cbtfs-store", sub) > 0);
    CHECK (write_file_atomic (marker, "cbtfs-store 3\n", 14, 0600) == 0);
    CHECK (store_open (sub, false) == NULL);
    CHECK (strstr (err_get (), "format 3"));
    free (marker);
  }
  /* Format 1 is still read, keeps its number until upgraded, and
   * keeps its id through the upgrade. */
  {
    static const char v1[] =
      "cbtfs-store 1\nid 0d4a3c6e-27b1-4c8e-9a51-3f0e8b7d2c11\n";
    char *marker, *mtext;
    CHECK (asprintf (&marker, "%s/cbtfs-store", sub) > 0);
    CHECK (write_file_atomic (marker, v1, strlen (v1), 0600) == 0);
    CHECK ((s = store_open (sub, false)) != NULL && s->format == 1);
    CHECK (store_lock (s, "prune", 0) == 0);
    CHECK ((mtext = read_file (marker, 4096, NULL)) != NULL
           && strcmp (mtext, v1) == 0);
    free (mtext);
    CHECK (store_upgrade (s) == 0 && s->format == STORE_FORMAT);
    CHECK ((mtext = read_file (marker, 4096, NULL)) != NULL
           && strncmp (mtext, "cbtfs-store 2\n", 14) == 0
           && strstr (mtext, "\nid 0d4a3c6e-27b1-4c8e-9a51-3f0e8b7d2c11\n"));
    free (mtext);
    store_close (s);
    free (marker);
  }
  free (sub);
  rm_rf (dir);
}

static void
test_layer_fill (void)
{
  char *dir = make_tmpdir (), *ddir, *path;
  struct store *s;
  uint64_t size = 10 * CHAIN_BLOCK_SIZE + 4096;   /* a short tail block */
  struct layer_meta m = sample_meta (size, true);
  struct layer *l;
  uint8_t *buf = malloc (CHAIN_BLOCK_SIZE), *got = malloc (CHAIN_BLOCK_SIZE);
  uint64_t b, present, stored;

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  s = store_open (path, true);
  CHECK (s && store_lock (s, "backup", 0) == 0);
  ddir = disk_dir (s, DISK);
  CHECK (ddir);
  CHECK (store_disk_prepare (s, "../../etc") == -1);

  l = layer_create (s, &m, NULL);
  CHECK (l != NULL);
  CHECK (l->nblocks == 11 && l->nchanged == 11 && !layer_complete (l));
  /* Blocks 0..5: data, 6..9: zero; block 10 (the tail) stays missing. */
  for (b = 0; b < 10; b++) {
    if (b < 6)
      fill (buf, b);
    else
      memset (buf, 0, CHAIN_BLOCK_SIZE);
    CHECK (layer_put_block (l, b, buf) == 0);
  }
  /* Ready to serve at once, but not present (durable) before a sync. */
  CHECK (layer_block_state (l, 0) == LAYER_DATA);
  CHECK (layer_read_block (l, 5, got) == 0);
  layer_counts (l, &present, &stored);
  CHECK (present == 0);
  CHECK (layer_pending_bytes (l) == 10 * (uint64_t) CHAIN_BLOCK_SIZE);
  CHECK (layer_sync (l) == 0);
  layer_counts (l, &present, &stored);
  CHECK (present == 10 && stored == 6);
  CHECK (layer_block_state (l, 0) == LAYER_DATA);
  CHECK (layer_block_state (l, 7) == LAYER_ZERO);
  CHECK (layer_block_state (l, 10) == LAYER_MISSING);
  layer_close (l);

  /* Four zero blocks became one run record: header + 6 data + 1 zero. */
  free (path);
  CHECK (asprintf (&path, "%s/%s/index", ddir, SNAP) > 0);
  CHECK (size_of (path) == 40 * (1 + 6 + 1));
  CHECK (mode_of (path) == 0600);

  /* Reopen: what was synced is there, and reads back exactly. */
  {
    char *ldir;
    CHECK (asprintf (&ldir, "%s/%s", ddir, SNAP) > 0);
    l = open_at (ldir, false);
    CHECK (l != NULL);
    layer_counts (l, &present, &stored);
    CHECK (present == 10 && stored == 6 && !layer_complete (l));
    fill (buf, 3);
    CHECK (layer_read_block (l, 3, got) == 0 && memcmp (buf, got, CHAIN_BLOCK_SIZE) == 0);
    CHECK (layer_read_block (l, 8, got) == 0 && is_zero (got, CHAIN_BLOCK_SIZE));
    CHECK_FAILS (layer_read_block (l, 10, got), ENODATA, "not stored");
    CHECK_FAILS (layer_put_block (l, 10, buf), EBADF, "not being filled");
    layer_close (l);

    /* A torn append (crash mid-write) is ignored, then cut off. */
    {
      int fd = open (path, O_WRONLY | O_APPEND);
      CHECK (fd >= 0 && write (fd, "garbage-record", 14) == 14);
      close (fd);
    }
    l = open_at (ldir, false);
    CHECK (l != NULL);
    layer_counts (l, &present, &stored);
    CHECK (present == 10);
    layer_close (l);
    /* Only one writer at a time.  One that gives the lock back when
     * idle (a mount) lets another fill the layer; readers opened before
     * learn what it added on a miss (layer_catch_up) or when they
     * become writers themselves. */
    {
      struct layer *r = open_at (ldir, false);
      struct layer *w = open_at (ldir, false);
      CHECK (r != NULL && w != NULL);
      CHECK (layer_release (w) == 0);           /* not held: nothing to do */
      CHECK (layer_make_writable (w) == 0);
      CHECK (size_of (path) == 40 * 8);         /* the torn tail is cut */
      CHECK_FAILS (layer_make_writable (r), EWOULDBLOCK, "another cbtfs");
      CHECK (open_at (ldir, true) == NULL && errno == EWOULDBLOCK);
      fill (buf, 3);
      CHECK (layer_put_block (w, 3, buf) == 0); /* again: harmless */
      CHECK (layer_release (w) == -1 && errno == EBUSY);  /* queued */
      CHECK (layer_sync (w) == 0 && layer_release (w) == 0);
      CHECK_FAILS (layer_put_block (w, 3, buf), EBADF, "not being filled");
      l = open_at (ldir, true);
      CHECK (l != NULL);
      CHECK (layer_release (l) == -1 && errno == EBUSY);  /* opened to fill */
      fill (buf, 10);
      memset (buf + 4096, 0, CHAIN_BLOCK_SIZE - 4096);
      CHECK (layer_put_block (l, 10, buf) == 0 && layer_sync (l) == 0);
      CHECK (layer_complete (l));
      layer_close (l);
      CHECK (size_of (path) == 40 * 10);
      CHECK (!layer_complete (r) && !layer_complete (w));
      CHECK (layer_block_state (w, 10) == LAYER_MISSING);
      CHECK (layer_catch_up (w) == 0 && layer_complete (w));
      CHECK (layer_block_state (w, 10) == LAYER_DATA);
      CHECK (layer_read_block (w, 10, got) == 0
             && memcmp (buf, got, CHAIN_BLOCK_SIZE) == 0);
      CHECK (layer_catch_up (w) == 0 && layer_complete (w));  /* again */
      CHECK (layer_make_writable (r) == 0 && layer_complete (r));
      CHECK (layer_make_writable (r) == 0);     /* idempotent */
      CHECK (layer_catch_up (r) == 0);          /* the writer knows it all */
      CHECK (layer_read_block (r, 10, got) == 0
             && memcmp (buf, got, CHAIN_BLOCK_SIZE) == 0);
      layer_close (w);
      layer_close (r);
    }

    /* A flipped byte in stored data is an error, never data. */
    {
      char *dpath;
      int fd;
      uint8_t x;
      CHECK (asprintf (&dpath, "%s/data", ldir) > 0);
      fd = open (dpath, O_RDWR);
      CHECK (fd >= 0 && pread (fd, &x, 1, 2 * CHAIN_BLOCK_SIZE + 100) == 1);
      x ^= 0x40;
      CHECK (pwrite (fd, &x, 1, 2 * CHAIN_BLOCK_SIZE + 100) == 1);
      close (fd);
      free (dpath);
    }
    l = open_at (ldir, false);
    CHECK (l && layer_complete (l));
    CHECK_FAILS (layer_read_block (l, 2, got), EIO, "fails its checksum");
    CHECK (layer_read_block (l, 1, got) == 0);
    layer_close (l);

    /* The data file is sparse: zero blocks take no space. */
    {
      char *dpath;
      struct stat st;
      CHECK (asprintf (&dpath, "%s/data", ldir) > 0);
      CHECK (stat (dpath, &st) == 0);
      CHECK ((uint64_t) st.st_blocks * 512 <= 8 * (uint64_t) CHAIN_BLOCK_SIZE);
      free (dpath);
    }
    free (ldir);
  }
  free (buf);
  free (got);
  free (path);
  free (ddir);
  store_close (s);
  rm_rf (dir);
}

static void
test_delta_and_damage (void)
{
  char *dir = make_tmpdir (), *path, *ddir, *ldir, *cpath;
  struct store *s;
  struct layer_meta m = sample_meta (64 * (uint64_t) CHAIN_BLOCK_SIZE, false);
  struct bitmap changed;
  struct layer *l;
  uint8_t *buf = calloc (1, CHAIN_BLOCK_SIZE);

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  s = store_open (path, true);
  CHECK (s && (ddir = disk_dir (s, DISK)));
  CHECK (bitmap_init (&changed, 64) == 0);
  bitmap_set (&changed, 3);
  bitmap_set (&changed, 40);
  strcpy (m.parent, "00000000-0000-0000-0000-000000000001");
  l = layer_create (s, &m, &changed);
  CHECK (l && l->nchanged == 2);
  CHECK (layer_block_state (l, 4) == LAYER_ABSENT);
  CHECK_FAILS (layer_put_block (l, 4, buf), EINVAL, "not in");
  CHECK (layer_put_block (l, 3, buf) == 0 && layer_put_block (l, 40, buf) == 0);
  CHECK (layer_sync (l) == 0 && layer_complete (l));
  layer_close (l);
  /* Creating the same layer twice fails and leaves the first intact. */
  CHECK (layer_create (s, &m, &changed) == NULL);
  bitmap_free (&changed);

  CHECK (asprintf (&ldir, "%s/%s", ddir, SNAP) > 0);
  CHECK (asprintf (&cpath, "%s/changed", ldir) > 0);
  CHECK (size_of (cpath) == 8);
  /* A changed-set file of the wrong length makes the layer unreadable. */
  CHECK (truncate (cpath, 7) == 0);
  CHECK (open_at (ldir, false) == NULL && errno == EPROTO);
  CHECK (strstr (err_get (), "expected 8"));

  free (buf);
  free (cpath);
  free (ldir);
  free (ddir);
  free (path);
  store_close (s);
  rm_rf (dir);
}

/* A fresh store in DIR/s holding DISK's folder; LDIR is where the
 * layer of SNAP goes.  fixture_close frees it (not DIR). */
struct fixture {
  char *path, *ddir, *ldir;
  struct store *s;
};

static void
fixture_open (struct fixture *f, const char *dir)
{
  CHECK (asprintf (&f->path, "%s/s", dir) > 0);
  f->s = store_open (f->path, true);
  CHECK (f->s && (f->ddir = disk_dir (f->s, DISK)));
  CHECK (asprintf (&f->ldir, "%s/%s", f->ddir, SNAP) > 0);
}

static void
fixture_close (struct fixture *f)
{
  free (f->ldir);
  free (f->ddir);
  free (f->path);
  store_close (f->s);
}

/* Open the layer in LDIR read-only and return its present count. */
static uint64_t
present_of (const char *ldir, uint64_t *damaged)
{
  struct layer *l = open_at (ldir, false);
  uint64_t present, stored;

  CHECK (l != NULL);
  layer_counts (l, &present, &stored);
  if (damaged)
    *damaged = l->damaged_records;
  layer_close (l);
  return present;
}

/* Overwrite LEN bytes of PATH at OFF with garbage (or append at -1). */
static void
scribble (const char *path, off_t off, size_t len)
{
  int fd = open (path, O_WRONLY | (off < 0 ? O_APPEND : 0));
  char junk[64];

  memset (junk, 0x5a, sizeof junk);
  CHECK (fd >= 0 && len <= sizeof junk);
  CHECK ((off < 0 ? write (fd, junk, len) : pwrite (fd, junk, len, off))
         == (ssize_t) len);
  close (fd);
}

/* Index records are read in chunks of 1024: a bad record is cut only
 * when nothing good follows it (a torn tail, cut exactly after the last
 * good record), and damage in the middle keeps every good record. */
static void
test_index_damage (void)
{
  char *dir = make_tmpdir (), *ldir, *ipath;
  const uint64_t nb = 3000;
  struct layer_meta m = sample_meta (nb * CHAIN_BLOCK_SIZE, true);
  uint8_t *buf = malloc (CHAIN_BLOCK_SIZE);
  struct fixture fx;
  struct layer *l;
  uint64_t b, damaged;
  off_t len;

  fixture_open (&fx, dir);
  ldir = fx.ldir;
  l = layer_create (fx.s, &m, NULL);
  CHECK (l != NULL);
  for (b = 0; b + 1 < nb; b++) {     /* one record each; the last missing */
    fill (buf, b);
    CHECK (layer_put_block (l, b, buf) == 0);
    if (b % 700 == 0)
      CHECK (layer_sync (l) == 0);
  }
  CHECK (layer_sync (l) == 0);
  layer_close (l);
  CHECK (asprintf (&ipath, "%s/index", ldir) > 0);
  len = size_of (ipath);
  CHECK (len == 40 * (off_t) nb);
  CHECK (complete_at (ldir) == -1 && errno == ENODATA);
  CHECK (strstr (err_get (), "1 of 3000 blocks"));

  /* A garbage record appended in the third chunk: a torn tail. */
  scribble (ipath, -1, 40);
  CHECK (present_of (ldir, &damaged) == nb - 1 && damaged == 0);
  l = open_at (ldir, true);
  CHECK (l != NULL && size_of (ipath) == len);    /* cut exactly there */
  layer_close (l);
  /* A partial record after it is part of the tail too. */
  scribble (ipath, -1, 40);
  scribble (ipath, -1, 17);
  l = open_at (ldir, true);
  CHECK (l != NULL && size_of (ipath) == len);
  layer_close (l);

  /* Damage in the middle (record 1500, the second chunk): only the
   * block it named goes missing, and a writer keeps the rest. */
  scribble (ipath, 40 * 1500 + 3, 5);
  CHECK (present_of (ldir, &damaged) == nb - 2 && damaged == 1);
  l = open_at (ldir, true);
  CHECK (l != NULL && size_of (ipath) == len);
  CHECK (layer_block_state (l, 1499) == LAYER_MISSING);
  CHECK (layer_block_state (l, 1498) == LAYER_DATA);
  CHECK (layer_block_state (l, 1500) == LAYER_DATA);
  fill (buf, 1499);
  CHECK (layer_put_block (l, 1499, buf) == 0);
  fill (buf, nb - 1);
  CHECK (layer_put_block (l, nb - 1, buf) == 0);
  CHECK (layer_sync (l) == 0 && layer_complete (l));
  layer_close (l);
  CHECK (size_of (ipath) == len + 80);
  CHECK (present_of (ldir, &damaged) == nb && damaged == 1);
  CHECK (complete_at (ldir) == 0);
  l = open_at (ldir, false);
  fill (buf, 1499);
  {
    uint8_t *got = malloc (CHAIN_BLOCK_SIZE);
    CHECK (layer_read_block (l, 1499, got) == 0
           && memcmp (got, buf, CHAIN_BLOCK_SIZE) == 0);
    free (got);
  }
  layer_close (l);

  /* Unloaded, a layer answers counts from memory and loads again when
   * a block is needed; a layer being filled is not unloaded. */
  l = open_at (ldir, false);
  CHECK (l && layer_unload (l) == 0 && l->recno == NULL);
  CHECK (layer_complete (l) && l->load_state == LAYER_UNLOADED);
  {
    uint64_t present, stored;
    uint8_t *got = malloc (CHAIN_BLOCK_SIZE);
    layer_counts (l, &present, &stored);
    CHECK (present == nb && stored == nb && l->load_state == LAYER_UNLOADED);
    CHECK (layer_read_block (l, 1499, got) == 0
           && memcmp (got, buf, CHAIN_BLOCK_SIZE) == 0);
    CHECK (l->load_state == LAYER_LOADED && l->damaged_records == 1);
    free (got);
  }
  CHECK (layer_make_writable (l) == 0);
  CHECK (layer_unload (l) == -1 && errno == EBUSY);
  layer_close (l);
  /* A checksum is read from its record when the block is: a record
   * damaged since the layer was loaded is an error, never data. */
  l = open_at (ldir, false);
  CHECK (l && layer_block_state (l, 1500) == LAYER_DATA);
  scribble (ipath, 40 * 1501 + 3, 1);
  {
    uint8_t *got = malloc (CHAIN_BLOCK_SIZE);
    CHECK_FAILS (layer_read_block (l, 1500, got), EIO, "cannot be read back");
    CHECK (layer_read_block (l, 1501, got) == 0);
    free (got);
  }
  layer_close (l);
  CHECK (present_of (ldir, &damaged) == nb - 1 && damaged == 2);

  /* Complete in one process's memory is not complete on disk. */
  l = open_at (ldir, true);
  fill (buf, 1500);
  CHECK (l && layer_put_block (l, 1500, buf) == 0 && layer_sync (l) == 0);
  layer_close (l);
  len = size_of (ipath);
  CHECK (complete_at (ldir) == 0);
  l = open_at (ldir, false);
  CHECK (l && layer_complete (l));
  len -= 40;
  CHECK (truncate (ipath, len) == 0);
  CHECK (layer_complete (l));
  CHECK (complete_at (ldir) == -1 && errno == ENODATA);
  layer_close (l);

  free (buf);
  free (ipath);
  fixture_close (&fx);
  rm_rf (dir);
}

/* A layer can become visible and still fail to open (here: out of file
 * descriptors right after the rename).  layer_create then returns NULL,
 * but the store has the layer: backup must keep its snapshot, and asks
 * store_has_layer, which says so. */
static void
test_create_visible_failure (void)
{
  char *dir = make_tmpdir ();
  struct layer_meta m = sample_meta (16 * (uint64_t) CHAIN_BLOCK_SIZE, true);
  struct rlimit old, lim;
  struct fixture fx;
  struct layer *l;
  int first;

  fixture_open (&fx, dir);
  CHECK (store_has_layer (fx.s, DISK, SNAP) == 0);
  CHECK (store_has_layer (fx.s, DISK, "not-a-uuid") == 0);
  /* One descriptor at a time: enough to stage and rename the layer
   * (each file is closed before the next is opened), not to open it. */
  first = dup (0);
  CHECK (first >= 0 && close (first) == 0);
  CHECK (getrlimit (RLIMIT_NOFILE, &old) == 0);
  lim = old;
  lim.rlim_cur = first + 1;
  CHECK (setrlimit (RLIMIT_NOFILE, &lim) == 0);
  l = layer_create (fx.s, &m, NULL);
  CHECK (setrlimit (RLIMIT_NOFILE, &old) == 0);
  CHECK (l == NULL && errno == EMFILE);
  CHECK (store_has_layer (fx.s, DISK, SNAP) == 1);
  l = open_at (fx.ldir, true);
  CHECK (l != NULL && !layer_complete (l));
  layer_close (l);
  fixture_close (&fx);
  rm_rf (dir);
}

/* A sync that fails gives up every block not yet durable and refuses
 * more until the layer is opened again: a retried fsync would vouch for
 * data the kernel may have dropped.  The index append is made to fail
 * with RLIMIT_FSIZE (the data file is written below the limit). */
static void
test_sync_failure (void)
{
  char *dir = make_tmpdir ();
  struct layer_meta m = sample_meta (400 * (uint64_t) CHAIN_BLOCK_SIZE, true);
  uint8_t *buf = calloc (1, CHAIN_BLOCK_SIZE);
  struct rlimit old, lim;
  struct fixture fx;
  struct layer *l;
  uint64_t b, present, stored;

  fixture_open (&fx, dir);
  l = layer_create (fx.s, &m, NULL);
  CHECK (l != NULL);
  for (b = 100; b < 300; b++) {       /* an index of 201 records */
    fill (buf, b);
    CHECK (layer_put_block (l, b, buf) == 0);
  }
  CHECK (layer_sync (l) == 0);
  memset (buf, 0, CHAIN_BLOCK_SIZE);  /* zero blocks write no data */
  CHECK (layer_put_block (l, 0, buf) == 0);
  CHECK (layer_put_block (l, 1, buf) == 0);
  CHECK (layer_block_state (l, 0) == LAYER_ZERO);
  CHECK (getrlimit (RLIMIT_FSIZE, &old) == 0);
  lim = old;
  lim.rlim_cur = 8000;                /* below the index's 8040 bytes */
  signal (SIGXFSZ, SIG_IGN);
  CHECK (setrlimit (RLIMIT_FSIZE, &lim) == 0);
  CHECK (layer_sync (l) == -1);
  CHECK (setrlimit (RLIMIT_FSIZE, &old) == 0);
  CHECK (layer_block_state (l, 0) == LAYER_MISSING);
  CHECK (layer_block_state (l, 1) == LAYER_MISSING);
  CHECK (layer_block_state (l, 100) == LAYER_DATA);   /* durable before */
  CHECK_FAILS (layer_put_block (l, 0, buf), EIO, "failed");
  CHECK (layer_pending_bytes (l) == 0 && layer_sync (l) == 0);
  layer_counts (l, &present, &stored);
  CHECK (present == 200);
  layer_close (l);
  CHECK (present_of (fx.ldir, NULL) == 200);
  /* Opened again, the layer takes blocks as before. */
  l = open_at (fx.ldir, true);
  CHECK (l && layer_put_block (l, 0, buf) == 0 && layer_sync (l) == 0);
  layer_close (l);
  CHECK (present_of (fx.ldir, NULL) == 201);

  free (buf);
  fixture_close (&fx);
  rm_rf (dir);
}

/* More layers than the process may open files: readers open data files
 * on demand and keep only a bounded number open. */
static void
test_many_layers (void)
{
  enum { N = 300 };
  char *dir = make_tmpdir (), *path, *ddir;
  struct store *s;
  struct layer **ls = calloc (N, sizeof *ls);
  struct rlimit old, low;
  uint8_t *buf = malloc (CHAIN_BLOCK_SIZE), *got = malloc (CHAIN_BLOCK_SIZE);

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  s = store_open (path, true);
  CHECK (s && (ddir = disk_dir (s, DISK)));
  for (int i = 0; i < N; i++) {
    struct layer_meta m = sample_meta (CHAIN_BLOCK_SIZE, true);
    struct layer *l;
    snprintf (m.snapshot, sizeof m.snapshot, "%08x-2222-3333-4444-555555555555", i);
    l = layer_create (s, &m, NULL);
    CHECK (l);
    fill (buf, i);
    CHECK (layer_put_block (l, 0, buf) == 0 && layer_sync (l) == 0);
    layer_close (l);
  }
  CHECK (getrlimit (RLIMIT_NOFILE, &old) == 0);
  low = old;
  low.rlim_cur = 64;            /* the soft limit only, to restore it */
  CHECK (setrlimit (RLIMIT_NOFILE, &low) == 0);
  for (int i = 0; i < N; i++) {
    char *ldir;
    CHECK (asprintf (&ldir, "%s/%08x-2222-3333-4444-555555555555", ddir, i) > 0);
    ls[i] = open_at (ldir, false);
    CHECK (ls[i] != NULL);
    free (ldir);
  }
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < N; i++) {
      fill (buf, i);
      CHECK (layer_read_block (ls[i], 0, got) == 0);
      CHECK (memcmp (buf, got, CHAIN_BLOCK_SIZE) == 0);
    }
  for (int i = 0; i < N; i++)
    layer_close (ls[i]);
  CHECK (setrlimit (RLIMIT_NOFILE, &old) == 0);
  free (ls);
  free (buf);
  free (got);
  free (ddir);
  free (path);
  store_close (s);
  rm_rf (dir);
}

/* test_direct_writers: four threads fill every fourth run of 4 blocks. */
enum { DW_THREADS = 4, DW_RUN = 4, DW_BLOCKS = 256 };
struct dw {
  struct layer *l;
  int id;
};

static void *
direct_writer (void *arg)
{
  struct dw *w = arg;
  uint8_t *buf = aligned_alloc (4096, DW_RUN * (size_t) CHAIN_BLOCK_SIZE);

  CHECK (buf != NULL);
  for (uint64_t first = w->id * DW_RUN; first < DW_BLOCKS;
       first += DW_THREADS * DW_RUN) {
    for (unsigned k = 0; k < DW_RUN; k++)
      fill (buf + (size_t) k * CHAIN_BLOCK_SIZE, first + k);
    CHECK (layer_put_run (w->l, first, DW_RUN, buf) == 0);
  }
  free (buf);
  return NULL;
}

/* Page-aligned runs go to the data file with O_DIRECT, submitted one
 * at a time and in flight together (dio.h): every block lands where it
 * belongs, the file has the disk's length with only the data stored,
 * and where the file system takes O_DIRECT the writes went through
 * AIO. */
static void
test_direct_writers (void)
{
  char *dir = make_tmpdir (), *path, *ddir, *dpath;
  struct store *s;
  struct layer_meta m = sample_meta (DW_BLOCKS * (uint64_t) CHAIN_BLOCK_SIZE,
                                     true);
  struct layer *l;
  pthread_t t[DW_THREADS];
  struct dw w[DW_THREADS];
  uint8_t *want = malloc (CHAIN_BLOCK_SIZE), *got = malloc (CHAIN_BLOCK_SIZE);
  uint64_t before = dio_aio_writes ();
  struct stat st;

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  s = store_open (path, true);
  CHECK (s && (ddir = disk_dir (s, DISK)));
  l = layer_create (s, &m, NULL);
  CHECK (l != NULL);
  for (int i = 0; i < DW_THREADS; i++) {
    w[i] = (struct dw) { l, i };
    CHECK (pthread_create (&t[i], NULL, direct_writer, &w[i]) == 0);
  }
  for (int i = 0; i < DW_THREADS; i++)
    pthread_join (t[i], NULL);
  CHECK (layer_sync (l) == 0 && layer_complete (l));
  for (uint64_t b = 0; b < DW_BLOCKS; b++) {
    fill (want, b);
    CHECK (layer_read_block (l, b, got) == 0);
    CHECK (memcmp (want, got, CHAIN_BLOCK_SIZE) == 0);
  }
  CHECK (asprintf (&dpath, "%s/%s/data", ddir, SNAP) > 0);
  CHECK (stat (dpath, &st) == 0);
  CHECK ((uint64_t) st.st_size == DW_BLOCKS * (uint64_t) CHAIN_BLOCK_SIZE);
  /* Where the file system takes O_DIRECT, the store used it. */
  {
    int dfd = open (dpath, O_WRONLY | O_DIRECT);
    if (dfd >= 0)
      CHECK (dio_aio_writes () - before == DW_BLOCKS / DW_RUN);
    if (dfd >= 0)
      close (dfd);
  }
  layer_close (l);
  free (dpath);
  free (want);
  free (got);
  free (ddir);
  free (path);
  store_close (s);
  rm_rf (dir);
}

/* Snapshot uuid of layer I of test_manifest_copies. */
static void
nth_snap (char *out, int i)
{
  snprintf (out, UUID_LEN + 1, "%08x-2222-3333-4444-555555555555", i);
}

static size_t
lazy_points (struct store *s, size_t *skipped)
{
  struct catalog *c = catalog_load (s, CATALOG_LAZY);
  size_t n;

  CHECK (c && c->ndisks == 1);
  n = c->disks[0].npoints;
  *skipped = c->nskipped;
  catalog_free (c);
  return n;
}

/* The disk's manifests file: one copy per created layer, used by lazy
 * loads (a layer whose own manifest is gone still loads from its copy),
 * and never trusted past what it can prove: torn copies, copies of
 * removed layers and garbage fall back to the layers' own manifests. */
static void
test_manifest_copies (void)
{
  char *dir = make_tmpdir (), *path, *ddir, *mpath, *p;
  char snap[UUID_LEN + 1];
  struct store *s;
  size_t len, pos = 0, tlen, ncopies = 0, skipped;
  const char *text;
  char *buf;
  int fd;

  CHECK (asprintf (&path, "%s/s", dir) > 0);
  s = store_open (path, true);
  CHECK (s && (ddir = disk_dir (s, DISK)));
  CHECK (asprintf (&mpath, "%s/manifests", ddir) > 0);
  for (int i = 0; i < 3; i++) {
    struct layer_meta m = sample_meta (CHAIN_BLOCK_SIZE, true);
    nth_snap (m.snapshot, i);
    m.seq = i + 1;
    layer_close (layer_create (s, &m, NULL));
  }
  CHECK (mode_of (mpath) == 0600);
  CHECK ((buf = manifests_read (s, DISK, &len)) != NULL);
  while (manifests_next (buf, len, &pos, &text, &tlen)) {
    struct layer *l = layer_open_lazy_text (s, DISK, text, tlen);
    nth_snap (snap, ncopies++);
    CHECK (l && strcmp (l->meta.snapshot, snap) == 0
           && strstr (layer_where (l), snap) != NULL);
    layer_close (l);
  }
  CHECK (ncopies == 3);
  free (buf);

  /* Layer 1's own manifest gone: a lazy load takes the copy, a full
   * load (ls, verify) reads the files and reports the layer. */
  nth_snap (snap, 1);
  CHECK (asprintf (&p, "%s/%s/layer", ddir, snap) > 0);
  CHECK (unlink (p) == 0);
  free (p);
  CHECK (lazy_points (s, &skipped) == 3 && skipped == 0);
  {
    struct catalog *c = catalog_load (s, 0);
    CHECK (c && c->disks[0].npoints == 2 && c->nskipped == 1);
    catalog_free (c);
  }

  /* A torn last copy (layer 2), then a fourth layer appended after it:
   * layer 2 falls back to its manifest, layer 4's copy is intact. */
  CHECK (truncate (mpath, size_of (mpath) - 10) == 0);
  {
    struct layer_meta m = sample_meta (CHAIN_BLOCK_SIZE, true);
    nth_snap (m.snapshot, 3);
    m.seq = 4;
    layer_close (layer_create (s, &m, NULL));
  }
  nth_snap (snap, 3);
  CHECK (asprintf (&p, "%s/%s/layer", ddir, snap) > 0);
  CHECK (unlink (p) == 0);      /* so only its copy can load it */
  free (p);
  CHECK (lazy_points (s, &skipped) == 4 && skipped == 0);

  /* A removed layer's copy is not a layer; garbage is no copy. */
  nth_snap (snap, 0);
  CHECK (asprintf (&p, "%s/%s", ddir, snap) > 0);
  rm_rf (p);
  {
    static const char junk[] = "\ncbtfs-layer 1\nsnapshot x\n\0\n";
    fd = open (mpath, O_WRONLY | O_APPEND);
    CHECK (fd >= 0 && write (fd, junk, sizeof junk - 1) == sizeof junk - 1);
    close (fd);
  }
  CHECK (lazy_points (s, &skipped) == 3 && skipped == 0);

  /* A store older than the file: refresh writes copies of the layers
   * whose own manifests are good (layer 2; 1's and 3's are gone), and
   * then has nothing to add. */
  CHECK (unlink (mpath) == 0);
  CHECK (manifests_refresh (s, DISK) == 0);
  CHECK ((buf = manifests_read (s, DISK, &len)) != NULL);
  pos = ncopies = 0;
  while (manifests_next (buf, len, &pos, &text, &tlen))
    ncopies++;
  nth_snap (snap, 2);
  CHECK (ncopies == 1 && strstr (buf, snap) != NULL);
  free (buf);
  CHECK (asprintf (&p, "%s/%s/layer", ddir, snap) > 0);
  CHECK (unlink (p) == 0);      /* now only the new copy can load it */
  free (p);
  CHECK (lazy_points (s, &skipped) == 1 && skipped == 2);
  len = size_of (mpath);
  CHECK (manifests_refresh (s, DISK) == 0 && size_of (mpath) == (off_t) len);

  free (mpath);
  free (ddir);
  free (path);
  store_close (s);
  rm_rf (dir);
}

/* Verdicts: the newest line about a snapshot wins; torn and damaged
 * lines are skipped, and a line after a torn one is read. */
static void
test_verdicts (void)
{
  char *dir = make_tmpdir (), *path, *spath, *ddir;
  const char *other = "00000000-0000-0000-0000-000000000002";
  struct verdicts vs;
  struct store *s;
  int fd;

  CHECK (asprintf (&spath, "%s/s", dir) > 0);
  CHECK ((s = store_open (spath, true)) != NULL);
  ddir = disk_dir (s, DISK);
  CHECK (verdict_latest (s, DISK, SNAP) == VERDICT_NONE);
  CHECK (verdict_record (s, DISK, SNAP, VERDICT_DIFFERS) == 0);
  CHECK (verdict_record (s, DISK, other, VERDICT_MATCH) == 0);
  CHECK (verdict_latest (s, DISK, SNAP) == VERDICT_DIFFERS);
  CHECK (verdict_holds (VERDICT_DIFFERS) && !verdict_holds (VERDICT_MATCH));
  CHECK (asprintf (&path, "%s/verified", ddir) > 0);
  CHECK (mode_of (path) == 0600);
  /* A crash tore an append: the torn line is no verdict, the next
   * append starts a line of its own. */
  fd = open (path, O_WRONLY | O_APPEND);
  CHECK (fd >= 0 && write (fd, SNAP " 17 accep", 45) == 45);
  close (fd);
  CHECK (verdict_latest (s, DISK, SNAP) == VERDICT_DIFFERS);
  CHECK (verdict_record (s, DISK, SNAP, VERDICT_ACCEPTED) == 0);
  CHECK (verdict_latest (s, DISK, SNAP) == VERDICT_ACCEPTED);
  /* A flipped byte makes a line no verdict. */
  CHECK (verdict_record (s, DISK, SNAP, VERDICT_DAMAGED) == 0);
  scribble (path, size_of (path) - 20, 1);
  CHECK (verdicts_load (s, DISK, &vs) == 0 && vs.n == 2);
  CHECK (verdicts_of (&vs, SNAP) == VERDICT_ACCEPTED);
  CHECK (verdicts_of (&vs, other) == VERDICT_MATCH);
  verdicts_free (&vs);
  CHECK (verdict_record (s, DISK, "not-a-uuid", VERDICT_MATCH) == -1);
  /* The host's checksums: kept beside the verdicts, the newest wins,
   * and a snapshot may have one without a verdict. */
  {
    const char *third = "33333333-3333-3333-3333-333333333333";
    CHECK (verdict_record_md5 (s, DISK, SNAP,
                               "0123456789ABCDEF0123456789abcdef") == 0);
    CHECK (verdict_record_md5 (s, DISK, third,
                               "00000000000000000000000000000001") == 0);
    CHECK (verdict_record_md5 (s, DISK, third,
                               "ffffffffffffffffffffffffffffffff") == 0);
    CHECK_FAILS (verdict_record_md5 (s, DISK, third, "abc"), EINVAL, "md5");
    CHECK_FAILS (verdict_record_md5 (s, DISK, third,
                                     "0123456789abcdef0123456789abcdeg"),
                 EINVAL, "md5");
    CHECK (verdicts_load (s, DISK, &vs) == 0 && vs.n == 3);
    CHECK (verdicts_of (&vs, SNAP) == VERDICT_ACCEPTED);
    CHECK (verdicts_of (&vs, third) == VERDICT_NONE);
    for (size_t i = 0; i < vs.n; i++) {
      const struct verdict_entry *e = &vs.v[i];
      if (strcmp (e->snapshot, SNAP) == 0)
        CHECK (strcmp (e->md5, "0123456789abcdef0123456789abcdef") == 0
               && e->md5_time > 0);
      else if (strcmp (e->snapshot, third) == 0)
        CHECK (strcmp (e->md5, "ffffffffffffffffffffffffffffffff") == 0);
      else
        CHECK (e->md5[0] == '\0' && e->v == VERDICT_MATCH);
    }
    verdicts_free (&vs);
    /* A verdict after the checksum leaves the checksum. */
    CHECK (verdict_record (s, DISK, third, VERDICT_DIFFERS) == 0);
    CHECK (verdicts_load (s, DISK, &vs) == 0 && vs.n == 3);
    CHECK (verdicts_of (&vs, third) == VERDICT_DIFFERS);
    for (size_t i = 0; i < vs.n; i++)
      if (strcmp (vs.v[i].snapshot, third) == 0)
        CHECK (strcmp (vs.v[i].md5, "ffffffffffffffffffffffffffffffff") == 0);
    verdicts_free (&vs);
  }
  free (path);
  free (spath);
  free (ddir);
  store_close (s);
  rm_rf (dir);
}

/* The checksum table forgets keys without losing the others, however
 * their probe runs overlap (deletion moves later entries back). */
static void
test_sums_del (void)
{
  struct sums t = { 0 };
  uint8_t sum[SUM_LEN];
  uint64_t k, n = 5000, x = 12345;
  bool *gone = calloc (n, sizeof *gone);

  for (k = 0; k < n; k++) {
    memset (sum, (int) (k & 0xff), SUM_LEN);
    CHECK (sums_put (&t, k * 7, sum) == 0);
  }
  for (k = 0; k < n / 2; k++) {          /* a pseudo-random half */
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    uint64_t v = (x >> 33) % n;
    if (!gone[v]) {
      sums_del (&t, v * 7);
      gone[v] = true;
    }
  }
  sums_del (&t, 3);                      /* never there: no-op */
  for (k = 0; k < n; k++) {
    const uint8_t *got = sums_get (&t, k * 7);
    CHECK (gone[k] ? got == NULL : got != NULL && got[0] == (k & 0xff));
  }
  for (k = 0, x = 0; k < n; k++)
    x += !gone[k];
  CHECK (t.len == x);
  sums_free (&t);
  free (gone);
}

/* Run by tests/test-store-faults.py with DIR on a filesystem whose
 * writes fail with EIO while the file TRIGGER exists (nbdkit's error
 * filter under a loop device): the kernel's own fsync failure.  A
 * failed sync must give the block up rather than let a second fsync,
 * which succeeds, vouch for data that never reached the disk. */
static void
test_flaky_sync (const char *dir, const char *trigger)
{
  char *ldir, *dpath;
  struct layer_meta m = sample_meta (16 * (uint64_t) CHAIN_BLOCK_SIZE, true);
  uint8_t *mem = malloc (CHAIN_BLOCK_SIZE + 1), *buf = mem + 1;
  uint8_t *got = malloc (CHAIN_BLOCK_SIZE);
  struct fixture fx;
  struct layer *l;
  int fd;

  fixture_open (&fx, dir);
  ldir = fx.ldir;
  CHECK (asprintf (&dpath, "%s/data", ldir) > 0);
  l = layer_create (fx.s, &m, NULL);
  CHECK (l != NULL);
  fill (buf, 5);                /* unaligned: a buffered write */
  CHECK (layer_put_block (l, 5, buf) == 0);
  fd = open (trigger, O_WRONLY | O_CREAT, 0600);
  CHECK (fd >= 0 && close (fd) == 0);
  CHECK (layer_sync (l) == -1);
  CHECK (unlink (trigger) == 0);
  CHECK (layer_block_state (l, 5) == LAYER_MISSING);
  CHECK (layer_sync (l) == 0);  /* nothing left to vouch for */
  layer_close (l);
  CHECK (present_of (ldir, NULL) == 0);
  /* Opened again, the block is copied again and then reads back from
   * the disk, not from pages the kernel kept. */
  l = open_at (ldir, true);
  CHECK (l && layer_put_block (l, 5, buf) == 0 && layer_sync (l) == 0);
  layer_close (l);
  fd = open (dpath, O_RDONLY);
  CHECK (fd >= 0 && posix_fadvise (fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  close (fd);
  l = open_at (ldir, false);
  CHECK (l && layer_read_block (l, 5, got) == 0);
  CHECK (memcmp (got, buf, CHAIN_BLOCK_SIZE) == 0);
  layer_close (l);
  free (mem);
  free (got);
  free (dpath);
  fixture_close (&fx);
  printf ("flaky sync: ok\n");
}

int
main (int argc, char **argv)
{
  if (argc == 4 && strcmp (argv[1], "--flaky") == 0) {
    test_flaky_sync (argv[2], argv[3]);
    return 0;
  }
  test_manifest ();
  test_sums_del ();
  test_verdicts ();
  test_store_dir ();
  test_layer_fill ();
  test_delta_and_damage ();
  test_index_damage ();
  test_sync_failure ();
  test_create_visible_failure ();
  test_many_layers ();
  test_manifest_copies ();
  test_direct_writers ();
  return 0;
}
