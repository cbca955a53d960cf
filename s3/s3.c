/* cbtfs: an S3 client over libcurl (see s3.h): opening, one request
 * and its errors, and the operations of one request each (multipart
 * uploads are s3-multipart.c's; what both share, s3-int.h).
 *
 * Thread model: as s3.h says, one thread at a time per client.
 *
 * Signing is libcurl's (CURLOPT_AWS_SIGV4).  With curl 7.88 against
 * RGW (docs/ceph-rgw.md, "libcurl's SigV4 against RGW"): curl does not send
 * x-amz-content-sha256, so we send UNSIGNED-PAYLOAD ourselves; it may
 * not sort query parameters before signing, so queries are built here
 * already sorted and encoded, every key with a value.
 *
 * Secrets: the secret key lives only in the client's struct (wiped at
 * close) and in curl's handle; it is never put in a URL or a message.
 * TLS is always verified (system CAs or the given CA file); plain http
 * only when the caller allows it, and no redirect is ever followed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <gnutls/crypto.h>
#include <libxml/parser.h>

#include "../common/error.h"
#include "../common/secbuf.h"
#include "../common/util.h"
#include "s3-int.h"
#include "s3-xml.h"

/* Ranged reads up to this size get their buffer at once. */
#define PREALLOC_MAX ((uint64_t) 64 << 20)


int
s3_global_init (void)
{
  CURLcode rc = curl_global_init (CURL_GLOBAL_DEFAULT);

  if (rc != CURLE_OK) {
    err_set (EIO, "cannot initialise libcurl: %s", curl_easy_strerror (rc));
    return -1;
  }
  xmlInitParser ();
  return 0;
}

/* ---- opening ---- */

/* C->base from OPTS: the endpoint, with the bucket as the first path
 * segment (path-style, as RGW needs without DNS) or as the first label
 * of the host (virtual-host). */
static int
set_base (s3_client *c, const struct s3_opts *o)
{
  CURLU *u = curl_url ();
  char *scheme = NULL, *host = NULL, *path = NULL, *vhost = NULL;
  char *url = NULL;
  int r = -1;

  if (u == NULL
      || curl_url_set (u, CURLUPART_URL, o->endpoint, 0) != CURLUE_OK
      || curl_url_get (u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
      || curl_url_get (u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    err_set (EINVAL, "S3 endpoint %s: not a URL", o->endpoint);
    goto out;
  }
  if (curl_url_get (u, CURLUPART_PATH, &path, 0) == CURLUE_OK
      && strcmp (path, "/") != 0) {
    err_set (EINVAL, "S3 endpoint %s: a path is not expected", o->endpoint);
    goto out;
  }
  if (strcmp (scheme, "https") == 0)
    c->https = true;
  else if (strcmp (scheme, "http") != 0) {
    err_set (EINVAL, "S3 endpoint %s: only https:// (or http://)",
             o->endpoint);
    goto out;
  }
  else if (!o->allow_http) {
    err_set (EPERM, "S3 endpoint %s: plain http refused (it would carry "
             "the data unprotected); use https, or allow http explicitly",
             o->endpoint);
    goto out;
  }
  if (o->virtual_host) {
    if (asprintf (&vhost, "%s.%s", o->bucket, host) == -1) {
      vhost = NULL;
      goto oom;
    }
    if (curl_url_set (u, CURLUPART_HOST, vhost, 0) != CURLUE_OK) {
      err_set (EINVAL, "bucket %s cannot be a host name label", o->bucket);
      goto out;
    }
  }
  curl_url_set (u, CURLUPART_PATH, NULL, 0);
  if (curl_url_get (u, CURLUPART_URL, &url, 0) != CURLUE_OK)
    goto oom;
  /* curl writes the empty path as "/". */
  if (url[strlen (url) - 1] == '/')
    url[strlen (url) - 1] = '\0';
  if (o->virtual_host)
    c->base = strdup (url);
  else if (asprintf (&c->base, "%s/%s", url, o->bucket) == -1)
    c->base = NULL;
  if (c->base == NULL)
    goto oom;
  r = 0;
  goto out;
 oom:
  err_set (ENOMEM, "out of memory");
 out:
  curl_free (scheme);
  curl_free (host);
  curl_free (path);
  curl_free (url);
  free (vhost);
  curl_url_cleanup (u);
  return r;
}

static bool
bucket_ok (const char *b)
{
  size_t i, n = strlen (b);

  if (n < 3 || n > 63)
    return false;
  for (i = 0; i < n; i++)
    if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9')
          || b[i] == '-' || b[i] == '.'))
      return false;
  return true;
}

s3_client *
s3_open (const struct s3_opts *o)
{
  s3_client *c;
  int saved;

  if (o->endpoint == NULL || o->bucket == NULL || o->access_key == NULL
      || o->secret_key == NULL || o->region == NULL) {
    err_set (EINVAL, "S3: %s not given",
             o->endpoint == NULL ? "endpoint" : o->bucket == NULL ? "bucket"
             : o->region == NULL ? "region"
             : o->access_key == NULL ? "access key" : "secret key");
    return NULL;
  }
  if (!bucket_ok (o->bucket)) {
    err_set (EINVAL, "S3 bucket name %s: 3-63 characters of a-z, 0-9, "
             "'-' and '.'", o->bucket);
    return NULL;
  }
  if (strchr (o->access_key, ':') || strchr (o->region, ':')) {
    err_set (EINVAL, "S3 %s must not hold ':'",
             strchr (o->region, ':') ? "region" : "access key");
    return NULL;
  }
  if (o->timeout < 0) {
    err_set (EINVAL, "S3: negative timeout");
    return NULL;
  }
  if (o->part_size && o->part_size < S3_PART_SIZE_MIN) {
    err_set (EINVAL, "S3 part size %zu: at least %zu bytes (5 MiB)",
             o->part_size, S3_PART_SIZE_MIN);
    return NULL;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  c->timeout = o->timeout ? o->timeout : S3_DEFAULT_TIMEOUT;
  c->part_size = o->part_size ? o->part_size : S3_PART_SIZE_DEFAULT;
  if (set_base (c, o) == -1)
    goto err;
  /* Checked here so that the message names the file and the reason. */
  if (o->ca_file && access (o->ca_file, R_OK) == -1) {
    err_sys (errno, "CA file %s", o->ca_file);
    goto err;
  }
  c->bucket = strdup (o->bucket);
  c->access_key = strdup (o->access_key);
  c->secret_key = strdup (o->secret_key);
  c->ca_file = o->ca_file ? strdup (o->ca_file) : NULL;
  if (asprintf (&c->sigv4, "aws:amz:%s:s3", o->region) == -1)
    c->sigv4 = NULL;
  if (c->bucket == NULL || c->access_key == NULL || c->secret_key == NULL
      || c->sigv4 == NULL || (o->ca_file && c->ca_file == NULL)) {
    err_set (ENOMEM, "out of memory");
    goto err;
  }
  c->curl = curl_easy_init ();
  if (c->curl == NULL) {
    err_set (ENOMEM, "cannot create a libcurl handle");
    goto err;
  }
  return c;

 err:
  saved = errno;
  s3_close (c);
  errno = saved;
  return NULL;
}

void
s3_close (s3_client *c)
{
  if (c == NULL)
    return;
  if (c->curl)
    curl_easy_cleanup (c->curl);
  free (c->base);
  free (c->bucket);
  free (c->sigv4);
  free (c->access_key);
  secret_free (c->secret_key);
  free (c->ca_file);
  free (c);
}

/* ---- one request ---- */

static size_t
on_data (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct resp *r = opaque;
  size_t n = size * nmemb, limit, cap;
  char *p;

  curl_easy_getinfo (r->c->curl, CURLINFO_RESPONSE_CODE, &r->status);
  limit = r->status >= 300 ? S3_MAX_ERROR_BODY : r->limit;
  if (n > limit - r->len) {
    r->too_big = true;
    return 0;
  }
  if (r->len + n + 1 > r->cap) {
    cap = r->cap ? r->cap : 16384;
    while (cap < r->len + n + 1)
      cap *= 2;
    p = realloc (r->p, cap);
    if (p == NULL) {
      r->oom = true;
      return 0;
    }
    r->p = p;
    r->cap = cap;
  }
  memcpy (r->p + r->len, ptr, n);
  r->len += n;
  r->p[r->len] = '\0';
  return n;
}

size_t
s3i_on_read (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct resp *r = opaque;
  size_t n = size * nmemb;

  if (n > r->up_len)
    n = r->up_len;
  memcpy (ptr, r->up, n);
  r->up = (const char *) r->up + n;
  r->up_len -= n;
  return n;
}

/* KEY percent-encoded for a URL path (each segment; '/' kept), which is
 * also what SigV4's canonical URI for S3 is.  Caller frees. */
static char *
escape_key (s3_client *c, const char *key)
{
  size_t cap = 3 * strlen (key) + 1, n = 0;
  char *out = malloc (cap);
  const char *s;
  char *e;
  size_t seg;

  if (out == NULL)
    return NULL;
  for (s = key;; s += seg + 1) {
    seg = strcspn (s, "/");
    e = curl_easy_escape (c->curl, s, (int) seg);
    if (e == NULL) {
      free (out);
      return NULL;
    }
    memcpy (out + n, e, strlen (e));
    n += strlen (e);
    curl_free (e);
    if (s[seg] == '\0')
      break;
    out[n++] = '/';
  }
  out[n] = '\0';
  return out;
}

/* A fresh request on C's handle (its connection kept): the options
 * every request has. */
static int
setup (s3_client *c, struct resp *r, struct curl_slist *hdrs)
{
  CURLcode rc = CURLE_OK;

  curl_easy_reset (c->curl);
  c->errbuf[0] = '\0';
  SETOPT (c->curl, CURLOPT_NOSIGNAL, 1L);
  SETOPT (c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
  SETOPT (c->curl, CURLOPT_USERAGENT, "cbtfs");
  SETOPT (c->curl, CURLOPT_HTTPHEADER, hdrs);
  SETOPT (c->curl, CURLOPT_WRITEFUNCTION, on_data);
  SETOPT (c->curl, CURLOPT_WRITEDATA, r);
  SETOPT (c->curl, CURLOPT_FOLLOWLOCATION, 0L);
  SETOPT (c->curl, CURLOPT_PROTOCOLS_STR, c->https ? "https" : "http");
  SETOPT (c->curl, CURLOPT_CONNECTTIMEOUT,
          c->timeout < S3_CONNECT_TIMEOUT ? c->timeout : S3_CONNECT_TIMEOUT);
  SETOPT (c->curl, CURLOPT_TIMEOUT, c->timeout);
  SETOPT (c->curl, CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT (c->curl, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
  SETOPT (c->curl, CURLOPT_SSL_VERIFYPEER, 1L);
  SETOPT (c->curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file)
    SETOPT (c->curl, CURLOPT_CAINFO, c->ca_file);
  SETOPT (c->curl, CURLOPT_AWS_SIGV4, c->sigv4);
  SETOPT (c->curl, CURLOPT_USERNAME, c->access_key);
  SETOPT (c->curl, CURLOPT_PASSWORD, c->secret_key);
  if (rc != CURLE_OK) {
    err_set (EIO, "cannot configure libcurl: %s", curl_easy_strerror (rc));
    return -1;
  }
  return 0;
}

/* A transfer that failed before an HTTP answer: one line naming WHERE. */
static void
transport_error (s3_client *c, const char *where, CURLcode rc,
                 const struct resp *r)
{
  char detail[CURL_ERROR_SIZE];

  one_line (detail, sizeof detail,
            c->errbuf[0] ? c->errbuf : curl_easy_strerror (rc));
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
    err_set (ECONNREFUSED, "%s: cannot connect (%s)", where, detail);
    break;
  case CURLE_OPERATION_TIMEDOUT:
    err_set (ETIMEDOUT, "%s: timed out after %ld s", where, c->timeout);
    break;
  case CURLE_PEER_FAILED_VERIFICATION:
    err_set (EACCES, "%s: TLS certificate not trusted (%s)", where, detail);
    break;
  case CURLE_SSL_CACERT_BADFILE:
    err_set (EACCES, "%s: cannot use CA file %s (%s)", where,
             c->ca_file ? c->ca_file : "(system)", detail);
    err_set_class (ERR_CONFIG);
    return;
  case CURLE_SSL_CONNECT_ERROR:
    err_set (EPROTO, "%s: TLS handshake failed (%s)", where, detail);
    break;
  case CURLE_WRITE_ERROR:
    if (r->oom) {
      err_set (ENOMEM, "%s: out of memory reading the answer", where);
      break;
    }
    if (r->too_big) {
      err_set (EFBIG, "%s: answer larger than expected", where);
      break;
    }
    /* fall through */
  default:
    err_set (EIO, "%s: %s", where, detail);
  }
  /* Not reached, or not trusted: the exit status of a server that
   * could not be reached (cli/). */
  if (errno != ENOMEM && errno != EFBIG)
    err_set_class (ERR_SERVER);
}

/* The server's clock from the Date header of the answer on C, or -1. */
time_t
s3i_server_date (s3_client *c)
{
  struct curl_header *h = NULL;

  if (curl_easy_header (c->curl, "Date", 0, CURLH_HEADER, -1, &h)
      != CURLHE_OK)
    return -1;
  return curl_getdate (h->value, NULL);
}

/* RequestTimeTooSkewed: the request's time (ours, signed into it) is
 * too far from the server's (AWS and RGW allow 15 minutes).  Say by
 * how much when the answer has a Date: the fix is this host's clock. */
static void
skew_error (s3_client *c, const char *where)
{
  time_t theirs = s3i_server_date (c), ours = time (NULL);
  long long d = (long long) ours - (long long) theirs;
  long long a = d < 0 ? -d : d;
  char ts[64] = "";
  struct tm tm;

  if (theirs == -1) {
    err_set (ETIME, "%s: refused for clock skew (RequestTimeTooSkewed): "
             "this host's clock differs from the server's by more than it "
             "allows; set the clock (NTP)", where);
    return;
  }
  if (gmtime_r (&theirs, &tm))
    strftime (ts, sizeof ts, "%Y-%m-%d %H:%M:%S UTC", &tm);
  err_set (ETIME, "%s: refused for clock skew (RequestTimeTooSkewed): the "
           "clocks differ: this host's is %lld h %02lld min %02lld s %s the "
           "server's (%s); set the clock (NTP)", where, a / 3600,
           a / 60 % 60, a % 60, d < 0 ? "behind" : "ahead of", ts);
}

/* An HTTP error STATUS with the S3 error body in R: one line naming
 * WHERE and what it means for the user. */
void
s3i_http_error (s3_client *c, const char *where, const struct resp *r)
{
  char *code = NULL, *message = NULL, msg[512] = "";

  if (r->p)
    s3_xml_error (r->p, r->len, &code, &message);
  if (message)
    one_line (msg, sizeof msg, message);
  if (code == NULL) {           /* HEAD has no body: the status alone */
    if (r->status == 404)
      err_set (ENOENT, "%s: not found (HTTP 404)", where);
    else if (r->status == 403)
      err_set (EACCES, "%s: access denied (HTTP 403): wrong credentials, "
               "or no permission", where);
    else if (r->status == 412)
      err_set (EEXIST, "%s: already exists (HTTP 412)", where);
    else
      err_set (EIO, "%s: HTTP %ld", where, r->status);
  }
  else if (strcmp (code, "NoSuchBucket") == 0) {
    err_set (ENOENT, "s3://%s: no such bucket", c->bucket);
    err_set_class (ERR_CONFIG);
  }
  else if (strcmp (code, "NoSuchKey") == 0)
    err_set (ENOENT, "%s: no such object", where);
  else if (strcmp (code, "InvalidAccessKeyId") == 0
           || strcmp (code, "SignatureDoesNotMatch") == 0)
    err_set (EACCES, "%s: credentials refused (%s): check the access key "
             "and secret key", where, code);
  else if (strcmp (code, "AuthorizationHeaderMalformed") == 0)
    /* AWS's answer to a request signed for another region; its message
     * names the one expected.  (RGW accepts any region.) */
    err_set (EACCES, "%s: signature refused (%s): check the region%s%s",
             where, code, msg[0] ? ": " : "", msg);
  else if (strcmp (code, "AccessDenied") == 0)
    err_set (EACCES, "%s: access denied (AccessDenied): wrong credentials, "
             "or no permission", where);
  else if (strcmp (code, "RequestTimeTooSkewed") == 0)
    skew_error (c, where);
  else if (strcmp (code, "QuotaExceeded") == 0
           || strcmp (code, "InsufficientCapacity") == 0 || r->status == 507)
    err_set (ENOSPC, "%s: the object store is full: %s (HTTP %ld)%s%s",
             where, code, r->status, msg[0] ? ": " : "", msg);
  else if (strcmp (code, "PreconditionFailed") == 0 || r->status == 412)
    err_set (EEXIST, "%s: already exists (%s)", where, code);
  else
    err_set (EIO, "%s: %s (HTTP %ld)%s%s", where, code, r->status,
             msg[0] ? ": " : "", msg);
  free (code);
  free (message);
  /* Refused us (credentials, clock): the server's exit status. */
  if (errno == EACCES || errno == ETIME)
    err_set_class (ERR_SERVER);
}

/* A request may fail for a moment: the server busy (503 SlowDown,
 * 500, 502, 504), a connection dropped or timed out (a gateway
 * restarting).  It is tried again after 0.25, 0.5, 1, 2 and 4 s,
 * about 8 s in all, then the failure stands. */
#define S3_TRIES 6

static bool
transient (CURLcode rc, long status)
{
  switch (rc) {
  case CURLE_OK:
    return status == 500 || status == 502 || status == 503 || status == 504;
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    return true;
  default:
    return false;
  }
}

/* Perform the request set up on C for WHERE, again while it fails
 * for a moment (transient); R gets the answer.  0 for a 2xx status,
 * else -1 with err_* set. */
int
s3i_perform (s3_client *c, const char *url, const char *where, struct resp *r)
{
  CURLcode rc = curl_easy_setopt (c->curl, CURLOPT_URL, url);
  unsigned wait_ms = 250;

  r->up0 = r->up;
  r->up_len0 = r->up_len;
  if (rc != CURLE_OK) {
    transport_error (c, where, rc, r);
    return -1;
  }
  for (r->attempts = 1;; r->attempts++) {
    r->len = 0;
    r->status = 0;
    r->too_big = r->oom = false;
    r->up = r->up0;
    r->up_len = r->up_len0;
    rc = curl_easy_perform (c->curl);
    curl_easy_getinfo (c->curl, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->attempts == S3_TRIES || !transient (rc, r->status))
      break;
    usleep (wait_ms * 1000);
    wait_ms *= 2;
  }
  if (rc != CURLE_OK && !(r->status >= 300 && r->too_big)) {
    transport_error (c, where, rc, r);
    return -1;
  }
  if (r->status < 200 || r->status >= 300) {
    s3i_http_error (c, where, r);
    return -1;
  }
  return 0;
}

/* The URL of KEY (caller frees) and a "s3://bucket/key" name for
 * messages in WHERE. */
char *
s3i_key_url (s3_client *c, const char *key, const char *query, char *where,
         size_t size)
{
  char *e, *url;

  snprintf (where, size, "s3://%s/%s", c->bucket, key);
  if (*key == '\0') {
    err_set (EINVAL, "%s: empty key", where);
    return NULL;
  }
  e = escape_key (c, key);
  if (e == NULL
      || asprintf (&url, "%s/%s%s%s", c->base, e, query ? "?" : "",
                   query ? query : "") == -1) {
    free (e);
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  free (e);
  return url;
}

/* Headers every request sends, plus EXTRA (may be NULL).  Caller frees
 * with curl_slist_free_all; NULL on out of memory. */
static struct curl_slist *
headers (const char *extra)
{
  struct curl_slist *h = NULL, *t;
  /* No "Expect:" to drop 100-continue: curl 7.88 signs a header it then
   * does not send, and the server refuses the signature. */
  const char *all[] = { "x-amz-content-sha256: UNSIGNED-PAYLOAD", extra };
  size_t i;

  for (i = 0; i < 2 && all[i]; i++) {
    t = curl_slist_append (h, all[i]);
    if (t == NULL) {
      curl_slist_free_all (h);
      err_set (ENOMEM, "out of memory");
      return NULL;
    }
    h = t;
  }
  return h;
}

/* ---- operations ---- */


/* Q's headers (with HDR, or NULL) and the handle set up for it.  0, or
 * -1 with err_*. */
int
s3i_req_ready (s3_client *c, struct req *q, const char *hdr)
{
  q->h = headers (hdr);
  if (q->h == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  return setup (c, &q->r, q->h);
}

/* Q as a request of object KEY (see s3i_req_ready). */
int
s3i_req_key (s3_client *c, struct req *q, const char *key, const char *hdr)
{
  q->url = s3i_key_url (c, key, NULL, q->where, sizeof q->where);
  return q->url ? s3i_req_ready (c, q, hdr) : -1;
}

void
s3i_req_end (struct req *q)
{
  curl_slist_free_all (q->h);
  free (q->r.p);
  free (q->url);
}

/* 0 when every SETOPT before took (RC), else -1 with err_*. */
int
s3i_configured (CURLcode rc)
{
  if (rc == CURLE_OK)
    return 0;
  err_set (EIO, "cannot configure libcurl: %s", curl_easy_strerror (rc));
  return -1;
}

/* The ETag S3 gives LEN bytes of BUF put in parts of PART bytes (0:
 * one PUT): the MD5 of the bytes, or of the parts' MD5s followed by
 * "-" and their count, in hex, without quotes, into HEX (64 bytes). */
static int
etag_of (const void *buf, size_t len, size_t part, char *hex)
{
  unsigned char md5[16];
  gnutls_hash_hd_t h;
  size_t n = 0;

  if (part == 0) {
    if (gnutls_hash_fast (GNUTLS_DIG_MD5, buf, len, md5) != 0)
      return -1;
  }
  else {
    if (gnutls_hash_init (&h, GNUTLS_DIG_MD5) != 0)
      return -1;
    for (size_t off = 0; off < len; off += part, n++) {
      if (gnutls_hash_fast (GNUTLS_DIG_MD5, (const char *) buf + off,
                            len - off < part ? len - off : part, md5) != 0
          || gnutls_hash (h, md5, sizeof md5) != 0) {
        gnutls_hash_deinit (h, NULL);
        return -1;
      }
    }
    gnutls_hash_deinit (h, md5);
  }
  for (size_t i = 0; i < sizeof md5; i++)
    snprintf (hex + 2 * i, 3, "%02x", md5[i]);
  if (n)
    snprintf (hex + 2 * sizeof md5, 32, "-%zu", n);
  return 0;
}

/* Whether KEY holds LEN bytes of BUF, as far as its size and ETag tell
 * (what etag_of computes, for a PUT or parts of the client's size). */
bool
s3i_ours (s3_client *c, const char *key, const void *buf, size_t len)
{
  char hex[64], *etag = NULL, *e;
  uint64_t size;
  bool same;

  if (etag_of (buf, len, s3_part_size (len, c->part_size), hex) == -1
      || s3_head (c, key, &size, &etag) == -1)
    return false;
  e = etag + (*etag == '"');
  same = size == len && strncmp (e, hex, strlen (hex)) == 0
    && (e[strlen (hex)] == '\0' || e[strlen (hex)] == '"');
  free (etag);
  if (!same)
    err_set (EEXIST, "s3://%s/%s: already exists", c->bucket, key);
  return same;
}

/* One PUT of LEN bytes of BUF as KEY with the header HDR (or NULL);
 * *ATTEMPTS (may be NULL) gets how many requests it took. */
static int
put_with (s3_client *c, const char *key, const void *buf, size_t len,
          const char *hdr, int *attempts)
{
  struct req q = { .r = { .c = c, .limit = S3_MAX_ERROR_BODY, .up = buf,
                          .up_len = len } };
  CURLcode rc = CURLE_OK;
  int ret = -1;

  if (s3i_req_key (c, &q, key, hdr) == -1)
    goto out;
  SETOPT (c->curl, CURLOPT_UPLOAD, 1L);
  SETOPT (c->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) len);
  SETOPT (c->curl, CURLOPT_READFUNCTION, s3i_on_read);
  SETOPT (c->curl, CURLOPT_READDATA, &q.r);
  if (s3i_configured (rc) == 0)
    ret = s3i_perform (c, q.url, q.where, &q.r);
 out:
  if (attempts)
    *attempts = q.r.attempts;
  s3i_req_end (&q);
  return ret;
}

/* s3_put in one PUT. */
static int
put_one (s3_client *c, const char *key, const void *buf, size_t len,
         bool create_only)
{
  int attempts, ret;

  ret = put_with (c, key, buf, len, create_only ? "If-None-Match: *" : NULL,
                  &attempts);
  /* A create-only put tried again may find what its first try put
   * before its answer was lost: that is success, not a taken key. */
  if (ret == -1 && errno == EEXIST && create_only && attempts > 1
      && s3i_ours (c, key, buf, len))
    ret = 0;
  return ret;
}

int
s3_put (s3_client *c, const char *key, const void *buf, size_t len,
        bool create_only)
{
  size_t part = s3_part_size (len, c->part_size);

  return part ? s3i_put_multipart (c, key, buf, len, part, create_only)
    : put_one (c, key, buf, len, create_only);
}

int
s3_get (s3_client *c, const char *key, uint64_t offset, uint64_t len,
        void **buf, size_t *size)
{
  struct req q = { .r = { .c = c, .limit = SIZE_MAX } };
  char range[64];
  CURLcode rc = CURLE_OK;
  int ret = -1;

  if (s3i_req_key (c, &q, key, NULL) == -1)
    goto out;
  if (len) {
    if (len > SIZE_MAX || offset > UINT64_MAX - len) {
      err_set (EINVAL, "%s: range too large", q.where);
      goto out;
    }
    snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64, offset,
              offset + len - 1);
    q.r.limit = len;
    SETOPT (c->curl, CURLOPT_RANGE, range);
    /* The body's size is known: one buffer, not a series of copies
     * doubling up to twice its size (blocks are read in MiB). */
    if (len <= PREALLOC_MAX && (q.r.p = malloc (len + 1)) != NULL)
      q.r.cap = len + 1;
  }
  SETOPT (c->curl, CURLOPT_HTTPGET, 1L);
  if (s3i_configured (rc) == -1
      || s3i_perform (c, q.url, q.where, &q.r) == -1)
    goto out;
  /* A server that ignored the range would send the whole object with
   * 200: only 206 means these are the bytes asked for. */
  if (len && q.r.status != 206) {
    err_set (EPROTO, "%s: ranged read answered with HTTP %ld", q.where,
             q.r.status);
    goto out;
  }
  *buf = q.r.p ? q.r.p : malloc (1);
  if (*buf == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  *size = q.r.len;
  q.r.p = NULL;
  ret = 0;
 out:
  s3i_req_end (&q);
  return ret;
}

/* A HEAD of KEY through Q (FILETIME: have libcurl parse Last-Modified);
 * *SIZE gets the length.  The caller reads the rest of the answer, then
 * s3i_req_end (Q). */
static int
head (s3_client *c, struct req *q, const char *key, bool filetime,
      uint64_t *size)
{
  curl_off_t cl = -1;
  CURLcode rc = CURLE_OK;

  if (s3i_req_key (c, q, key, NULL) == -1)
    return -1;
  SETOPT (c->curl, CURLOPT_NOBODY, 1L);
  if (filetime)
    SETOPT (c->curl, CURLOPT_FILETIME, 1L);
  if (s3i_configured (rc) == -1
      || s3i_perform (c, q->url, q->where, &q->r) == -1)
    return -1;
  curl_easy_getinfo (c->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
  if (cl < 0) {
    err_set (EPROTO, "%s: HEAD without a length", q->where);
    return -1;
  }
  *size = (uint64_t) cl;
  return 0;
}

int
s3_head (s3_client *c, const char *key, uint64_t *size, char **etag)
{
  struct req q = { .r = { .c = c, .limit = 0 } };
  struct curl_header *eh = NULL;
  int ret = -1;

  if (head (c, &q, key, false, size) == -1)
    goto out;
  if (etag) {
    if (curl_easy_header (c->curl, "ETag", 0, CURLH_HEADER, -1, &eh)
        != CURLHE_OK) {
      err_set (EPROTO, "%s: HEAD without an ETag", q.where);
      goto out;
    }
    *etag = strdup (eh->value);
    if (*etag == NULL) {
      err_set (ENOMEM, "out of memory");
      goto out;
    }
  }
  ret = 0;
 out:
  s3i_req_end (&q);
  return ret;
}

int
s3_stat (s3_client *c, const char *key, struct s3_stat *st)
{
  struct req q = { .r = { .c = c, .limit = 0 } };
  struct curl_header *dh = NULL;
  curl_off_t mtime = -1;
  int ret = -1;

  if (head (c, &q, key, true, &st->size) == -1)
    goto out;
  /* libcurl parses Last-Modified itself (CURLOPT_FILETIME); the Date
   * header with the same parser. */
  curl_easy_getinfo (c->curl, CURLINFO_FILETIME_T, &mtime);
  st->modified = mtime >= 0 ? (int64_t) mtime : -1;
  st->date = -1;
  if (curl_easy_header (c->curl, "Date", 0, CURLH_HEADER, -1, &dh)
      == CURLHE_OK) {
    time_t t = curl_getdate (dh->value, NULL);
    st->date = t >= 0 ? (int64_t) t : -1;
  }
  ret = 0;
 out:
  s3i_req_end (&q);
  return ret;
}

/* RGW compares If-Match with its ETag unquoted, as it keeps it; the
 * HTTP form is quoted, which is what others may insist on.  So the
 * unquoted form first, and the quoted one only when a 412 came while
 * KEY (its HEAD says) holds our bytes.  Tried again after a lost
 * answer, a rewrite finds its own first try, the same ETag, and
 * succeeds again. */
int
s3_rewrite (s3_client *c, const char *key, const void *buf, size_t len)
{
  char hex[64], hdr[80], *etag = NULL;
  uint64_t size;
  bool same;

  if (etag_of (buf, len, 0, hex) == -1) {
    err_set (EIO, "cannot compute an MD5");
    return -1;
  }
  snprintf (hdr, sizeof hdr, "If-Match: %s", hex);
  if (put_with (c, key, buf, len, hdr, NULL) == 0)
    return 0;
  if (errno != EEXIST)          /* 412, as http_error names it */
    return -1;
  if (s3_head (c, key, &size, &etag) == -1)
    return -1;
  same = size == len && strlen (etag) == 34 && etag[0] == '"'
    && strncmp (etag + 1, hex, 32) == 0;
  free (etag);
  if (same) {
    snprintf (hdr, sizeof hdr, "If-Match: \"%s\"", hex);
    if (put_with (c, key, buf, len, hdr, NULL) == 0)
      return 0;
    if (errno != EEXIST)
      return -1;
  }
  err_set (ESTALE, "s3://%s/%s: holds other bytes than expected "
           "(HTTP 412)", c->bucket, key);
  return -1;
}

int
s3_delete (s3_client *c, const char *key)
{
  struct req q = { .r = { .c = c, .limit = S3_MAX_ERROR_BODY } };
  CURLcode rc = CURLE_OK;
  int ret = -1;

  if (s3i_req_key (c, &q, key, NULL) == -1)
    goto out;
  SETOPT (c->curl, CURLOPT_CUSTOMREQUEST, "DELETE");
  SETOPT (c->curl, CURLOPT_NOBODY, 1L);
  if (s3i_configured (rc) == 0)
    ret = s3i_perform (c, q.url, q.where, &q.r);
 out:
  s3i_req_end (&q);
  return ret;
}

/* "Content-MD5: " and the base64 of BODY's MD5 into HDR (64 bytes):
 * DeleteObjects requires it. */
static int
content_md5 (const char *body, char *hdr)
{
  static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  unsigned char md5[18] = { 0 };        /* 16, padded to a multiple of 3 */
  char *q;

  if (gnutls_hash_fast (GNUTLS_DIG_MD5, body, strlen (body), md5) != 0) {
    err_set (EIO, "cannot compute an MD5");
    return -1;
  }
  q = hdr + sprintf (hdr, "Content-MD5: ");
  for (size_t i = 0; i < 18; i += 3) {
    uint32_t v = (uint32_t) md5[i] << 16 | md5[i + 1] << 8 | md5[i + 2];
    *q++ = b64[v >> 18];
    *q++ = b64[(v >> 12) & 63];
    *q++ = i + 3 < 18 ? b64[(v >> 6) & 63] : '=';
    *q++ = i + 3 < 18 ? b64[v & 63] : '=';
  }
  *q = '\0';
  return 0;
}

/* What a DeleteObjects answer (Q's) says: 0 when every key went, else
 * -1 with err_* naming the first that stayed. */
static int
delete_result (s3_client *c, struct req *q)
{
  char *key = NULL, *code = NULL, *message = NULL;
  int failed = s3_xml_delete_errors (q->r.p ? q->r.p : "", q->r.len, &key,
                                     &code, &message);

  if (failed == -1)
    err_set (EPROTO, "%s: a DeleteObjects answer without its result",
             q->where);
  else if (failed > 0)
    err_set (EIO, "s3://%s/%s: not deleted: %s%s%s (and %d more)", c->bucket,
             key ? key : "?", code ? code : "?", message ? ": " : "",
             message ? message : "", failed - 1);
  free (key);
  free (code);
  free (message);
  return failed == 0 ? 0 : -1;
}

/* One DeleteObjects request for the N keys KEYS; *UNSUPPORTED set when
 * the server does not know the request. */
static int
delete_batch (s3_client *c, char *const *keys, size_t n, bool *unsupported)
{
  struct req q = { .r = { .c = c, .limit = 16 * 1024 * 1024 } };
  char *body = s3_xml_delete (keys, n), md5[64];
  CURLcode rc = CURLE_OK;
  int ret = -1;

  *unsupported = false;
  snprintf (q.where, sizeof q.where, "s3://%s (deleting %zu objects from "
            "%s)", c->bucket, n, keys[0]);
  if (body == NULL || content_md5 (body, md5) == -1)
    goto out;
  if (asprintf (&q.url, "%s/?delete=", c->base) == -1) {
    q.url = NULL;
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  if (s3i_req_ready (c, &q, md5) == -1)
    goto out;
  SETOPT (c->curl, CURLOPT_POST, 1L);
  SETOPT (c->curl, CURLOPT_POSTFIELDS, body);
  SETOPT (c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen (body));
  if (s3i_configured (rc) == -1)
    goto out;
  if (s3i_perform (c, q.url, q.where, &q.r) == -1) {
    *unsupported = q.r.status == 501 || q.r.status == 405;
    goto out;
  }
  ret = delete_result (c, &q);
 out:
  free (body);
  s3i_req_end (&q);
  return ret;
}

int
s3_delete_many (s3_client *c, char *const *keys, size_t n)
{
  bool unsupported = false;
  int ret = 0;

  for (size_t i = 0; i < n && !unsupported; i += S3_DELETE_MAX) {
    size_t k = n - i < S3_DELETE_MAX ? n - i : S3_DELETE_MAX;
    if (delete_batch (c, keys + i, k, &unsupported) == -1 && !unsupported)
      return -1;
    if (unsupported)
      for (size_t j = i; j < n; j++)
        if (s3_delete (c, keys[j]) == -1)
          ret = -1;
  }
  return ret;
}

/* One ListObjectsV2 page; *NEXT gets the token of the next (or NULL). */
static int
list_page (s3_client *c, const char *prefix, const char *after, int max_keys,
           const char *token, s3_list_fn fn, void *opaque, char **next)
{
  struct req q = { .r = { .c = c, .limit = 64 * 1024 * 1024 } };
  char *p = NULL, *t = NULL, *a = NULL, mk[32] = "";
  CURLcode rc = CURLE_OK;
  int ret = -1;

  snprintf (q.where, sizeof q.where, "s3://%s/%s", c->bucket,
            prefix ? prefix : "");
  if (max_keys > 0)
    snprintf (mk, sizeof mk, "&max-keys=%d", max_keys);
  /* Sorted by name, each with a value (see the top of this file). */
  p = curl_easy_escape (c->curl, prefix ? prefix : "", 0);
  t = token ? curl_easy_escape (c->curl, token, 0) : NULL;
  a = after ? curl_easy_escape (c->curl, after, 0) : NULL;
  if (p == NULL || (token && t == NULL) || (after && a == NULL)
      || asprintf (&q.url, "%s?%s%s%slist-type=2%s&prefix=%s%s%s", c->base,
                   t ? "continuation-token=" : "", t ? t : "", t ? "&" : "",
                   mk, p, a ? "&start-after=" : "", a ? a : "") == -1) {
    q.url = NULL;
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  if (s3i_req_ready (c, &q, NULL) == -1)
    goto out;
  SETOPT (c->curl, CURLOPT_HTTPGET, 1L);
  if (s3i_configured (rc) == -1
      || s3i_perform (c, q.url, q.where, &q.r) == -1)
    goto out;
  ret = s3_xml_list (q.r.p ? q.r.p : "", q.r.len, fn, opaque, next);
  if (ret == -1)
    err_prefix ("%s", q.where);
 out:
  curl_free (p);
  curl_free (t);
  curl_free (a);
  s3i_req_end (&q);
  return ret;
}

int
s3_list (s3_client *c, const char *prefix, const char *after, int max_keys,
         s3_list_fn fn, void *opaque)
{
  char *token = NULL, *next = NULL;
  int r;

  do {
    r = list_page (c, prefix, after, max_keys, token, fn, opaque, &next);
    free (token);
    token = next;
    next = NULL;
  } while (r == 0 && token);
  free (token);
  return r;
}

