/* cbtfs mount: serve a store read-only through FUSE. */
#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../chain/catalog.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../fs/fs.h"
#include "cli.h"

int
cmd_mount (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "foreground", no_argument, NULL, 'f' },
    { "verbose", no_argument, NULL, 'v' },
    { "debug", no_argument, NULL, 'd' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct fs_opts o = { 0 };
  struct catalog *cat;
  struct stat st;
  int c, status;

  while ((c = getopt_long (argc, argv, "fo:vdh", longopts, NULL)) != -1) {
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
  o.fsname = argv[optind];
  o.mountpoint = argv[optind + 1];
  /* Say it once, plainly, before libfuse says it its own way. */
  if (stat (o.mountpoint, &st) == -1) {
    err_sys (errno, "mount point %s", o.mountpoint);
    return cli_fail ();
  }
  if (!S_ISDIR (st.st_mode)) {
    err_set (ENOTDIR, "mount point %s is not a directory", o.mountpoint);
    return cli_fail ();
  }

  cat = cli_catalog (argv[optind]);
  if (cat == NULL)
    return cli_fail ();
  status = fs_run (cat, &o);
  catalog_free (cat);
  return status;
}
