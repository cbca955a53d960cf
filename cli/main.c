/* cbtfs: command-line entry point. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "../chain/catalog.h"
#include "../chain/store/store.h"
#include "../common/error.h"
#include "../common/log.h"
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
};

int
cli_fail (void)
{
  log_error ("%s", err_get ()[0] ? err_get () : "failed");
  return 1;
}

struct catalog *
cli_catalog (const char *path, unsigned flags)
{
  return catalog_open (path, flags);
}

int
cli_forbid_dumps (void)
{
  struct rlimit rl;

  /* Non-dumpable: no core file, and /proc/PID/{mem,environ,…} and
   * ptrace are closed to everyone without CAP_SYS_PTRACE, also to
   * other processes of our own user.  The flag lives in the mm, so it
   * survives fork (the mount's daemonised child) and goes only with
   * execve or a change of uid or gid.  A zero core limit also keeps
   * a core file from being written where fs.suid_dumpable=2 would
   * allow one (readable by root only). */
  if (prctl (PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
    err_sys (errno, "prctl PR_SET_DUMPABLE");
    return -1;
  }
  if (getrlimit (RLIMIT_CORE, &rl) == 0 && rl.rlim_cur != 0) {
    rl.rlim_cur = 0;
    setrlimit (RLIMIT_CORE, &rl);
  }
  return 0;
}

char *
cli_point_label (const struct catalog_disk *d, const struct catalog_point *p)
{
  char *s;

  if (asprintf (&s, "by-vm/%s/%s/%s.img", d->vm->name, d->name, p->name) == -1)
    return NULL;
  return s;
}

int
cli_usage (const char *sub)
{
  static const char *const text[][2] = {
    { "backup", "cbtfs backup STORE --server URL [--user USER] --password-file FILE\n"
      "             [--ca-file PEM] [--vm NAME-OR-UUID]...\n"
      "             [--nbd-connections N] [--timeout SECONDS] [--no-copy | --verify]\n"
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
  };
  fprintf (stderr, "usage:\n");
  for (size_t i = 0; i < sizeof text / sizeof text[0]; i++)
    if (sub == NULL || strcmp (sub, text[i][0]) == 0)
      fprintf (stderr, "  %s\n", text[i][1]);
  return 2;
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
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0) {
    cli_usage (NULL);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (argv[1], commands[i].name) == 0)
      return commands[i].fn (argc - 1, argv + 1);
  log_error ("unknown command '%s' (try: backup, mount, ls, fetch, "
             "verify)", argv[1]);
  return 2;
}
