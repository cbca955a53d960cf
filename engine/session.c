/* cbtfs engine: logging in to XAPI.
 *
 * Thread model: see session.h; nothing here is shared but the
 * immutable credentials.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/util.h"
#include "session.h"

struct engine_creds {
  char *url;
  char *user;
  char *ca_file;                /* or NULL */
  char *password;               /* secret: wiped before free */
  long timeout;
};

char *
engine_server_url (const char *arg)
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

int
engine_forbid_dumps (void)
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

/* The first line of FILE, without its newline.  Refused when other
 * users may read or write it: the password opens the whole pool (its
 * group may read it: 0640 for a backup group). */
static char *
read_password (const char *file)
{
  char *text = secret_file_read ("--password-file", file, 4096, NULL);

  if (text)
    text[strcspn (text, "\r\n")] = '\0';
  return text;
}

void
engine_creds_free (struct engine_creds *c)
{
  if (c == NULL)
    return;
  if (c->password) {
    explicit_bzero (c->password, strlen (c->password));
    free (c->password);
  }
  free (c->url);
  free (c->user);
  free (c->ca_file);
  free (c);
}

struct engine_creds *
engine_creds_new (const struct engine_server *s)
{
  struct engine_creds *c = NULL;

  /* Before the password or a session is in memory. */
  if (engine_forbid_dumps () == -1)
    return NULL;
  if (s->server == NULL) {
    err_set (EINVAL, "--server is required");
    goto err;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  c->timeout = s->timeout;
  if ((c->url = engine_server_url (s->server)) == NULL)
    goto err;
  if (s->password_file == NULL) {
    err_set (EINVAL, "--password-file is required (passwords never go on "
             "the command line; under systemd, a credential named "
             "cbtfs-password does)");
    goto err;
  }
  if ((c->user = strdup (s->user ? s->user : "root")) == NULL
      || (s->ca_file && (c->ca_file = strdup (s->ca_file)) == NULL)) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  if ((c->password = read_password (s->password_file)) == NULL)
    goto err;
  return c;

 err:
  /* --server, --password-file: what the admin must fix. */
  if (errno != ENOMEM)
    err_set_class (ERR_CONFIG);
  engine_creds_free (c);
  return NULL;
}

xapi_session *
engine_login (const struct engine_creds *c)
{
  struct xapi_opts xo = {
    .url = c->url, .user = c->user, .password = c->password,
    .ca_file = c->ca_file, .timeout = c->timeout,
  };

  return xapi_login (&xo);
}

xapi_session *
engine_login_server (const struct engine_server *s)
{
  struct engine_creds *c = engine_creds_new (s);
  xapi_session *xs = c ? engine_login (c) : NULL;

  engine_creds_free (c);
  return xs;
}

long
engine_creds_timeout (const struct engine_creds *c)
{
  return c->timeout;
}
