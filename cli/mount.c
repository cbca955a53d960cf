/* cbtfs mount: serve a store read-only through FUSE.
 *
 * With --server, blocks a lazy or unfinished layer lacks are fetched
 * from their snapshot on the host and kept in the store.  The XAPI
 * session is opened on first need in the serving process (after the
 * fork), and re-opened by xapi_call when it expires.
 *
 * Thread model: FUSE threads may ask for connection details at once;
 * lazy.lock serialises them over the one XAPI session.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../chain/catalog.h"
#include "../chain/store/store.h"
#include "../chain/fetch.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../fs/fs.h"
#include "../xapi/api.h"
#include "cli.h"

struct lazy {
  pthread_mutex_t lock;
  struct server_opts so;
  xapi_session *xs;             /* NULL until first needed */
};

static int
mount_target (void *opaque, const char *snapshot, struct nbdsrc_target *t)
{
  struct lazy *z = opaque;
  CLEANUP_FREE char *ref = NULL;
  SCOPED_LOCK (&z->lock);

  if (z->xs == NULL && (z->xs = cli_login (&z->so)) == NULL)
    return -1;
  ref = xapi_vdi_by_uuid (z->xs, snapshot);
  if (ref == NULL)
    return -1;
  return cli_nbd_target (z->xs, ref, snapshot, t);
}

/* Try the server once before detaching, so a wrong password or an
 * untrusted certificate stops the mount with one clear line; a host
 * that is merely unreachable now is only a warning. */
static int
check_server (const struct server_opts *so)
{
  xapi_session *xs = cli_login (so);

  if (xs) {
    xapi_logout (xs);
    return 0;
  }
  if (errno == EACCES || errno == EINVAL || errno == ENOENT)
    return -1;
  log_warn ("%s; blocks not in the store will fail with EIO until the host "
            "can be reached", err_get ());
  return 0;
}

/* Refuse a mount point that is not a directory, in our words rather
 * than libfuse's. */
static int
check_mountpoint (const char *path)
{
  struct stat st;

  if (stat (path, &st) == -1) {
    err_sys (errno, "mount point %s", path);
    return -1;
  }
  if (!S_ISDIR (st.st_mode)) {
    err_set (ENOTDIR, "mount point %s is not a directory", path);
    return -1;
  }
  return 0;
}

/* The mount shows the store directory's owner, group and read bits
 * (fs.h): a store is created 0700, so by default only its owner may
 * read the images, even with -o allow_other; an admin shares them by
 * giving the store a group and its read bits. */
static int
store_access (const char *where, struct fs_opts *o)
{
  struct store *s = store_open (where, false);
  int r;

  if (s == NULL)
    return -1;
  r = store_owner (s, &o->uid, &o->gid, &o->mode);
  store_close (s);
  return r;
}

int
cmd_mount (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "foreground", no_argument, NULL, 'f' },
    { "verbose", no_argument, NULL, 'v' },
    { "debug", no_argument, NULL, 'd' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct lazy z = { .so = CLI_SERVER_OPTS_INIT };
  struct fetch_opts fo = { .max_conns = 8, .retry_after = 10, .store = true };
  struct fs_opts o = { 0 };
  struct catalog *cat;
  CLEANUP_FREE char *store = NULL, *pwfile = NULL, *cafile = NULL;
  int c, r, status;

  while ((c = getopt_long (argc, argv, "fo:vdh", longopts, NULL)) != -1) {
    if ((r = cli_server_option (&z.so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'f': o.foreground = true; break;
    case 'o': o.fuse_opts = optarg; break;
    case 'v': log_set_verbose (2); break;
    case 'd': o.debug = o.foreground = true; break;
    case 'h': cli_usage ("mount"); return 0;
    default: return cli_usage ("mount");
    }
  }
  if (optind + 2 != argc)
    return cli_usage ("mount");
  /* The mount serves from / (a daemon leaves its directory), and reads
   * the store and logs in again long after: no path may be relative. */
  store = realpath (argv[optind], NULL);
  if (store == NULL
      || (z.so.password_file
          && (pwfile = realpath (z.so.password_file, NULL)) == NULL)
      || (z.so.ca_file && (cafile = realpath (z.so.ca_file, NULL)) == NULL)) {
    err_sys (errno, "%s", store == NULL ? argv[optind]
             : pwfile == NULL && z.so.password_file ? z.so.password_file
             : z.so.ca_file);
    return cli_fail ();
  }
  if (pwfile)
    z.so.password_file = pwfile;
  if (cafile)
    z.so.ca_file = cafile;
  o.fsname = store;
  o.mountpoint = argv[optind + 1];
  if (check_mountpoint (o.mountpoint) == -1
      || store_access (o.fsname, &o) == -1)
    return cli_fail ();
  if (z.so.server) {
    if (xapi_global_init () == -1 || check_server (&z.so) == -1)
      return cli_fail ();
    fo.timeout = z.so.timeout;
    o.fetch = fetcher_new (mount_target, &z, &fo);
    if (o.fetch == NULL)
      return cli_fail ();
  }

  /* Only manifests now: each layer's set and index are read when a read
   * first needs them, so mounting thousands of layers is quick. */
  cat = cli_catalog (store, CATALOG_LAZY);
  if (cat == NULL) {
    fetcher_free (o.fetch);
    return cli_fail ();
  }
  pthread_mutex_init (&z.lock, NULL);
  status = fs_run (cat, &o);
  /* Unmounted: make what was fetched durable before the layers go. */
  if (fetcher_free (o.fetch) == -1)
    status = 1;
  catalog_free (cat);
  if (z.xs)
    xapi_logout (z.xs);
  if (z.so.server)
    xapi_global_cleanup ();
  return status;
}
