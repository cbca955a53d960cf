/* cbtfs: XAPI sessions over HTTPS with libcurl.
 *
 * Thread model: a session is used by one thread at a time (callers
 * serialise); it owns one CURL easy handle, reused so that the TLS
 * connection to the host is kept alive between calls.  libcurl and
 * libxml2 are initialised once per process by xapi_global_init.
 *
 * Secrets: the password copy and the session ref live only in this
 * file's struct.  Request bodies (which hold one or the other) and
 * response bodies (which may hold the ref, e.g. login and NBD export
 * names) are wiped before they are freed.  XAPI error parameters have
 * the ref replaced by "(hidden)" (SESSION_INVALID [ref] carries it),
 * and messages have both the ref and the password hidden.  Nothing
 * here logs a body.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libxml/parser.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/secbuf.h"
#include "../common/util.h"
#include "session.h"
#include "xmlrpc.h"

#define XAPI_MAX_RESPONSE (64 * 1024 * 1024)
#define XAPI_CONNECT_TIMEOUT 15L
#define XAPI_DEFAULT_TIMEOUT 60L
#define XAPI_HIDDEN "(hidden)"

/* Set OPT on handle H, unless an earlier option failed (the caller's
 * CURLcode rc, then checked once). */
#define SETOPT(h, opt, val)                                     \
  do {                                                          \
    if (rc == CURLE_OK)                                         \
      rc = curl_easy_setopt ((h), (opt), (val));                \
  } while (0)

struct xapi_session {
  CURL *curl;
  struct curl_slist *headers;
  char *url;                    /* scheme://host:port, no slash */
  char *post_url;               /* url + "/" */
  char *user;
  char *ca_file;                /* for messages; NULL for system CAs */
  char *password;               /* secret; wiped before free */
  char *ref;                    /* secret; NULL when not logged in */
  struct xapi_error err;        /* of the last failure */
  long timeout;                 /* seconds, per request */
  long connect_timeout;
  char errbuf[CURL_ERROR_SIZE]; /* curl's message for the last transfer */
};

int
xapi_global_init (void)
{
  CURLcode rc = curl_global_init (CURL_GLOBAL_DEFAULT);

  if (rc != CURLE_OK) {
    err_set (EIO, "cannot initialise libcurl: %s", curl_easy_strerror (rc));
    return -1;
  }
  xmlInitParser ();
  return 0;
}

/* curl counts its inits; libxml2 does not, and xmlCleanupParser would
 * pull its per-thread state from under the object store's threads
 * (their state then leaks when they end): libxml2 is left as it is,
 * what it holds is freed at exit. */
void
xapi_global_cleanup (void)
{
  curl_global_cleanup ();
}

/* Free a string value that held a secret. */
static void
free_secret_value (xapi_value *v)
{
  if (v && v->type == XV_STRING)
    secret_wipe (v->u.s);
  xv_free (v);
}

/* ---- URLs ---- */

static bool
host_char_ok (char c, bool v6)
{
  if (v6)
    return isxdigit ((unsigned char) c) || c == ':' || c == '.';
  return isalnum ((unsigned char) c) || c == '-' || c == '.' || c == '_';
}

/* HOST (no brackets) is a plausible DNS name, IPv4 or IPv6 address;
 * it goes into a URL, so nothing else may pass. */
static bool
host_ok (const char *host)
{
  bool v6 = strchr (host, ':') != NULL;
  const char *p;

  if (*host == '\0' || strlen (host) > 253)
    return false;
  for (p = host; *p; p++)
    if (!host_char_ok (*p, v6))
      return false;
  return true;
}

static bool
is_loopback (const char *host)
{
  return strcmp (host, "localhost") == 0 || strcmp (host, "::1") == 0
    || strncmp (host, "127.", 4) == 0;
}

/* "SCHEME://HOST:PORT", with HOST bracketed if IPv6.  Caller frees. */
static char *
make_url (const char *scheme, const char *host, long port)
{
  char *url;
  bool v6 = strchr (host, ':') != NULL;

  if (asprintf (&url, "%s://%s%s%s:%ld", scheme, v6 ? "[" : "", host,
                v6 ? "]" : "", port) == -1) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  return url;
}

/* Split URL ("[scheme://]host[:port][/]") and normalise it.  *SCHEME is
 * static, *HOST caller-freed.  The URL is not echoed when it holds
 * user info, which could be a password. */
static int
parse_url (const char *url, const char **scheme, char **host, long *port)
{
  const char *p = url, *h, *hend, *sep = strstr (url, "://");
  size_t authlen;

  if (sep) {
    if ((size_t) (sep - url) == 5 && strncasecmp (url, "https", 5) == 0)
      *scheme = "https";
    else if ((size_t) (sep - url) == 4 && strncasecmp (url, "http", 4) == 0)
      *scheme = "http";
    else {
      err_set (EINVAL, "XAPI URL: scheme must be https");
      return -1;
    }
    p = sep + 3;
  }
  else
    *scheme = "https";
  *port = strcmp (*scheme, "https") == 0 ? 443 : 80;

  authlen = strcspn (p, "/?#");
  if (memchr (p, '@', authlen)) {
    err_set (EINVAL, "XAPI URL: user info (user@host) is not supported; "
             "give the user separately");
    return -1;
  }
  if (p[authlen] != '\0' && strcmp (p + authlen, "/") != 0) {
    err_set (EINVAL, "XAPI URL %s: expected https://host[:port] without "
             "a path", url);
    return -1;
  }
  if (*p == '[') {
    h = p + 1;
    hend = memchr (h, ']', authlen);
    if (hend == NULL)
      goto bad;
    p = hend + 1;
  }
  else {
    h = p;
    hend = p + strcspn (p, ":/?#");
    p = hend;
  }
  if (*p == ':') {
    char *end;

    p++;
    if (!isdigit ((unsigned char) *p))
      goto bad;
    errno = 0;
    *port = strtol (p, &end, 10);
    if (errno || *port < 1 || *port > 65535 || (*end != '\0' && *end != '/'))
      goto bad;
  }
  else if (*p != '\0' && *p != '/')
    goto bad;
  *host = strndup (h, hend - h);
  if (*host == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (!host_ok (*host)) {
    free (*host);
    *host = NULL;
    goto bad;
  }
  return 0;

 bad:
  err_set (EINVAL, "XAPI URL %s: expected https://host[:port]", url);
  return -1;
}

/* Point S at URL (normalised).  Plain http sends the password in the
 * clear, so it is allowed only to this machine (test stand-ins). */
static int
set_url (xapi_session *s, const char *url)
{
  CLEANUP_FREE char *host = NULL;
  const char *scheme;
  char *norm, *post;
  long port;

  if (parse_url (url, &scheme, &host, &port) == -1)
    return -1;
  if (strcmp (scheme, "http") == 0 && !is_loopback (host)) {
    err_set (EINVAL, "XAPI URL %s: plain http would send the password in "
             "the clear; use https", url);
    return -1;
  }
  norm = make_url (scheme, host, port);
  if (norm == NULL)
    return -1;
  if (asprintf (&post, "%s/", norm) == -1) {
    free (norm);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  free (s->url);
  free (s->post_url);
  s->url = norm;
  s->post_url = post;
  return 0;
}

/* HOST_IS_SLAVE [master]: the same scheme and port on MASTER. */
static int
set_master (xapi_session *s, const char *master)
{
  CLEANUP_FREE char *host = NULL;
  CLEANUP_FREE char *url = NULL;
  const char *scheme;
  long port;

  if (!host_ok (master)) {
    err_set (EPROTO, "login failed: %s is not the pool master, and it "
             "named an invalid master address", s->url);
    return -1;
  }
  if (parse_url (s->url, &scheme, &host, &port) == -1)
    return -1;
  url = make_url (scheme, master, port);
  if (url == NULL)
    return -1;
  return set_url (s, url);
}

/* ---- transport ---- */

/* The response body (it may hold the session ref: see secbuf.h). */
struct rbuf {
  struct secbuf buf;
  bool too_big;
};

static size_t
on_data (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct rbuf *b = opaque;
  size_t n = size * nmemb;

  if (n > XAPI_MAX_RESPONSE - b->buf.len) {
    b->too_big = true;
    return 0;                   /* curl fails with CURLE_WRITE_ERROR */
  }
  if (secbuf_add (&b->buf, ptr, n) == -1)
    return 0;
  return n;
}

/* Turn a failed transfer into one line naming the server (WHERE: the
 * session's URL, or the host a redirect led to) and the problem.  Never
 * includes either body. */
static void
transport_error (xapi_session *s, const char *where, CURL *curl,
                 CURLcode rc, const struct rbuf *b)
{
  char detail[CURL_ERROR_SIZE];
  curl_off_t sent_at = 0;
  long os_errno = 0;

  one_line (detail, sizeof detail,
            s->errbuf[0] ? s->errbuf : curl_easy_strerror (rc));

  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
    err_set (EHOSTUNREACH, "cannot connect to %s: host name not found",
             where);
    break;
  case CURLE_COULDNT_CONNECT:
    curl_easy_getinfo (curl, CURLINFO_OS_ERRNO, &os_errno);
    if (os_errno)
      err_sys ((int) os_errno, "cannot connect to %s", where);
    else
      err_set (ECONNREFUSED, "cannot connect to %s: %s", where, detail);
    break;
  case CURLE_OPERATION_TIMEDOUT:
    /* The pre-transfer time is set once the request could be sent (on
     * a new or a reused connection), so 0 means we never connected. */
    curl_easy_getinfo (curl, CURLINFO_PRETRANSFER_TIME_T, &sent_at);
    if (sent_at == 0)
      err_set (ETIMEDOUT, "cannot connect to %s: timed out after %ld s",
               where, s->connect_timeout);
    else
      err_set (ETIMEDOUT, "%s: timed out after %ld s", where, s->timeout);
    break;
  case CURLE_PEER_FAILED_VERIFICATION:
    err_set (EACCES, "TLS certificate of %s not trusted (%s)",
             where, detail);
    break;
  case CURLE_SSL_CACERT_BADFILE:
    err_set (EACCES, "cannot use CA file %s (%s)",
             s->ca_file ? s->ca_file : "(default)", detail);
    break;
  case CURLE_SSL_CONNECT_ERROR:
    err_set (EPROTO, "TLS handshake with %s failed (%s)", where, detail);
    break;
  case CURLE_FILESIZE_EXCEEDED:   /* Content-Length over the limit */
  case CURLE_WRITE_ERROR:
    if (b->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
      err_set (EFBIG, "%s: response larger than %d MiB", where,
               XAPI_MAX_RESPONSE / (1024 * 1024));
      break;
    }
    if (b->buf.failed) {
      err_set (ENOMEM, "%s: out of memory reading the response", where);
      break;
    }
    /* fall through */
  default:
    err_set (EIO, "%s: %s", where, detail);
  }
}

/* POST BODY to the session's URL and decode the reply: the XAPI
 * envelope (caller frees), or NULL with err_* set and S->err empty. */
static xapi_value *
post (xapi_session *s, const char *body)
{
  struct rbuf b = { 0 };
  xapi_value *v = NULL;
  CURLcode rc;
  long status = 0;

  xapi_error_clear (&s->err);
  s->errbuf[0] = '\0';
  rc = curl_easy_setopt (s->curl, CURLOPT_URL, s->post_url);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt (s->curl, CURLOPT_WRITEDATA, &b);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt (s->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                           (curl_off_t) strlen (body));
  if (rc == CURLE_OK)
    rc = curl_easy_setopt (s->curl, CURLOPT_POSTFIELDS, body);
  if (rc == CURLE_OK)
    rc = curl_easy_perform (s->curl);
  /* Do not leave curl pointing at memory the caller frees. */
  curl_easy_setopt (s->curl, CURLOPT_POSTFIELDS, NULL);
  curl_easy_setopt (s->curl, CURLOPT_WRITEDATA, NULL);

  if (rc != CURLE_OK) {
    transport_error (s, s->url, s->curl, rc, &b);
    goto out;
  }
  curl_easy_getinfo (s->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    err_set (EPROTO, "%s: HTTP %ld", s->url, status);
    goto out;
  }
  v = xmlrpc_decode_response (b.buf.p ? b.buf.p : "", b.buf.len);
  if (v == NULL)
    err_prefix ("%s", s->url);

 out:
  secbuf_wipe (&b.buf);
  return v;
}

/* ---- GET (HTTP handlers beside XML-RPC) ---- */

struct get_ctx {
  xapi_body_fn fn;
  void *opaque;
  long status;                  /* of the last response's headers */
  CURL *curl;
  int result;                   /* 1 when FN stopped, -1 when it failed */
};

static size_t
on_get_data (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct get_ctx *g = opaque;
  size_t n = size * nmemb;

  curl_easy_getinfo (g->curl, CURLINFO_RESPONSE_CODE, &g->status);
  if (g->status != 200)
    return n;                   /* an error page: reported below */
  g->result = g->fn (ptr, n, g->opaque);
  return g->result == 0 ? n : 0;
}

/* A handle for one GET: S's TLS trust and timeouts, no XML-RPC
 * headers.  Redirects are followed by xapi_get, not by curl: XAPI ends
 * a 302 by closing the connection, not always with a clean TLS close,
 * which curl takes for a failed transfer and does not follow. */
static CURL *
get_handle (xapi_session *s, struct get_ctx *g)
{
  CURL *c = curl_easy_duphandle (s->curl);
  CURLcode rc = CURLE_OK;

  if (c == NULL)
    return NULL;
  SETOPT (c, CURLOPT_HTTPGET, 1L);
  SETOPT (c, CURLOPT_HTTPHEADER, NULL);
  SETOPT (c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) 0);
  SETOPT (c, CURLOPT_WRITEFUNCTION, on_get_data);
  SETOPT (c, CURLOPT_WRITEDATA, g);
  SETOPT (c, CURLOPT_FOLLOWLOCATION, 0L);
  if (rc != CURLE_OK) {
    curl_easy_cleanup (c);
    return NULL;
  }
  return c;
}

#define GET_MAX_REDIRS 3

static bool
is_redirect (long status)
{
  return status == 301 || status == 302 || status == 303 || status == 307
    || status == 308;
}

/* URL's scheme, host and port in BUF; never its path or query, where
 * the session travels. */
static const char *
url_origin (const char *url, char *buf, size_t size)
{
  const char *host = strstr (url, "://");
  size_t n = host ? (size_t) (host + 3 - url) + strcspn (host + 3, "/?#")
    : strcspn (url, "/?#");

  one_line (buf, size < n + 1 ? size : n + 1, url);
  return buf;
}

/* After a failed transfer: curl's own message could quote the URL;
 * never the session (a redirect's target may spell it differently, as
 * REF), so such a message becomes "HOST: VERB failed". */
static void
hide_session (const xapi_session *s, const char *ref, const char *host,
              const char *verb)
{
  if (strstr (err_get (), ref) || strstr (err_get (), s->ref)
      || strstr (err_get (), "session_id"))
    err_set (EIO, "%s: %s failed", host, verb);
}

/* Free what a transfer held: the URL and escaped session (secrets,
 * wiped) and the handle; each may be NULL. */
static void
transfer_end (char *url, char *ref, CURL *c)
{
  if (url)
    secret_free (url);
  if (ref) {
    secret_wipe (ref);
    curl_free (ref);
  }
  if (c)
    curl_easy_cleanup (c);
}

/* C just got redirect number HOPS (XAPI sends a client to the host that
 * can see the SR): put its target in *URL.  Only to https (or http from
 * an http server): the target's query carries the session.  0, or -1
 * with err_* set. */
static int
next_hop (xapi_session *s, CURL *c, long status, int hops, char **url)
{
  struct curl_header *loc = NULL;
  CURLU *u = curl_url ();
  char *to = NULL, where[256];
  int r = -1;

  /* curl_easy_header, not CURLINFO_REDIRECT_URL: curl sets the latter
   * only when the transfer ended cleanly. */
  if (u == NULL
      || curl_easy_header (c, "Location", 0, CURLH_HEADER, -1, &loc)
      != CURLHE_OK
      || curl_url_set (u, CURLUPART_URL, *url, 0) != CURLUE_OK
      || curl_url_set (u, CURLUPART_URL, loc->value, 0) != CURLUE_OK
      || curl_url_get (u, CURLUPART_URL, &to, 0) != CURLUE_OK) {
    err_set (EPROTO, "%s: HTTP %ld without a usable location", s->url,
             status);
    goto out;
  }
  if (hops == GET_MAX_REDIRS) {
    err_set (ELOOP, "%s: more than %d redirects", s->url, GET_MAX_REDIRS);
    goto out;
  }
  if (strncasecmp (to, "https://", 8) != 0
      && (strncasecmp (to, "http://", 7) != 0
          || strncasecmp (s->url, "http://", 7) != 0)) {
    err_set (EPERM, "%s: refused its redirect to %s: only https may carry "
             "the session", s->url, url_origin (to, where, sizeof where));
    goto out;
  }
  secret_free (*url);
  *url = strdup (to);
  if (*url == NULL) {
    err_sys (errno, "%s: redirect", s->url);
    goto out;
  }
  r = 0;
 out:
  if (to) {
    secret_wipe (to);
    curl_free (to);
  }
  curl_url_cleanup (u);
  return r;
}

int
xapi_get (xapi_session *s, const char *path, xapi_body_fn fn, void *opaque)
{
  struct get_ctx g = { .fn = fn, .opaque = opaque };
  struct rbuf none = { 0 };
  char *ref = NULL, *url = NULL, here[256];
  const char *host;
  CURLcode rc;
  int r = -1, hops;

  s->errbuf[0] = '\0';
  g.curl = get_handle (s, &g);
  if (g.curl && s->ref)
    ref = curl_easy_escape (g.curl, s->ref, 0);
  if (ref == NULL
      || asprintf (&url, "%s%s%csession_id=%s", s->url, path,
                   strchr (path, '?') ? '&' : '?', ref) == -1) {
    url = NULL;
    err_set (ENOMEM, "cannot set up a request to %s", s->url);
    goto out;
  }
  for (hops = 0;; hops++) {
    g.status = 0;
    rc = curl_easy_setopt (g.curl, CURLOPT_URL, url);
    if (rc == CURLE_OK)
      rc = curl_easy_perform (g.curl);
    curl_easy_getinfo (g.curl, CURLINFO_RESPONSE_CODE, &g.status);
    /* A redirect's body, and how its connection ended, do not matter. */
    if (!is_redirect (g.status))
      break;
    if (next_hop (s, g.curl, g.status, hops, &url) == -1)
      goto out;
  }
  /* After a redirect, errors name the host it led to. */
  host = hops == 0 ? s->url : url_origin (url, here, sizeof here);
  if (g.result == 1)
    r = 0;                      /* FN had what it wanted */
  else if (g.result == -1)
    ;                           /* FN's error stands */
  else if (g.status != 0 && g.status != 200)
    /* Whatever happened to the connection after it. */
    err_set (g.status == 404 ? ENOENT : g.status == 401 || g.status == 403
             ? EACCES : EPROTO, "%s: HTTP %ld", host, g.status);
  else if (rc == CURLE_OK
           || (g.status == 200 && (rc == CURLE_RECV_ERROR
                                   || rc == CURLE_PARTIAL_FILE)))
    /* The body ends when the connection does (no length is sent), and
     * not always with a clean TLS close: FN judges what it got. */
    r = 0;
  else {
    transport_error (s, host, g.curl, rc, &none);
    hide_session (s, ref, host, "GET");
  }

 out:
  transfer_end (url, ref, g.curl);
  return r;
}

/* ---- PUT (HTTP imports) ---- */

struct put_ctx {
  xapi_put_fn fn;
  void *opaque;
  uint64_t length, offset;      /* the body's, and how far it was sent */
  bool failed;                  /* FN failed: its err_* stands */
};

static size_t
on_put_read (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct put_ctx *p = opaque;
  size_t n = size * nmemb;

  if (n > p->length - p->offset)
    n = p->length - p->offset;
  if (n == 0)
    return 0;
  if (p->fn (ptr, n, p->offset, p->opaque) == -1) {
    p->failed = true;
    return CURL_READFUNC_ABORT;
  }
  p->offset += n;
  return n;
}

/* XAPI sends nothing after its headers that the upload needs. */
static size_t
on_put_data (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  (void) ptr;
  (void) opaque;
  return size * nmemb;
}

static CURL *
put_handle (xapi_session *s, struct put_ctx *p)
{
  CURL *c = curl_easy_duphandle (s->curl);
  CURLcode rc = CURLE_OK;

  if (c == NULL)
    return NULL;
  /* No headers of ours: curl adds "Expect: 100-continue", which makes it
   * wait for XAPI's answer (200 or 302) before sending the body. */
  SETOPT (c, CURLOPT_HTTPHEADER, NULL);
  SETOPT (c, CURLOPT_UPLOAD, 1L);
  SETOPT (c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) p->length);
  SETOPT (c, CURLOPT_READFUNCTION, on_put_read);
  SETOPT (c, CURLOPT_READDATA, p);
  SETOPT (c, CURLOPT_WRITEFUNCTION, on_put_data);
  SETOPT (c, CURLOPT_WRITEDATA, NULL);
  SETOPT (c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) 0);
  SETOPT (c, CURLOPT_FOLLOWLOCATION, 0L);
  /* A disk takes as long as it takes; a stalled one does not. */
  SETOPT (c, CURLOPT_TIMEOUT, 0L);
  SETOPT (c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  SETOPT (c, CURLOPT_LOW_SPEED_TIME, s->timeout);
  SETOPT (c, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
  if (rc != CURLE_OK) {
    curl_easy_cleanup (c);
    return NULL;
  }
  return c;
}

int
xapi_put (xapi_session *s, const char *path, uint64_t length,
          xapi_put_fn fn, void *opaque)
{
  struct put_ctx p = { .fn = fn, .opaque = opaque, .length = length };
  struct rbuf none = { 0 };
  char *ref = NULL, *url = NULL, here[256];
  const char *host;
  CURL *c;
  CURLcode rc;
  long status = 0;
  int r = -1, hops;

  s->errbuf[0] = '\0';
  c = put_handle (s, &p);
  if (c && s->ref)
    ref = curl_easy_escape (c, s->ref, 0);
  if (ref == NULL
      || asprintf (&url, "%s%s%csession_id=%s", s->url, path,
                   strchr (path, '?') ? '&' : '?', ref) == -1) {
    url = NULL;
    err_set (ENOMEM, "cannot set up a request to %s", s->url);
    goto out;
  }
  for (hops = 0;; hops++) {
    status = 0;
    p.offset = 0;
    rc = curl_easy_setopt (c, CURLOPT_URL, url);
    if (rc == CURLE_OK)
      rc = curl_easy_perform (c);
    curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &status);
    if (!is_redirect (status) || p.failed)
      break;
    if (next_hop (s, c, status, hops, &url) == -1)
      goto out;
  }
  host = hops == 0 ? s->url : url_origin (url, here, sizeof here);
  if (p.failed)
    ;                           /* FN's error stands */
  else if (status != 0 && status != 200)
    err_set (status == 404 ? ENOENT : status == 401 || status == 403
             ? EACCES : EPROTO, "%s: HTTP %ld", host, status);
  else if (status == 200 && p.offset == length
           && (rc == CURLE_OK || rc == CURLE_RECV_ERROR))
    r = 0;
  else if (status == 200)
    /* The host stopped reading: its task says why. */
    err_set (EIO, "%s: the host closed the upload after %" PRIu64 " of %"
             PRIu64 " bytes", host, p.offset, length);
  else {
    transport_error (s, host, c, rc, &none);
    hide_session (s, ref, host, "PUT");
  }

 out:
  transfer_end (url, ref, c);
  return r;
}

/* Replace every occurrence of SECRET in *STR with XAPI_HIDDEN. */
static int
redact (char **str, const char *secret)
{
  size_t slen = strlen (secret), hlen = strlen (XAPI_HIDDEN), count = 0;
  const char *p;
  char *out, *q;

  if (slen == 0)
    return 0;
  for (p = *str; (p = strstr (p, secret)) != NULL; p += slen)
    count++;
  if (count == 0)
    return 0;
  out = malloc (strlen (*str) - count * slen + count * hlen + 1);
  if (out == NULL)
    return -1;
  for (p = *str, q = out;;) {
    const char *m = strstr (p, secret);

    if (m == NULL)
      break;
    memcpy (q, p, m - p);
    q += m - p;
    memcpy (q, XAPI_HIDDEN, hlen);
    q += hlen;
    p = m + slen;
  }
  strcpy (q, p);
  secret_free (*str);
  *str = out;
  return 0;
}

/* Append S to BUF (SIZE bytes, *N used) as one line: control
 * characters become spaces, as XAPI error parameters may carry a
 * backend's stderr, and each occurrence of a non-empty string in
 * SECRETS (NULL-terminated, or NULL) becomes XAPI_HIDDEN. */
static void
append_clean (char *buf, size_t size, size_t *n, const char *s,
              const char *const *secrets)
{
  while (*s && *n + 1 < size) {
    const char *const *sec;
    bool hidden = false;

    for (sec = secrets; sec && *sec; sec++) {
      size_t l = strlen (*sec);

      if (l && strncmp (s, *sec, l) == 0) {
        snprintf (buf + *n, size - *n, "%s", XAPI_HIDDEN);
        *n += strlen (buf + *n);
        s += l;
        hidden = true;
        break;
      }
    }
    if (!hidden) {
      buf[(*n)++] = (unsigned char) *s < 0x20 || *s == 0x7f ? ' ' : *s;
      s++;
    }
  }
  buf[*n] = '\0';
}

/* "CODE [p1, p2]", or "CODE" with no params, as one line into BUF,
 * with SECRETS hidden (see append_clean).  Empty params are left out:
 * SM failures come as ["SR_BACKEND_FAILURE_460", "", reason, ""]. */
static void
format_error (char *buf, size_t size, const struct xapi_error *e,
              const char *const *secrets)
{
  size_t i, n = 0, shown = 0;

  buf[0] = '\0';
  append_clean (buf, size, &n, e->code, secrets);
  for (i = 0; i < e->nparams; i++) {
    if (e->params[i][0] == '\0')
      continue;
    append_clean (buf, size, &n, shown++ == 0 ? " [" : ", ", NULL);
    append_clean (buf, size, &n, e->params[i], secrets);
  }
  if (shown > 0)
    append_clean (buf, size, &n, "]", NULL);
}

/* An ErrorDescription element: a string, or (from other servers) an
 * int or bool, which we format. */
static bool
error_param_ok (const xapi_value *v)
{
  return v && (v->type == XV_STRING || v->type == XV_INT
               || v->type == XV_BOOL);
}

/* The text of an element passing error_param_ok; NULL on ENOMEM. */
static char *
error_param (const xapi_value *v)
{
  char *s;

  if (v->type == XV_STRING)
    return strdup (v->u.s);
  if (v->type == XV_BOOL)
    return strdup (v->u.b ? "true" : "false");
  if (asprintf (&s, "%" PRId64, v->u.i) == -1)
    return NULL;
  return s;
}

int
xapi_unwrap (xapi_value *resp, xapi_value **value, struct xapi_error *e)
{
  const xapi_value *desc;
  const char *status;
  char msg[1024];
  size_t i;

  memset (e, 0, sizeof *e);
  *value = NULL;
  status = xv_str (xv_get (resp, "Status"));
  if (status == NULL) {
    err_set (EPROTO, "XAPI: malformed response: no Status");
    return -1;
  }

  if (strcmp (status, "Success") == 0) {
    for (i = 0; i < resp->u.st.n; i++)
      if (strcmp (resp->u.st.k[i], "Value") == 0 && resp->u.st.v[i]) {
        *value = resp->u.st.v[i];
        resp->u.st.v[i] = NULL;
        return 0;
      }
    /* XAPI always sends Value (void is ""), but a missing one cannot
     * be misread, so accept it as void. */
    *value = xv_string ("");
    if (*value == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    return 0;
  }

  if (strcmp (status, "Failure") != 0) {
    err_set (EPROTO, "XAPI: malformed response: Status is not Success or "
             "Failure");
    return -1;
  }
  desc = xv_get (resp, "ErrorDescription");
  if (desc == NULL || desc->type != XV_ARRAY || desc->u.a.n == 0
      || xv_str (desc->u.a.v[0]) == NULL || *xv_str (desc->u.a.v[0]) == 0) {
    err_set (EPROTO, "XAPI: malformed response: Failure without an "
             "error code");
    return -1;
  }
  for (i = 1; i < desc->u.a.n; i++)
    if (!error_param_ok (desc->u.a.v[i])) {
      err_set (EPROTO, "XAPI: malformed response: error parameter %zu "
               "is not a string", i);
      return -1;
    }
  e->code = strdup (xv_str (desc->u.a.v[0]));
  e->nparams = desc->u.a.n - 1;
  e->params = calloc (e->nparams ? e->nparams : 1, sizeof *e->params);
  if (e->code == NULL || e->params == NULL)
    goto err_e;
  for (i = 0; i < e->nparams; i++) {
    e->params[i] = error_param (desc->u.a.v[i + 1]);
    if (e->params[i] == NULL)
      goto err_e;
  }
  format_error (msg, sizeof msg, e, NULL);
  err_set (EIO, "%s", msg);
  return -1;

 err_e:
  xapi_error_clear (e);
  err_set (ENOMEM, "out of memory");
  return -1;
}

void
xapi_error_clear (struct xapi_error *e)
{
  size_t i;

  free (e->code);
  if (e->params)
    for (i = 0; i < e->nparams; i++)
      secret_free (e->params[i]);
  free (e->params);
  memset (e, 0, sizeof *e);
}

/* Encode and post one call with exactly these PARAMS, and unwrap the
 * envelope: 0 with *VALUE (caller frees), or -1 with err_* set and, for
 * an XAPI failure, S->err filled (scrubbed of secrets). */
static int
call_once (xapi_session *s, const char *method, size_t nparams,
           xapi_value *const *params, xapi_value **value)
{
  const char *secrets[3] = { NULL };
  size_t nsecrets;
  char *body;
  xapi_value *resp;
  char msg[1024];
  size_t i;
  int r;

  xapi_error_clear (&s->err);
  body = xmlrpc_encode_call (method, params, nparams);
  if (body == NULL)
    return -1;
  resp = post (s, body);
  secret_free (body);
  if (resp == NULL)
    return -1;
  r = xapi_unwrap (resp, value, &s->err);
  xv_free (resp);
  if (r == 0 || s->err.code == NULL)
    return r;

  /* SESSION_INVALID [ref] names the ref, and a backend's message could
   * quote anything we sent.  The ref is unmistakable, so it is hidden
   * in the kept error too; the password only in the message, as it
   * could occur by chance in a value the caller needs (e.g. the
   * master's address in HOST_IS_SLAVE). */
  for (i = 0; s->ref && i < s->err.nparams; i++)
    if (redact (&s->err.params[i], s->ref) == -1) {
      xapi_error_clear (&s->err);
      err_set (ENOMEM, "out of memory");
      return -1;
    }
  nsecrets = 0;
  if (s->ref)
    secrets[nsecrets++] = s->ref;
  secrets[nsecrets++] = s->password;
  format_error (msg, sizeof msg, &s->err, secrets);
  err_set (strcmp (s->err.code, "SESSION_AUTHENTICATION_FAILED") == 0
           ? EACCES : EIO, "%s", msg);
  return -1;
}

/* session.login_with_password; on HOST_IS_SLAVE [master] and FOLLOW,
 * move to the master and try once more there. */
static int
login (xapi_session *s, bool follow)
{
  xapi_value *params[4] = { NULL };
  xapi_value *value = NULL;
  const char *ref;
  size_t i;
  int r = -1;

  secret_free (s->ref);
  s->ref = NULL;
  params[0] = xv_string (s->user);
  params[1] = xv_string (s->password);
  params[2] = xv_string ("1.1");
  params[3] = xv_string ("cbtfs");
  for (i = 0; i < 4; i++)
    if (params[i] == NULL) {
      err_set (ENOMEM, "out of memory");
      goto out;
    }

  if (call_once (s, "session.login_with_password", 4, params, &value) == -1) {
    if (s->err.code == NULL) {
      /* Transport and decoding errors name the URL already; only the
       * encoder's (EINVAL: a user name or password XML cannot carry)
       * needs saying what it was about. */
      if (errno == EINVAL)
        err_prefix ("login failed");
      goto out;
    }
    if (follow && xapi_failed_with (s, "HOST_IS_SLAVE")
        && s->err.nparams >= 1) {
      CLEANUP_FREE char *master = strdup (s->err.params[0]);

      if (master == NULL) {
        err_set (ENOMEM, "out of memory");
        goto out;
      }
      if (set_master (s, master) == -1)
        goto out;
      log_debug ("%s is the pool master; logging in there", s->url);
      r = login (s, false);
      goto out;
    }
    err_prefix ("login failed");
    goto out;
  }
  ref = xv_str (value);
  if (ref == NULL || *ref == '\0') {
    err_set (EPROTO, "login failed: %s answered without a session ref",
             s->url);
    goto out;
  }
  s->ref = strdup (ref);
  if (s->ref == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  r = 0;

 out:
  free_secret_value (value);
  for (i = 0; i < 4; i++)
    free_secret_value (params[i]);
  return r;
}

/* Configure the reused curl handle once per session. */
static int
setup_curl (xapi_session *s, const struct xapi_opts *opts)
{
  CURLcode rc = CURLE_OK;
  struct curl_slist *h;


  s->headers = curl_slist_append (NULL, "Content-Type: text/xml");
  if (s->headers == NULL)
    goto err_oom;
  /* XAPI does not need "Expect: 100-continue"; it costs a round trip. */
  h = curl_slist_append (s->headers, "Expect:");
  if (h == NULL)
    goto err_oom;
  s->headers = h;

  SETOPT (s->curl, CURLOPT_NOSIGNAL, 1L);
  SETOPT (s->curl, CURLOPT_ERRORBUFFER, s->errbuf);
  SETOPT (s->curl, CURLOPT_HTTPHEADER, s->headers);
  SETOPT (s->curl, CURLOPT_USERAGENT, "cbtfs");
  SETOPT (s->curl, CURLOPT_POST, 1L);
  SETOPT (s->curl, CURLOPT_WRITEFUNCTION, on_data);
  SETOPT (s->curl, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT (s->curl, CURLOPT_PROTOCOLS_STR, "https,http");
#else
  SETOPT (s->curl, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTPS | CURLPROTO_HTTP));
#endif
  SETOPT (s->curl, CURLOPT_CONNECTTIMEOUT, s->connect_timeout);
  SETOPT (s->curl, CURLOPT_TIMEOUT, s->timeout);
  SETOPT (s->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) XAPI_MAX_RESPONSE);
  SETOPT (s->curl, CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT (s->curl, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
  /* Always: XAPI also hands out the NBD servers' certificates, which
   * are worth only what this channel is. */
  SETOPT (s->curl, CURLOPT_SSL_VERIFYPEER, 1L);
  SETOPT (s->curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (opts->ca_file)
    SETOPT (s->curl, CURLOPT_CAINFO, opts->ca_file);

  if (rc != CURLE_OK) {
    err_set (EIO, "cannot configure libcurl: %s", curl_easy_strerror (rc));
    return -1;
  }
  return 0;

 err_oom:
  err_set (ENOMEM, "out of memory");
  return -1;
}

static void
session_free (xapi_session *s)
{
  if (s->curl)
    curl_easy_cleanup (s->curl);
  curl_slist_free_all (s->headers);
  free (s->url);
  free (s->post_url);
  free (s->user);
  free (s->ca_file);
  secret_free (s->password);
  secret_free (s->ref);
  xapi_error_clear (&s->err);
  free (s);
}

xapi_session *
xapi_login (const struct xapi_opts *opts)
{
  xapi_session *s;
  int saved_errno;

  if (opts->url == NULL || opts->user == NULL || opts->password == NULL) {
    err_set (EINVAL, "login: %s not given",
             opts->url == NULL ? "XAPI URL"
             : opts->user == NULL ? "user name" : "password");
    return NULL;
  }
  if (opts->timeout < 0) {
    err_set (EINVAL, "login: negative timeout");
    return NULL;
  }
  s = calloc (1, sizeof *s);
  if (s == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  s->timeout = opts->timeout ? opts->timeout : XAPI_DEFAULT_TIMEOUT;
  s->connect_timeout = s->timeout < XAPI_CONNECT_TIMEOUT
    ? s->timeout : XAPI_CONNECT_TIMEOUT;
  s->user = strdup (opts->user);
  s->password = strdup (opts->password);
  if (s->user == NULL || s->password == NULL) {
    err_set (ENOMEM, "out of memory");
    goto err_s;
  }
  if (opts->ca_file) {
    /* Checked here so that the message names the file and the reason;
     * curl's would say only "Problem with the SSL CA cert". */
    if (access (opts->ca_file, R_OK) == -1) {
      err_sys (errno, "CA file %s", opts->ca_file);
      err_set_class (ERR_CONFIG);
      goto err_s;
    }
    s->ca_file = strdup (opts->ca_file);
    if (s->ca_file == NULL) {
      err_set (ENOMEM, "out of memory");
      goto err_s;
    }
  }
  if (set_url (s, opts->url) == -1)
    goto err_s;
  s->curl = curl_easy_init ();
  if (s->curl == NULL) {
    err_set (ENOMEM, "cannot create a libcurl handle");
    goto err_s;
  }
  if (setup_curl (s, opts) == -1)
    goto err_s;
  /* Whatever stops the login (no connection, a certificate we do not
   * trust, a wrong password, an answer that is no session) is the
   * server's refusal or absence, not a failure of our work. */
  if (login (s, true) == -1) {
    if (errno != ENOMEM)
      err_set_class (ERR_SERVER);
    goto err_s;
  }
  return s;

 err_s:
  saved_errno = errno;          /* closing sockets may change it */
  session_free (s);
  errno = saved_errno;
  return NULL;
}

void
xapi_logout (xapi_session *s)
{
  /* Callers log out on their error paths too: keep their message and
   * errno, whatever the logout does. */
  char saved[1024];
  int saved_errno = errno;
  enum err_class saved_class = err_class ();

  if (s == NULL)
    return;
  snprintf (saved, sizeof saved, "%s", err_get ());
  if (s->ref) {
    xapi_value *ref = xv_string (s->ref), *value = NULL;

    if (ref && call_once (s, "session.logout", 1, &ref, &value) == 0)
      xv_free (value);
    free_secret_value (ref);
  }
  session_free (s);
  if (saved[0])
    err_set (0, "%s", saved);
  else
    err_clear ();
  err_set_class (saved_class);
  errno = saved_errno;
}

xapi_value *
xapi_call (xapi_session *s, const char *method, size_t nparams,
           xapi_value *const *params)
{
  xapi_value **all;
  xapi_value *value = NULL;
  int attempt, r = -1;

  if (nparams > SIZE_MAX / sizeof *all - 1
      || (all = malloc ((nparams + 1) * sizeof *all)) == NULL) {
    err_set (ENOMEM, "%s: out of memory", method);
    return NULL;
  }
  if (nparams)
    memcpy (all + 1, params, nparams * sizeof *all);

  for (attempt = 0; attempt < 2; attempt++) {
    if (s->ref == NULL) {
      xapi_error_clear (&s->err);
      err_set (ENOTCONN, "%s: not logged in", method);
      break;
    }
    all[0] = xv_string (s->ref);
    if (all[0] == NULL) {
      err_set (ENOMEM, "%s: out of memory", method);
      break;
    }
    r = call_once (s, method, nparams + 1, all, &value);
    free_secret_value (all[0]);
    if (r == 0)
      break;
    /* Sessions expire on the host (e.g. after a toolstack restart or
     * pool master change): log in again, once. */
    if (attempt == 0 && xapi_failed_with (s, "SESSION_INVALID")) {
      log_debug ("%s: session expired; logging in again", method);
      if (login (s, true) == 0)
        continue;
    }
    err_prefix ("%s", method);
    break;
  }
  free (all);
  return r == 0 ? value : NULL;
}

const struct xapi_error *
xapi_last_error (const xapi_session *s)
{
  return &s->err;
}

bool
xapi_failed_with (const xapi_session *s, const char *code)
{
  return s->err.code != NULL && strcmp (s->err.code, code) == 0;
}

const char *
xapi_session_ref (const xapi_session *s)
{
  return s->ref;
}

const char *
xapi_session_url (const xapi_session *s)
{
  return s->url;
}

long
xapi_set_timeout (xapi_session *s, long seconds)
{
  long old = s->timeout;

  s->timeout = seconds > 0 ? seconds : XAPI_DEFAULT_TIMEOUT;
  curl_easy_setopt (s->curl, CURLOPT_TIMEOUT, s->timeout);
  return old;
}
