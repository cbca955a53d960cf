/* cbtfs: the command line.  One main, one file per subcommand; this is
 * the only layer that sees xapi/, chain/ and fs/ together. */
#ifndef CBTFS_CLI_H
#define CBTFS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "../xapi/session.h"

/* Subcommands: return the process exit status. */
extern int cmd_backup (int argc, char **argv);
extern int cmd_mount (int argc, char **argv);
extern int cmd_ls (int argc, char **argv);
extern int cmd_fetch (int argc, char **argv);
extern int cmd_verify (int argc, char **argv);

/* Options every XAPI-using command shares. */
struct server_opts {
  const char *server;           /* as given: host[:port] or https://… */
  const char *user;
  const char *password_file;
  const char *ca_file;
  long timeout;                 /* seconds per XAPI call and NBD wait */
};

#define CLI_SERVER_OPTS_INIT { .user = "root", .timeout = 60 }

/* getopt_long entries for struct server_opts. */
#define CLI_SERVER_LONGOPTS                                     \
  { "server", required_argument, NULL, 's' },                   \
  { "user", required_argument, NULL, 'u' },                     \
  { "password-file", required_argument, NULL, 'p' },            \
  { "ca-file", required_argument, NULL, 'c' },                  \
  { "timeout", required_argument, NULL, 't' }

/* Take option C (from CLI_SERVER_LONGOPTS) with ARG into SO: 1 if it
 * was one of them, 0 if not, -1 (after printing why) for a bad value. */
extern int cli_server_option (struct server_opts *so, int c, const char *arg);

/* Turn "host", "host:port" or "https://host[:port][/]" into a URL;
 * plain http is refused (the password would travel in clear).  Returns
 * malloc'd URL or NULL with err_*. */
extern char *cli_server_url (const char *arg);

/* Log in as O describes, reading the password from its file (first
 * line; the file never reaches argv).  Makes the process non-dumpable
 * first (cli_forbid_dumps).  NULL with err_*. */
extern xapi_session *cli_login (const struct server_opts *o);

/* Make this process and its forks non-dumpable, with no core file,
 * before a secret enters memory.  Idempotent.  0 or -1 with err_*. */
extern int cli_forbid_dumps (void);

struct nbdsrc_target;

/* Connection details for snapshot SNAP_REF (uuid SNAP_UUID, for
 * messages) from VDI.get_nbd_info.  0 or -1 with err_*. */
extern int cli_nbd_target (xapi_session *xs, const char *snap_ref,
                           const char *snap_uuid, struct nbdsrc_target *t);

/* A snapshot to copy from, for copy_layer's target function. */
struct cli_target {
  xapi_session *xs;
  const char *ref;
  const char *uuid;
};

/* nbdsrc_target_fn for copy_layer: fresh details of the snapshot
 * OPAQUE (a struct cli_target) names. */
extern int cli_copy_target (void *opaque, struct nbdsrc_target *t);

/* fetch_target_fn for a fetcher used by one thread: fresh details of
 * SNAPSHOT through the session OPAQUE (an xapi_session *). */
extern int cli_fetch_target (void *opaque, const char *snapshot,
                             struct nbdsrc_target *t);

/* The ref of snapshot UUID (caller frees) if it still holds data on the
 * host; NULL with the reason in err_* when it is gone or only CBT
 * metadata is left. */
extern char *cli_snapshot_with_data (xapi_session *xs, const char *uuid);

struct store;

/* Reduce snapshot REF (uuid UUID, whose layer is in DISK of S) to CBT
 * metadata, once the layer read back from the store is complete,
 * retrying a few times while the host still holds it (xapi waits only
 * 4 s for its own VBDs).  0, or -1 after a warning that it keeps its
 * data. */
extern int cli_data_destroy (xapi_session *xs, struct store *s,
                             const char *disk, const char *ref,
                             const char *uuid);

struct catalog;

/* Open the store at PATH read-only and load its catalog with FLAGS
 * (enum catalog_flags; caller frees with catalog_free); NULL with err_*. */
extern struct catalog *cli_catalog (const char *path, unsigned flags);

struct catalog_disk;
struct catalog_point;

struct verdicts;

/* The verdicts of disk D (chain/verdict.h) into *VS: empty if there are
 * none, or if they cannot be read (then a warning says why). */
extern void cli_load_verdicts (const struct catalog_disk *d,
                               struct verdicts *vs);

/* "by-vm/VM/DISK/TIME.img": where people find point P of disk D in a
 * mount.  Malloc'd (caller frees), or NULL on ENOMEM. */
extern char *cli_point_label (const struct catalog_disk *d,
                              const struct catalog_point *p);

/* Seconds to give VDI.checksum of a disk of SIZE bytes: the host reads
 * all of it (allowing 20 MiB/s), and never less than AT_LEAST. */
extern long cli_checksum_timeout (uint64_t size, long at_least);

/* Print "cbtfs: MESSAGE" for the current err_get () and return 1. */
extern int cli_fail (void);

/* Print usage of SUBCOMMAND (NULL for all) to stderr, return 2. */
extern int cli_usage (const char *subcommand);

#endif /* CBTFS_CLI_H */
