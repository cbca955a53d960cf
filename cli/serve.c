/* cbtfs serve: points of a store as read-only NBD exports.
 *
 * The server is nbdkit with nbdkit-cbtfs-plugin.so (serve/): TLS,
 * multi-conn, block status and the protocol are nbdkit's.  cbtfs first
 * checks what it can say in one line (options, the address, the store,
 * the points, the host's password and certificate), then becomes
 * nbdkit (exec), in the foreground: the process an admin or systemd
 * started is the server, until SIGTERM or SIGINT.
 *
 * Thread model: single-threaded (the catalog loads with threads of its
 * own, joined before it returns); no thread survives the exec.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../chain/catalog.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../engine/points.h"
#include "../xapi/api.h"
#include "cbtfs-config.h"       /* made by the Makefile in $(BUILD) */
#include "cli.h"

/* Where nbdkit serves unless told otherwise: loopback only. */
#define SERVE_DEFAULT_ADDR "127.0.0.1"
#define SERVE_DEFAULT_PORT "10809"
#define PLUGIN_NAME "nbdkit-cbtfs-plugin.so"

/* Where nbdkit-cbtfs-plugin.so is: $CBTFS_NBDKIT_PLUGIN, else beside
 * this binary (build/cbtfs), else in build/ beside it (./cbtfs at the
 * top of the tree), else in ../lib/cbtfs/ from it (an installed tree,
 * wherever it was copied: `make install DESTDIR=`), else in the
 * PLUGINDIR `make install` was built for.  Malloc'd, or NULL with
 * err_*. */
static char *
serve_plugin_path (void)
{
  const char *env = getenv ("CBTFS_NBDKIT_PLUGIN");
  CLEANUP_FREE char *exe = realpath ("/proc/self/exe", NULL);
  static const char *const beside[] = { "", "build/", "../lib/cbtfs/" };
  char *p;

  if (env && env[0])
    return strdup (env);
  if (exe == NULL) {
    err_sys (errno, "/proc/self/exe");
    return NULL;
  }
  *strrchr (exe, '/') = '\0';
  for (size_t i = 0; i < sizeof beside / sizeof beside[0]; i++) {
    if (asprintf (&p, "%s/%s" PLUGIN_NAME, exe, beside[i]) == -1)
      return NULL;
    if (access (p, R_OK) == 0)
      return p;
    free (p);
  }
  if (access (CBTFS_PLUGINDIR "/" PLUGIN_NAME, R_OK) == 0)
    return strdup (CBTFS_PLUGINDIR "/" PLUGIN_NAME);
  err_set (ENOENT, "cannot find %s beside %s or in %s (set "
           "CBTFS_NBDKIT_PLUGIN)", PLUGIN_NAME, exe, CBTFS_PLUGINDIR);
  return NULL;
}

/* Split ADDR:PORT or [ADDR]:PORT (IPv6) into HOST and PORT (pointers
 * into ARG, which is changed); ADDR must be numeric.  *LOOPBACK says
 * whether it is 127.0.0.0/8, ::1 or ::ffff:127.x.  0, or -1 after
 * printing why. */
static int
parse_listen (char *arg, const char **host, const char **port,
              bool *loopback)
{
  char *colon, *end;
  unsigned char a[16];
  long n;

  if (arg[0] == '[') {
    char *close = strchr (arg, ']');
    if (close == NULL || close[1] != ':')
      goto bad;
    *close = '\0';
    *host = arg + 1;
    colon = close + 1;
  }
  else {
    colon = strrchr (arg, ':');
    if (colon == NULL || colon != strchr (arg, ':'))
      goto bad;
    *colon = '\0';
    *host = arg;
  }
  *port = colon + 1;
  n = strtol (*port, &end, 10);
  if (*end || end == *port || n < 1 || n > 65535)
    goto bad;
  if (inet_pton (AF_INET, *host, a) == 1)
    *loopback = a[0] == 127;
  else if (inet_pton (AF_INET6, *host, a) == 1) {
    static const unsigned char one[16] = { [15] = 1 };
    static const unsigned char v4[12] = { [10] = 0xff, [11] = 0xff };
    *loopback = memcmp (a, one, 16) == 0
      || (memcmp (a, v4, 12) == 0 && a[12] == 127);
  }
  else
    goto bad;
  return 0;
 bad:
  cli_refuse ("--listen: expected ADDRESS:PORT or [IPV6-ADDRESS]:PORT with "
              "a numeric address and a port 1-65535");
  return -1;
}

/* Each POINT as its snapshot uuid, checked against the store's
 * catalog, into UUIDS (NPOINTS slots, uuids copied); with no POINT,
 * check that the store has a point at all.  0, or -1 with err_*. */
static int
resolve_points (const char *store, char *const *points, size_t npoints,
                char (*uuids)[UUID_LEN + 1])
{
  struct catalog *cat = engine_catalog (store, CATALOG_LAZY | CATALOG_SHOWN);
  size_t total = 0;
  int r = 0;

  if (cat == NULL)
    return -1;
  for (size_t i = 0; i < cat->ndisks; i++)
    total += cat->disks[i].npoints;
  for (size_t i = 0; i < npoints && r == 0; i++) {
    struct catalog_point *p = engine_point_find (cat, points[i], NULL);
    if (p == NULL) {
      err_set (ENOENT, "no point %s in the store %s", points[i], store);
      r = -1;
    }
    else
      memcpy (uuids[i], layer_meta (p->layer)->snapshot, UUID_LEN + 1);
  }
  if (r == 0 && total == 0) {
    err_set (ENOENT, "the store %s holds no point in time to serve", store);
    r = -1;
  }
  catalog_free (cat);
  return r;
}

/* nbdkit's arguments, growing. */
struct argv {
  char **v;
  size_t n;
};

static int
add (struct argv *a, const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 2, 3)));

static int
add (struct argv *a, const char *fmt, ...)
{
  va_list ap;
  char **v = realloc (a->v, (a->n + 2) * sizeof *v);
  int r;

  if (v == NULL)
    return -1;
  a->v = v;
  va_start (ap, fmt);
  r = vasprintf (&v[a->n], fmt, ap);
  va_end (ap);
  if (r == -1)
    return -1;
  v[++a->n] = NULL;
  return 0;
}

static void
argv_free (struct argv *a)
{
  for (size_t i = 0; i < a->n; i++)
    free (a->v[i]);
  free (a->v);
}

struct serve_opts {
  const char *store;            /* realpath */
  const char *unix_path;
  const char *host, *port;
  const char *tls_dir;          /* realpath, or NULL */
  const char *pidfile;
  const struct engine_server *so;       /* server is NULL without --server */
};

/* The nbdkit command line for O serving the points UUIDS; 0 or -1 on
 * ENOMEM. */
static int
nbdkit_args (struct argv *a, const struct serve_opts *o, const char *plugin,
             char (*uuids)[UUID_LEN + 1], size_t npoints)
{
  /* -f: the server is the process that was started (systemd, a shell);
   * -r: nothing is ever written through NBD. */
  if (add (a, "nbdkit") || add (a, "-f") || add (a, "-r"))
    return -1;
  if (o->unix_path ? add (a, "--unix=%s", o->unix_path)
      : add (a, "--ipaddr=%s", o->host) || add (a, "--port=%s", o->port))
    return -1;
  if (o->tls_dir && (add (a, "--tls=require")
                     || add (a, "--tls-certificates=%s", o->tls_dir)))
    return -1;
  if (o->pidfile && add (a, "--pidfile=%s", o->pidfile))
    return -1;
  if (add (a, "%s", plugin) || add (a, "store=%s", o->store))
    return -1;
  for (size_t i = 0; i < npoints; i++)
    if (add (a, "point=%s", uuids[i]))
      return -1;
  if (o->so->server
      && (add (a, "server=%s", o->so->server)
          || add (a, "user=%s", o->so->user)
          || add (a, "password-file=%s", o->so->password_file)
          || (o->so->ca_file && add (a, "ca-file=%s", o->so->ca_file))
          || add (a, "timeout=%ld", o->so->timeout)))
    return -1;
  return 0;
}

/* Log in once, as a mount does, so that a wrong password or an
 * untrusted certificate stops serve now rather than fail reads later. */
static int
check_server (const struct engine_server *so)
{
  struct engine_creds *creds;
  int r;

  if (xapi_global_init () == -1)
    return -1;
  creds = engine_creds_new (so);
  r = creds ? cli_check_server (creds) : -1;
  engine_creds_free (creds);
  xapi_global_cleanup ();
  return r;
}

/* Lazy fetches pin the host's NBD certificate by defining
 * gnutls_handshake (chain/tlspin.h), which works only where that
 * definition comes before GnuTLS's in the process.  nbdkit links
 * GnuTLS itself, ahead of any plugin it dlopens, so the plugin is
 * preloaded: then the dynamic linker binds libnbd's calls (and
 * nbdkit's own, which pass straight through) to it, and nbdkit's
 * dlopen of the same file finds it loaded.  Without this the plugin
 * refuses to fetch (tlspin_active), never fetches unchecked. */
static int
preload (const char *plugin)
{
  const char *old = getenv ("LD_PRELOAD");
  CLEANUP_FREE char *v = NULL;

  /* The variable's separators. */
  if (strpbrk (plugin, " :")) {
    err_set (EINVAL, "cannot preload %s (a space or ':' in its path)",
             plugin);
    return -1;
  }
  /* After what was there: a sanitizer's runtime must stay first. */
  if (asprintf (&v, "%s%s%s", old ? old : "", old && old[0] ? " " : "",
                plugin) == -1) {
    v = NULL;
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (setenv ("LD_PRELOAD", v, 1) == -1) {
    err_sys (errno, "setenv");
    return -1;
  }
  return 0;
}

/* Paths nbdkit is given must not depend on its working directory. */
static int
absolute (const char **path, char **keep)
{
  if (*path == NULL)
    return 0;
  *keep = realpath (*path, NULL);
  if (*keep == NULL) {
    err_sys (errno, "%s", *path);
    err_set_class (ERR_CONFIG);         /* a file an option names */
    return -1;
  }
  *path = *keep;
  return 0;
}

int
cmd_serve (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "listen", required_argument, NULL, 'L' },
    { "unix", required_argument, NULL, 'U' },
    { "tls-certificates", required_argument, NULL, 'T' },
    { "pidfile", required_argument, NULL, 'P' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct serve_opts o = { .host = SERVE_DEFAULT_ADDR,
                          .port = SERVE_DEFAULT_PORT, .so = &so };
  CLEANUP_FREE char *store = NULL, *tls = NULL, *pw = NULL, *ca = NULL;
  CLEANUP_FREE char *plugin = NULL, *listen = NULL;
  CLEANUP_FREE char (*uuids)[UUID_LEN + 1] = NULL;
  struct argv a = { NULL, 0 };
  const char *listen_arg = NULL;
  bool loopback = true;
  size_t npoints;
  int c, r;

  if (cli_config (&argc, &argv, "h", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "h", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'L':
      free (listen);
      listen_arg = optarg;
      listen = strdup (optarg);
      if (listen == NULL
          || parse_listen (listen, &o.host, &o.port, &loopback) == -1)
        return 2;
      break;
    case 'U': o.unix_path = optarg; break;
    case 'T': o.tls_dir = optarg; break;
    case 'P': o.pidfile = optarg; break;
    case 'h': return cli_help ("serve");
    default: return cli_usage ("serve");
    }
  }
  if (optind >= argc)
    return cli_usage ("serve");
  if (listen && o.unix_path)
    return cli_refuse ("--listen and --unix exclude each other");
  /* Anyone who reaches the port reads every byte served. */
  if (!loopback && o.tls_dir == NULL)
    return cli_refuse ("--listen %s: serving beyond this machine needs TLS "
                       "(--tls-certificates DIR)", listen_arg);
  if (so.server == NULL && (so.password_file || so.ca_file))
    return cli_refuse ("--password-file and --ca-file need --server");
  if (so.server && so.password_file == NULL)
    return cli_refuse ("--server needs --password-file");

  if (cli_store_is_remote (argv[optind]) && cli_s3_default_cache () == -1)
    return cli_fail ();
  store = cli_store_is_remote (argv[optind]) ? strdup (argv[optind])
    : realpath (argv[optind], NULL);
  if (store == NULL) {
    err_sys (errno, "%s", argv[optind]);
    err_set_class (ERR_CONFIG);         /* the STORE given */
    return cli_fail ();
  }
  o.store = store;
  if (absolute (&o.tls_dir, &tls) == -1
      || absolute (&so.password_file, &pw) == -1
      || absolute (&so.ca_file, &ca) == -1)
    return cli_fail ();
  npoints = argc - optind - 1;
  uuids = calloc (npoints ? npoints : 1, sizeof *uuids);
  if (uuids == NULL
      || resolve_points (store, argv + optind + 1, npoints, uuids) == -1
      || (so.server && check_server (&so) == -1)
      || (plugin = serve_plugin_path ()) == NULL)
    return cli_fail ();
  if (nbdkit_args (&a, &o, plugin, uuids, npoints) == -1) {
    argv_free (&a);
    err_set (ENOMEM, "out of memory");
    return cli_fail ();
  }
  if (so.server && preload (plugin) == -1)
    return cli_fail ();
  fflush (NULL);
  execvp (a.v[0], a.v);
  err_sys (errno, "cannot run nbdkit (Debian's nbdkit package)");
  argv_free (&a);
  return cli_fail ();
}
