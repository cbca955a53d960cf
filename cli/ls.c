/* cbtfs ls: what a store holds, for people or (--json) for scripts. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../chain/catalog.h"
#include "../chain/read.h"
#include "../chain/verdict.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../engine/points.h"
#include "cli.h"

/* What L takes in the store; false after a warning when that cannot
 * be told. */
static bool
usage_of (const struct layer *l, uint64_t *bytes)
{
  if (layer_usage (l, bytes) == 0)
    return true;
  log_warn ("%s", err_get ());
  return false;
}

static const char *
state_of (struct layer *l, char *buf, size_t len)
{
  uint64_t present, stored;

  if (!layer_complete (l)) {
    layer_counts (l, &present, &stored);
    snprintf (buf, len, "incomplete %" PRIu64 "/%" PRIu64, present,
              layer_nchanged (l));
    return buf;
  }
  return chain_readable (l) ? "complete" : "complete (an older layer is not)";
}

/* What ls says of verdict V after a point ("" for none). */
static const char *
verdict_note (enum verdict v)
{
  switch (v) {
  case VERDICT_MATCH: return "  verified";
  case VERDICT_DIFFERS: return "  unverified: differs from the host";
  case VERDICT_DAMAGED: return "  unverified: damaged";
  case VERDICT_ACCEPTED: return "  accepted";
  default: return "";
  }
}

static void
print_json (const struct catalog *c)
{
  const char *sep = "";
  struct verdicts vs;

  /* Which store this is: the id its backups name host snapshots by. */
  printf ("{\"status\": 0, \"store\": {\"id\": ");
  cli_json_str (c->own_store->id);
  printf (", \"format\": %d, \"kind\": ", c->own_store->format);
  cli_json_str (c->own_store->be->name);
  printf ("}, \"disks\": [");
  for (size_t i = 0; i < c->ndisks; i++) {
    const struct catalog_disk *d = &c->disks[i];
    if (d->npoints == 0)
      continue;
    const struct layer_meta *m = layer_meta (d->points[d->npoints - 1].layer);

    printf ("%s\n  {\"uuid\": \"%s\", \"vm_uuid\": \"%s\", \"vm\": ",
            sep, d->uuid, d->vm->uuid);
    sep = ",";
    cli_json_str (d->vm->name);
    printf (", \"vm_name_label\": ");
    cli_json_str (m->vm_name);
    printf (", \"name\": ");
    cli_json_str (d->name);
    printf (", \"name_label\": ");
    cli_json_str (m->disk_name);
    printf (", \"points\": [");
    engine_load_verdicts (d, &vs);
    for (size_t j = 0; j < d->npoints; j++) {
      struct layer *l = d->points[j].layer;
      enum verdict v = verdicts_of (&vs, layer_meta (l)->snapshot);
      uint64_t present, stored, bytes;
      bool have_bytes = usage_of (l, &bytes);
      layer_counts (l, &present, &stored);
      printf ("%s\n    {\"snapshot\": \"%s\", \"name\": ", j ? "," : "",
              layer_meta (l)->snapshot);
      cli_json_str (d->points[j].name);
      printf (", \"time\": %" PRId64 ", \"size\": %" PRIu64
              ", \"kind\": \"%s\", \"chain\": \"%s\", \"changed_blocks\": %"
              PRIu64 ", \"present_blocks\": %" PRIu64 ", \"stored_blocks\": %"
              PRIu64 ", \"complete\": %s, \"readable\": %s, "
              "\"verdict\": %s%s%s, \"held\": %s, \"stored_bytes\": ",
              layer_meta (l)->time, layer_meta (l)->size,
              layer_is_baseline (layer_meta (l)) ? "baseline" : "delta",
              layer_meta (l)->chain, layer_nchanged (l), present, stored,
              layer_complete (l) ? "true" : "false",
              chain_readable (l) ? "true" : "false",
              v ? "\"" : "", v ? verdict_name (v) : "null", v ? "\"" : "",
              verdict_holds (v) ? "true" : "false");
      if (have_bytes)
        printf ("%" PRIu64 "}", bytes);
      else
        printf ("null}");
    }
    verdicts_free (&vs);
    printf ("]}");
  }
  printf ("\n], \"skipped_layers\": %zu}\n", c->nskipped);
}

static void
print_text (const struct catalog *c)
{
  struct verdicts vs;

  for (size_t i = 0; i < c->nvms; i++) {
    const struct catalog_vm *vm = &c->vms[i];
    printf ("%s  (VM %s)\n", vm->name, vm->uuid);
    for (size_t j = 0; j < vm->ndisks; j++) {
      const struct catalog_disk *d = vm->disks[j];
      printf ("  %s  (disk %s)\n", d->name, d->uuid);
      engine_load_verdicts (d, &vs);
      for (size_t k = 0; k < d->npoints; k++) {
        struct layer *l = d->points[k].layer;
        char buf[64], held[32] = "?";
        uint64_t bytes;
        if (usage_of (l, &bytes))
          snprintf (held, sizeof held, "%.1f MiB", bytes / 1048576.0);
        printf ("    %s.img  %s  %" PRIu64 " bytes  %s  %" PRIu64
                " blocks  %s stored  %s%s\n", d->points[k].name,
                layer_meta (l)->snapshot, layer_meta (l)->size,
                layer_is_baseline (layer_meta (l)) ? "baseline" : "delta   ",
                layer_nchanged (l), held, state_of (l, buf, sizeof buf),
                verdict_note (verdicts_of (&vs, layer_meta (l)->snapshot)));
      }
      verdicts_free (&vs);
    }
  }
  if (c->nskipped)
    printf ("(%zu damaged layers skipped)\n", c->nskipped);
}

int
cmd_ls (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct catalog *cat;
  bool json = false;
  int c;

  if (cli_config (&argc, &argv, "h", longopts) == -1)
    return cli_fail ();
  while ((c = cli_getopt (argc, argv, "h", longopts)) != -1) {
    switch (c) {
    case 'j': json = cli_json = true; break;
    case 'h': return cli_help ("ls");
    default: return cli_usage ("ls");
    }
  }
  if (optind + 1 != argc)
    return cli_usage ("ls");
  cat = engine_catalog (argv[optind], CATALOG_COUNTS);
  if (cat == NULL)
    return cli_fail ();
  if (json)
    print_json (cat);
  else
    print_text (cat);
  catalog_free (cat);
  return 0;
}
