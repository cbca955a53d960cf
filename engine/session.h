/* cbtfs engine: logging in to XAPI.
 *
 * The password is read from its file once, into a struct engine_creds
 * the process keeps (wiped when freed), so that parallel backup jobs
 * each log in with a session of their own (a session is not
 * thread-safe: xapi/session.h) without reading the file again.
 *
 * Thread model: a struct engine_creds is immutable once made; any
 * thread may log in with it at the same time as others.
 */
#ifndef CBTFS_ENGINE_SESSION_H
#define CBTFS_ENGINE_SESSION_H

#include "../xapi/session.h"

/* Where and as whom to log in; strings borrowed. */
struct engine_server {
  const char *server;           /* as given: host[:port] or https://… */
  const char *user;
  const char *password_file;
  const char *ca_file;
  long timeout;                 /* seconds per XAPI call and NBD wait */
};

struct engine_creds;

/* Turn "host", "host:port" or "https://host[:port][/]" into a URL;
 * plain http is refused (the password would travel in clear).  Returns
 * malloc'd URL or NULL with err_*. */
extern char *engine_server_url (const char *arg)
  __attribute__ ((__nonnull__ (1)));

/* Make this process and its forks non-dumpable, with no core file,
 * before a secret enters memory.  Idempotent.  0 or -1 with err_*. */
extern int engine_forbid_dumps (void);

/* Read the password of S (first line of its file; the file never
 * reaches argv) after making the process non-dumpable.  Caller frees
 * with engine_creds_free.  NULL with err_*, of class ERR_CONFIG unless
 * out of memory. */
extern struct engine_creds *engine_creds_new (const struct engine_server *s)
  __attribute__ ((__nonnull__ (1)));

/* Wipe the password and free; NULL is a no-op. */
extern void engine_creds_free (struct engine_creds *c);

/* A new session (caller logs out) or NULL with err_*, of class
 * ERR_SERVER when the host could not be reached or refused us. */
extern xapi_session *engine_login (const struct engine_creds *c)
  __attribute__ ((__nonnull__ (1)));

/* engine_creds_new then engine_login, keeping no credentials after:
 * for a command that needs the one session only.  NULL with err_*
 * (either's class). */
extern xapi_session *engine_login_server (const struct engine_server *s)
  __attribute__ ((__nonnull__ (1)));

/* The seconds per XAPI call and NBD wait C was made with. */
extern long engine_creds_timeout (const struct engine_creds *c)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_ENGINE_SESSION_H */
