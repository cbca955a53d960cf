/* cbtfs: reading a snapshot over NBD (libnbd).
 *
 * Thread model: see nbdsrc.h.  No locks here (but the once-only sweep
 * of dead processes' pin directories): a connection belongs to
 * the thread using it, and libnbd's error state is per thread, so
 * messages are copied out right after each failing call.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "nbdlimit.h"
#include "nbdsrc.h"
#include "targets.h"
#include "tlspin.h"

struct nbdsrc_conn {
  struct nbd_handle *h;
  char *label;                  /* "NBD address:port", for messages */
  const char *secret;           /* the export name, only while connecting */
  uint64_t size;
  struct nbdlimit *lim;         /* holds a slot of host in it, or NULL */
  char *host;
};

void
nbdsrc_target_clear (struct nbdsrc_target *t)
{
  free (t->address);
  if (t->exportname) {
    explicit_bzero (t->exportname, strlen (t->exportname));
    free (t->exportname);
  }
  free (t->cert);
  free (t->subject);
  memset (t, 0, sizeof *t);
}

int
nbdsrc_target_copy (struct nbdsrc_target *dst, const struct nbdsrc_target *src)
{
  *dst = (struct nbdsrc_target) { .port = src->port };
  if ((src->address && (dst->address = strdup (src->address)) == NULL)
      || (src->cert && (dst->cert = strdup (src->cert)) == NULL)
      || (src->exportname
          && (dst->exportname = strdup (src->exportname)) == NULL)
      || (src->subject && (dst->subject = strdup (src->subject)) == NULL)) {
    nbdsrc_target_clear (dst);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

/* Set err_* from libnbd's thread-local error, prefixed with LABEL.
 * libnbd may quote the export name ("server has no export named …"),
 * which embeds a session: SECRET (if any) is cut out of the message. */
static void
nbd_failed (const char *label, const char *what, const char *secret)
{
  int e = nbd_get_errno ();
  const char *msg = nbd_get_error ();
  char clean[1024];
  size_t n = 0, slen = secret ? strlen (secret) : 0;

  for (const char *p = msg ? msg : "failed"; *p && n < sizeof clean - 9;) {
    if (slen && strncmp (p, secret, slen) == 0) {
      memcpy (clean + n, "(hidden)", 8);
      n += 8;
      p += slen;
    }
    else
      clean[n++] = *p++;
  }
  clean[n] = '\0';
  err_set (e ? e : EIO, "%s: %s: %s", label, what, clean);
}

/* TCP connect to ADDRESS:PORT within TIMEOUT seconds; fd or -1. */
static int
tcp_connect (const char *label, const char *address, int port, int timeout)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_NUMERICSERV };
  struct addrinfo *res = NULL, *ai;
  char service[16];
  int fd = -1, err = 0, r;

  snprintf (service, sizeof service, "%d", port);
  r = getaddrinfo (address, service, &hints, &res);
  if (r != 0) {
    err_set (EHOSTUNREACH, "%s: cannot resolve: %s", label, gai_strerror (r));
    return -1;
  }
  for (ai = res; ai; ai = ai->ai_next) {
    struct pollfd pfd;
    socklen_t len = sizeof err;

    fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                 ai->ai_protocol);
    if (fd == -1) {
      err = errno;
      continue;
    }
    if (connect (fd, ai->ai_addr, ai->ai_addrlen) == -1
        && errno != EINPROGRESS) {
      err = errno;
      goto next;
    }
    pfd = (struct pollfd) { .fd = fd, .events = POLLOUT };
    r = poll (&pfd, 1, timeout * 1000);
    if (r == 0) {
      err = ETIMEDOUT;
      goto next;
    }
    if (r == -1 || getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
      err = errno;
      goto next;
    }
    if (err == 0) {
      int one = 1;

      /* libnbd drives the socket itself; give it a blocking one. */
      fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK);
      /* libnbd sends an option's header and its payload in separate TLS
       * records; under Nagle the second waits for the server's delayed
       * ACK, 40 ms per connection (and pipelined requests wait too). */
      if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
        setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      break;
    }
  next:
    close (fd);
    fd = -1;
  }
  freeaddrinfo (res);
  if (fd == -1)
    err_sys (err ? err : EHOSTUNREACH, "%s: cannot connect", label);
  return fd;
}

/* Pin directories are /tmp/cbtfs-nbd-PID-XXXXXX: a process killed
 * while it connects leaves its own behind, and the PID says whose. */
#define PIN_PREFIX "cbtfs-nbd-"

/* Whether the pin directory NAME (ST) is a gone process's: its pid is
 * no process's (a pid that lives again for another process keeps it:
 * it is only left, never wrongly removed), or, named by a cbtfs from
 * before pids were in the name, it is over an hour old (a connection
 * takes seconds). */
static bool
pin_gone (const char *name, const struct stat *st)
{
  const char *rest = name + strlen (PIN_PREFIX);
  char *end;
  long pid;

  errno = 0;
  pid = strtol (rest, &end, 10);
  if (errno == 0 && pid > 0 && *end == '-')
    return kill ((pid_t) pid, 0) == -1 && errno == ESRCH;
  return strlen (rest) == 6 && time (NULL) - st->st_mtime > 3600;
}

/* Remove the pin directories of this user's processes that are gone.
 * Once per process. */
static void
sweep_pins (void)
{
  DIR *d = opendir ("/tmp");
  struct dirent *e;

  if (d == NULL)
    return;
  while ((e = readdir (d)) != NULL) {
    char path[PATH_MAX];
    struct stat st;
    if (strncmp (e->d_name, PIN_PREFIX, strlen (PIN_PREFIX)) != 0
        || fstatat (dirfd (d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1
        || !S_ISDIR (st.st_mode) || st.st_uid != geteuid ()
        || !pin_gone (e->d_name, &st))
      continue;
    snprintf (path, sizeof path, "/tmp/%s/ca-cert.pem", e->d_name);
    unlink (path);
    snprintf (path, sizeof path, "/tmp/%s", e->d_name);
    rmdir (path);
  }
  closedir (d);
}

static pthread_once_t sweep_once = PTHREAD_ONCE_INIT;

/* Write CERT as DIR/ca-cert.pem in a fresh private directory: libnbd
 * takes trust anchors only from a directory.  Returns the dir.  (With
 * libnbd 1.14 the file only spares loading the system's CAs: nothing
 * is verified against it; tlspin does the check.) */
static char *
pin_dir (const char *label, const char *cert)
{
  char tmpl[64], *dir, *file = NULL;
  int fd;

  pthread_once (&sweep_once, sweep_pins);
  snprintf (tmpl, sizeof tmpl, "/tmp/" PIN_PREFIX "%ld-XXXXXX",
            (long) getpid ());
  dir = mkdtemp (tmpl);
  if (dir == NULL || asprintf (&file, "%s/ca-cert.pem", dir) == -1) {
    err_sys (errno, "%s: temporary certificate directory", label);
    if (dir)
      rmdir (dir);
    return NULL;
  }
  fd = open (file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1 || full_write (fd, cert, strlen (cert)) == -1) {
    err_sys (errno, "%s: write %s", label, file);
    if (fd >= 0)
      close (fd);
    unlink (file);
    rmdir (dir);
    free (file);
    return NULL;
  }
  close (fd);
  free (file);
  return strdup (dir);
}

static void
unpin_dir (char *dir)
{
  char *file;

  if (dir == NULL)
    return;
  if (asprintf (&file, "%s/ca-cert.pem", dir) != -1) {
    unlink (file);
    free (file);
  }
  rmdir (dir);
  free (dir);
}

/* Run the handle's state machine until PRED holds, within TIMEOUT s. */
static int
wait_until (struct nbdsrc_conn *c, int (*pred) (struct nbd_handle *, int64_t),
            int64_t arg, int timeout, const char *what)
{
  double deadline = now_monotonic () + timeout;

  for (;;) {
    int r = pred (c->h, arg);
    double left;

    if (r == -1) {
      nbd_failed (c->label, what, c->secret);
      return -1;
    }
    if (r == 1)
      return 0;
    left = deadline - now_monotonic ();
    if (left <= 0) {
      err_set (ETIMEDOUT, "%s: %s: no answer within %d s", c->label, what,
               timeout);
      return -1;
    }
    if (nbd_poll (c->h, (int) (left * 1000) + 1) == -1) {
      nbd_failed (c->label, what, c->secret);
      return -1;
    }
  }
}

static int
connected (struct nbd_handle *h, int64_t unused)
{
  (void) unused;
  if (nbd_aio_is_ready (h))
    return 1;
  if (nbd_aio_is_closed (h) || nbd_aio_is_dead (h))
    return -1;
  return 0;
}

static int
closed (struct nbd_handle *h, int64_t unused)
{
  (void) unused;
  return nbd_aio_is_closed (h) || nbd_aio_is_dead (h);
}

static int
completed (struct nbd_handle *h, int64_t cookie)
{
  return nbd_aio_command_completed (h, cookie);
}

/* Run the handshake on FD (given to libnbd), the calling thread's TLS
 * being pinned (tlspin_arm); disarm the pin, and when it is why the
 * handshake failed, say so in our words.  0 or -1 with err_*
 * (EKEYREJECTED: not the server XAPI named). */
static int
handshake_pinned (struct nbdsrc_conn *c, int fd, int timeout)
{
  int r;

  /* libnbd owns the socket from here, also when this fails: it closes
   * it on every failure path of nbd_aio_connect_socket once the handle
   * is fresh (lib/connect.c), and a second close here could close a
   * descriptor another thread has just been given. */
  if (nbd_aio_connect_socket (c->h, fd) == -1) {
    nbd_failed (c->label, "handshake", c->secret);
    r = -1;
  }
  else
    r = wait_until (c, connected, 0, timeout, "handshake");
  switch (tlspin_disarm ()) {
  case TLSPIN_MATCHED:
    return r;
  case TLSPIN_UNCHECKED:
    if (r == -1)
      return -1;                /* it failed before TLS was up: libnbd's word */
    /* tlspin_active said yes, yet the handshake did not reach it. */
    err_set (EKEYREJECTED, "%s: TLS came up without the server's "
             "certificate being checked; refused", c->label);
    return -1;
  case TLSPIN_NO_CERT:
    err_set (EKEYREJECTED, "%s: the server showed no certificate; refused "
             "before sending the export name", c->label);
    return -1;
  case TLSPIN_REFUSED:
    err_set (EKEYREJECTED, "%s: the server's certificate fails the check "
             "against the one XAPI gave for this snapshot; refused before "
             "sending the export name", c->label);
    return -1;
  case TLSPIN_MISMATCH:
  default:
    err_set (EKEYREJECTED, "%s: the server's certificate is not the one "
             "XAPI gave for this snapshot (another key); refused before "
             "sending the export name", c->label);
    return -1;
  }
}

struct nbdsrc_conn *
nbdsrc_connect (const struct nbdsrc_target *t, int timeout)
{
  return nbdsrc_connect_shared (t, timeout, NULL);
}

struct nbdsrc_conn *
nbdsrc_connect_shared (const struct nbdsrc_target *t, int timeout,
                       struct nbdlimit *lim)
{
  struct nbdsrc_conn *c = calloc (1, sizeof *c);
  char *dir = NULL;
  int fd = -1, e;
  int64_t size;

  if (c == NULL)
    return NULL;
  if (asprintf (&c->label, "NBD %s:%d", t->address, t->port) == -1) {
    c->label = NULL;
    goto err;
  }
  /* No certificate would mean trusting whoever answers (libnbd checks
   * none on a socket of ours), and the export name carries a session. */
  if (t->cert == NULL || t->cert[0] == '\0') {
    err_set (EKEYREJECTED, "%s: XAPI gave no certificate to check the "
             "server's against; refused", c->label);
    goto err;
  }
  if (!tlspin_active ()) {
    err_set (ENOTSUP, "%s: this build of cbtfs cannot check the server's "
             "certificate (gnutls_handshake is not its own); refused",
             c->label);
    goto err;
  }
  /* Armed from here on: a certificate we cannot read never connects. */
  if (tlspin_arm (t->cert) == -1) {
    err_prefix ("%s", c->label);
    goto err;
  }
  c->h = nbd_create ();
  if (c->h == NULL) {
    nbd_failed ("NBD", "create handle", NULL);
    goto err;
  }
  c->secret = t->exportname;
  /* LIBNBD_DEBUG=1 in the environment would print the export name. */
  nbd_set_debug (c->h, false);
  if ((dir = pin_dir (c->label, t->cert)) == NULL)
    goto err;
  /* xapi-nbd refuses everything but EXPORT_NAME; asking for structured
   * replies would only cost a round trip. */
  if (nbd_set_tls (c->h, LIBNBD_TLS_REQUIRE) == -1
      || nbd_set_tls_certificates (c->h, dir) == -1
      || nbd_set_tls_verify_peer (c->h, true) == -1
      || nbd_set_request_structured_replies (c->h, false) == -1
      || nbd_set_pread_initialize (c->h, false) == -1
      || nbd_set_export_name (c->h, t->exportname) == -1) {
    nbd_failed (c->label, "configure", c->secret);
    goto err;
  }
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
  /* libnbd >= 1.22 checks the chain (to the pinned certificate alone)
   * and the name XAPI says it is issued for, whatever address we
   * reach; tlspin's check stays on top, so every libnbd behaves alike.
   * Compiled out with Debian 12's libnbd 1.14. */
  if (t->subject && t->subject[0]
      && nbd_set_tls_hostname (c->h, t->subject) == -1) {
    nbd_failed (c->label, "configure", c->secret);
    goto err;
  }
#endif
  /* A slot of the host's budget before its socket: xapi-nbd counts a
   * connection from accept on, and refuses one over its limit. */
  if (lim) {
    if ((c->host = strdup (t->address)) == NULL) {
      err_set (ENOMEM, "out of memory");
      goto err;
    }
    if (nbdlimit_acquire (lim, c->host) == -1)
      goto err;
    c->lim = lim;
  }
  fd = tcp_connect (c->label, t->address, t->port, timeout);
  if (fd == -1 || handshake_pinned (c, fd, timeout) == -1)
    goto err;
  size = nbd_get_size (c->h);
  if (size < 0) {
    nbd_failed (c->label, "export size", c->secret);
    goto err;
  }
  c->size = size;
  c->secret = NULL;
  unpin_dir (dir);
  return c;

 err:
  /* Callers tell answers no retry changes by errno: keep it. */
  e = errno;
  tlspin_disarm ();             /* if a failure left it armed */
  unpin_dir (dir);
  nbdsrc_close (c);
  errno = e;
  return NULL;
}

void
nbdsrc_known_init (struct nbdsrc_known *k)
{
  memset (k, 0, sizeof *k);
  pthread_mutex_init (&k->lock, NULL);
}

void
nbdsrc_known_clear (struct nbdsrc_known *k)
{
  nbdsrc_target_clear (&k->t);
  pthread_mutex_destroy (&k->lock);
}

/* K's details of SNAPSHOT into *T (caller clears), asked of TG now
 * when FRESH or none are known; *ASKED says whether they were.  0 or
 * -1 with err_*. */
static int
known_get (struct nbdsrc_known *k, const struct chain_targets *tg,
           const char *snapshot, bool fresh, struct nbdsrc_target *t,
           bool *asked)
{
  int r = 0;

  pthread_mutex_lock (&k->lock);
  *asked = !k->have || fresh;
  if (*asked) {
    nbdsrc_target_clear (&k->t);
    r = chain_targets_lookup (tg, snapshot, &k->t);
    k->have = r == 0;
  }
  if (r == 0)
    r = nbdsrc_target_copy (t, &k->t);
  pthread_mutex_unlock (&k->lock);
  return r;
}

struct nbdsrc_conn *
nbdsrc_connect_known (struct nbdsrc_known *k, const struct chain_targets *tg,
                      const char *snapshot, int timeout, struct nbdlimit *lim,
                      bool *ask_failed)
{
  struct nbdsrc_conn *c = NULL;
  bool asked = false;

  if (ask_failed)
    *ask_failed = false;
  for (int fresh = 0; fresh < 2 && c == NULL && !asked; fresh++) {
    struct nbdsrc_target t = { 0 };

    if (known_get (k, tg, snapshot, fresh, &t, &asked) == -1) {
      if (ask_failed)
        *ask_failed = true;
      return NULL;
    }
    c = nbdsrc_connect_shared (&t, timeout, lim);
    nbdsrc_target_clear (&t);
    if (c == NULL && (errno == EKEYREJECTED || errno == ENOTSUP))
      return NULL;              /* asking again cannot help */
  }
  return c;
}

uint64_t
nbdsrc_size (struct nbdsrc_conn *c)
{
  return c->size;
}

int
nbdsrc_check_size (struct nbdsrc_conn *c, const char *snapshot, uint64_t expect)
{
  if (c->size == expect)
    return 0;
  err_set (EPROTO, "NBD export of snapshot %s is %" PRIu64 " bytes but XAPI "
           "says its virtual size is %" PRIu64, snapshot, c->size, expect);
  return -1;
}

int64_t
nbdsrc_start_read (struct nbdsrc_conn *c, void *buf, size_t count,
                   uint64_t offset)
{
  int64_t cookie;

  if (offset % 512 || count % 512 || offset > c->size
      || count > c->size - offset) {
    err_set (EINVAL, "%s: read of %zu at %" PRIu64 " is unaligned or past "
             "the end", c->label, count, offset);
    return -1;
  }
  if (c->lim)
    nbdlimit_take (c->lim, count);     /* --limit-rate: may sleep */
  cookie = nbd_aio_pread (c->h, buf, count, offset, NBD_NULL_COMPLETION, 0);
  if (cookie == -1) {
    char what[64];
    snprintf (what, sizeof what, "read at offset %" PRIu64, offset);
    nbd_failed (c->label, what, c->secret);
  }
  return cookie;
}

static int
any_completed (struct nbd_handle *h, int64_t unused)
{
  (void) unused;
  if (nbd_aio_peek_command_completed (h) > 0)
    return 1;
  if (nbd_aio_in_flight (h) <= 0) {
    /* Nothing left to wait for: the connection died under us. */
    return nbd_aio_is_ready (h) ? 1 : -1;
  }
  return 0;
}

int64_t
nbdsrc_wait_any (struct nbdsrc_conn *c, int timeout)
{
  int64_t cookie;

  if (wait_until (c, any_completed, 0, timeout, "read") == -1)
    return -1;
  cookie = nbd_aio_peek_command_completed (c->h);
  if (cookie <= 0) {
    err_set (EIO, "%s: read: nothing in flight", c->label);
    return -1;
  }
  if (nbd_aio_command_completed (c->h, cookie) == -1) {
    nbd_failed (c->label, "read", c->secret);
    return -1;
  }
  return cookie;
}

int
nbdsrc_pread (struct nbdsrc_conn *c, void *buf, size_t count,
              uint64_t offset, int timeout)
{
  char what[64];
  int64_t cookie = nbdsrc_start_read (c, buf, count, offset);

  if (cookie == -1)
    return -1;
  snprintf (what, sizeof what, "read at offset %" PRIu64, offset);
  return wait_until (c, completed, cookie, timeout, what);
}

void
nbdsrc_close (struct nbdsrc_conn *c)
{
  if (c == NULL)
    return;
  if (c->h) {
    /* A polite NBD_CMD_DISC when we can, waiting briefly for the server
     * to hang up (so its VBD is gone before a data_destroy); closing
     * the socket is enough otherwise. */
    if (nbd_aio_is_ready (c->h) && nbd_aio_disconnect (c->h, 0) == 0) {
      char saved[1024];
      int e = errno;
      /* Closing must not replace the message of the failure that led
       * here. */
      snprintf (saved, sizeof saved, "%s", err_get ());
      wait_until (c, closed, 0, 2, "disconnect");
      err_set (e, "%s", saved);
    }
    nbd_close (c->h);
  }
  /* After the socket is closed: the slot is free for another. */
  if (c->lim)
    nbdlimit_release (c->lim, c->host);
  free (c->host);
  free (c->label);
  free (c);
}
