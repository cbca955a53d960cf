/* cbtfs fetch: options, then engine_fetch (engine/fetch.h). */
#include <getopt.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/log.h"
#include "../engine/fetch.h"
#include "cli.h"

int
cmd_fetch (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "keep-data", no_argument, NULL, 'K' },
    { "nbd-connections", required_argument, NULL, 'n' },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct engine_fetch_opts o = {
    .copy = { .conns = 4, .request_blocks = 16, .depth = 4, .retries = 4 },
  };
  int c, r, verbose = isatty (STDERR_FILENO) ? 1 : 0, status;
  char *end;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'K': o.keep_data = true; break;
    case 'n':
      o.copy.conns = strtoul (optarg, &end, 10);
      if (*end || o.copy.conns < 1 || o.copy.conns > 16) {
        log_error ("--nbd-connections must be 1 to 16 (XenServer's limit)");
        return 2;
      }
      break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': return cli_help ("fetch");
    default: return cli_usage ("fetch");
    }
  }
  if (optind >= argc)
    return cli_usage ("fetch");
  log_set_verbose (verbose);
  o.copy.timeout = so.timeout;
  o.copy.progress = verbose >= 1 && isatty (STDERR_FILENO);
  o.snapshots = argv + optind + 1;
  o.nsnapshots = argc - optind - 1;

  status = engine_fetch (argv[optind], &so, &o);
  return status == -1 ? cli_fail () : status;
}
