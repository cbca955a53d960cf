/* cbtfs: the XML-RPC codec (libxml2), without transport.
 *
 * Encoding follows what XAPI accepts; decoding accepts everything XAPI
 * emits (docs/xapi.md, "The XML-RPC envelope") and rejects, with a
 * one-line reason, anything that is not a well-formed methodResponse.
 * Neither function touches the network or keeps state, so both are safe
 * from any thread and are the fuzzing surface for XAPI answers.
 */
#ifndef CBTFS_XAPI_XMLRPC_H
#define CBTFS_XAPI_XMLRPC_H

#include <stddef.h>

#include "value.h"

/* Encode <methodCall> for METHOD with NPARAMS PARAMS (borrowed).
 * Strings go as <string>, ints as decimal strings (XAPI's int64
 * convention), bools as <boolean>, times as compact dateTime.iso8601.
 * Returns a malloc'd NUL-terminated document (caller frees), or NULL
 * with err_* set. */
extern char *xmlrpc_encode_call (const char *method,
                                 xapi_value *const *params, size_t nparams)
  __attribute__ ((__nonnull__ (1)));

/* Decode a <methodResponse> holding one <param>; returns that value
 * (caller frees).  A <fault> is an error ("XML-RPC fault N: text").
 * Malformed XML, unknown tags, more than one param, nesting deeper
 * than 64, or a document over 64 MiB: NULL with err_* set and errno
 * EPROTO. */
extern xapi_value *xmlrpc_decode_response (const char *body, size_t len)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_XAPI_XMLRPC_H */
