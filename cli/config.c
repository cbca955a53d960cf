/* cbtfs: the configuration file (man cbtfs, CONFIGURATION).
 *
 * Its [cbtfs] keys are long options' names.  cli_config turns each key
 * the running command has an option for into "--key=value" placed
 * before the command line's own arguments, so that every option a
 * command has works from the file without code of its own, and the
 * command's getopt loop judges file and command line alike.  An option
 * the command line gives drops the file's keys for it (repeatable ones
 * too: --vm on the command line replaces the file's vm keys).
 *
 * Ownership: the argv cli_config makes, and the strings in it, live
 * until the process exits (commands keep pointers into it); atexit
 * frees them.
 */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/error.h"
#include "../common/log.h"
#include "cli.h"

/* getopt's value for --config in the scan: no command's option uses it. */
#define OPT_CONFIG (1 << 20)

/* What the scan of the command line found. */
struct scan {
  const char *config;           /* --config FILE, or NULL */
  int config_at, config_n;      /* its place in argv and its length */
  bool *given;                  /* per longopts entry: on the command line */
  bool server;                  /* --server given */
  bool password_file;           /* --password-file given */
  bool config_missing;          /* --config without its FILE */
};

/* The file as it is parsed into options. */
struct parse {
  const char *file;
  const struct option *longopts;
  struct scan *scan;
  FILE *fp;
  int line;                     /* of the text the reader gave last */
  bool at_line_start;
  int read_errno;               /* why reading failed, or 0 */
  char **args;                  /* "--key=value", malloc'd */
  int *lines;                   /* the line of each */
  int nargs;
  int err_line;                 /* the first error this code found */
  char err[512];
  bool verbose;                 /* say which keys are ignored */
};

/* The argv made (its strings too), and the file's options in it, for
 * messages naming them. */
static char **config_argv;
static char **config_args;      /* the file's, malloc'd: getopt may move
                                   them in config_argv */
static const char *config_file;
static int *config_lines;
static int config_nargs;
static char where[512];         /* "FILE:LINE" of the option at hand */

static int
longopt_index (const struct option *longopts, const char *name)
{
  for (int i = 0; longopts[i].name; i++)
    if (strcmp (longopts[i].name, name) == 0)
      return i;
  return -1;
}

/* Mark every entry of LONGOPTS whose value is VAL as given. */
static void
mark_given (const struct option *longopts, int val, struct scan *s)
{
  for (int i = 0; longopts[i].name; i++)
    if (longopts[i].val == val && longopts[i].flag == NULL) {
      s->given[i] = true;
      if (strcmp (longopts[i].name, "server") == 0)
        s->server = true;
      if (strcmp (longopts[i].name, "password-file") == 0)
        s->password_file = true;
      if (strcmp (longopts[i].name, "json") == 0)
        cli_json = true;
    }
}

/* Find what ARGV gives without reordering it ("-" keeps the order), so
 * that --config's place is known: opterr is off, the command's own
 * loop reports what is wrong. */
static int
scan_argv (int argc, char **argv, const char *shortopts,
           const struct option *longopts, struct scan *s)
{
  int n = 0, c, at;
  struct option *opts;
  char *shorts;
  char **copy;

  while (longopts[n].name)
    n++;
  opts = calloc (n + 2, sizeof *opts);
  shorts = malloc (strlen (shortopts) + 2);
  copy = malloc ((argc + 1) * sizeof *copy);
  s->given = calloc (n + 1, sizeof *s->given);
  if (opts == NULL || shorts == NULL || copy == NULL || s->given == NULL) {
    free (opts);
    free (shorts);
    free (copy);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  memcpy (opts, longopts, n * sizeof *opts);
  opts[n] = (struct option) { "config", required_argument, NULL, OPT_CONFIG };
  sprintf (shorts, "-%s", shortopts);
  memcpy (copy, argv, (argc + 1) * sizeof *copy);
  opterr = 0;
  optind = 0;
  for (at = 1; (c = getopt_long (argc, copy, shorts, opts, NULL)) != -1;
       at = optind) {
    if (c == OPT_CONFIG) {
      s->config = optarg;
      s->config_at = at;
      s->config_n = optind - at;
    }
    else if ((c == '?' || c == ':') && optopt == OPT_CONFIG)
      s->config_missing = true;
    else if (c != 1 && c != '?' && c != ':')
      mark_given (longopts, c, s);
  }
  opterr = 1;
  optind = 0;
  free (opts);
  free (shorts);
  free (copy);
  return 0;
}

/* Count lines as inih reads them, so that errors of ours name theirs;
 * a line longer than inih takes would be cut in two: refused. */
static char *
reader (char *buf, int size, void *stream)
{
  struct parse *p = stream;

  if (fgets (buf, size, p->fp) == NULL) {
    if (ferror (p->fp))
      p->read_errno = errno ? errno : EIO;
    return NULL;
  }
  if (p->at_line_start)
    p->line++;
  p->at_line_start = strchr (buf, '\n') != NULL || feof (p->fp);
  if (!p->at_line_start && p->err_line == 0) {
    p->err_line = p->line;
    snprintf (p->err, sizeof p->err, "line longer than %d bytes",
              size - 2);
    return NULL;
  }
  return buf;
}

/* Keep the first error (inih goes on after one): 0, inih's "failed". */
static int __attribute__ ((__format__ (__printf__, 2, 3)))
fail_at (struct parse *p, const char *fmt, ...)
{
  va_list ap;

  if (p->err_line == 0) {
    p->err_line = p->line;
    va_start (ap, fmt);
    vsnprintf (p->err, sizeof p->err, fmt, ap);
    va_end (ap);
  }
  return 0;
}

static int
add_arg (struct parse *p, const char *name, const char *value)
{
  char **args = realloc (p->args, (p->nargs + 1) * sizeof *args);
  int *lines = args ? realloc (p->lines, (p->nargs + 1) * sizeof *lines)
    : NULL;
  char *a;

  if (args)
    p->args = args;
  if (lines)
    p->lines = lines;
  if (lines == NULL
      || (value ? asprintf (&a, "--%s=%s", name, value)
          : asprintf (&a, "--%s", name)) == -1)
    return fail_at (p, "out of memory");
  p->args[p->nargs] = a;
  p->lines[p->nargs++] = p->line;
  return 1;
}

/* inih's handler: one key of the file. */
static int
handle (void *user, const char *section, const char *name,
        const char *value)
{
  struct parse *p = user;
  const struct option *o;
  int i, b;

  /* Other sections are left to other uses of the file. */
  if (strcmp (section, "cbtfs") != 0)
    return 1;
  /* The object store's options, which every command takes (s3.c). */
  if ((b = cli_s3_file_key (name, value)) != 0)
    return b == 1 ? 1 : fail_at (p, "%s", err_get ());
  i = longopt_index (p->longopts, name);
  if (i == -1 || strcmp (name, "help") == 0) {
    if (p->verbose)
      log_info ("%s:%d: '%s' is not an option of this command; ignored",
                p->file, p->line, name);
    return 1;
  }
  if (p->scan->given[i])
    return 1;                   /* the command line's wins */
  o = &p->longopts[i];
  if (o->has_arg == no_argument) {
    if ((b = parse_yes_no (value)) == -1)
      return fail_at (p, "%s = %s: expected yes or no (true/false, 1/0)",
                      name, value);
    return b ? add_arg (p, name, NULL) : 1;
  }
  if (strcmp (name, "server") == 0)
    p->scan->server = true;
  if (strcmp (name, "password-file") == 0)
    p->scan->password_file = true;
  return add_arg (p, name,
                  o->has_arg == optional_argument && !*value ? NULL : value);
}

/* Which file: --config, $CBTFS_CONFIG, else the default, which may be
 * missing.  *OPTIONAL says whether a missing one is fine. */
static const char *
which_file (const struct scan *s, bool *optional)
{
  const char *env = getenv ("CBTFS_CONFIG");

  *optional = false;
  if (s->config)
    return s->config;
  if (env && *env)
    return env;
  *optional = true;
  return CLI_CONFIG_FILE;
}

static int
parse_file (struct parse *p, bool optional)
{
  int r;

  p->fp = fopen (p->file, "re");
  if (p->fp == NULL) {
    if (optional && errno == ENOENT)
      return 0;
    err_sys (errno, "%s", p->file);
    return -1;
  }
  p->at_line_start = true;
  r = ini_parse_stream (reader, p, handle, p);
  if (r == 0 && p->read_errno) {
    err_sys (p->read_errno, "%s", p->file);
    r = -1;
  }
  fclose (p->fp);
  if (r > 0 || p->err_line) {
    if (p->err_line && (r <= 0 || p->err_line <= r))
      err_set (EINVAL, "%s:%d: %s", p->file, p->err_line, p->err);
    else
      err_set (EINVAL, "%s:%d: expected 'key = value', a [section] or a "
               "comment", p->file, r);
    return -1;
  }
  if (r == -2) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return r;
}

/* systemd's credential, for a --server with no --password-file. */
static int
add_credential (struct parse *p)
{
  const char *dir = getenv ("CREDENTIALS_DIRECTORY");
  char *file;
  int r = 0;

  if (dir == NULL || !*dir || !p->scan->server || p->scan->password_file
      || longopt_index (p->longopts, "password-file") == -1)
    return 0;
  if (asprintf (&file, "%s/" CLI_CREDENTIAL, dir) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (access (file, F_OK) == 0) {
    p->line = 0;
    if (add_arg (p, "password-file", file) == 0) {
      err_set (ENOMEM, "out of memory");
      r = -1;
    }
  }
  free (file);
  return r;
}

/* The new argv: the file's options, then ARGV's without --config. */
static int
make_argv (struct parse *p, int *argc, char ***argv)
{
  const struct scan *s = p->scan;
  int n = 1 + p->nargs + *argc - 1 - s->config_n, k = 0;
  char **v = malloc ((n + 1) * sizeof *v);

  if (v == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  v[k++] = (*argv)[0];
  for (int i = 0; i < p->nargs; i++)
    v[k++] = p->args[i];
  for (int i = 1; i < *argc; i++)
    if (s->config_n == 0 || i < s->config_at
        || i >= s->config_at + s->config_n)
      v[k++] = (*argv)[i];
  v[k] = NULL;
  *argc = k;
  *argv = config_argv = v;
  return 0;
}

static void
free_config (void)
{
  for (int i = 0; i < config_nargs; i++)
    free (config_args[i]);
  free (config_args);
  free (config_argv);
  free (config_lines);
}

int
cli_config (int *argc, char ***argv, const char *shortopts,
            const struct option *longopts)
{
  struct scan s = { .config = NULL };
  struct parse p = { .longopts = longopts, .scan = &s };
  bool optional;
  int vi;

  if (scan_argv (*argc, *argv, shortopts, longopts, &s) == -1)
    goto err;
  if (s.config_missing) {
    err_set (EINVAL, "--config needs a FILE");
    goto err;
  }
  vi = longopt_index (longopts, "verbose");
  p.verbose = vi >= 0 && s.given[vi];
  p.file = which_file (&s, &optional);
  if (parse_file (&p, optional) == -1 || add_credential (&p) == -1
      || make_argv (&p, argc, argv) == -1)
    goto err;
  config_file = p.file;
  config_lines = p.lines;
  config_nargs = p.nargs;
  config_args = p.args;
  free (s.given);
  atexit (free_config);
  optind = 0;
  return 0;

 err:
  if (errno != ENOMEM)
    err_set_class (ERR_CONFIG);
  for (int i = 0; i < p.nargs; i++)
    free (p.args[i]);
  free (p.args);
  free (p.lines);
  free (s.given);
  return -1;
}

/* Say which option is at hand if it came from the file. */
static void
set_where (int index)
{
  if (index >= 1 && index <= config_nargs && config_lines[index - 1] > 0)
    snprintf (where, sizeof where, "%s:%d", config_file,
              config_lines[index - 1]);
  else
    where[0] = '\0';
  log_set_context (where[0] ? where : NULL);
}

/* A message for what getopt did not take at ARGV[optind - 1]. */
static void
bad_option (char **argv, const char *shortopts)
{
  const char *arg = argv[optind - 1];

  if (optopt == 0)
    cli_set_usage_error ("unknown option '%s'", arg);
  else if (strncmp (arg, "--", 2) == 0)
    cli_set_usage_error ("option '%s' needs an argument", arg);
  else if (optopt < 256 && strchr (shortopts, optopt))
    cli_set_usage_error ("option '-%c' needs an argument", optopt);
  else
    cli_set_usage_error ("unknown option '-%c'", optopt < 256 ? optopt : '?');
}

int
cli_getopt (int argc, char **argv, const char *shortopts,
            const struct option *longopts)
{
  int c;

  opterr = 0;
  c = getopt_long (argc, argv, shortopts, longopts, NULL);
  if (c == -1) {
    set_where (0);
    return -1;
  }
  set_where (optind - 1);
  if (c == '?' || c == ':') {
    bad_option (argv, shortopts);
    return '?';
  }
  return c;
}

const char *
cli_where (void)
{
  return where;
}
