/* cbtfs verify: options, then engine_verify (engine/verify.h), and the
 * summary. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/log.h"
#include "../engine/verify.h"
#include "cli.h"

int
cmd_verify (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "accept", required_argument, NULL, 'A' },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct engine_verify_stats st;
  CLEANUP_FREE char **accept = NULL;
  size_t naccept = 0;
  int c, r, status;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  if ((accept = calloc (argc, sizeof *accept)) == NULL)
    return 1;
  log_set_verbose (isatty (STDERR_FILENO) ? 1 : 0);
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case 'A': accept[naccept++] = optarg; break;
    case 'q': log_set_verbose (0); break;
    case 'v': log_set_verbose (2); break;
    case 'h': return cli_help ("verify");
    default: return cli_usage ("verify");
    }
  }
  if (optind + 1 != argc)
    return cli_usage ("verify");
  if (naccept)
    return engine_verify_accept (argv[optind], accept, naccept) == -1
      ? cli_fail () : 0;

  /* A check reads what the store holds: an object store's local cache
   * (--cache) holds copies, which would only check themselves. */
  unsetenv ("CBTFS_S3_CACHE");
  status = engine_verify (argv[optind], so.server ? &so : NULL, &st);
  if (status == -1)
    return cli_fail ();
  log_info ("checked %" PRIu64 " stored blocks of %zu points in time: %zu "
            "damaged, %zu not wholly in the store%s", st.checked, st.points,
            st.damaged, st.incomplete, st.compared ? "" : " (no --server: "
            "not compared with the host)");
  if (st.skipped)
    log_error ("%zu damaged layers could not be read at all (named above)",
               st.skipped);
  if (st.compared)
    log_info ("%zu points match the host's VDI.checksum; the others' "
              "snapshots hold only CBT metadata", st.matched);
  return status;
}
