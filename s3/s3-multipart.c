/* cbtfs: the S3 client's multipart uploads, and the uploads a killed
 * run leaves unfinished (s3.h).
 *
 * Thread model: as s3.h says, one thread at a time per client.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "../common/error.h"
#include "../common/util.h"
#include "s3-int.h"
#include "s3-xml.h"

/* ---- multipart uploads ----
 * CreateMultipartUpload (POST KEY?uploads=), UploadPart (PUT
 * KEY?partNumber=N&uploadId=ID), CompleteMultipartUpload (POST
 * KEY?uploadId=ID with the parts' ETags), AbortMultipartUpload (DELETE
 * KEY?uploadId=ID).  Each request is tried again as any other; a create
 * tried again may leave an upload nobody completes, which the store's
 * lock holder aborts once old (s3_list_uploads). */

size_t
s3_part_size (uint64_t len, size_t part)
{
  uint64_t least;

  if (part == 0 || len <= part)
    return 0;
  /* At most S3_PARTS_MAX parts: larger ones, whole MiB, if need be. */
  least = (len + S3_PARTS_MAX - 1) / S3_PARTS_MAX;
  if (least > part)
    part = (size_t) ((least + (1 << 20) - 1) & ~(uint64_t) ((1 << 20) - 1));
  return part;
}

/* Q as a request of KEY with QUERY "NAME=ID" (ID encoded here), or
 * QUERY alone when ID is NULL. */
static int
req_upload (s3_client *c, struct req *q, const char *key, const char *query,
            const char *id, const char *hdr)
{
  char *e = id ? curl_easy_escape (c->curl, id, 0) : NULL, *full = NULL;

  if ((id && e == NULL)
      || asprintf (&full, "%s%s", query, e ? e : "") == -1) {
    curl_free (e);
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  curl_free (e);
  q->url = s3i_key_url (c, key, full, q->where, sizeof q->where);
  free (full);
  return q->url ? s3i_req_ready (c, q, hdr) : -1;
}

/* A POST of BODY (may be "") on the request set up in Q. */
static int
post (s3_client *c, struct req *q, const char *body)
{
  CURLcode rc = CURLE_OK;

  SETOPT (c->curl, CURLOPT_POST, 1L);
  SETOPT (c->curl, CURLOPT_POSTFIELDS, body);
  SETOPT (c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen (body));
  if (s3i_configured (rc) == -1)
    return -1;
  return s3i_perform (c, q->url, q->where, &q->r);
}

int
s3_start_upload (s3_client *c, const char *key, char **upload_id)
{
  struct req q = { .r = { .c = c, .limit = S3_MAX_ERROR_BODY } };
  int ret = -1;

  if (req_upload (c, &q, key, "uploads=", NULL, NULL) == 0
      && post (c, &q, "") == 0) {
    *upload_id = s3_xml_upload_id (q.r.p ? q.r.p : "", q.r.len);
    if (*upload_id)
      ret = 0;
    else
      err_prefix ("%s: starting a multipart upload", q.where);
  }
  s3i_req_end (&q);
  return ret;
}

/* Part N of upload ID of KEY: LEN bytes of BUF; *ETAG (caller frees)
 * the part's ETag. */
static int
upload_part (s3_client *c, const char *key, const char *id, size_t n,
             const void *buf, size_t len, char **etag)
{
  struct req q = { .r = { .c = c, .limit = S3_MAX_ERROR_BODY, .up = buf,
                          .up_len = len } };
  struct curl_header *eh = NULL;
  char query[64];
  CURLcode rc = CURLE_OK;
  int ret = -1;

  snprintf (query, sizeof query, "partNumber=%zu&uploadId=", n);
  if (req_upload (c, &q, key, query, id, NULL) == -1)
    goto out;
  SETOPT (c->curl, CURLOPT_UPLOAD, 1L);
  SETOPT (c->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) len);
  SETOPT (c->curl, CURLOPT_READFUNCTION, s3i_on_read);
  SETOPT (c->curl, CURLOPT_READDATA, &q.r);
  if (s3i_configured (rc) == -1
      || s3i_perform (c, q.url, q.where, &q.r) == -1)
    goto out;
  if (curl_easy_header (c->curl, "ETag", 0, CURLH_HEADER, -1, &eh)
      != CURLHE_OK) {
    err_set (EPROTO, "%s: part %zu answered without an ETag", q.where, n);
    goto out;
  }
  *etag = strdup (eh->value);
  if (*etag == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  ret = 0;
 out:
  s3i_req_end (&q);
  return ret;
}

/* Complete upload ID of KEY with BODY; *ATTEMPTS gets how many
 * requests it took (a lost answer's retry finds the upload done). */
static int
complete (s3_client *c, const char *key, const char *id, const char *body,
          bool create_only, int *attempts)
{
  struct req q = { .r = { .c = c, .limit = S3_MAX_ERROR_BODY } };
  char *code = NULL, *message = NULL;
  int ret = -1;

  if (req_upload (c, &q, key, "uploadId=", id,
                  create_only ? "If-None-Match: *" : NULL) == -1)
    goto out;
  ret = post (c, &q, body);
  *attempts = q.r.attempts;
  /* S3 may answer 200 and then an error in the body. */
  if (ret == 0 && q.r.p) {
    s3_xml_error (q.r.p, q.r.len, &code, &message);
    if (code) {
      s3i_http_error (c, q.where, &q.r);
      ret = -1;
    }
  }
 out:
  free (code);
  free (message);
  s3i_req_end (&q);
  return ret;
}

int
s3_abort_upload (s3_client *c, const char *key, const char *upload_id)
{
  struct req q = { .r = { .c = c, .limit = S3_MAX_ERROR_BODY } };
  CURLcode rc = CURLE_OK;
  int ret = -1;

  if (req_upload (c, &q, key, "uploadId=", upload_id, NULL) == -1)
    goto out;
  SETOPT (c->curl, CURLOPT_CUSTOMREQUEST, "DELETE");
  SETOPT (c->curl, CURLOPT_NOBODY, 1L);
  if (s3i_configured (rc) == 0)
    ret = s3i_perform (c, q.url, q.where, &q.r);
 out:
  s3i_req_end (&q);
  return ret;
}

/* Whether the upload begun at START has run out of time. */
static bool
overdue (double start, const char *key, const s3_client *c)
{
  if (now_monotonic () - start <= S3_UPLOAD_MAX_SECONDS)
    return false;
  err_set (ETIMEDOUT, "s3://%s/%s: a multipart upload may take %d s; this "
           "one took longer", c->bucket, key, S3_UPLOAD_MAX_SECONDS);
  err_set_class (ERR_SERVER);
  return true;
}

/* s3_put of LEN bytes in parts of PART, aborted on any failure (the
 * first failure is what the caller sees). */
int
s3i_put_multipart (s3_client *c, const char *key, const void *buf, size_t len,
               size_t part, bool create_only)
{
  size_t n = (len + part - 1) / part, i;
  char **etags = calloc (n, sizeof *etags), *id = NULL, *body = NULL;
  char *saved;
  double start = now_monotonic ();
  enum err_class cls;
  uint64_t size;
  int ret = -1, attempts = 0, e;

  if (etags == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (create_only) {
    if (s3_head (c, key, &size, NULL) == 0) {
      err_set (EEXIST, "s3://%s/%s: already exists", c->bucket, key);
      goto out;
    }
    if (errno != ENOENT)
      goto out;
  }
  if (s3_start_upload (c, key, &id) == -1)
    goto out;
  for (i = 0; i < n; i++)
    if (overdue (start, key, c)
        || upload_part (c, key, id, i + 1, (const char *) buf + i * part,
                        len - i * part < part ? len - i * part : part,
                        &etags[i]) == -1)
      goto abort;
  body = s3_xml_complete (etags, n);
  if (body == NULL || overdue (start, key, c))
    goto abort;
  if (complete (c, key, id, body, create_only, &attempts) == 0) {
    ret = 0;
    goto out;
  }
  /* Tried again after a lost answer: the upload is done (NoSuchUpload)
   * or the key taken, by our own first try if it holds our bytes. */
  if (attempts > 1 && (errno == ENOENT || errno == EEXIST)
      && s3i_ours (c, key, buf, len)) {
    ret = 0;
    goto out;
  }
 abort:
  e = errno;
  cls = err_class ();
  saved = strdup (err_get ());
  s3_abort_upload (c, key, id);       /* best effort: else the sweep's */
  err_set (e, "%s", saved ? saved : "multipart upload failed");
  err_set_class (cls);
  free (saved);
 out:
  for (i = 0; i < n; i++)
    free (etags[i]);
  free (etags);
  free (id);
  free (body);
  return ret;
}

/* ---- unfinished uploads ---- */

/* Seconds since the epoch of an ISO 8601 UTC time
 * ("2026-12-03T21:51:42.123Z"), or -1. */
static time_t
parse_iso (const char *s)
{
  struct tm tm = { 0 };
  int n = 0;

  if (sscanf (s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
              &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6
      || n == 0)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return timegm (&tm);
}

struct uploads_page {
  s3_uploads_fn fn;
  void *opaque;
  time_t now;                   /* the server's, from its Date */
};

static int
one_upload (void *opaque, const char *key, const char *id,
            const char *initiated)
{
  struct uploads_page *p = opaque;
  time_t t = parse_iso (initiated);

  if (t == -1) {
    err_set (EPROTO, "malformed listing: upload of %s initiated %s", key,
             initiated);
    return -1;
  }
  return p->fn (p->opaque, key, id, (int64_t) p->now - (int64_t) t);
}

/* One ListMultipartUploads page from KEY_MARKER/ID_MARKER (NULL: the
 * first); the next markers into *NEXT_KEY, *NEXT_ID. */
static int
uploads_page (s3_client *c, const char *prefix, const char *key_marker,
              const char *id_marker, struct uploads_page *pg,
              char **next_key, char **next_id)
{
  struct req q = { .r = { .c = c, .limit = 64 * 1024 * 1024 } };
  char *p = NULL, *k = NULL, *i = NULL;
  CURLcode rc = CURLE_OK;
  int ret = -1;

  snprintf (q.where, sizeof q.where, "s3://%s/%s (multipart uploads)",
            c->bucket, prefix);
  /* Sorted by name, each with a value (see the top of this file). */
  p = curl_easy_escape (c->curl, prefix, 0);
  k = key_marker ? curl_easy_escape (c->curl, key_marker, 0) : NULL;
  i = id_marker ? curl_easy_escape (c->curl, id_marker, 0) : NULL;
  if (p == NULL || (key_marker && k == NULL) || (id_marker && i == NULL)
      || asprintf (&q.url, "%s?%s%s%sprefix=%s%s%s%suploads=", c->base,
                   k ? "key-marker=" : "", k ? k : "", k ? "&" : "", p,
                   i ? "&upload-id-marker=" : "", i ? i : "",
                   "&") == -1) {
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
  pg->now = s3i_server_date (c);
  if (pg->now == -1)
    pg->now = time (NULL);
  ret = s3_xml_uploads (q.r.p ? q.r.p : "", q.r.len, one_upload, pg,
                        next_key, next_id);
  if (ret == -1)
    err_prefix ("%s", q.where);
 out:
  curl_free (p);
  curl_free (k);
  curl_free (i);
  s3i_req_end (&q);
  return ret;
}

int
s3_list_uploads (s3_client *c, const char *prefix, s3_uploads_fn fn,
                 void *opaque)
{
  struct uploads_page pg = { .fn = fn, .opaque = opaque };
  char *key = NULL, *id = NULL, *nkey = NULL, *nid = NULL;
  int r;

  do {
    r = uploads_page (c, prefix, key, id, &pg, &nkey, &nid);
    free (key);
    free (id);
    key = nkey;
    id = nid;
    nkey = nid = NULL;
  } while (r == 0 && key);
  free (key);
  free (id);
  return r;
}
