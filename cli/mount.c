/* cbtfs mount: serve a store read-only through FUSE.
 *
 * With --server, blocks a lazy or unfinished layer lacks are fetched
 * from their snapshot on the host and kept in the store.  The password
 * is read once; the XAPI session is opened on first need in the
 * serving process (after the fork: engine_targets_new_lazy), and
 * re-opened by xapi_call when it expires.
 *
 * Thread model: FUSE threads may ask for connection details at once;
 * engine/targets.c serialises them over the one XAPI session.
 */
#include <errno.h>
#include <getopt.h>
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
#include "../engine/points.h"
#include "../engine/targets.h"
#include "cli.h"

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
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct engine_creds *creds = NULL;
  struct engine_targets *targets = NULL;
  struct fs_opts o = {
    .fetch_opts = { .max_conns = 8, .retry_after = 10, .store = true },
  };
  CLEANUP_FREE char *store = NULL, *pwfile = NULL, *cafile = NULL;
  int c, r, status;

  if (cli_config (&argc, &argv, "fo:vdh", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "fo:vdh", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'f': o.foreground = true; break;
    case 'o': o.fuse_opts = optarg; break;
    case 'v': log_set_verbose (2); break;
    case 'd': o.debug = o.foreground = true; break;
    case 'h': return cli_help ("mount");
    default: return cli_usage ("mount");
    }
  }
  if (optind + 2 != argc)
    return cli_usage ("mount");
  /* The mount serves from / (a daemon leaves its directory), and reads
   * the store and logs in again long after: no path may be relative. */
  if (cli_store_is_remote (argv[optind]) && cli_s3_default_cache () == -1)
    return cli_fail ();
  store = cli_store_is_remote (argv[optind]) ? strdup (argv[optind])
    : realpath (argv[optind], NULL);
  if (store == NULL
      || (so.password_file
          && (pwfile = realpath (so.password_file, NULL)) == NULL)
      || (so.ca_file && (cafile = realpath (so.ca_file, NULL)) == NULL)) {
    err_sys (errno, "%s", store == NULL ? argv[optind]
             : pwfile == NULL && so.password_file ? so.password_file
             : so.ca_file);
    err_set_class (ERR_CONFIG);         /* a path the user gave */
    return cli_fail ();
  }
  if (pwfile)
    so.password_file = pwfile;
  if (cafile)
    so.ca_file = cafile;
  o.store = o.fsname = store;
  o.mountpoint = argv[optind + 1];
  if (check_mountpoint (o.mountpoint) == -1
      || store_access (o.fsname, &o) == -1)
    return cli_fail ();
  if (so.server) {
    if (xapi_global_init () == -1
        || (creds = engine_creds_new (&so)) == NULL
        || cli_check_server (creds) == -1
        || (targets = engine_targets_new_lazy (creds)) == NULL) {
      engine_creds_free (creds);
      return cli_fail ();
    }
    o.fetch_opts.timeout = so.timeout;
    o.targets = engine_targets_chain (targets);
  }

  status = fs_run (&o);
  engine_targets_free (targets);
  engine_creds_free (creds);
  if (so.server)
    xapi_global_cleanup ();
  return status;
}
