/* cbtfs: what the S3 client's files share (s3.c: opening, requests,
 * the single-request operations; s3-multipart.c: multipart uploads and
 * the uploads a killed run leaves).  Not for other modules: they use
 * s3.h.  Functions here follow s3.h's conventions (0 or -1 with err_*),
 * and the thread model is s3.h's: one thread at a time per client.
 */
#ifndef CBTFS_S3_INT_H
#define CBTFS_S3_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "s3.h"

#define S3_DEFAULT_TIMEOUT 60L
#define S3_CONNECT_TIMEOUT 15L
#define S3_MAX_ERROR_BODY (64 * 1024)
#define S3_PART_SIZE_DEFAULT ((size_t) 64 << 20)
#define S3_PART_SIZE_MIN ((size_t) 5 << 20)     /* S3's, but for the last */
#define S3_PARTS_MAX 10000

#define SETOPT(h, opt, val)                                     \
  do {                                                          \
    if (rc == CURLE_OK)                                         \
      rc = curl_easy_setopt ((h), (opt), (val));                \
  } while (0)

struct s3_client {
  CURL *curl;
  char *base;                   /* scheme://host[:port][/bucket], no slash */
  char *bucket;
  char *sigv4;                  /* "aws:amz:REGION:s3" */
  char *access_key;
  char *secret_key;             /* secret; wiped before free */
  char *ca_file;                /* NULL: the system CAs */
  bool https;
  long timeout;
  size_t part_size;
  char errbuf[CURL_ERROR_SIZE];
};

/* What one request brought back. */
struct resp {
  s3_client *c;
  char *p;
  size_t len, cap;
  size_t limit;                 /* bytes of a successful body we accept */
  long status;
  bool too_big, oom;
  const void *up;               /* upload: remaining bytes */
  size_t up_len;
  const void *up0;              /* upload: all of it, for a retry */
  size_t up_len0;
  int attempts;                 /* requests s3i_perform made */
};

/* One request: its URL (owned), its name in messages, its headers and
 * its answer.  Zero it but for R, then s3i_req_key (or set URL and
 * WHERE and s3i_req_ready); s3i_req_end frees it whatever happened. */
struct req {
  char *url;
  char where[1024];
  struct curl_slist *h;
  struct resp r;
};

/* CURLOPT_READFUNCTION for an upload from a struct resp's UP. */
extern size_t s3i_on_read (char *ptr, size_t size, size_t nmemb,
                           void *opaque);

/* Run the request set up on C for URL (WHERE names it in messages),
 * its answer into R, trying again what may pass; 0 on a 2xx. */
extern int s3i_perform (s3_client *c, const char *url, const char *where,
                        struct resp *r);

/* The URL of KEY with QUERY (pre-sorted, pre-encoded; NULL: none)
 * (malloc'd); WHERE (LEN bytes) gets its name in messages. */
extern char *s3i_key_url (s3_client *c, const char *key, const char *query,
                          char *where, size_t len);

/* Q's headers (with HDR, or NULL) and the handle set up for it. */
extern int s3i_req_ready (s3_client *c, struct req *q, const char *hdr);

/* Q as a request of object KEY (see s3i_req_ready). */
extern int s3i_req_key (s3_client *c, struct req *q, const char *key,
                        const char *hdr);

extern void s3i_req_end (struct req *q);

/* 0 when every SETOPT before took (RC), else -1 with err_*. */
extern int s3i_configured (CURLcode rc);

/* Set err_* from the failed answer R to the request WHERE. */
extern void s3i_http_error (s3_client *c, const char *where,
                            const struct resp *r);

/* The Date of C's last answer, or (time_t) -1. */
extern time_t s3i_server_date (s3_client *c);

/* Whether KEY holds LEN bytes of BUF, as its size and ETag tell (a
 * create-only put tried again that finds its own first try). */
extern bool s3i_ours (s3_client *c, const char *key, const void *buf,
                      size_t len);

/* s3_put of LEN bytes in parts of PART (s3-multipart.c). */
extern int s3i_put_multipart (s3_client *c, const char *key, const void *buf,
                              size_t len, size_t part, bool create_only);

#endif /* CBTFS_S3_INT_H */
