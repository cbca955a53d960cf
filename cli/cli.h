/* cbtfs: the command line.  One main, one file per subcommand; it
 * parses options, prints, and maps errors to exit codes.  The policy
 * is engine/'s, the filesystem fs/'s. */
#ifndef CBTFS_CLI_H
#define CBTFS_CLI_H

#include <getopt.h>
#include <stdbool.h>

#include "../engine/backup.h"
#include "../engine/session.h"

/* Exit status, the same for every command (README "Exit status"). */
#define CLI_EXIT_FAILED 1       /* some of the work failed */
#define CLI_EXIT_USAGE 2        /* usage or configuration error */
#define CLI_EXIT_SERVER 3       /* the server unreachable or refusing us */

/* Set by a command given --json: cli_fail and cli_refuse then also
 * print {"status": N, "error": "…"} to stdout. */
extern bool cli_json;

/* The configuration file read when neither --config nor $CBTFS_CONFIG
 * names one (only if it exists), and the name of the password among
 * systemd's credentials ($CREDENTIALS_DIRECTORY). */
#define CLI_CONFIG_FILE "/etc/cbtfs/cbtfs.conf"
#define CLI_CREDENTIAL "cbtfs-password"

/* Before a command's getopt loop: put the configuration file's options
 * for LONGOPTS (its [cbtfs] keys that name one) before the arguments
 * of *ARGV, drop its --config FILE and reset getopt; a key the command
 * line gives is not taken from the file, a key no option has is
 * ignored.  With --server and no --password-file, systemd's credential
 * is the password file.  *ARGV is then a new array that lives until
 * exit.  0, or -1 with err_* (class ERR_CONFIG) for a file that cannot
 * be read or parsed, naming its file and line. */
extern int cli_config (int *argc, char ***argv, const char *shortopts,
                       const struct option *longopts)
  __attribute__ ((__nonnull__ (1, 2, 3, 4)));

/* getopt_long over cli_config's argv.  An option from the file makes
 * later messages begin "FILE:LINE: " until the next option; an option
 * getopt does not take returns '?' with the reason kept for
 * cli_usage. */
extern int cli_getopt (int argc, char **argv, const char *shortopts,
                       const struct option *longopts)
  __attribute__ ((__nonnull__ (2, 3, 4)));

/* "FILE:LINE" of the option at hand when it came from the file, else "". */
extern const char *cli_where (void);

/* Keep why the command line is wrong, for cli_usage to say. */
extern void cli_set_usage_error (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));

/* Subcommands: return the process exit status. */
extern int cmd_backup (int argc, char **argv);
extern int cmd_mount (int argc, char **argv);
extern int cmd_ls (int argc, char **argv);
extern int cmd_fetch (int argc, char **argv);
extern int cmd_verify (int argc, char **argv);
extern int cmd_prune (int argc, char **argv);
extern int cmd_forget (int argc, char **argv);
extern int cmd_serve (int argc, char **argv);
extern int cmd_restore (int argc, char **argv);
extern int cmd_copy (int argc, char **argv);

#define CLI_SERVER_OPTS_INIT { .user = "root", .timeout = 60 }

/* getopt_long entries for struct engine_server. */
#define CLI_SERVER_LONGOPTS                                     \
  { "server", required_argument, NULL, 's' },                   \
  { "user", required_argument, NULL, 'u' },                     \
  { "password-file", required_argument, NULL, 'p' },            \
  { "ca-file", required_argument, NULL, 'c' },                  \
  { "timeout", required_argument, NULL, 't' }

/* Take option C (from CLI_SERVER_LONGOPTS) with ARG into SO: 1 if it
 * was one of them, 0 if not, -1 (after printing why) for a bad value. */
extern int cli_server_option (struct engine_server *so, int c,
                              const char *arg);

/* Log in once with CREDS before serving for long (a mount, a serve),
 * so that a wrong password or an untrusted certificate stops it with
 * one clear line: -1 with err_* then.  A host that is merely
 * unreachable now is only a warning (0): blocks the store lacks fail
 * with EIO until it can be reached. */
extern int cli_check_server (const struct engine_creds *creds)
  __attribute__ ((__nonnull__ (1)));

/* Print S to stdout as a JSON string: quotes, backslashes and control
 * bytes escaped (names may hold any byte XenServer allowed but NUL). */
extern void cli_json_str (const char *s) __attribute__ ((__nonnull__ (1)));

/* backup --json: STATUS and what became of each disk of R, as one
 * JSON object on stdout (report.c). */
extern void cli_backup_json (int status, const struct engine_backup_report *r)
  __attribute__ ((__nonnull__ (2)));

/* backup --metrics-file: R's disks in Prometheus's text format, written
 * to PATH.tmp (mode 0644) and renamed to PATH, with the run's STARTED
 * time and exit STATUS.  A run that did not start (!RAN, R empty)
 * keeps the disks of the file it replaces, their last result 0.  0, or
 * -1 with err_*. */
extern int cli_backup_metrics (const char *path, int status, int64_t started,
                               const struct engine_backup_report *r, bool ran)
  __attribute__ ((__nonnull__ (1, 4)));

/* A usage error: print "cbtfs: " and FMT as one line, return 2. */
extern int cli_refuse (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));

/* --lock-wait's default: a nightly backup that meets a prune or a
 * forget on its store waits for it rather than fail. */
#define CLI_LOCK_WAIT_DEFAULT 300

/* Take ARG of --lock-wait SECONDS (0 or more, a fraction allowed) into
 * *WAIT: 0, or -1 (after printing why) for anything else. */
extern int cli_lock_wait (const char *arg, double *wait)
  __attribute__ ((__nonnull__ (1, 2)));

/* Print "cbtfs: MESSAGE" for the current err_get () and return the
 * exit status its class (err_class) calls for: 3 the server's, 2 the
 * configuration's, else 1. */
extern int cli_fail (void);

/* Take the object store options (--s3-…, which every command takes)
 * out of ARGV (*ARGC shrinks), setting the environment the object
 * store backend reads: 0, or -1 after printing why (exit 2). */
extern int cli_s3_options (int *argc, char **argv)
  __attribute__ ((__nonnull__ (1, 2)));

/* The configuration file's key NAME = VALUE, if it is an object store
 * option's ("s3-endpoint"…): set it unless the environment (or the
 * command line) has.  1 taken, 0 not such a key, -1 with err_*. */
extern int cli_s3_file_key (const char *name, const char *value)
  __attribute__ ((__nonnull__ (1, 2)));

/* For a command that reads an object store for long (mount, serve):
 * keep its blocks in the default cache directory (/var/cache/cbtfs
 * for root, else $XDG_CACHE_HOME/cbtfs or ~/.cache/cbtfs) unless
 * --cache or CBTFS_S3_CACHE names one.  0, or -1 with err_*. */
extern int cli_s3_default_cache (void);

/* An encryption key FILE (--encrypt-key-file, copy's
 * --dst-encrypt-key-file) checked as the store will read it, and its
 * absolute path into *ABS (malloc'd: a mount's daemon runs from /).
 * 0, or -1 with err_*. */
extern int cli_key_file (const char *file, char **abs);

/* Whether STORE names an object store (not a directory to resolve). */
extern bool cli_store_is_remote (const char *store)
  __attribute__ ((__nonnull__ (1)));

/* Print why (cli_set_usage_error) and the usage of SUBCOMMAND (NULL
 * for all) to stderr, with --json also {"status": 2, "error": …} to
 * stdout; return 2. */
extern int cli_usage (const char *subcommand);

/* --help: the same to stdout, return 0. */
extern int cli_help (const char *subcommand);

#endif /* CBTFS_CLI_H */
