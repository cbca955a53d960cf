/* cbtfs forget: options, then engine_forget_* (engine/forget.h), and
 * what it removed, for people or (--json) for scripts. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/error.h"
#include "../common/log.h"
#include "../engine/forget.h"
#include "cli.h"

static const char *const host_name[] = {
  [FORGET_HOST_UNASKED] = "not asked",
  [FORGET_HOST_DESTROYED] = "destroyed",
  [FORGET_HOST_GONE] = "gone",
  [FORGET_HOST_KEPT] = "kept",
};

/* The disks of P as "'root', 'data'". */
static void
print_disks (FILE *fp, const struct engine_forget_plan *p)
{
  for (size_t i = 0; i < p->ndisks; i++)
    fprintf (fp, "%s'%s'", i ? ", " : "", p->disks[i].disk->name);
}

/* -v: one line per point as it goes, flushed, so that whoever reads
 * the output knows at once what is gone. */
static void
print_point (void *opaque, const struct engine_forget_disk *d,
             const struct engine_forget_point *pt)
{
  (void) opaque;
  if (pt->point)
    printf ("forgot by-vm/%s/%s/%s.img  %s", d->disk->vm->name,
            d->disk->name, pt->point->name, pt->snapshot);
  else
    printf ("forgot by-vm/%s/%s (damaged layer)  %s", d->disk->vm->name,
            d->disk->name, pt->snapshot);
  if (pt->host != FORGET_HOST_UNASKED)
    printf ("  (host snapshot: %s)", host_name[pt->host]);
  printf ("\n");
  fflush (stdout);
}

static void
print_json (const struct engine_forget_plan *p, bool server, int status)
{
  printf ("{\"status\": %d, \"vm\": {\"uuid\": \"%s\", \"name\": ", status,
          p->vm->uuid);
  cli_json_str (p->vm->name);
  printf ("},\n \"disks\": [");
  for (size_t i = 0; i < p->ndisks; i++) {
    const struct engine_forget_disk *d = &p->disks[i];

    printf ("%s\n  {\"uuid\": \"%s\", \"name\": ", i ? "," : "",
            d->disk->uuid);
    cli_json_str (d->disk->name);
    printf (", \"points\": [");
    for (size_t k = 0; k < d->npoints; k++) {
      const struct engine_forget_point *pt = &d->points[k];

      printf ("%s\n    {\"snapshot\": \"%s\", \"name\": ", k ? "," : "",
              pt->snapshot);
      if (pt->point)
        cli_json_str (pt->point->name);
      else
        printf ("null");
      printf (", \"removed\": %s, \"host\": ",
              pt->removed ? "true" : "false");
      if (server)
        printf ("\"%s\"}", host_name[pt->host]);
      else
        printf ("null}");
    }
    printf ("]}");
  }
  printf ("\n ], \"forgotten\": %zu, \"remaining\": %zu, \"host\": ",
          p->removed, p->npoints - p->removed);
  if (server)
    printf ("{\"destroyed\": %zu, \"gone\": %zu, \"kept\": %zu}}\n",
            p->destroyed, p->gone, p->kept);
  else
    printf ("null}\n");
}

static void
print_summary (const struct engine_forget_plan *p, bool server)
{
  printf ("forgot %zu of %zu points of VM '%s' (%s), disk%s ", p->removed,
          p->npoints, p->vm->name, p->vm->uuid, p->ndisks == 1 ? "" : "s");
  print_disks (stdout, p);
  if (server)
    printf ("; host snapshots: %zu destroyed, %zu already gone, %zu kept\n",
            p->destroyed, p->gone, p->kept);
  else
    printf ("; the host was not asked (no --server)\n");
}

int
cmd_forget (int argc, char **argv)
{
  enum { OPT_VM = 256, OPT_DISK, OPT_YES, OPT_JSON, OPT_LOCK_WAIT };
  static const struct option longopts[] = {
    CLI_SERVER_LONGOPTS,
    { "vm", required_argument, NULL, OPT_VM },
    { "disk", required_argument, NULL, OPT_DISK },
    { "yes", no_argument, NULL, OPT_YES },
    { "json", no_argument, NULL, OPT_JSON },
    { "lock-wait", required_argument, NULL, OPT_LOCK_WAIT },
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  const struct engine_forget_plan *p;
  struct engine_forget *f;
  const char *vm = NULL, *disk = NULL;
  bool yes = false, json = false;
  double lock_wait = CLI_LOCK_WAIT_DEFAULT;
  int c, r, verbose = 1, status;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case OPT_VM:
      if (vm)
        return cli_refuse ("forget: one --vm at a time");
      vm = optarg;
      break;
    case OPT_DISK:
      if (disk)
        return cli_refuse ("forget: one --disk at a time");
      disk = optarg;
      break;
    case OPT_YES: yes = true; break;
    case OPT_JSON: json = cli_json = true; break;
    case OPT_LOCK_WAIT:
      if (cli_lock_wait (optarg, &lock_wait) == -1)
        return 2;
      break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': return cli_help ("forget");
    default: return cli_usage ("forget");
    }
  }
  if (optind + 1 != argc)
    return cli_usage ("forget");
  if (vm == NULL)
    return cli_refuse ("forget: --vm NAME-OR-UUID is required");
  if (so.server == NULL && so.password_file)
    return cli_refuse ("forget: --password-file without --server");
  log_set_verbose (verbose);

  if (engine_forget_open (argv[optind], yes, lock_wait, vm, disk, &f) == -1) {
    if (errno == ENOENT || errno == EINVAL)
      return cli_refuse ("%s", err_get ());
    return cli_fail ();
  }
  p = engine_forget_plan (f);
  if (!yes) {
    fprintf (stderr, "cbtfs: forget would remove %zu point%s of VM '%s' "
             "(%s), disk%s ", p->npoints, p->npoints == 1 ? "" : "s",
             p->vm->name, p->vm->uuid, p->ndisks == 1 ? "" : "s");
    print_disks (stderr, p);
    fprintf (stderr, "%s; --yes removes them\n", so.server
             ? ", and their snapshots on the host" : "");
    engine_forget_close (f);
    return 2;
  }

  status = engine_forget_run (f, so.server ? &so : NULL,
                              verbose >= 2 && !json ? print_point : NULL,
                              NULL);
  if (status == -1) {
    engine_forget_close (f);
    return cli_fail ();
  }
  if (json)
    print_json (p, so.server != NULL, status);
  else if (verbose >= 1)
    print_summary (p, so.server != NULL);
  engine_forget_close (f);
  return status;
}
