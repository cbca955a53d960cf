/* cbtfs: command-line entry point. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../chain/store/store.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../engine/session.h"
#include "../s3/s3.h"
#include "cbtfs-config.h"       /* made by the Makefile in $(BUILD) */
#include "cli.h"

static const struct {
  const char *name;
  int (*fn) (int, char **);
} commands[] = {
  { "backup", cmd_backup },
  { "mount", cmd_mount },
  { "ls", cmd_ls },
  { "fetch", cmd_fetch },
  { "verify", cmd_verify },
  { "prune", cmd_prune },
  { "forget", cmd_forget },
  { "serve", cmd_serve },
  { "restore", cmd_restore },
  { "copy", cmd_copy },
};

bool cli_json;
static char usage_error[512];

/* With --json, a failure is a JSON object too, so that a script reading
 * stdout always finds the status. */
static void
json_failure (int status, const char *why)
{
  if (!cli_json)
    return;
  printf ("{\"status\": %d, \"error\": ", status);
  cli_json_str (why);
  printf ("}\n");
  fflush (stdout);
}

int
cli_fail (void)
{
  const char *why = err_get ()[0] ? err_get () : "failed";
  int status;

  switch (err_class ()) {
  case ERR_SERVER: status = CLI_EXIT_SERVER; break;
  case ERR_CONFIG: status = CLI_EXIT_USAGE; break;
  default: status = CLI_EXIT_FAILED; break;
  }
  log_error ("%s", why);
  json_failure (status, why);
  return status;
}

int
cli_refuse (const char *fmt, ...)
{
  char why[1024], json[1536];
  const char *at = cli_where ();
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (why, sizeof why, fmt, ap);
  va_end (ap);
  log_error ("%s", why);                /* after "FILE:LINE: " if from it */
  snprintf (json, sizeof json, "%s%s%s", at, *at ? ": " : "", why);
  json_failure (CLI_EXIT_USAGE, json);
  return CLI_EXIT_USAGE;
}

void
cli_set_usage_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (usage_error, sizeof usage_error, fmt, ap);
  va_end (ap);
}

int
cli_lock_wait (const char *arg, double *wait)
{
  char *end;
  double v = strtod (arg, &end);

  /* strtod also takes "inf" and "nan": neither is a time to wait. */
  if (end == arg || *end || !isfinite (v) || v < 0) {
    cli_refuse ("--lock-wait %s: expected a number of seconds, 0 or more",
                arg);
    return -1;
  }
  *wait = v;
  return 0;
}

void
cli_json_str (const char *s)
{
  putchar ('"');
  for (; *s; s++) {
    unsigned char c = *s;
    if (c == '"' || c == '\\')
      printf ("\\%c", c);
    else if (c < 0x20)
      printf ("\\u%04x", c);
    else
      putchar (c);
  }
  putchar ('"');
}

/* Print the usage of SUB (NULL: all) to F. */
static void
usage (FILE *f, const char *sub)
{
  static const char *const text[][2] = {
    { "backup", "cbtfs backup STORE --server URL [--user USER] --password-file FILE\n"
      "             [--ca-file PEM] [--vm NAME-OR-UUID]...\n"
      "             [--exclude-disk NAME-OR-UUID]... [--jobs N]\n"
      "             [--nbd-connections N] [--limit-rate BYTES-PER-SECOND]\n"
      "             [--timeout SECONDS] [--lock-wait SECONDS]\n"
      "             [--no-copy | --verify] [--json] [--metrics-file FILE]\n"
      "             [-q|-v]" },
    { "mount", "cbtfs mount STORE MOUNTPOINT [-f] [-o FUSE-OPTIONS] [-v]\n"
      "             [--server URL [--user USER] --password-file FILE [--ca-file PEM]]" },
    { "ls", "cbtfs ls STORE [--json]" },
    { "fetch", "cbtfs fetch STORE [SNAPSHOT-UUID]... --server URL [--user USER]\n"
      "             --password-file FILE [--ca-file PEM] [--keep-data]\n"
      "             [--nbd-connections N] [-q|-v]" },
    { "verify", "cbtfs verify STORE [--server URL [--user USER] --password-file FILE\n"
      "             [--ca-file PEM]] [-q|-v]\n"
      "  cbtfs verify STORE --accept SNAPSHOT-UUID..." },
    { "prune", "cbtfs prune STORE [--keep-last N] [--keep-hourly N]\n"
      "             [--keep-daily N] [--keep-weekly N] [--keep-monthly N]\n"
      "             [--keep-yearly N] [--keep-within DURATION]\n"
      "             [--vm NAME-OR-UUID]... [--include-incomplete]\n"
      "             [--lock-wait SECONDS] [--dry-run] [--json] [-q|-v]\n"
      "             [--server URL [--user USER] --password-file FILE\n"
      "              [--ca-file PEM]]\n"
      "    N: a count or 'unlimited'; DURATION: e.g. 1y2m3d4h (m: months).\n"
      "    --dry-run: only say what would be kept and why.\n"
      "    --server: also remove the dropped points' snapshots from the host." },
    { "forget", "cbtfs forget STORE --vm NAME-OR-UUID [--disk NAME-OR-UUID] --yes\n"
      "             [--server URL [--user USER] --password-file FILE [--ca-file PEM]]\n"
      "             [--lock-wait SECONDS] [--json] [-q|-v]\n"
      "    Removes every point of a VM (or of one of its disks) that is no longer\n"
      "    backed up, and with --server their snapshots on the host (refused\n"
      "    while the VM or disk still exists there).  Without --yes it says\n"
      "    what it would remove." },
    { "serve", "cbtfs serve STORE [POINT]... [--listen ADDRESS:PORT | --unix PATH]\n"
      "             [--tls-certificates DIR] [--pidfile FILE]\n"
      "             [--server URL [--user USER] --password-file FILE [--ca-file PEM]]\n"
      "    Serves points read-only over NBD (nbdkit), in the foreground.  POINT:\n"
      "    a snapshot uuid or a path in the tree (by-vm/VM/DISK/latest); each is\n"
      "    an export named by its snapshot uuid, one alone also the default\n"
      "    export; no POINT serves every point.  Default 127.0.0.1:10809; any\n"
      "    other than a loopback address needs --tls-certificates." },
    { "restore", "cbtfs restore STORE POINT --server URL [--user USER]\n"
      "             --password-file FILE [--ca-file PEM]\n"
      "             (--sr SR-UUID [--name NAME] | --vdi VDI-UUID) [--json] [-q|-v]\n"
      "    POINT: a snapshot uuid or a path in the tree (by-vm/VM/DISK/latest).\n"
      "    --sr creates a VDI there; --vdi overwrites one no VBD has attached." },
    { "copy", "cbtfs copy SRC DST [--keep-extra] [--lock-wait SECONDS] [--json]\n"
      "             [--dst-encrypt-key-file FILE] [-q|-v]\n"
      "    Makes the store DST (made if missing; a directory or s3://BUCKET[/PREFIX])\n"
      "    hold the points SRC holds, copying what it lacks (checked on the way)\n"
      "    and dropping what SRC no longer has unless --keep-extra.\n"
      "    --encrypt-key-file is SRC's key, --dst-encrypt-key-file DST's." },
  };
  fprintf (f, "usage:\n");
  for (size_t i = 0; i < sizeof text / sizeof text[0]; i++)
    if (sub == NULL || strcmp (sub, text[i][0]) == 0)
      fprintf (f, "  %s\n", text[i][1]);
  fprintf (f, "  (every command also takes --config FILE: see man cbtfs, "
           "CONFIGURATION)\n"
           "  (every STORE may be s3://BUCKET[/PREFIX], with --s3-endpoint URL\n"
           "   [--s3-region REGION] [--s3-access-key ID] [--s3-secret-file FILE]\n"
           "   [--s3-ca-file PEM] [--s3-path-style] [--s3-allow-http]\n"
           "   [--cache DIR] [--cache-size SIZE] [--encrypt-key-file FILE]:\n"
           "   see man cbtfs)\n");
  if (sub == NULL)
    fprintf (f, "  cbtfs --version | --help | COMMAND --help\n"
             "exit status: 0 done, 1 some of the work failed, 2 usage or "
             "configuration\nerror, 3 the server could not be reached or "
             "refused us (see man cbtfs)\n");
}

int
cli_usage (const char *sub)
{
  char why[600];

  if (usage_error[0])
    log_error ("%s", usage_error);
  usage (stderr, sub);
  if (usage_error[0])
    snprintf (why, sizeof why, "%s", usage_error);
  else
    snprintf (why, sizeof why, "bad arguments (see cbtfs %s%s--help)",
              sub ? sub : "", sub ? " " : "");
  json_failure (CLI_EXIT_USAGE, why);
  return CLI_EXIT_USAGE;
}

int
cli_help (const char *sub)
{
  usage (stdout, sub);
  return fflush (stdout) == 0 ? 0 : CLI_EXIT_FAILED;
}

/* A store may have thousands of layers, each a data file to read: take
 * all the open files the system allows us (the soft limit is often 1024
 * of a much larger hard limit). */
static void
raise_open_files (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
  }
}

int
main (int argc, char **argv)
{
  raise_open_files ();
  if (argc < 2)
    return cli_usage (NULL);
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0)
    return cli_help (NULL);
  if (strcmp (argv[1], "--version") == 0) {
    printf ("cbtfs %s\nstore format %d\n", CBTFS_VERSION, STORE_FORMAT);
    return fflush (stdout) == 0 ? 0 : CLI_EXIT_FAILED;
  }
  /* An object store's secret key in the environment is in this
   * process's too, and a key file's is read from it (--s3-secret-file
   * and --encrypt-key-file: cli/s3.c). */
  if ((getenv ("AWS_SECRET_ACCESS_KEY") || getenv ("CBTFS_ENCRYPT_KEY_FILE"))
      && engine_forbid_dumps () == -1)
    return cli_fail ();
  if (cli_s3_options (&argc, argv) == -1)
    return CLI_EXIT_USAGE;
  /* Before any thread starts: the object store backend and its HTTP
   * library. */
  if (s3_global_init () == -1 || store_backend_add (&store_s3) == -1)
    return cli_fail ();
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (argv[1], commands[i].name) == 0)
      return commands[i].fn (argc - 1, argv + 1);
  log_error ("unknown command '%s' (try: backup, mount, ls, fetch, "
             "verify, prune, forget, serve, restore, copy)", argv[1]);
  return 2;
}
