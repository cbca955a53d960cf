/* cbtfs copy: replicate one store into another (engine/copy.h). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../engine/copy.h"
#include "cli.h"

static void
print_point (void *opaque, const char *disk, const char *snapshot,
             const char *what, const char *why)
{
  int verbose = *(int *) opaque;

  if (why)
    log_error ("disk %s: snapshot %s: %s", disk, snapshot, why);
  else if (verbose >= 2)
    fprintf (stdout, "%-7s %s/%s\n", what, disk, snapshot);
}

static void
print_json (const struct engine_copy_result *r, int status)
{
  printf ("{\"status\": %d, \"made\": %zu, \"filled\": %zu, \"same\": %zu, "
          "\"dropped\": %zu, \"failed\": %zu, \"blocks\": %" PRIu64
          ", \"bytes\": %" PRIu64 "}\n", status, r->made, r->filled, r->same,
          r->dropped, r->failed, r->blocks, r->bytes);
}

int
cmd_copy (int argc, char **argv)
{
  enum { OPT_KEEP = 256, OPT_JSON, OPT_LOCK_WAIT, OPT_DST_KEY };
  static const struct option longopts[] = {
    { "keep-extra", no_argument, NULL, OPT_KEEP },
    { "json", no_argument, NULL, OPT_JSON },
    { "lock-wait", required_argument, NULL, OPT_LOCK_WAIT },
    { "dst-encrypt-key-file", required_argument, NULL, OPT_DST_KEY },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_copy_opts o = { .lock_wait = CLI_LOCK_WAIT_DEFAULT };
  struct engine_copy_result r;
  CLEANUP_FREE char *dst_key = NULL;
  bool json = false;
  int c, verbose = 1, status;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    switch (c) {
    case OPT_KEEP: o.keep_extra = true; break;
    case OPT_JSON: json = cli_json = true; break;
    case OPT_LOCK_WAIT:
      if (cli_lock_wait (optarg, &o.lock_wait) == -1)
        return 2;
      break;
    case OPT_DST_KEY:
      free (dst_key);
      if (cli_key_file (optarg, &dst_key) == -1)
        return cli_refuse ("%s", err_get ());
      o.dst_key_file = dst_key;
      break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': return cli_help ("copy");
    default: return cli_usage ("copy");
    }
  }
  if (optind + 2 != argc)
    return cli_usage ("copy");
  log_set_verbose (verbose);
  status = engine_copy (argv[optind], argv[optind + 1], &o, print_point,
                        &verbose, &r) == 0 ? 0 : -1;
  if (status == -1 && r.made + r.filled + r.same + r.failed == 0)
    return cli_fail ();         /* nothing done: the why is the store's */
  if (status == -1)
    log_error ("%s", err_get ());
  status = status == -1 ? CLI_EXIT_FAILED : 0;
  if (json)
    print_json (&r, status);
  else if (verbose >= 1)
    printf ("%zu points made, %zu filled, %zu already there, %zu dropped, "
            "%zu failed (%" PRIu64 " blocks, %.1f MiB put)\n", r.made,
            r.filled, r.same, r.dropped, r.failed, r.blocks,
            r.bytes / 1048576.0);
  return status;
}
