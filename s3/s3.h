/* cbtfs: a client for S3-compatible object storage (Ceph RGW, MinIO,
 * cloud buckets), over libcurl with its own SigV4 signing.
 *
 * One client names one bucket.  Every function returns 0 (or a pointer)
 * on success and -1 (or NULL) with err_* (common/error.h) set to one
 * line naming the object and the problem; errno tells the kind:
 * ENOENT (no such bucket or key), EEXIST (create-only put of an
 * existing key), EACCES (credentials refused, or a TLS certificate not
 * trusted), EPERM (plain http not allowed), ETIME (clock skew: the
 * message says by how much), ENOSPC (the bucket's quota or the
 * cluster's space is used up: QuotaExceeded, 507), ESTALE (s3_rewrite
 * of a key that changed), EIO (anything else the server said).  No
 * message ever holds the secret.
 *
 * Thread model: a client is used by one thread at a time (one client
 * per thread, or a pool of them); it owns one CURL easy handle whose
 * connection is kept alive between requests.  s3_global_init runs once
 * per process before any thread uses a client.
 */
#ifndef CBTFS_S3_H
#define CBTFS_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct s3_client s3_client;

struct s3_opts {
  const char *endpoint;         /* https://HOST[:PORT] (http:// if allowed) */
  const char *region;           /* signing region, e.g. "us-east-1" */
  const char *bucket;
  const char *access_key;
  const char *secret_key;       /* copied; the copy is wiped at close */
  const char *ca_file;          /* PEM CA bundle; NULL: the system CAs */
  bool allow_http;              /* accept a plain http:// endpoint */
  bool virtual_host;            /* BUCKET.HOST addressing; else path-style */
  long timeout;                 /* seconds per request; 0: a default */
  size_t part_size;             /* an object larger than this goes up as a
                                   multipart upload, in parts of this size
                                   (at least 5 MiB); 0: 64 MiB */
};

/* A multipart upload still unfinished this long after it began is
 * aborted by its own s3_put: an older one is no live writer's (the
 * store's lock holder removes those: s3_list_uploads, s3_abort_upload). */
#define S3_UPLOAD_MAX_SECONDS 1800

/* Initialise libcurl and libxml2 for the process.  0 or -1. */
extern int s3_global_init (void);

/* A client for OPTS->bucket; no request is sent yet.  Caller closes. */
extern s3_client *s3_open (const struct s3_opts *opts)
  __attribute__ ((__nonnull__ (1)));

/* Close the client and wipe its copy of the secret.  NULL is a no-op. */
extern void s3_close (s3_client *c);

/* Store LEN bytes of BUF as KEY, replacing it; with CREATE_ONLY, only
 * if KEY does not exist (If-None-Match: *), else -1 with EEXIST.
 * Above the part size, a multipart upload, aborted on any failure;
 * its CREATE_ONLY is a HEAD before it starts, and If-None-Match on the
 * completion for servers that honour it there (RGW 16 does not): two
 * writers of one large key at once could both succeed. */
extern int s3_put (s3_client *c, const char *key, const void *buf,
                   size_t len, bool create_only)
  __attribute__ ((__nonnull__ (1, 2)));

/* Read KEY: all of it (LEN 0), or LEN bytes from OFFSET (fewer at its
 * end).  *BUF (caller frees) and *SIZE get the bytes. */
extern int s3_get (s3_client *c, const char *key, uint64_t offset,
                   uint64_t len, void **buf, size_t *size)
  __attribute__ ((__nonnull__ (1, 2, 5, 6)));

/* KEY's size and ETag (*ETAG caller frees; ETAG may be NULL). */
extern int s3_head (s3_client *c, const char *key, uint64_t *size,
                    char **etag)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* What a HEAD tells of an object, both times by the server's clock
 * (unix seconds, -1 when the answer did not say), so that a client
 * whose clock is wrong can still tell how long ago it was written. */
struct s3_stat {
  uint64_t size;
  int64_t modified;             /* Last-Modified: when it was last put */
  int64_t date;                 /* Date: when the server answered */
};

/* KEY's size and times into *ST. */
extern int s3_stat (s3_client *c, const char *key, struct s3_stat *st)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Put LEN bytes of BUF as KEY again, only if KEY holds exactly them now
 * (If-Match with their MD5, the ETag of a single-part object): that
 * renews its Last-Modified and nothing else.  -1 with ESTALE when KEY
 * holds other bytes, ENOENT when it is gone.  A server that ignores
 * If-Match on PUT replaces whatever KEY holds. */
extern int s3_rewrite (s3_client *c, const char *key, const void *buf,
                       size_t len)
  __attribute__ ((__nonnull__ (1, 2)));

/* Remove KEY (S3 answers success for a missing key too). */
extern int s3_delete (s3_client *c, const char *key)
  __attribute__ ((__nonnull__ (1, 2)));

/* Remove the N keys KEYS (of the bucket, as s3_delete's) with as few
 * requests as the server takes: DeleteObjects of up to S3_DELETE_MAX
 * keys each, or, on a server without it (HTTP 501 or 405), one DELETE
 * per key.  -1 with err_* naming a key that stayed. */
#define S3_DELETE_MAX 1000
extern int s3_delete_many (s3_client *c, char *const *keys, size_t n)
  __attribute__ ((__nonnull__ (1)));

/* Called for each key listed, in order; non-zero stops the listing and
 * s3_list returns it (the callback sets err_* for -1). */
typedef int (*s3_list_fn) (void *opaque, const char *key, uint64_t size);

/* Every key starting with PREFIX (NULL: all) and sorting after AFTER
 * (NULL: from the first), page by page (ListObjectsV2; MAX_KEYS per
 * page, 0: the server's default). */
extern int s3_list (s3_client *c, const char *prefix, const char *after,
                    int max_keys, s3_list_fn fn, void *opaque)
  __attribute__ ((__nonnull__ (1, 5)));

/* The size of the parts a LEN-byte object goes up in with parts of
 * PART bytes (grown so that there are at most 10000, S3's limit), or 0
 * when LEN is no more than PART (one PUT).  Pure. */
extern size_t s3_part_size (uint64_t len, size_t part);

/* Begin a multipart upload of KEY, *UPLOAD_ID its id (caller frees);
 * s3_put does the rest, this alone is for tests. */
extern int s3_start_upload (s3_client *c, const char *key, char **upload_id)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Abort the multipart upload UPLOAD_ID of KEY (its parts go). */
extern int s3_abort_upload (s3_client *c, const char *key,
                            const char *upload_id)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Called for each unfinished multipart upload listed: its key, id and
 * age in seconds by the server's clock; non-zero stops the listing
 * and s3_list_uploads returns it. */
typedef int (*s3_uploads_fn) (void *opaque, const char *key,
                              const char *upload_id, int64_t age);

/* Every unfinished multipart upload of a key starting with PREFIX
 * (ListMultipartUploads), page by page. */
extern int s3_list_uploads (s3_client *c, const char *prefix,
                            s3_uploads_fn fn, void *opaque)
  __attribute__ ((__nonnull__ (1, 2, 3)));

#endif /* CBTFS_S3_H */
