/* cbtfs backup: options, then engine_backup (engine/backup.h), and
 * its reports (report.c). */
#include <getopt.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../engine/backup.h"
#include "cli.h"

/* Write the reports the command line asked for; the exit status. */
static int
report (int status, int64_t started, const char *metrics, bool json,
        const struct engine_backup_report *r, bool ran)
{
  if (metrics && cli_backup_metrics (metrics, status, started, r, ran) == -1) {
    /* The backup is done, but what watches it would not know. */
    log_error ("%s", err_get ());
    status = MAX (status, CLI_EXIT_FAILED);
  }
  if (json && ran)
    cli_backup_json (status, r);
  return status;
}

int
cmd_backup (int argc, char **argv)
{
  enum { OPT_JSON = 256, OPT_METRICS };
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
    { "json", no_argument, NULL, OPT_JSON },
    { "metrics-file", required_argument, NULL, OPT_METRICS },
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
  const char *metrics = NULL;
  bool json = false;
  struct engine_backup_report rep = { 0 };
  int64_t started;

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
    case OPT_JSON: json = cli_json = true; break;
    case OPT_METRICS: metrics = optarg; break;
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

  started = time (NULL);
  status = engine_backup (argv[optind], &so, &o, &rep);
  if (status == -1) {
    /* cli_fail prints --json's object; the metrics still say it. */
    status = cli_fail ();
    status = report (status, started, metrics, false, &rep, false);
  }
  else
    status = report (status, started, metrics, json, &rep, true);
  engine_backup_report_clear (&rep);
 out:
  free (vms);
  free (exclude);
  return status;
}
