/* cbtfs: the XML answers of S3 (inside s3/ only), parsed with libxml2.
 *
 * Pure functions on a response body; no I/O, no global state beyond
 * libxml2's (initialised by s3_global_init), so any thread may call them.
 */
#ifndef CBTFS_S3_XML_H
#define CBTFS_S3_XML_H

#include <stddef.h>

#include "s3.h"

/* From an <Error> body: its Code and Message (caller frees; either is
 * NULL when absent or the body is not an S3 error).  Never fails. */
extern void s3_xml_error (const char *body, size_t len, char **code,
                          char **message);

/* A ListObjectsV2 page: FN for each <Contents>, then *NEXT gets
 * NextContinuationToken when IsTruncated (caller frees), else NULL.
 * 0, FN's non-zero result, or -1 (malformed) with err_* set. */
extern int s3_xml_list (const char *body, size_t len, s3_list_fn fn,
                        void *opaque, char **next);

/* The body of a CompleteMultipartUpload naming parts 1..N with the
 * ETags ETAGS (as the server gave them, escaped here).  Caller frees;
 * NULL with err_* on out of memory. */
extern char *s3_xml_complete (char *const *etags, size_t n);

/* The UploadId of an InitiateMultipartUploadResult (caller frees), or
 * NULL with err_* (EPROTO: malformed). */
extern char *s3_xml_upload_id (const char *body, size_t len);

/* Called for each <Upload> of a ListMultipartUploads page: its Key,
 * UploadId and Initiated (ISO 8601, as given); non-zero stops. */
typedef int (*s3_xml_upload_fn) (void *opaque, const char *key,
                                 const char *upload_id,
                                 const char *initiated);

/* A ListMultipartUploads page: FN for each upload, then, when
 * IsTruncated, *NEXT_KEY and *NEXT_ID get NextKeyMarker and
 * NextUploadIdMarker (caller frees), else NULL.  0, FN's non-zero
 * result, or -1 (malformed) with err_* set. */
extern int s3_xml_uploads (const char *body, size_t len, s3_xml_upload_fn fn,
                           void *opaque, char **next_key, char **next_id);

/* The body of a DeleteObjects request (quiet: the answer names only
 * failures) for the N keys KEYS.  Caller frees; NULL with err_* on out
 * of memory. */
extern char *s3_xml_delete (char *const *keys, size_t n);

/* From a DeleteResult: how many keys failed (-1: not a DeleteResult),
 * and the first one's Key, Code and Message (caller frees; NULL when
 * absent). */
extern int s3_xml_delete_errors (const char *body, size_t len, char **key,
                                 char **code, char **message);

#endif /* CBTFS_S3_XML_H */
