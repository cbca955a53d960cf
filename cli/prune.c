/* cbtfs prune: options, then engine_prune_plan (engine/prune.h), and
 * (without --dry-run) engine_prune_run under the store lock; what it
 * decided and did, for people or (--json) for scripts. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../chain/catalog.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../engine/points.h"
#include "../engine/prune.h"
#include "../engine/session.h"
#include "../xapi/session.h"
#include "cli.h"

/* The options of the counted rules, as enum retention_rule. */
static const char *const rule_option[RETENTION_NCOUNTED] = {
  "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly",
  "keep-yearly",
};

/* Their keys in --json (snake_case, as ls's keys). */
static const char *const rule_json[RETENTION_NCOUNTED] = {
  "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
  "keep_yearly",
};

/* What became of one point the plan drops (NULL arrays: a dry run). */
enum outcome { OUT_PLANNED = 0, OUT_DROPPED, OUT_STAYED };

/* A point's action word, for people and for --json. */
static const char *
action_of (const struct retention_point *pt, const enum outcome *out)
{
  if (pt->keep)
    return "keep";
  if (out == NULL || *out == OUT_PLANNED)
    return "drop";
  return *out == OUT_DROPPED ? "dropped" : "stayed";
}

static void
print_reasons (const struct retention_point *pt, bool json)
{
  const char *names[RETENTION_MAX_REASONS];
  size_t n = retention_reason_names (pt, names);

  for (size_t i = 0; i < n; i++)
    printf (json ? "%s\"%s\"" : "%s%s", i ? (json ? ", " : ",") : "",
            names[i]);
}

static void
print_json (const struct catalog *c, const struct retention_policy *p,
            const struct engine_prune_plan *plan, enum outcome *const *out,
            const struct engine_prune_result *res, int status)
{
  char buf[48];

  printf ("{\"status\": %d, \"dry_run\": %s, \"policy\": {", status,
          out ? "false" : "true");
  for (int r = 0; r < RETENTION_NCOUNTED; r++) {
    printf ("\"%s\": ", rule_json[r]);
    if (p->keep[r] == RETENTION_UNLIMITED)
      printf ("\"unlimited\", ");
    else
      printf ("%" PRId64 ", ", p->keep[r]);
  }
  retention_format_duration (&p->within, buf, sizeof buf);
  printf ("\"keep_within\": ");
  if (buf[0])
    printf ("\"%s\"", buf);
  else
    printf ("null");
  printf (", \"include_incomplete\": %s},\n \"disks\": [",
          p->include_incomplete ? "true" : "false");
  for (size_t i = 0; i < plan->ndisks; i++) {
    const struct engine_prune_disk *pd = &plan->disks[i];
    const struct catalog_disk *d = pd->disk;

    printf ("%s\n  {\"uuid\": \"%s\", \"vm_uuid\": \"%s\", \"vm\": ",
            i ? "," : "", d->uuid, d->vm->uuid);
    cli_json_str (d->vm->name);
    printf (", \"name\": ");
    cli_json_str (d->name);
    printf (", \"points\": [");
    for (size_t k = 0; k < d->npoints; k++) {
      const struct retention_point *pt = &pd->points[k];
      CLEANUP_FREE char *path = engine_point_label (d, &d->points[k]);

      printf ("%s\n    {\"snapshot\": \"%s\", \"name\": ", k ? "," : "",
              layer_meta (d->points[k].layer)->snapshot);
      cli_json_str (d->points[k].name);
      printf (", \"path\": ");
      if (path)
        cli_json_str (path);
      else
        printf ("null");
      printf (", \"time\": %" PRId64 ", \"action\": \"%s\", \"rules\": [",
              pt->time, action_of (pt, out ? &out[i][k] : NULL));
      print_reasons (pt, true);
      printf ("]}");
    }
    printf ("]}");
  }
  printf ("\n ], \"kept\": %zu, \"dropped\": %zu, \"skipped_layers\": %zu",
          plan->kept, out ? res->dropped : plan->dropped, c->nskipped);
  if (out)
    printf (", \"stayed\": %zu, \"merged\": %zu, \"blocks_written\": %"
            PRIu64 ", \"bytes_freed\": %" PRIu64
            ", \"host_snapshots_removed\": %zu", res->failed, res->merged,
            res->blocks_written, res->bytes_freed, res->host_removed);
  printf ("}\n");
}

/* The policy as options, for -v. */
static void
print_policy (const struct retention_policy *p)
{
  char buf[48];

  printf ("policy:");
  for (int r = 0; r < RETENTION_NCOUNTED; r++) {
    if (p->keep[r] == RETENTION_UNLIMITED)
      printf (" --%s unlimited", rule_option[r]);
    else if (p->keep[r])
      printf (" --%s %" PRId64, rule_option[r], p->keep[r]);
  }
  retention_format_duration (&p->within, buf, sizeof buf);
  if (buf[0])
    printf (" --keep-within %s", buf);
  if (p->include_incomplete)
    printf (" --include-incomplete");
  printf ("\n");
}

static void
print_text (const struct catalog *c, const struct retention_policy *p,
            const struct engine_prune_plan *plan, enum outcome *const *out,
            const struct engine_prune_result *res, int verbose)
{
  const struct catalog_vm *vm = NULL;
  const bool within = p->within.years || p->within.months || p->within.days
    || p->within.hours;

  if (verbose >= 2)
    print_policy (p);
  for (size_t i = 0; verbose >= 1 && i < plan->ndisks; i++) {
    const struct engine_prune_disk *pd = &plan->disks[i];
    const struct catalog_disk *d = pd->disk;

    if (d->vm != vm) {
      vm = d->vm;
      printf ("%s  (VM %s)\n", vm->name, vm->uuid);
    }
    printf ("  %s  (disk %s)\n", d->name, d->uuid);
    if (verbose >= 2 && within) {
      char when[32];
      if (pd->reference == INT64_MIN)
        printf ("    (keep-within: every point is in the future)\n");
      else {
        catalog_time_name (retention_minus (pd->reference, &p->within), when,
                           sizeof when);
        printf ("    (keep-within: points after %s)\n", when);
      }
    }
    for (size_t k = 0; k < d->npoints; k++) {
      const struct retention_point *pt = &pd->points[k];

      printf ("    %-7s  %s.img  %s", action_of (pt, out ? &out[i][k] : NULL),
              d->points[k].name, layer_meta (d->points[k].layer)->snapshot);
      if (pt->keep) {
        printf ("  ");
        print_reasons (pt, false);
      }
      printf ("\n");
    }
  }
  if (c->nskipped)
    printf ("(%zu damaged layers skipped)\n", c->nskipped);
  if (out == NULL)
    printf ("%zu points kept, %zu would be dropped\n", plan->kept,
            plan->dropped);
  else if (verbose >= 1 || res->failed)
    printf ("%zu points kept, %zu dropped (%zu folded into the next point, "
            "%" PRIu64 " blocks copied, %.1f MiB freed; %zu snapshots "
            "removed from the host)%s\n",
            plan->kept, res->dropped, res->merged, res->blocks_written,
            res->bytes_freed / 1048576.0, res->host_removed,
            res->failed ? ", some could not go (see above)" : "");
}

/* engine_prune_cb: note what became of a point, and say why one
 * stays. */
struct run_ctx {
  const struct engine_prune_plan *plan;
  enum outcome **out;
};

static void
on_point (void *opaque, const struct catalog_disk *d,
          const struct catalog_point *pt, const struct fold_stats *st,
          const char *why)
{
  struct run_ctx *ctx = opaque;

  for (size_t i = 0; i < ctx->plan->ndisks; i++)
    if (ctx->plan->disks[i].disk == d) {
      ctx->out[i][pt - d->points] = st ? OUT_DROPPED : OUT_STAYED;
      break;
    }
  if (why) {
    CLEANUP_FREE char *label = engine_point_label (d, pt);
    log_error ("%s stays: %s", label ? label : pt->name, why);
  }
}

static void
outcomes_free (enum outcome **out, size_t n)
{
  for (size_t i = 0; out && i < n; i++)
    free (out[i]);
  free (out);
}

/* Lock the store, finish what an interrupted prune left, plan under the
 * lock (so that no backup adds points meanwhile) and drop, with a
 * session XS (or NULL) from the host too.  The exit status. */
static int
run (const char *where, const struct retention_policy *p,
     const char *const *vms, size_t nvms, double lock_wait, bool json,
     int verbose, xapi_session *xs)
{
  struct store *s = store_open (where, false);
  struct engine_prune_plan *plan = NULL;
  struct engine_prune_result res = { 0 };
  struct catalog *cat = NULL;
  struct run_ctx ctx = { NULL, NULL };
  size_t finished;
  int status = 1, resumed = 0;

  if (s == NULL || store_lock (s, "prune", lock_wait) == -1)
    goto fail;
  /* A drop that cannot be finished (each is named) stays pending; the
   * rest of the store is pruned all the same: a fold that would read
   * the condemned layer's overwritten blocks fails their checksums. */
  resumed = engine_prune_resume (s, &finished);
  if (finished)
    log_info ("finished %zu point drops an interrupted prune left",
              finished);
  cat = catalog_load (s, CATALOG_COUNTS);
  if (cat == NULL)
    goto fail;
  if (engine_prune_plan (cat, p, vms, nvms, time (NULL), &plan) == -1) {
    status = errno == ENOENT ? cli_refuse ("%s", err_get ()) : cli_fail ();
    goto out;
  }
  ctx.plan = plan;
  ctx.out = calloc (plan->ndisks ? plan->ndisks : 1, sizeof *ctx.out);
  if (ctx.out == NULL)
    goto fail;
  for (size_t i = 0; i < plan->ndisks; i++)
    if ((ctx.out[i] = calloc (plan->disks[i].disk->npoints,
                              sizeof *ctx.out[i])) == NULL)
      goto fail;
  status = engine_prune_run (s, xs, plan, on_point, &ctx, &res) == 0 ? 0 : 1;
  if (status && res.failed == 0)
    log_error ("%s", err_get ());   /* it failed before any point */
  if (resumed == -1)
    status = 1;
  if (json)
    print_json (cat, p, plan, ctx.out, &res, status);
  else
    print_text (cat, p, plan, ctx.out, &res, verbose);
  goto out;

 fail:
  status = cli_fail ();
 out:
  outcomes_free (ctx.out, plan ? plan->ndisks : 0);
  engine_prune_plan_free (plan);
  catalog_free (cat);
  store_close (s);
  return status;
}

/* run, logged in to the host SO names first (or not, when NULL): a
 * wrong password or an untrusted certificate stops before the store
 * changes. */
static int
run_with_host (const char *where, const struct retention_policy *p,
               const char *const *vms, size_t nvms, double lock_wait,
               bool json, int verbose, const struct engine_server *so)
{
  xapi_session *xs;
  int status;

  if (so == NULL)
    return run (where, p, vms, nvms, lock_wait, json, verbose, NULL);
  if (xapi_global_init () == -1)
    return cli_fail ();
  xs = engine_login_server (so);
  if (xs == NULL) {
    xapi_global_cleanup ();
    return cli_fail ();
  }
  status = run (where, p, vms, nvms, lock_wait, json, verbose, xs);
  xapi_logout (xs);
  xapi_global_cleanup ();
  return status;
}

int
cmd_prune (int argc, char **argv)
{
  /* Counted rules are OPT_KEEP + enum retention_rule. */
  enum { OPT_KEEP = 256, OPT_WITHIN = OPT_KEEP + RETENTION_NCOUNTED, OPT_VM,
         OPT_INCOMPLETE, OPT_DRY_RUN, OPT_JSON, OPT_LOCK_WAIT };
  static const struct option longopts[] = {
    { "keep-last", required_argument, NULL, OPT_KEEP + RETENTION_LAST },
    { "keep-hourly", required_argument, NULL, OPT_KEEP + RETENTION_HOURLY },
    { "keep-daily", required_argument, NULL, OPT_KEEP + RETENTION_DAILY },
    { "keep-weekly", required_argument, NULL, OPT_KEEP + RETENTION_WEEKLY },
    { "keep-monthly", required_argument, NULL, OPT_KEEP + RETENTION_MONTHLY },
    { "keep-yearly", required_argument, NULL, OPT_KEEP + RETENTION_YEARLY },
    { "keep-within", required_argument, NULL, OPT_WITHIN },
    { "vm", required_argument, NULL, OPT_VM },
    { "include-incomplete", no_argument, NULL, OPT_INCOMPLETE },
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "json", no_argument, NULL, OPT_JSON },
    { "lock-wait", required_argument, NULL, OPT_LOCK_WAIT },
    CLI_SERVER_LONGOPTS,
    { "quiet", no_argument, NULL, 'q' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct engine_server so = CLI_SERVER_OPTS_INIT;
  struct retention_policy p = { .include_incomplete = false };
  CLEANUP_FREE const char **vms = NULL;
  struct engine_prune_plan *plan;
  struct catalog *cat;
  size_t nvms = 0;
  bool dry_run = false, json = false;
  double lock_wait = CLI_LOCK_WAIT_DEFAULT;
  int c, r, verbose = 1;

  if (cli_config (&argc, &argv, "qvh", longopts) == -1)
    return cli_fail ();
  if ((vms = calloc (argc, sizeof *vms)) == NULL)
    return 1;
  while ((c = cli_getopt (argc, argv, "qvh", longopts)) != -1) {
    if ((r = cli_server_option (&so, c, optarg)) != 0) {
      if (r == -1)
        return 2;
      continue;
    }
    switch (c) {
    case OPT_KEEP + RETENTION_LAST: case OPT_KEEP + RETENTION_HOURLY:
    case OPT_KEEP + RETENTION_DAILY: case OPT_KEEP + RETENTION_WEEKLY:
    case OPT_KEEP + RETENTION_MONTHLY: case OPT_KEEP + RETENTION_YEARLY:
      if (retention_parse_count (optarg, &p.keep[c - OPT_KEEP]) == -1)
        return cli_refuse ("--%s: %s", rule_option[c - OPT_KEEP], err_get ());
      break;
    case OPT_WITHIN:
      if (retention_parse_duration (optarg, &p.within) == -1)
        return cli_refuse ("--keep-within: %s", err_get ());
      break;
    case OPT_VM: vms[nvms++] = optarg; break;
    case OPT_INCOMPLETE: p.include_incomplete = true; break;
    case OPT_DRY_RUN: dry_run = true; break;
    case OPT_JSON: json = cli_json = true; break;
    case OPT_LOCK_WAIT:
      if (cli_lock_wait (optarg, &lock_wait) == -1)
        return 2;
      break;
    case 'q': verbose = 0; break;
    case 'v': verbose = 2; break;
    case 'h': return cli_help ("prune");
    default: return cli_usage ("prune");
    }
  }
  if (optind + 1 != argc)
    return cli_usage ("prune");
  log_set_verbose (verbose);
  if (retention_policy_empty (&p))
    return cli_refuse ("no --keep-* rule given: refusing to drop every point");
  if (so.server == NULL && so.password_file)
    return cli_refuse ("prune: --password-file without --server");
  if (!dry_run)
    return run_with_host (argv[optind], &p, vms, nvms, lock_wait, json,
                          verbose, so.server ? &so : NULL);

  cat = engine_catalog (argv[optind], CATALOG_COUNTS);
  if (cat == NULL)
    return cli_fail ();
  if (engine_prune_plan (cat, &p, vms, nvms, time (NULL), &plan) == -1) {
    int status = errno == ENOENT ? cli_refuse ("%s", err_get ()) : cli_fail ();
    catalog_free (cat);
    return status;
  }
  if (json)
    print_json (cat, &p, plan, NULL, NULL, 0);
  else
    print_text (cat, &p, plan, NULL, NULL, verbose);
  engine_prune_plan_free (plan);
  catalog_free (cat);
  return 0;
}
