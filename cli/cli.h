/* cbtfs: the command line.  One main, one file per subcommand; this is
 * the only layer that sees xapi/, chain/ and fs/ together. */
#ifndef CBTFS_CLI_H
#define CBTFS_CLI_H

#include <stdbool.h>

#include "../xapi/session.h"

/* Subcommands: return the process exit status. */
extern int cmd_backup (int argc, char **argv);
extern int cmd_mount (int argc, char **argv);
extern int cmd_ls (int argc, char **argv);

/* Options every XAPI-using command shares. */
struct server_opts {
  char *url;                    /* normalised https://host[:port] */
  const char *user;
  const char *password_file;
  const char *ca_file;
  bool insecure;
  long timeout;
};

/* Turn "host", "host:port" or "https://host[:port][/]" into a URL;
 * plain http is refused (the password would travel in clear).  Returns
 * malloc'd URL or NULL with err_*. */
extern char *cli_server_url (const char *arg);

/* Log in as O describes, reading the password from its file (first
 * line; the file never reaches argv).  NULL with err_*. */
extern xapi_session *cli_login (const struct server_opts *o);

struct catalog;

/* Open the store at PATH read-only and load its catalog (caller frees
 * with catalog_free); NULL with err_*. */
extern struct catalog *cli_catalog (const char *path);

/* Print "cbtfs: MESSAGE" for the current err_get () and return 1. */
extern int cli_fail (void);

/* Print usage of SUBCOMMAND (NULL for all) to stderr, return 2. */
extern int cli_usage (const char *subcommand);

#endif /* CBTFS_CLI_H */
