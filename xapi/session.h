/* cbtfs: XAPI sessions over HTTPS (libcurl).
 *
 * A session logs in with a password read from a file by the caller,
 * follows HOST_IS_SLAVE to the pool master, and re-logs in once when a
 * call fails with SESSION_INVALID (sessions expire on the host).
 * Failures become one line: "METHOD: CODE [param, param]" for XAPI
 * errors, or the transport problem ("cannot connect to https://h:443:
 * Connection refused", "TLS certificate of https://h not trusted: …").
 *
 * Certificates are always verified, against the system CAs or against
 * ca_file when given; nothing turns that off (XAPI gives the NBD
 * servers' certificates, so an unchecked XAPI would unpin NBD too).
 *
 * Thread model: a session is not thread-safe; one thread uses it at a
 * time (callers serialise with their own lock).  Secrets (password,
 * session ref) are kept only in memory and are never put in messages.
 */
#ifndef CBTFS_XAPI_SESSION_H
#define CBTFS_XAPI_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "value.h"

/* URL is https://host[:port] (IPv6 in brackets; no path; a bare
 * host[:port] means https).  Plain http is refused except to loopback
 * addresses (test stand-ins): it would send the password in the clear. */
struct xapi_opts {
  const char *url;              /* https://host[:port] */
  const char *user;
  const char *password;         /* borrowed for xapi_login's duration; copied */
  const char *ca_file;          /* PEM bundle to trust, or NULL for system CAs */
  long timeout;                 /* seconds per HTTP request; 0 = 60 */
};

/* The XAPI error of the last failed call: CODE and its parameters.
 * Empty (code NULL) after a transport or decoding failure.  The session
 * ref is replaced by "(hidden)" in the parameters (SESSION_INVALID
 * carries it). */
struct xapi_error {
  char *code;
  char **params;
  size_t nparams;
};

typedef struct xapi_session xapi_session;

/* Initialise libcurl and libxml2 for the process: call once from
 * main, before any thread starts or any other xapi_* call.  0, or -1
 * with err_* set. */
extern int xapi_global_init (void);

/* Undo xapi_global_init's libcurl part, after every session is logged
 * out and every thread using xapi_* has finished (libxml2's state stays
 * until exit: the object store client uses it too). */
extern void xapi_global_cleanup (void);

/* Log in (session.login_with_password, version "1.1", originator
 * "cbtfs"), following HOST_IS_SLAVE [master] once by replacing the URL's
 * host with master and keeping its scheme and port.  Returns a new
 * session (caller logs out), or NULL with err_* set: of class
 * ERR_SERVER once the conversation with the host failed, ERR_CONFIG for
 * an unreadable CA file. */
extern xapi_session *xapi_login (const struct xapi_opts *opts)
  __attribute__ ((__nonnull__ (1)));

/* session.logout (errors ignored), then free everything; NULL ok. */
extern void xapi_logout (xapi_session *s);

/* Call METHOD with the session ref prepended to the NPARAMS PARAMS
 * (borrowed).  Unwraps the Status/Value envelope: returns Value (caller
 * frees), or NULL with err_* set to "METHOD: CODE [params]" and the
 * error kept for xapi_last_error.  On SESSION_INVALID it logs in again
 * and retries once. */
extern xapi_value *xapi_call (xapi_session *s, const char *method,
                              size_t nparams, xapi_value *const *params)
  __attribute__ ((__nonnull__ (1, 2)));

/* The error of the last failed xapi_call on S.  Borrowed until the next
 * call on S. */
extern const struct xapi_error *xapi_last_error (const xapi_session *s)
  __attribute__ ((__nonnull__ (1)));

/* True if the last failure on S had XAPI error code CODE. */
extern bool xapi_failed_with (const xapi_session *s, const char *code)
  __attribute__ ((__nonnull__ (1, 2)));

/* The current session ref (secret: never log it).  Borrowed; changes
 * after a re-login. */
extern const char *xapi_session_ref (const xapi_session *s)
  __attribute__ ((__nonnull__ (1)));

/* Give every later request on S SECONDS (0: the default) to finish;
 * returns the previous limit. */
extern long xapi_set_timeout (xapi_session *s, long seconds)
  __attribute__ ((__nonnull__ (1)));

/* The base URL in use (after following HOST_IS_SLAVE).  Borrowed. */
extern const char *xapi_session_url (const xapi_session *s)
  __attribute__ ((__nonnull__ (1)));

/* Called with each piece of a GET's body (after HTTP 200): 0 to go
 * on, 1 to stop early (that is success), -1 to fail (err_* set). */
typedef int (*xapi_body_fn) (const void *data, size_t len, void *opaque);

/* GET PATH ("/handler?query", no session) from S's host with the
 * session's ref added as session_id, following up to 3 redirects (to
 * the pool host that sees the SR) but only to https, as the session
 * travels with them; the body goes to FN.  0 when FN stopped early or
 * the body ended; -1 with err_* for a status other than 200 (ENOENT for
 * 404, EACCES for 401/403), a refused redirect (EPERM) or too many
 * (ELOOP), a transport failure, or FN's error.  The ref never appears
 * in messages. */
extern int xapi_get (xapi_session *s, const char *path, xapi_body_fn fn,
                     void *opaque)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Fill BUF with the LEN bytes of a PUT's body at OFFSET: asked in
 * order from 0, and from 0 again after a redirect.  0, or -1 with err_*
 * (the upload is then abandoned). */
typedef int (*xapi_put_fn) (void *buf, size_t len, uint64_t offset,
                            void *opaque);

/* PUT PATH ("/handler?query", no session) to S's host with the
 * session's ref added as session_id and a body of LENGTH bytes (a
 * Content-Length; XAPI's import handlers refuse chunked encoding) from
 * FN, following redirects as xapi_get does.  The body is sent only
 * once the host has answered (Expect: 100-continue; XAPI answers 200 or
 * 302 before reading the body), so a redirect costs no bytes.  The
 * upload has no overall time limit; it fails when no byte moves for
 * the session's timeout.  0 when the host answered 200 and took the
 * whole body (what became of it is the caller's to ask: XAPI says so
 * in a task); -1 with err_* otherwise.  The ref never appears in
 * messages. */
extern int xapi_put (xapi_session *s, const char *path, uint64_t length,
                     xapi_put_fn fn, void *opaque)
  __attribute__ ((__nonnull__ (1, 2, 4)));

/* Unwrap an XAPI envelope {Status, Value | ErrorDescription}: on
 * Success move Value out to *VALUE (caller frees; RESP keeps a NULL in
 * its place and stays the caller's); on Failure fill *E (caller frees
 * with xapi_error_clear) and set err_* to "CODE [params]" (just "CODE"
 * with no params) with errno EIO; a malformed envelope is -1 with
 * EPROTO and E empty.  *E is overwritten, not freed: clear it first if
 * it held an error.  0 or -1. */
extern int xapi_unwrap (xapi_value *resp, xapi_value **value,
                        struct xapi_error *e)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Free the contents of E and reset it to empty. */
extern void xapi_error_clear (struct xapi_error *e)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_XAPI_SESSION_H */
