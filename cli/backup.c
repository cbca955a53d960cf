/* cbtfs backup: options, then engine_backup (engine/backup.h). */
#include <getopt.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "../engine/backup.h"
#include "cli.h"

int
cmd_backup (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "vm", required_argument, NULL, 'm' },
    { "nbd-connections", required_argument, NULL, 'n' },
    { "jobs", required_argument, NULL, 'j' },
    { "exclude-disk", required_argument, NULL, 'x' },
    { "limit-rate", required_argument, NULL, 'r' },
    { "no-copy", no_argument, NULL, 'N' },
    { "verify", no_argument, NULL, 'V' },
    { "lock-wait", required_argument, NULL, 'w' },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct engine_backup_opts o = {
    .copy = { .conns = 4, .request_blocks = 16, .depth = 4,
              .retries = 4 },
    .jobs = 2,
    .lock_wait = CLI_LOCK_WAIT_DEFAULT,
  };
  /* From cron: only warnings and errors; on a terminal: what it does. */
  int c, r, verbose = isatty (STDERR_FILENO) ? 1 : 0, status = 2;
  char **vms, **exclude;
  char *end;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  vms = calloc (argc, sizeof *vms);
  exclude = calloc (argc, sizeof *exclude);
  if (vms == NULL || exclude == NULL) {
    free (vms);
    free (exclude);
    return 1;
  }
  o.vms = vms;
  o.exclude = exclude;
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        goto out;
      continue;
    }
    switch (c) {
    case 'm': vms[o.nvms++] = optarg; break;
    case 'n':
      o.copy.conns = strtoul (optarg, &end, 10);
      if (*end || o.copy.conns < 1 || o.copy.conns > 16) {
        log_error ("--nbd-connections must be 1 to 16 (XenServer's limit)");
        goto out;
      }
      break;
    case 'j':
      o.jobs = strtoul (optarg, &end, 10);
      if (*end || end == optarg || optarg[0] == '-' || o.jobs < 1
          || o.jobs > 64) {
        log_error ("--jobs must be 1 to 64 (VMs backed up at once)");
        goto out;
      }
      break;
    case 'x': exclude[o.nexclude++] = optarg; break;
    case 'r':
      if (parse_size (optarg, &o.rate) == -1) {
        log_error ("--limit-rate %s: expected bytes per second, e.g. "
                   "500K, 20M or 1G (1024-based)", optarg);
        goto out;
      }
      break;
    case 'N': o.no_copy = true; break;
    case 'V': o.verify = true; break;
    case 'w':
      if (cli_lock_wait (optarg, &o.lock_wait) == -1)
        goto out;
      break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': status = cli_help ("backup"); goto out;
    default: cli_usage ("backup"); goto out;
    }
  }
  log_set_verbose (verbose);
  if (optind + 1 != argc) {
    cli_usage ("backup");
    goto out;
  }
  o.copy.timeout = so.timeout;
  o.copy.progress = verbose >= 1 && isatty (STDERR_FILENO);

  status = engine_backup (argv[optind], &so, &o);
  if (status == -1)
    status = cli_fail ();
 out:
  free (vms);
  free (exclude);
  return status;
}
