/* cbtfs: XML-RPC values and the lenient getters XAPI needs.
 *
 * Thread model: values are plain trees with no shared state; a tree
 * may be used by one thread at a time.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "value.h"

static xapi_value *
xv_new (xv_type type)
{
  xapi_value *v = calloc (1, sizeof *v);

  if (v == NULL)
    return NULL;
  v->type = type;
  return v;
}

xapi_value *
xv_string (const char *s)
{
  xapi_value *v = xv_new (XV_STRING);

  if (v == NULL)
    return NULL;
  v->u.s = strdup (s);
  if (v->u.s == NULL) {
    free (v);
    return NULL;
  }
  return v;
}

xapi_value *
xv_int (int64_t i)
{
  xapi_value *v = xv_new (XV_INT);

  if (v)
    v->u.i = i;
  return v;
}

xapi_value *
xv_bool (bool b)
{
  xapi_value *v = xv_new (XV_BOOL);

  if (v)
    v->u.b = b;
  return v;
}

xapi_value *
xv_double (double d)
{
  xapi_value *v = xv_new (XV_DOUBLE);

  if (v)
    v->u.d = d;
  return v;
}

xapi_value *
xv_datetime (int64_t t)
{
  xapi_value *v = xv_new (XV_DATETIME);

  if (v)
    v->u.t = t;
  return v;
}

xapi_value *
xv_array (void)
{
  return xv_new (XV_ARRAY);
}

xapi_value *
xv_struct (void)
{
  return xv_new (XV_STRUCT);
}

/* Capacity is implicit, so nodes stay small: 0 for an empty list, else
 * the next power of two at or above max (N, 4).  Returns the capacity
 * to realloc to before index N is written, or 0 if N already fits;
 * SIZE_MAX on overflow. */
static size_t
new_cap (size_t n, size_t size)
{
  size_t cap;

  if (n == 0)
    cap = 4;
  else if (n >= 4 && (n & (n - 1)) == 0)
    cap = n * 2;
  else
    return 0;
  if (cap > SIZE_MAX / size)
    return SIZE_MAX;
  return cap;
}

int
xv_array_append (xapi_value *a, xapi_value *v)
{
  size_t cap;

  if (v == NULL) {
    errno = ENOMEM;             /* a failed constructor passed straight in */
    return -1;
  }
  if (a->type != XV_ARRAY) {
    xv_free (v);
    errno = EINVAL;
    return -1;
  }
  cap = new_cap (a->u.a.n, sizeof *a->u.a.v);
  if (cap) {
    xapi_value **nv = NULL;

    if (cap != SIZE_MAX)
      nv = realloc (a->u.a.v, cap * sizeof *nv);
    if (nv == NULL) {
      xv_free (v);
      errno = ENOMEM;
      return -1;
    }
    a->u.a.v = nv;
  }
  a->u.a.v[a->u.a.n++] = v;
  return 0;
}

int
xv_struct_set (xapi_value *s, const char *key, xapi_value *v)
{
  size_t cap;
  char *k;

  if (v == NULL) {
    errno = ENOMEM;
    return -1;
  }
  if (s->type != XV_STRUCT) {
    xv_free (v);
    errno = EINVAL;
    return -1;
  }
  k = strdup (key);
  if (k == NULL)
    goto err_v;
  cap = new_cap (s->u.st.n, sizeof (void *));
  if (cap) {
    char **nk;
    xapi_value **nv;

    /* A failure between the two reallocs leaves K larger than needed,
     * which is harmless: the next append reallocs it to the same size. */
    if (cap == SIZE_MAX)
      goto err_k;
    nk = realloc (s->u.st.k, cap * sizeof *nk);
    if (nk == NULL)
      goto err_k;
    s->u.st.k = nk;
    nv = realloc (s->u.st.v, cap * sizeof *nv);
    if (nv == NULL)
      goto err_k;
    s->u.st.v = nv;
  }
  s->u.st.k[s->u.st.n] = k;
  s->u.st.v[s->u.st.n] = v;
  s->u.st.n++;
  return 0;

 err_k:
  free (k);
 err_v:
  xv_free (v);
  errno = ENOMEM;
  return -1;
}

void
xv_free (xapi_value *v)
{
  size_t i;

  if (v == NULL)
    return;
  switch (v->type) {
  case XV_STRING:
    free (v->u.s);
    break;
  case XV_ARRAY:
    for (i = 0; i < v->u.a.n; i++)
      xv_free (v->u.a.v[i]);
    free (v->u.a.v);
    break;
  case XV_STRUCT:
    for (i = 0; i < v->u.st.n; i++) {
      free (v->u.st.k[i]);
      xv_free (v->u.st.v[i]);
    }
    free (v->u.st.k);
    free (v->u.st.v);
    break;
  case XV_INT: case XV_BOOL: case XV_DOUBLE: case XV_DATETIME:
    break;
  }
  free (v);
}

const xapi_value *
xv_get (const xapi_value *s, const char *key)
{
  size_t i;

  if (s == NULL || s->type != XV_STRUCT)
    return NULL;
  /* XAPI records have a few dozen fields; a linear scan is cheaper
   * than building an index for the handful we read. */
  for (i = 0; i < s->u.st.n; i++)
    if (strcmp (s->u.st.k[i], key) == 0)
      return s->u.st.v[i];
  return NULL;
}

const char *
xv_str (const xapi_value *v)
{
  if (v == NULL || v->type != XV_STRING)
    return NULL;
  return v->u.s;
}

/* Parse a whole decimal int64 with an optional sign; no whitespace. */
static int
parse_int (const char *s, int64_t *out)
{
  const char *p = s;
  char *end;
  long long r;

  if (*p == '+' || *p == '-')
    p++;
  /* strtoll would skip leading blanks and accept an empty number. */
  if (!isdigit ((unsigned char) *p))
    return -1;
  errno = 0;
  r = strtoll (s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -1;
  *out = r;
  return 0;
}

int
xv_to_int (const xapi_value *v, int64_t *out)
{
  if (v != NULL) {
    if (v->type == XV_INT) {
      *out = v->u.i;
      return 0;
    }
    if (v->type == XV_STRING && parse_int (v->u.s, out) == 0)
      return 0;
  }
  errno = EINVAL;
  return -1;
}

int
xv_to_bool (const xapi_value *v, bool *out)
{
  if (v != NULL) {
    if (v->type == XV_BOOL) {
      *out = v->u.b;
      return 0;
    }
    if (v->type == XV_STRING) {
      if (strcmp (v->u.s, "true") == 0 || strcmp (v->u.s, "1") == 0) {
        *out = true;
        return 0;
      }
      if (strcmp (v->u.s, "false") == 0 || strcmp (v->u.s, "0") == 0) {
        *out = false;
        return 0;
      }
    }
  }
  errno = EINVAL;
  return -1;
}

/* Read exactly N digits at *P into *OUT and advance *P. */
static bool
digits (const char **p, int n, int *out)
{
  int r = 0;

  while (n-- > 0) {
    if (!isdigit ((unsigned char) **p))
      return false;
    r = r * 10 + (**p - '0');
    (*p)++;
  }
  *out = r;
  return true;
}

static bool
is_leap (int y)
{
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int
xv_parse_time (const char *s, int64_t *out)
{
  static const int mdays[12] = { 31, 29, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31 };
  const char *p = s;
  int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
  bool extended;
  struct tm tm;
  time_t t;

  if (!digits (&p, 4, &y))
    goto bad;
  extended = *p == '-';
  if (extended)
    p++;
  if (!digits (&p, 2, &mo))
    goto bad;
  if (extended && *p++ != '-')
    goto bad;
  if (!digits (&p, 2, &d) || *p++ != 'T'
      || !digits (&p, 2, &h) || *p++ != ':'
      || !digits (&p, 2, &mi) || *p++ != ':'
      || !digits (&p, 2, &sec))
    goto bad;
  /* Fractional seconds are finer than anything XAPI reports; drop them. */
  if (*p == '.') {
    p++;
    if (!isdigit ((unsigned char) *p))
      goto bad;
    while (isdigit ((unsigned char) *p))
      p++;
  }
  if (*p == 'Z')
    p++;
  else if (*p == '+' || *p == '-') {
    sign = *p++ == '+' ? 1 : -1;
    if (!digits (&p, 2, &oh))
      goto bad;
    if (*p == ':')
      p++;
    if (!digits (&p, 2, &om) || oh > 23 || om > 59)
      goto bad;
  }
  if (*p != '\0')
    goto bad;
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]
      || (mo == 2 && d == 29 && !is_leap (y))
      || h > 23 || mi > 59 || sec > 60)
    goto bad;

  memset (&tm, 0, sizeof tm);
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  t = timegm (&tm);
  *out = (int64_t) t - sign * (oh * 3600 + om * 60);
  return 0;

 bad:
  errno = EINVAL;
  return -1;
}

int
xv_to_time (const xapi_value *v, int64_t *out)
{
  if (v != NULL) {
    if (v->type == XV_DATETIME) {
      *out = v->u.t;
      return 0;
    }
    if (v->type == XV_STRING)
      return xv_parse_time (v->u.s, out);
  }
  errno = EINVAL;
  return -1;
}
