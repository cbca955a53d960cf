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

#endif /* CBTFS_S3_XML_H */
