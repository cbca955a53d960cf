/* cbtfs restore: options, then engine_restore (engine/restore.h), and
 * what it did, for people or (--json) for scripts. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/log.h"
#include "../engine/restore.h"
#include "cli.h"

enum { OPT_SR = 256, OPT_VDI, OPT_NAME, OPT_JSON };

static void
print_json (const struct engine_restore_result *r, int status)
{
  printf ("{\"status\": %d, \"point\": ", status);
  cli_json_str (r->label ? r->label : "");
  printf (", \"snapshot\": ");
  cli_json_str (r->snapshot);
  printf (", \"vdi\": ");
  cli_json_str (r->vdi);
  printf (", \"created\": %s, \"size\": %" PRIu64 ", \"vdi_size\": %" PRIu64
          ", \"format\": ", r->created ? "true" : "false", r->size,
          r->vdi_size);
  cli_json_str (r->format ? r->format : "");
  printf (", \"sent\": %" PRIu64 ", \"md5\": ", r->sent);
  cli_json_str (r->md5);
  printf (", \"host_md5\": ");
  cli_json_str (r->host_md5);
  printf (", \"matches\": %s, \"seconds\": %.3f}\n",
          status == 0 ? "true" : "false", r->seconds);
}

int
cmd_restore (int argc, char **argv)
{
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "sr", required_argument, NULL, OPT_SR },
    { "vdi", required_argument, NULL, OPT_VDI },
    { "name", required_argument, NULL, OPT_NAME },
    { "json", no_argument, NULL, OPT_JSON },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct engine_restore_opts o = { .name = "restore" };
  struct engine_restore_result r;
  int c, k, verbose = isatty (STDERR_FILENO) ? 1 : 0, status;
  bool json = false, named = false;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    if ((k = cli_server_option (&so, c, optarg)) != 0) {
      if (k == -1)
        return 2;
      continue;
    }
    switch (c) {
    case OPT_SR: o.sr = optarg; break;
    case OPT_VDI: o.vdi = optarg; break;
    case OPT_NAME: o.name = optarg; named = true; break;
    case OPT_JSON: json = cli_json = true; break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': return cli_help ("restore");
    default: return cli_usage ("restore");
    }
  }
  if (optind + 2 != argc)
    return cli_usage ("restore");
  if (so.server == NULL || so.password_file == NULL)
    return cli_refuse ("restore needs --server and --password-file: the "
                       "point goes to that host");
  if ((o.sr == NULL) == (o.vdi == NULL))
    return cli_refuse ("restore needs either --sr SR-UUID (a new VDI) or "
                       "--vdi VDI-UUID (overwrite one), not both");
  if (named && o.vdi)
    return cli_refuse ("--name names a VDI that --sr creates; --vdi keeps "
                       "its name");
  log_set_verbose (verbose);
  o.point = argv[optind + 1];
  o.progress = verbose >= 1 && !json && isatty (STDERR_FILENO);

  status = engine_restore (argv[optind], &so, &o, &r);
  if (status == -1) {
    engine_restore_result_free (&r);
    return cli_fail ();
  }
  if (json)
    print_json (&r, status);
  else if (status == 0)
    log_info ("restored %s (snapshot %s) into VDI %s%s: %" PRIu64 " bytes, "
              "%" PRIu64 " sent (%s) in %.1f s; the host's md5 matches (%s)",
              r.label, r.snapshot, r.vdi, r.created ? " (new)" : "",
              r.vdi_size, r.sent, r.format, r.seconds, r.md5);
  engine_restore_result_free (&r);
  return status;
}
