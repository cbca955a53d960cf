/* cbtfs: connecting to XAPI from the command line. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../chain/catalog.h"
#include "../chain/layer.h"
#include "../chain/nbdsrc.h"
#include "../chain/verdict.h"
#include "../xapi/api.h"
#include "cli.h"

char *
cli_server_url (const char *arg)
{
  const char *host = arg;
  size_t n;
  char *url;

  if (strncmp (arg, "https://", 8) == 0)
    host = arg + 8;
  else if (strncmp (arg, "http://", 7) == 0) {
    err_set (EINVAL, "--server %s: plain http would send the password in "
             "clear; use https://", arg);
    return NULL;
  }
  else if (strstr (arg, "://")) {
    err_set (EINVAL, "--server %s: only https:// is supported", arg);
    return NULL;
  }
  n = strcspn (host, "/?#");
  if (n == 0 || host[n] == '?' || host[n] == '#'
      || (host[n] == '/' && host[n + 1] != '\0')) {
    err_set (EINVAL, "--server %s: expected https://HOST[:PORT]", arg);
    return NULL;
  }
  if (asprintf (&url, "https://%.*s", (int) n, host) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return url;
}

/* The first line of FILE, without its newline.  Warns when others may
 * read it: the password opens the whole pool. */
static char *
read_password (const char *file)
{
  struct stat st;
  size_t len;
  char *text = read_file (file, 4096, &len);

  if (text == NULL) {
    err_sys (errno, "--password-file %s", file);
    return NULL;
  }
  text[strcspn (text, "\r\n")] = '\0';
  if (stat (file, &st) == 0 && (st.st_mode & 077))
    log_warn ("--password-file %s can be read by other users", file);
  return text;
}

int
cli_server_option (struct server_opts *so, int c, const char *arg)
{
  char *end;

  switch (c) {
  case 's': so->server = arg; return 1;
  case 'u': so->user = arg; return 1;
  case 'p': so->password_file = arg; return 1;
  case 'c': so->ca_file = arg; return 1;
  case 't':
    so->timeout = strtol (arg, &end, 10);
    if (*end || end == arg || so->timeout < 1) {
      log_error ("--timeout must be a positive number of seconds");
      return -1;
    }
    return 1;
  default:
    return 0;
  }
}

xapi_session *
cli_login (const struct server_opts *o)
{
  CLEANUP_FREE char *pw = NULL;
  CLEANUP_FREE char *url = NULL;
  struct xapi_opts xo = {
    .user = o->user, .ca_file = o->ca_file, .timeout = o->timeout,
  };
  xapi_session *s;

  /* Before the password or a session is in memory. */
  if (cli_forbid_dumps () == -1)
    return NULL;
  if (o->server == NULL) {
    err_set (EINVAL, "--server is required");
    return NULL;
  }
  if ((url = cli_server_url (o->server)) == NULL)
    return NULL;
  xo.url = url;
  if (o->password_file == NULL) {
    err_set (EINVAL, "--password-file is required (passwords never go on "
             "the command line)");
    return NULL;
  }
  pw = read_password (o->password_file);
  if (pw == NULL)
    return NULL;
  xo.password = pw;
  s = xapi_login (&xo);
  explicit_bzero (pw, strlen (pw));
  return s;
}

int
cli_nbd_target (xapi_session *xs, const char *snap_ref, const char *snap_uuid,
                struct nbdsrc_target *t)
{
  struct xapi_nbd_info *info = NULL;
  size_t n;

  if (xapi_vdi_get_nbd_info (xs, snap_ref, &info, &n) == -1)
    return -1;
  if (n == 0) {
    err_set (ENXIO, "VDI.get_nbd_info gave no NBD server for snapshot %s: "
             "is a network's purpose set to nbd?", snap_uuid);
    return -1;
  }
  /* XAPI lists a host's IPv4 address first. */
  t->address = info[0].address;
  t->cert = info[0].cert;
  t->subject = info[0].subject;
  t->exportname = info[0].exportname;
  t->port = info[0].port;
  info[0].address = info[0].cert = info[0].subject = info[0].exportname = NULL;
  xapi_nbd_info_free (info, n);
  if (t->port <= 0 || t->port > 65535 || t->address == NULL
      || t->exportname == NULL) {
    err_set (EPROTO, "VDI.get_nbd_info for snapshot %s: unusable record",
             snap_uuid);
    nbdsrc_target_clear (t);
    return -1;
  }
  return 0;
}

int
cli_copy_target (void *opaque, struct nbdsrc_target *t)
{
  struct cli_target *c = opaque;

  return cli_nbd_target (c->xs, c->ref, c->uuid, t);
}

int
cli_fetch_target (void *opaque, const char *snapshot, struct nbdsrc_target *t)
{
  xapi_session *xs = opaque;
  CLEANUP_FREE char *ref = xapi_vdi_by_uuid (xs, snapshot);

  return ref ? cli_nbd_target (xs, ref, snapshot, t) : -1;
}

char *
cli_snapshot_with_data (xapi_session *xs, const char *uuid)
{
  struct xapi_vdi rec = { 0 };
  char *ref = xapi_vdi_by_uuid (xs, uuid);

  if (ref == NULL)
    return NULL;
  if (xapi_vdi_get (xs, ref, &rec) == -1) {
    free (ref);
    return NULL;
  }
  if (strcmp (rec.type, "cbt_metadata") == 0) {
    err_set (ENODATA, "snapshot %s holds only CBT metadata", uuid);
    free (ref);
    ref = NULL;
  }
  xapi_vdi_clear (&rec);
  return ref;
}

/* How often, and how far apart, to retry data_destroy while the host
 * still holds the snapshot. */
#define DATA_DESTROY_TRIES 5
#define DATA_DESTROY_PAUSE 2

int
cli_data_destroy (xapi_session *xs, struct store *s, const char *disk,
                  const char *ref, const char *uuid)
{
  int v;

  /* What this process believes is not enough: only what is on disk
   * survives it. */
  if (layer_check_complete (s, disk, uuid) == -1) {
    log_warn ("snapshot %s keeps its data on the host: %s", uuid, err_get ());
    return -1;
  }
  v = verdict_latest (s, disk, uuid);
  if (v == -1 || verdict_holds (v)) {
    if (v == -1)
      log_warn ("snapshot %s keeps its data on the host: %s", uuid,
                err_get ());
    else
      log_warn ("snapshot %s keeps its data on the host: its point was "
                "found %s (cbtfs verify --server checks it again; cbtfs "
                "verify --accept %s lets it go)", uuid, verdict_name (v),
                uuid);
    return -1;
  }
  for (int i = 1;; i++) {
    if (xapi_vdi_data_destroy (xs, ref) == 0) {
      log_info ("snapshot %s reduced to CBT metadata", uuid);
      return 0;
    }
    if (!xapi_failed_with (xs, "VDI_IN_USE") || i == DATA_DESTROY_TRIES)
      break;
    sleep (DATA_DESTROY_PAUSE);
  }
  log_warn ("snapshot %s keeps its data on the host: %s", uuid, err_get ());
  return -1;
}

long
cli_checksum_timeout (uint64_t size, long at_least)
{
  uint64_t t = 60 + size / (20 << 20);

  return t > (uint64_t) at_least ? (long) MIN (t, (uint64_t) LONG_MAX)
    : at_least;
}

void
cli_load_verdicts (const struct catalog_disk *d, struct verdicts *vs)
{
  vs->v = NULL;
  vs->n = 0;
  if (d->npoints && verdicts_load (d->points[0].layer->store, d->uuid,
                                   vs) == -1)
    log_warn ("%s", err_get ());
}
