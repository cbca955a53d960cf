/* Unit test: diagnostics (common/log.c).
 *
 * What log.h promises: one "cbtfs: …" line per message on stderr
 * (captured here through a pipe dup2'd over fd 2), errors and warnings
 * at every verbosity, info from 1 and debug from 2, errno kept, lines
 * from several threads never interleaved (one write each, cut to fit
 * its buffer), and after log_use_syslog nothing on stderr but the same
 * messages to syslog with their priorities.  The syslog part runs in a
 * child with its own mount namespace, where /dev/log is a socket of
 * this test's; without the privilege to make one it says SKIP.
 *
 * Thread model: the main thread; LOGGERS more and a reader for the
 * interleaving case.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/log.h"

/* log.c's line buffer: a line is at most LINE_MAX_ - 1 bytes with its
 * newline. */
#define LINE_MAX_ 2048

static int saved_stderr = -1, cap_rd = -1;

/* Send fd 2 into a pipe until capture_end.  Nothing may CHECK in
 * between: a failure's message would go into the pipe. */
static void
capture_begin (void)
{
  int p[2];

  CHECK (pipe2 (p, O_CLOEXEC) == 0);
  CHECK ((saved_stderr = dup (STDERR_FILENO)) >= 0);
  CHECK (dup2 (p[1], STDERR_FILENO) == STDERR_FILENO);
  close (p[1]);
  cap_rd = p[0];
}

/* Give fd 2 back (closing the pipe's last write end), then read what
 * was written into BUF (SIZE with its NUL); its length. */
static size_t
capture_end (char *buf, size_t size)
{
  size_t n = 0;
  ssize_t r;

  CHECK (dup2 (saved_stderr, STDERR_FILENO) == STDERR_FILENO);
  close (saved_stderr);
  while (n < size - 1 && (r = read (cap_rd, buf + n, size - 1 - n)) > 0)
    n += r;
  close (cap_rd);
  buf[n] = '\0';
  return n;
}

static void
all_levels (void)
{
  log_error ("e %d", 1);
  log_warn ("w %s", "2");
  log_info ("i");
  log_debug ("d");
}

static void
test_levels (void)
{
  char out[512];

  /* The default, before anything sets it, is 1. */
  capture_begin ();
  all_levels ();
  capture_end (out, sizeof out);
  CHECK (strcmp (out, "cbtfs: e 1\ncbtfs: warning: w 2\ncbtfs: i\n") == 0);
  CHECK (!log_debugging ());

  log_set_verbose (0);
  capture_begin ();
  all_levels ();
  capture_end (out, sizeof out);
  CHECK (strcmp (out, "cbtfs: e 1\ncbtfs: warning: w 2\n") == 0);
  CHECK (!log_debugging ());

  log_set_verbose (2);
  capture_begin ();
  all_levels ();
  capture_end (out, sizeof out);
  CHECK (strcmp (out, "cbtfs: e 1\ncbtfs: warning: w 2\ncbtfs: i\n"
                 "cbtfs: debug: d\n") == 0);
  CHECK (log_debugging ());

  log_set_verbose (1);
  capture_begin ();
  all_levels ();
  capture_end (out, sizeof out);
  CHECK (strcmp (out, "cbtfs: e 1\ncbtfs: warning: w 2\ncbtfs: i\n") == 0);
}

/* Logging never changes errno: callers log, then return -1 with it.
 * Not even when stderr is closed and the write fails. */
static void
test_errno (void)
{
  char out[512], want[256];
  int fd;

  capture_begin ();
  errno = EXDEV;
  log_error ("%m");                     /* formatted with the caller's */
  int e1 = errno;
  log_warn ("w");
  int e2 = errno;
  capture_end (out, sizeof out);
  snprintf (want, sizeof want, "cbtfs: %s\ncbtfs: warning: w\n",
            strerror (EXDEV));
  CHECK (strcmp (out, want) == 0);
  CHECK (e1 == EXDEV && e2 == EXDEV);

  CHECK ((fd = dup (STDERR_FILENO)) >= 0);
  close (STDERR_FILENO);
  errno = E2BIG;
  log_error ("nowhere to go");
  e1 = errno;
  CHECK (dup2 (fd, STDERR_FILENO) == STDERR_FILENO);
  close (fd);
  CHECK (e1 == E2BIG);
}

/* A message that does not fit is cut, and its line still ends in a
 * newline: the next message starts a line of its own. */
static void
test_long (void)
{
  const size_t prefix = strlen ("cbtfs: ");
  char *msg = malloc (3 * LINE_MAX_), *out = malloc (4 * LINE_MAX_);
  size_t fits = LINE_MAX_ - 2 - prefix;         /* room left for the \n */
  size_t n;

  CHECK (msg && out);
  memset (msg, 'x', 3 * LINE_MAX_ - 1);
  msg[3 * LINE_MAX_ - 1] = '\0';

  /* Exactly the longest that fits: whole. */
  msg[fits] = '\0';
  capture_begin ();
  log_error ("%s", msg);
  n = capture_end (out, 4 * LINE_MAX_);
  CHECK (n == LINE_MAX_ - 1 && out[n - 1] == '\n');
  CHECK (strncmp (out, "cbtfs: ", prefix) == 0);
  CHECK (strspn (out + prefix, "x") == fits);
  msg[fits] = 'x';

  /* One more, and far more: cut to the same line. */
  for (size_t len = fits + 1; len < 3 * LINE_MAX_; len += 2 * LINE_MAX_) {
    msg[len] = '\0';
    capture_begin ();
    log_warn ("%s", msg);
    log_info ("next");
    n = capture_end (out, 4 * LINE_MAX_);
    msg[len] = 'x';
    CHECK (n == LINE_MAX_ - 1 + strlen ("cbtfs: next\n"));
    CHECK (strncmp (out, "cbtfs: warning: xxx", 19) == 0);
    CHECK (out[LINE_MAX_ - 2] == '\n');
    CHECK (strspn (out + prefix + 9, "x") == LINE_MAX_ - 2 - prefix - 9);
    CHECK (strcmp (out + LINE_MAX_ - 1, "cbtfs: next\n") == 0);
  }
  free (msg);
  free (out);
}

#define LOGGERS 8
#define MESSAGES 200

/* Lines of up to ~1500 bytes: long enough that a message written in
 * more than one piece would be split by the others'. */
static size_t
pad_len (int t, int m)
{
  return (t * 131 + m * 977) % 1500;
}

static void *
logger (void *arg)
{
  int t = (int) (intptr_t) arg;
  char pad[1500];

  for (int m = 0; m < MESSAGES; m++) {
    size_t n = pad_len (t, m);
    memset (pad, 'a' + t, n);
    pad[n] = '\0';
    log_info ("thread %d message %d %s", t, m, pad);
  }
  return NULL;
}

struct sink {
  int fd;
  char *buf;
  size_t len, cap;
};

static void *
reader (void *arg)
{
  struct sink *s = arg;
  ssize_t r;

  while ((r = read (s->fd, s->buf + s->len, s->cap - 1 - s->len)) > 0)
    s->len += r;
  s->buf[s->len] = '\0';
  return NULL;
}

static void
test_threads (void)
{
  static bool seen[LOGGERS][MESSAGES];
  struct sink s = { .cap = LOGGERS * MESSAGES * 1600 };
  pthread_t rd, lg[LOGGERS];
  char *line, *next;
  int lines = 0;

  CHECK ((s.buf = malloc (s.cap)) != NULL);
  capture_begin ();
  s.fd = cap_rd;
  CHECK (pthread_create (&rd, NULL, reader, &s) == 0);
  for (int t = 0; t < LOGGERS; t++)
    CHECK (pthread_create (&lg[t], NULL, logger, (void *) (intptr_t) t) == 0);
  for (int t = 0; t < LOGGERS; t++)
    CHECK (pthread_join (lg[t], NULL) == 0);
  CHECK (dup2 (saved_stderr, STDERR_FILENO) == STDERR_FILENO);  /* EOF */
  close (saved_stderr);
  CHECK (pthread_join (rd, NULL) == 0);
  close (cap_rd);

  for (line = s.buf; *line; line = next + 1) {
    int t, m, off;
    size_t n;

    CHECK ((next = strchr (line, '\n')) != NULL);
    *next = '\0';
    CHECK (sscanf (line, "cbtfs: thread %d message %d %n", &t, &m, &off) == 2);
    CHECK (t >= 0 && t < LOGGERS && m >= 0 && m < MESSAGES && !seen[t][m]);
    seen[t][m] = true;
    n = pad_len (t, m);
    CHECK (strlen (line + off) == n);
    for (size_t i = 0; i < n; i++)
      CHECK (line[off + i] == 'a' + t);
    lines++;
  }
  CHECK (lines == LOGGERS * MESSAGES);
  free (s.buf);
}

/* The daemon's route: in a child, with a socket of ours at /dev/log. */
static void
syslog_child (void)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  char out[256], dgram[4096], want[64], *body;
  const char *expect[][2] = {
    { "<28>", "warning: w 1" },                 /* LOG_DAEMON | LOG_WARNING */
    { "<27>", "e" },                            /* LOG_ERR */
    { "<30>", "i" },                            /* LOG_INFO */
    { "<28>", NULL },                           /* the long one */
    { "<31>", "debug: d" },                     /* LOG_DEBUG, at 2 */
  };
  char *msg = malloc (3 * LINE_MAX_);
  int s, e;

  /* Containers may allow the one and not the other (an LSM refusing
   * mount).  valgrind checks the strings even where the kernel ignores
   * them. */
  if (unshare (CLONE_NEWNS) == -1
      || mount ("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == -1
      || mount ("cbtfs-test-log", "/dev", "tmpfs", 0, "mode=0755") == -1)
    _exit (77);
  CHECK ((s = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0);
  strcpy (sa.sun_path, "/dev/log");
  CHECK (bind (s, (struct sockaddr *) &sa, sizeof sa) == 0);
  CHECK (msg != NULL);
  memset (msg, 'y', 3 * LINE_MAX_ - 1);
  msg[3 * LINE_MAX_ - 1] = '\0';

  log_set_verbose (1);
  capture_begin ();
  log_use_syslog ();
  errno = ENOTTY;
  log_warn ("w %d", 1);
  log_error ("e");
  log_info ("i");
  log_debug ("not at verbosity 1");
  log_warn ("%s", msg);
  log_set_verbose (2);
  log_debug ("d");
  e = errno;
  capture_end (out, sizeof out);
  CHECK (strcmp (out, "") == 0);                /* nothing on stderr */
  CHECK (e == ENOTTY);

  snprintf (want, sizeof want, "cbtfs[%d]: ", (int) getpid ());
  for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
    ssize_t n = recv (s, dgram, sizeof dgram - 1, MSG_DONTWAIT);

    CHECK (n > 0);
    dgram[n] = '\0';
    CHECK (strncmp (dgram, expect[i][0], 4) == 0);
    CHECK ((body = strstr (dgram, want)) != NULL);
    body += strlen (want);
    if (expect[i][1])
      CHECK (strcmp (body, expect[i][1]) == 0);
    else                                        /* cut to log.c's buffer */
      CHECK (strncmp (body, "warning: yyy", 12) == 0
             && strlen (body) == strlen ("warning: ") + LINE_MAX_ - 1);
  }
  CHECK (recv (s, dgram, sizeof dgram, MSG_DONTWAIT) == -1
         && errno == EAGAIN);                   /* nothing else sent */
  free (msg);
  _exit (0);
}

static void
test_syslog (void)
{
  pid_t pid;
  int status;

  fflush (NULL);
  CHECK ((pid = fork ()) >= 0);
  if (pid == 0)
    syslog_child ();
  CHECK (waitpid (pid, &status, 0) == pid && WIFEXITED (status));
  if (WEXITSTATUS (status) == 77)
    printf ("test-log: syslog: SKIP (no mount namespace of its own)\n");
  else
    CHECK (WEXITSTATUS (status) == 0);
}

int
main (void)
{
  test_levels ();
  test_errno ();
  test_long ();
  test_threads ();
  test_syslog ();
  return 0;
}
