/* cbtfs: connecting to XAPI from the command line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
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

xapi_session *
cli_login (const struct server_opts *o)
{
  CLEANUP_FREE char *pw = NULL;
  struct xapi_opts xo = {
    .url = o->url, .user = o->user, .ca_file = o->ca_file,
    .insecure = o->insecure, .timeout = o->timeout,
  };
  xapi_session *s;

  if (o->password_file == NULL) {
    err_set (EINVAL, "--password-file is required (passwords never go on "
             "the command line)");
    return NULL;
  }
  pw = read_password (o->password_file);
  if (pw == NULL)
    return NULL;
  if (o->insecure)
    log_warn ("--insecure: the XAPI server's certificate is NOT checked");
  xo.password = pw;
  s = xapi_login (&xo);
  explicit_bzero (pw, strlen (pw));
  return s;
}
