/* Fuzz target: XAPI answers (the XML-RPC decoder and the envelope). */
#include <stddef.h>
#include <stdint.h>

#include "xapi/session.h"
#include "xapi/xmlrpc.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  xapi_value *v = xmlrpc_decode_response ((const char *) data, size);
  xapi_value *val = NULL;
  struct xapi_error e = { 0 };

  if (v && xapi_unwrap (v, &val, &e) == 0) {
    int64_t i;
    bool b;
    /* Exercise the lenient getters on whatever came back. */
    xv_to_int (val, &i);
    xv_to_bool (val, &b);
    xv_to_time (val, &i);
    xv_get (val, "Status");
  }
  xapi_error_clear (&e);
  xv_free (val);
  xv_free (v);
  return 0;
}
