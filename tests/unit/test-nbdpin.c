/* Unit test: NBD connections are pinned to the certificate XAPI gives.
 *
 * nbdkit serves, with TLS, certificate A, then B (the same names,
 * another key), then A' (A's key in a new certificate, as a host that
 * renews its certificate): nbdsrc_connect given A must read from A and
 * A' and refuse B before it sends the export name (nbdkit's log shows
 * no connection getting past TLS), saying so with EKEYREJECTED in one
 * line that names the server and never the export.  No certificate, or
 * one that cannot be read, is refused without connecting.  Pins are
 * per thread.  Certificates are made here with openssl; without nbdkit
 * or openssl the test says SKIP and passes.  Run as test-nbdpin-hidden
 * (see hidden below), it checks that a build whose gnutls_handshake is
 * not the one the libraries call refuses to connect at all.
 *
 * Thread model: the main thread, and one more for the per-thread case.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chain/nbdsrc.h"
#include "chain/tlspin.h"
#include "common/error.h"
#include "common/util.h"
#include "check.h"

#define SIZE (1 << 20)
#define SECRET "/vdi?session_id=OpaqueRef:pin-test"

static char *tmp;

/* Run shell command FMT…; its exit status. */
__attribute__ ((__format__ (__printf__, 1, 2)))
static int
sh (const char *fmt, ...)
{
  char *cmd;
  va_list ap;
  int r;

  va_start (ap, fmt);
  CHECK (vasprintf (&cmd, fmt, ap) != -1);
  va_end (ap);
  r = system (cmd);
  free (cmd);
  return r;
}

/* A self-signed certificate for nbd.example in TMP/NAME/, laid out as
 * nbdkit --tls-certificates wants; with KEY_OF, that directory's key. */
static void
make_cert (const char *name, const char *key_of)
{
  CHECK (sh ("mkdir -p %s/%s", tmp, name) == 0);
  if (key_of)
    CHECK (sh ("cp %s/%s/server-key.pem %s/%s/ && openssl req -x509 -new "
               "-key %s/%s/server-key.pem -out %s/%s/server-cert.pem -days 30 "
               "-subj /CN=nbd.example -addext subjectAltName=DNS:nbd.example "
               "2>/dev/null", tmp, key_of, tmp, name, tmp, name, tmp, name)
           == 0);
  else
    CHECK (sh ("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
               "-nodes -keyout %s/%s/server-key.pem -out %s/%s/server-cert.pem "
               "-days 30 -subj /CN=nbd.example "
               "-addext subjectAltName=DNS:nbd.example 2>/dev/null",
               tmp, name, tmp, name) == 0);
  CHECK (sh ("cp %s/%s/server-cert.pem %s/%s/ca-cert.pem", tmp, name, tmp,
             name) == 0);
}

static char *
pem_of (const char *name)
{
  char *path, *pem;
  size_t len;

  CHECK (asprintf (&path, "%s/%s/server-cert.pem", tmp, name) != -1);
  pem = read_file (path, 1 << 20, &len);
  CHECK (pem);
  free (path);
  return pem;
}

struct server {
  pid_t pid;
  int port;
  char *log;
};

/* nbdkit serving the pattern plugin with TLS from TMP/NAME, on a
 * loopback port it is handed already listening (socket activation:
 * nothing to wait for, no port to race for). */
static struct server
serve (const char *name)
{
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  struct server s = { 0 };
  char *dir;
  int fd = socket (AF_INET, SOCK_STREAM, 0);

  CHECK (fd >= 0);
  CHECK (bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0);
  CHECK (listen (fd, 8) == 0);
  CHECK (getsockname (fd, (struct sockaddr *) &sa, &len) == 0);
  s.port = ntohs (sa.sin_port);
  CHECK (asprintf (&dir, "--tls-certificates=%s/%s", tmp, name) != -1);
  CHECK (asprintf (&s.log, "%s/%s-%d.log", tmp, name, s.port) != -1);
  s.pid = fork ();
  CHECK (s.pid != -1);
  if (s.pid == 0) {
    char pid[32], *logfile;
    int errfd;

    /* Its complaints about refused handshakes are expected: keep them
     * out of the test's output, beside its log. */
    if (asprintf (&logfile, "%s.stderr", s.log) != -1
        && (errfd = open (logfile, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0)
      dup2 (errfd, 2);
    if (asprintf (&logfile, "logfile=%s", s.log) == -1)
      _exit (127);
    if (fd != 3) {
      dup2 (fd, 3);
      close (fd);
    }
    snprintf (pid, sizeof pid, "%d", (int) getpid ());
    setenv ("LISTEN_PID", pid, 1);
    setenv ("LISTEN_FDS", "1", 1);
    execlp ("nbdkit", "nbdkit", "-f", "-r", "--exit-with-parent",
            "--tls=require", dir, "--filter=log", "pattern", "1M", logfile,
            (char *) NULL);
    _exit (127);
  }
  close (fd);
  free (dir);
  return s;
}

static void
stop (struct server *s)
{
  kill (s->pid, SIGTERM);
  waitpid (s->pid, NULL, 0);
  free (s->log);
}

/* How often nbdkit's log of S says WHAT. */
static int
logged (const struct server *s, const char *what)
{
  size_t len;
  char *text = read_file (s->log, 1 << 20, &len);
  int n = 0;

  for (char *p = text; p && (p = strstr (p, what)); p++)
    n++;
  free (text);
  return n;
}

static struct nbdsrc_target
target (int port, const char *cert)
{
  struct nbdsrc_target t = { .port = port };

  t.address = strdup ("127.0.0.1");
  t.cert = cert ? strdup (cert) : NULL;
  t.subject = strdup ("nbd.example");
  t.exportname = strdup (SECRET);
  return t;
}

/* Connect to PORT pinned to CERT and read the pattern at 64 KiB. */
static void
connects (int port, const char *cert)
{
  struct nbdsrc_target t = target (port, cert);
  struct nbdsrc_conn *c = nbdsrc_connect (&t, 10);
  uint64_t buf[512 / 8];

  if (c == NULL)
    fprintf (stderr, "nbdsrc_connect: %s\n", err_get ());
  CHECK (c);
  CHECK (nbdsrc_size (c) == SIZE);
  CHECK (nbdsrc_pread (c, buf, sizeof buf, 65536, 10) == 0);
  CHECK (be64toh (buf[3]) == 65536 + 24);
  nbdsrc_close (c);
  nbdsrc_target_clear (&t);
}

/* Connecting to PORT pinned to CERT fails with EKEYREJECTED and a
 * message containing WANT, never the export name. */
static void
refused (int port, const char *cert, const char *want)
{
  struct nbdsrc_target t = target (port, cert);
  struct nbdsrc_conn *c;

  errno = 0;
  c = nbdsrc_connect (&t, 10);
  if (c || errno != EKEYREJECTED || !strstr (err_get (), want)
      || !strstr (err_get (), "certificate"))
    fprintf (stderr, "want EKEYREJECTED and \"%s\": errno %d, \"%s\"\n",
             want, errno, err_get ());
  CHECK (c == NULL && errno == EKEYREJECTED);
  CHECK (strstr (err_get (), want) && strstr (err_get (), "certificate"));
  CHECK (strstr (err_get (), "OpaqueRef") == NULL);
  CHECK (strchr (err_get (), '\n') == NULL);
  nbdsrc_target_clear (&t);
}

struct other {
  int port;
  const char *cert;
};

static void *
other_thread (void *arg)
{
  struct other *o = arg;

  connects (o->port, o->cert);
  return NULL;
}

/* test-nbdpin-hidden: the same test linked so that the executable does
 * not export gnutls_handshake (tests/unit/hide-handshake.map), as a
 * build that lost the interposition would be.  Nothing can be checked
 * then, so nothing may even connect (port 1 is closed: "cannot
 * connect" would mean it tried). */
static int
hidden (void)
{
  struct nbdsrc_target t = target (1, "-----BEGIN CERTIFICATE-----\n");

  CHECK (!tlspin_active ());
  errno = 0;
  CHECK (nbdsrc_connect (&t, 10) == NULL);
  if (errno != ENOTSUP || !strstr (err_get (), "cannot check"))
    fprintf (stderr, "want ENOTSUP: errno %d, \"%s\"\n", errno, err_get ());
  CHECK (errno == ENOTSUP && strstr (err_get (), "cannot check"));
  nbdsrc_target_clear (&t);
  printf ("test-nbdpin-hidden: ok\n");
  return 0;
}

int
main (int argc, char **argv)
{
  struct server s;
  char *a, *b, *label;
  pthread_t th;
  struct other o;
  size_t n = argc > 0 ? strlen (argv[0]) : 0;

  if (n >= 7 && strcmp (argv[0] + n - 7, "-hidden") == 0)
    return hidden ();
  if (sh ("nbdkit --version >/dev/null 2>&1") != 0
      || sh ("openssl version >/dev/null 2>&1") != 0) {
    printf ("SKIP: test-nbdpin needs nbdkit and openssl\n");
    return 0;
  }
  CHECK (tlspin_active ());
  CHECK (tlspin_disarm () == TLSPIN_UNCHECKED);
  tmp = make_tmpdir ();
  make_cert ("a", NULL);
  make_cert ("b", NULL);
  make_cert ("renewed", "a");
  a = pem_of ("a");
  b = pem_of ("b");
  CHECK (strcmp (a, b) != 0);

  /* No certificate, or an unreadable one: refused before connecting
   * (port 1 is closed: "cannot connect" would mean it tried). */
  refused (1, NULL, "127.0.0.1:1");
  refused (1, "", "127.0.0.1:1");
  refused (1, "-----BEGIN CERTIFICATE-----\nnot one\n"
           "-----END CERTIFICATE-----\n", "127.0.0.1:1");

  /* The right server, and then its certificate renewed with its key. */
  s = serve ("a");
  connects (s.port, a);
  CHECK (logged (&s, "Connect export=\"" SECRET "\"") == 1);
  stop (&s);
  s = serve ("renewed");
  connects (s.port, a);
  stop (&s);

  /* The impostor: it completes TLS, yet gets no export name. */
  s = serve ("b");
  CHECK (asprintf (&label, "NBD 127.0.0.1:%d: ", s.port) != -1);
  refused (s.port, a, label);
  refused (s.port, a, "refused before sending the export name");
  CHECK (logged (&s, " Preconnect id=") == 2);
  CHECK (logged (&s, "Connect export") == 0);
  /* The pin is the calling thread's: one armed here for B does not
   * stop another thread reading from a server holding A. */
  connects (s.port, b);
  stop (&s);
  s = serve ("a");
  CHECK (tlspin_arm (b) == 0);
  o = (struct other) { s.port, a };
  CHECK (pthread_create (&th, NULL, other_thread, &o) == 0);
  CHECK (pthread_join (th, NULL) == 0);
  CHECK (tlspin_disarm () == TLSPIN_UNCHECKED);
  stop (&s);

  free (label);
  free (a);
  free (b);
  rm_rf (tmp);
  printf ("test-nbdpin: ok\n");
  return 0;
}
