/* cbtfs: XML-RPC values as XAPI sends them.
 *
 * XAPI's wire format is loose (docs/xapi.md, "The XML-RPC envelope"):
 * strings usually arrive untyped (<value>text</value>), 64-bit ints as
 * decimal strings, bools as <boolean>, times as compact
 * dateTime.iso8601.  The tree keeps what arrived; the typed getters
 * below accept every form XAPI uses, so callers never care.
 *
 * Ownership: a value owns its children and strings; xv_free frees the
 * whole tree.  Constructors copy their string arguments.
 */
#ifndef CBTFS_XAPI_VALUE_H
#define CBTFS_XAPI_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  XV_STRING = 1,        /* <string> or untyped text */
  XV_INT = 2,           /* <int>, <i4>, <i8> */
  XV_BOOL = 3,          /* <boolean> */
  XV_DOUBLE = 4,        /* <double> */
  XV_DATETIME = 5,      /* <dateTime.iso8601>, kept as UTC seconds */
  XV_ARRAY = 6,         /* <array><data> */
  XV_STRUCT = 7,        /* <struct>, members in wire order */
} xv_type;

typedef struct xapi_value xapi_value;
struct xapi_value {
  xv_type type;
  union {
    char *s;                    /* XV_STRING, NUL-terminated UTF-8 */
    int64_t i;                  /* XV_INT */
    bool b;                     /* XV_BOOL */
    double d;                   /* XV_DOUBLE */
    int64_t t;                  /* XV_DATETIME, seconds since the epoch, UTC */
    struct {
      xapi_value **v;
      size_t n;
    } a;                        /* XV_ARRAY */
    struct {
      char **k;
      xapi_value **v;
      size_t n;
    } st;                       /* XV_STRUCT */
  } u;
};

/* Constructors: NULL with errno ENOMEM on failure. */
extern xapi_value *xv_string (const char *s) __attribute__ ((__nonnull__ (1)));
extern xapi_value *xv_int (int64_t i);
extern xapi_value *xv_bool (bool b);
extern xapi_value *xv_double (double d);
extern xapi_value *xv_datetime (int64_t t);
extern xapi_value *xv_array (void);
extern xapi_value *xv_struct (void);

/* Append V to array A, taking ownership of V (freed on failure too; a
 * NULL V, e.g. a failed constructor, is -1 with ENOMEM).  0 or -1.
 * Arrays and structs must be grown only with these two functions: their
 * capacity is implicit in their length. */
extern int xv_array_append (xapi_value *a, xapi_value *v)
  __attribute__ ((__nonnull__ (1)));
/* Add member KEY (copied) = V to struct S, taking ownership of V as
 * xv_array_append does.  Keys are not checked for duplicates. */
extern int xv_struct_set (xapi_value *s, const char *key, xapi_value *v)
  __attribute__ ((__nonnull__ (1, 2)));

/* Free V and everything it owns; NULL is a no-op. */
extern void xv_free (xapi_value *v);

/* Member KEY of struct S, or NULL if S is not a struct or lacks it.
 * Borrowed from S. */
extern const xapi_value *xv_get (const xapi_value *s, const char *key);

/* String contents, or NULL if V is not a string.  Borrowed. */
extern const char *xv_str (const xapi_value *v);

/* An integer: XV_INT, or an XV_STRING of decimal digits (optional
 * sign), as XAPI sends int64.  0, or -1 with errno EINVAL. */
extern int xv_to_int (const xapi_value *v, int64_t *out)
  __attribute__ ((__nonnull__ (2)));

/* A bool: XV_BOOL, or the strings "true"/"false"/"1"/"0".  0 or -1 EINVAL. */
extern int xv_to_bool (const xapi_value *v, bool *out)
  __attribute__ ((__nonnull__ (2)));

/* A time: XV_DATETIME, or a string in compact (20250319T04:16:24Z) or
 * extended (2025-03-19T04:16:24Z) ISO 8601, UTC (a missing Z means
 * UTC too).  0 or -1 EINVAL. */
extern int xv_to_time (const xapi_value *v, int64_t *out)
  __attribute__ ((__nonnull__ (2)));

/* Parse an ISO 8601 time as xv_to_time does; 0 or -1 EINVAL. */
extern int xv_parse_time (const char *s, int64_t *out)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_XAPI_VALUE_H */
