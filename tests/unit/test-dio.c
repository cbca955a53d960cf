/* Unit test: O_DIRECT writes through Linux AIO (common/dio.c).
 *
 * What dio.h promises: writes from many threads to one O_DIRECT file
 * each land where they belong (including one that extends the file),
 * through AIO where it is to be had; each thread has its own AIO
 * context, destroyed when the thread exits; where AIO is not available
 * the write is made with pwrite under LOCK, and where a write comes
 * back short the rest is; errors come back as -1 with errno.  Alignment
 * is the file system's business: a misaligned write to a file system
 * that needs alignment fails with EINVAL, and on tmpfs (/dev/shm),
 * which needs none, unaligned writes and tails land like any other.
 *
 * "AIO not available" is made with a seccomp filter that fails io_setup
 * with ENOSYS, in one thread only; where seccomp cannot be used that
 * case says SKIP.  So does everything direct, on a file system that
 * refuses O_DIRECT.
 *
 * Thread model: the main thread, WRITERS writers, and one thread at a
 * time for the cases that need a fresh one.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/dio.h"
#include "common/util.h"

#define CHUNK (64 * 1024)
#define CHUNKS 64
#define WRITERS 8

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void
pattern (uint8_t *p, size_t len, uint64_t off)
{
  for (size_t i = 0; i < len; i++)
    p[i] = (uint8_t) ((off + i) * 7 + ((off + i) >> 12));
}

static void *
aligned_buf (size_t len)
{
  void *p;

  CHECK (posix_memalign (&p, 4096, len) == 0);
  return p;
}

/* The file at PATH is LEN bytes, all of them pattern's (reading with a
 * descriptor of its own, through the page cache). */
static bool
file_is_pattern (const char *path, uint64_t len)
{
  uint8_t *got = malloc (len), *want = malloc (len);
  struct stat st;
  bool ok;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  CHECK (fd >= 0 && got && want);
  CHECK (fstat (fd, &st) == 0);
  pattern (want, len, 0);
  ok = (uint64_t) st.st_size == len
    && full_pread (fd, got, len, 0) == (ssize_t) len
    && memcmp (got, want, len) == 0;
  close (fd);
  free (got);
  free (want);
  return ok;
}

static bool
lock_is_free (void)
{
  if (pthread_mutex_trylock (&lock) != 0)
    return false;
  pthread_mutex_unlock (&lock);
  return true;
}

/* The offset alignment statx reports for direct I/O to PATH (0: none
 * reported). */
static unsigned
dio_offset_align (const char *path)
{
  struct statx sx;

  if (statx (AT_FDCWD, path, 0, STATX_DIOALIGN, &sx) == -1
      || !(sx.stx_mask & STATX_DIOALIGN))
    return 0;
  return sx.stx_dio_offset_align;
}

/* The AIO contexts this process has: each is a ring mapped as
 * "/[aio] (deleted)". */
static int
aio_rings (void)
{
  FILE *f = fopen ("/proc/self/maps", "re");
  char line[512];
  int n = 0;

  CHECK (f != NULL);
  while (fgets (line, sizeof line, f))
    if (strstr (line, "/[aio]"))
      n++;
  fclose (f);
  return n;
}

struct writer {
  int fd, id;
};

/* Chunks ID, ID + WRITERS, …, each from a buffer of this thread's. */
static void *
writer (void *arg)
{
  const struct writer *w = arg;
  uint8_t *buf = aligned_buf (CHUNK);

  for (int c = w->id; c < CHUNKS; c += WRITERS) {
    pattern (buf, CHUNK, (uint64_t) c * CHUNK);
    CHECK (dio_pwrite (w->fd, buf, CHUNK, (off_t) c * CHUNK, &lock) == 0);
  }
  free (buf);
  return NULL;
}

/* Overlapping writers on a file given its length first (as layer.c
 * does), then a tail shorter than a chunk that extends it. */
static void
test_writers (const char *path, int fd, unsigned align)
{
  const size_t tail = 3 * (align ? align : 4096);
  const uint64_t len = (uint64_t) CHUNKS * CHUNK;
  uint64_t before = dio_aio_writes ();
  struct writer w[WRITERS];
  pthread_t tid[WRITERS];
  uint8_t *buf = aligned_buf (tail);

  CHECK (ftruncate (fd, len) == 0);
  for (int i = 0; i < WRITERS; i++) {
    w[i] = (struct writer) { fd, i };
    CHECK (pthread_create (&tid[i], NULL, writer, &w[i]) == 0);
  }
  for (int i = 0; i < WRITERS; i++)
    CHECK (pthread_join (tid[i], NULL) == 0);
  pattern (buf, tail, len);
  CHECK (dio_pwrite (fd, buf, tail, len, &lock) == 0);
  CHECK (file_is_pattern (path, len + tail));
  CHECK (dio_aio_writes () - before == CHUNKS + 1);     /* all through AIO */
  CHECK (lock_is_free ());
  free (buf);
}

/* Where the file system needs alignment, a write at a misaligned offset
 * or of a misaligned length fails with EINVAL and changes nothing.
 * (Memory alignment is not tried: Linux may take a misaligned buffer
 * even where statx asks for one aligned.) */
static void
test_misaligned (const char *path, int fd, unsigned align)
{
  struct stat st;
  uint8_t *buf = aligned_buf (2 * align);
  uint64_t before = dio_aio_writes ();

  CHECK (fstat (fd, &st) == 0);
  memset (buf, 0xee, 2 * align);
  errno = 0;
  CHECK (dio_pwrite (fd, buf, align, 1, &lock) == -1 && errno == EINVAL);
  errno = 0;
  CHECK (dio_pwrite (fd, buf, align - 1, 0, &lock) == -1 && errno == EINVAL);
  CHECK (dio_aio_writes () == before);
  CHECK (lock_is_free ());
  CHECK (file_is_pattern (path, st.st_size));
  free (buf);
}

/* A write that AIO cuts short (at the file-size limit): the rest is
 * tried with pwrite, whose error comes back. */
static void
test_short (const char *path, int fd, unsigned align)
{
  const size_t a = align ? align : 4096;
  struct rlimit rl, small;
  struct stat st;
  uint8_t *buf = aligned_buf (3 * a);
  uint64_t before = dio_aio_writes ();

  CHECK (fstat (fd, &st) == 0);
  pattern (buf, 3 * a, st.st_size);
  signal (SIGXFSZ, SIG_IGN);
  CHECK (getrlimit (RLIMIT_FSIZE, &rl) == 0);
  small = (struct rlimit) { st.st_size + a, rl.rlim_max };
  CHECK (setrlimit (RLIMIT_FSIZE, &small) == 0);
  errno = 0;
  int r = dio_pwrite (fd, buf, 3 * a, st.st_size, &lock);
  int e = errno;
  CHECK (setrlimit (RLIMIT_FSIZE, &rl) == 0);
  CHECK (r == -1 && e == EFBIG);
  CHECK (dio_aio_writes () - before == 1);      /* the short one */
  CHECK (file_is_pattern (path, st.st_size + a));
  CHECK (lock_is_free ());
  free (buf);
}

struct fresh {
  int fd;
  off_t off;
  const uint8_t *buf;
  size_t len;
  int result;
  bool done;
  bool no_aio;                  /* install the filter first */
  bool filtered;                /* it was installed */
  pthread_barrier_t *hold;      /* wait here twice before exiting */
};

/* Fail io_setup with ENOSYS in the calling thread (and none other). */
static bool
deny_io_setup (void)
{
#if defined (__x86_64__)
  const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined (__aarch64__)
  const unsigned arch = AUDIT_ARCH_AARCH64;
#else
  const unsigned arch = 0;
#endif
  struct sock_filter f[] = {
    BPF_STMT (BPF_LD | BPF_W | BPF_ABS, offsetof (struct seccomp_data, arch)),
    BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
    BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT (BPF_LD | BPF_W | BPF_ABS, offsetof (struct seccomp_data, nr)),
    BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, SYS_io_setup, 0, 1),
    BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { sizeof f / sizeof f[0], f };

  return arch != 0
    && prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    && prctl (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

static void *
fresh_thread (void *arg)
{
  struct fresh *t = arg;

  if (t->no_aio && !(t->filtered = deny_io_setup ()))
    return NULL;
  t->result = dio_pwrite (t->fd, t->buf, t->len, t->off, &lock);
  __atomic_store_n (&t->done, true, __ATOMIC_RELEASE);
  if (t->hold) {
    pthread_barrier_wait (t->hold);             /* wrote */
    pthread_barrier_wait (t->hold);             /* counted: may exit */
  }
  return NULL;
}

/* Without AIO the write is still made, with pwrite, under LOCK: while
 * this thread holds LOCK it does not finish. */
static void
test_no_aio (const char *path, int fd, unsigned align)
{
  const size_t a = align ? align : 4096;
  const struct timespec pause = { 0, 50 * 1000000 };
  struct stat st;
  uint8_t *buf = aligned_buf (2 * a);
  uint64_t before = dio_aio_writes ();
  struct fresh t = { .fd = fd, .buf = buf, .len = 2 * a, .no_aio = true };
  pthread_t tid;

  CHECK (fstat (fd, &st) == 0);
  t.off = st.st_size;
  pattern (buf, 2 * a, st.st_size);
  pthread_mutex_lock (&lock);
  CHECK (pthread_create (&tid, NULL, fresh_thread, &t) == 0);
  nanosleep (&pause, NULL);
  CHECK (!__atomic_load_n (&t.done, __ATOMIC_ACQUIRE));
  pthread_mutex_unlock (&lock);
  CHECK (pthread_join (tid, NULL) == 0);
  if (!t.filtered) {
    printf ("test-dio: without AIO: SKIP (no seccomp filter)\n");
    free (buf);
    return;
  }
  CHECK (t.done && t.result == 0);
  CHECK (dio_aio_writes () == before);          /* not through AIO */
  CHECK (file_is_pattern (path, st.st_size + 2 * a));
  free (buf);
}

/* Each thread its own context, destroyed when it exits. */
static void
test_contexts (int fd, unsigned align)
{
  const size_t a = align ? align : 4096;
  enum { N = 16 };
  pthread_barrier_t hold;
  struct fresh t[N];
  pthread_t tid[N];
  uint8_t *buf = aligned_buf (a);
  int rings = aio_rings ();

  pattern (buf, a, 0);
  CHECK (pthread_barrier_init (&hold, NULL, N + 1) == 0);
  for (int i = 0; i < N; i++) {
    t[i] = (struct fresh) { .fd = fd, .buf = buf, .len = a, .hold = &hold };
    CHECK (pthread_create (&tid[i], NULL, fresh_thread, &t[i]) == 0);
  }
  pthread_barrier_wait (&hold);                 /* all wrote, none exited */
  CHECK (aio_rings () == rings + N);
  pthread_barrier_wait (&hold);
  for (int i = 0; i < N; i++) {
    CHECK (pthread_join (tid[i], NULL) == 0);
    CHECK (t[i].result == 0);
  }
  CHECK (aio_rings () == rings);
  pthread_barrier_destroy (&hold);
  free (buf);
}

/* tmpfs takes O_DIRECT (Linux 6.6 on) without alignment: unaligned
 * buffers, offsets and lengths, and a one-byte tail, land. */
static void
test_tmpfs (void)
{
  char dir[] = "/dev/shm/cbtfs-unit-XXXXXX";
  char *path;
  uint8_t *src = malloc (20000);
  const struct { off_t off; size_t len; } w[] = {
    { 4096, 4096 }, { 3, 1000 }, { 0, 3 }, { 1003, 3093 }, { 8192, 1 },
    { 8193, 11807 },
  };
  uint64_t before = dio_aio_writes ();
  int fd;

  if (mkdtemp (dir) == NULL) {
    printf ("test-dio: tmpfs: SKIP (no /dev/shm)\n");
    free (src);
    return;
  }
  CHECK (src && asprintf (&path, "%s/data", dir) > 0);
  fd = open (path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd == -1 && errno == EINVAL) {
    printf ("test-dio: tmpfs takes no O_DIRECT here; written without it\n");
    fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  }
  CHECK (fd >= 0);
  pattern (src, 20000, 0);
  for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
    /* The buffer at SRC + OFF is as unaligned as the offset. */
    CHECK (dio_pwrite (fd, src + w[i].off, w[i].len, w[i].off, &lock) == 0);
  CHECK (dio_aio_writes () - before == sizeof w / sizeof w[0]);
  CHECK (file_is_pattern (path, 20000));
  CHECK (lock_is_free ());
  close (fd);
  unlink (path);
  rmdir (dir);
  free (path);
  free (src);
}

/* Errors come back as -1 with errno, whether AIO refuses the write
 * (and pwrite is tried) or makes it and fails. */
static void
test_errors (const char *dir)
{
  uint8_t *buf = aligned_buf (4096);
  char *path;
  int fd;

  memset (buf, 0, 4096);
  errno = 0;
  CHECK (dio_pwrite (-1, buf, 4096, 0, &lock) == -1 && errno == EBADF);
  CHECK (asprintf (&path, "%s/readonly", dir) > 0);
  CHECK ((fd = open (path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600)) >= 0);
  errno = 0;
  CHECK (dio_pwrite (fd, buf, 4096, 0, &lock) == -1 && errno == EBADF);
  CHECK (lock_is_free ());
  close (fd);
  free (path);
  free (buf);
}

int
main (void)
{
  char *dir = make_tmpdir (), *path;
  unsigned align;
  int fd;

  CHECK (asprintf (&path, "%s/data", dir) > 0);
  fd = open (path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd == -1 && errno == EINVAL)
    printf ("test-dio: %s: SKIP (no O_DIRECT)\n", dir);
  else {
    CHECK (fd >= 0);
    align = dio_offset_align (path);
    test_writers (path, fd, align);
    if (align > 1)
      test_misaligned (path, fd, align);
    test_short (path, fd, align);
    test_no_aio (path, fd, align);
    test_contexts (fd, align);
    close (fd);
  }
  test_tmpfs ();
  test_errors (dir);
  free (path);
  rm_rf (dir);
  return 0;
}
