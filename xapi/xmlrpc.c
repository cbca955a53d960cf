/* cbtfs: the XML-RPC codec.
 *
 * Encoding is plain string building: the text is small and we want it
 * exact (the unit test compares it byte for byte).  Decoding uses
 * libxml2's tree parser, hardened for input from the network:
 *
 *  - no network, no DTD loading, no entity substitution; a DOCTYPE
 *    stops the parser as soon as its name is read, before any entity
 *    can be declared, so entity expansion attacks have nothing to use;
 *  - a 64 MiB document cap and a 64-level value nesting cap;
 *  - errors go to a per-call capture, never to stderr.
 *
 * XML_PARSE_HUGE is set on purpose: without it libxml2 refuses text
 * nodes over 10 MB, and VDI.list_changed_blocks returns one base64
 * string of size/512 KiB * 4/3 bytes, which passes 10 MB for disks
 * over ~3.6 TiB.  What HUGE otherwise relaxes (entity amplification,
 * document size, depth) is bounded by the rules above.
 *
 * Thread model: no shared state.  libxml2's structured error handler
 * is per thread; we install ours around each parse and restore the
 * previous one.
 */
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/secbuf.h"
#include "xmlrpc.h"

#define XMLRPC_MAX_DEPTH 64
#define XMLRPC_MAX_SIZE (64 * 1024 * 1024)

/* ---- helpers shared by both directions ---- */

/* A "C" numeric locale for doubles, whatever setlocale the program did.
 * glibc returns a static object for "C", so nothing leaks. */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void
init_c_locale (void)
{
  c_locale = newlocale (LC_NUMERIC_MASK, "C", (locale_t) 0);
}

static locale_t
get_c_locale (void)
{
  pthread_once (&c_locale_once, init_c_locale);
  return c_locale;
}

/* ---- encoder ---- */

/* Decode one UTF-8 sequence at S; returns its length and the code point
 * in *CP, or 0 if it is malformed (overlong, surrogate, > U+10FFFF,
 * truncated). */
static size_t
utf8_next (const unsigned char *s, uint32_t *cp)
{
  uint32_t c = s[0], min;
  size_t n, i;

  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if ((c & 0xe0) == 0xc0)
    n = 2, c &= 0x1f, min = 0x80;
  else if ((c & 0xf0) == 0xe0)
    n = 3, c &= 0x0f, min = 0x800;
  else if ((c & 0xf8) == 0xf0)
    n = 4, c &= 0x07, min = 0x10000;
  else
    return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;                 /* also catches the terminating NUL */
    c = (c << 6) | (s[i] & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
    return 0;
  *cp = c;
  return n;
}

/* The characters XML 1.0 allows (production [2] Char). */
static bool
xml_char_ok (uint32_t c)
{
  return c == 0x9 || c == 0xa || c == 0xd
    || (c >= 0x20 && c <= 0xd7ff)
    || (c >= 0xe000 && c <= 0xfffd)
    || (c >= 0x10000 && c <= 0x10ffff);
}

/* Append S escaped.  WHAT names the text for errors; the text itself is
 * never quoted, as it may be a password. */
static int
sb_text (struct secbuf *b, const char *s, const char *what)
{
  const unsigned char *p = (const unsigned char *) s;

  while (*p) {
    const unsigned char *run = p;
    uint32_t c;
    size_t n;

    /* Copy runs of ordinary bytes in one go. */
    while (*p >= 0x20 && *p < 0x80 && *p != '&' && *p != '<' && *p != '>'
           && *p != '"')
      p++;
    secbuf_add (b, (const char *) run, p - run);
    if (*p == '\0')
      break;
    n = utf8_next (p, &c);
    if (n == 0) {
      err_set (EINVAL, "XML-RPC: %s is not valid UTF-8", what);
      return -1;
    }
    if (!xml_char_ok (c)) {
      err_set (EINVAL, "XML-RPC: %s contains character U+%04" PRIX32
               ", which XML cannot carry", what, c);
      return -1;
    }
    switch (c) {
    case '&': secbuf_puts (b, "&amp;"); break;
    case '<': secbuf_puts (b, "&lt;"); break;
    case '>': secbuf_puts (b, "&gt;"); break;
    case '"': secbuf_puts (b, "&quot;"); break;
      /* A raw CR would become LF in the receiver's parser. */
    case '\r': secbuf_puts (b, "&#13;"); break;
    default: secbuf_add (b, (const char *) p, n);
    }
    p += n;
  }
  return 0;
}

static int
encode_value (struct secbuf *b, const xapi_value *v, const char *what,
              int depth)
{
  char num[128];
  struct tm tm;
  time_t t;
  size_t i;

  if (v == NULL) {
    err_set (EINVAL, "XML-RPC: %s is missing", what);
    return -1;
  }
  if (depth > XMLRPC_MAX_DEPTH) {
    err_set (EINVAL, "XML-RPC: %s is nested deeper than %d", what,
             XMLRPC_MAX_DEPTH);
    return -1;
  }
  secbuf_puts (b, "<value>");
  switch (v->type) {
  case XV_STRING:
    secbuf_puts (b, "<string>");
    if (sb_text (b, v->u.s, what) == -1)
      return -1;
    secbuf_puts (b, "</string>");
    break;
  case XV_INT:
    /* XAPI's int is 64-bit and travels as a string of digits. */
    snprintf (num, sizeof num, "<string>%" PRId64 "</string>", v->u.i);
    secbuf_puts (b, num);
    break;
  case XV_BOOL:
    secbuf_puts (b, v->u.b ? "<boolean>1</boolean>" : "<boolean>0</boolean>");
    break;
  case XV_DOUBLE: {
    locale_t old, c = get_c_locale ();

    if (c == (locale_t) 0) {
      err_set (ENOMEM, "XML-RPC: cannot create the C locale");
      return -1;
    }
    old = uselocale (c);
    snprintf (num, sizeof num, "<double>%.17g</double>", v->u.d);
    uselocale (old);
    secbuf_puts (b, num);
    break;
  }
  case XV_DATETIME:
    t = (time_t) v->u.t;
    if (gmtime_r (&t, &tm) == NULL || tm.tm_year + 1900 > 9999
        || tm.tm_year + 1900 < 0) {
      err_set (EINVAL, "XML-RPC: %s: time %" PRId64 " out of range",
               what, v->u.t);
      return -1;
    }
    snprintf (num, sizeof num,
              "<dateTime.iso8601>%04d%02d%02dT%02d:%02d:%02dZ"
              "</dateTime.iso8601>",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
              tm.tm_hour, tm.tm_min, tm.tm_sec);
    secbuf_puts (b, num);
    break;
  case XV_ARRAY:
    secbuf_puts (b, "<array><data>");
    for (i = 0; i < v->u.a.n; i++)
      if (encode_value (b, v->u.a.v[i], what, depth + 1) == -1)
        return -1;
    secbuf_puts (b, "</data></array>");
    break;
  case XV_STRUCT:
    secbuf_puts (b, "<struct>");
    for (i = 0; i < v->u.st.n; i++) {
      secbuf_puts (b, "<member><name>");
      if (sb_text (b, v->u.st.k[i], what) == -1)
        return -1;
      secbuf_puts (b, "</name>");
      if (encode_value (b, v->u.st.v[i], what, depth + 1) == -1)
        return -1;
      secbuf_puts (b, "</member>");
    }
    secbuf_puts (b, "</struct>");
    break;
  default:
    err_set (EINVAL, "XML-RPC: %s has unknown type %d", what, (int) v->type);
    return -1;
  }
  secbuf_puts (b, "</value>");
  return 0;
}

char *
xmlrpc_encode_call (const char *method, xapi_value *const *params,
                    size_t nparams)
{
  struct secbuf b = { 0 };
  char what[64];
  size_t i;

  secbuf_puts (&b, "<?xml version=\"1.0\"?><methodCall><methodName>");
  if (sb_text (&b, method, "method name") == -1)
    goto err;
  secbuf_puts (&b, "</methodName><params>");
  for (i = 0; i < nparams; i++) {
    snprintf (what, sizeof what, "parameter %zu", i + 1);
    secbuf_puts (&b, "<param>");
    if (encode_value (&b, params[i], what, 1) == -1)
      goto err;
    secbuf_puts (&b, "</param>");
  }
  secbuf_puts (&b, "</params></methodCall>");
  if (b.failed) {
    err_set (ENOMEM, "XML-RPC: %s: out of memory encoding the call", method);
    goto err;
  }
  return b.p;

 err:
  secbuf_wipe (&b);
  return NULL;
}

/* ---- decoder ---- */

/* Copy at most SIZE-1 bytes of S into BUF as one line: control
 * characters become spaces and trailing blanks go. */
static void
one_line (char *buf, size_t size, const char *s)
{
  size_t i = 0;

  if (s)
    for (; s[i] && i < size - 1; i++)
      buf[i] = (unsigned char) s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
  while (i > 0 && buf[i - 1] == ' ')
    i--;
  buf[i] = '\0';
}

/* What libxml2 reported, kept for one parse. */
struct capture {
  bool doctype;                 /* a DOCTYPE was seen */
  bool have;                    /* msg/line hold the first error */
  int line;
  char msg[200];
};

static void
#if LIBXML_VERSION >= 21200
capture_error (void *data, const xmlError *e)
#else
capture_error (void *data, xmlErrorPtr e)
#endif
{
  struct capture *c = data;

  /* Warnings (e.g. about namespace URIs) do not make a document bad. */
  if (c->have || e->level < XML_ERR_ERROR)
    return;
  c->have = true;
  c->line = e->line;
  one_line (c->msg, sizeof c->msg, e->message);
}

/* SAX internalSubset: called when <!DOCTYPE name ...> has been read and
 * before "[...]", so no entity has been declared yet. */
static void
refuse_doctype (void *ctx, const xmlChar *name, const xmlChar *ext_id,
                const xmlChar *sys_id)
{
  xmlParserCtxtPtr ctxt = ctx;
  struct capture *c = ctxt->_private;

  (void) name, (void) ext_id, (void) sys_id;
  c->doctype = true;
  xmlStopParser (ctxt);
}

static bool
is_blank (const xmlChar *s)
{
  if (s)
    for (; *s; s++)
      if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
        return false;
  return true;
}

/* XML-RPC has no namespaces: <x:string> is not <string>. */
static bool
is_named (const xmlNode *n, const char *name)
{
  return n->ns == NULL && xmlStrcmp (n->name, (const xmlChar *) name) == 0;
}

static const char *
tag (const xmlNode *n)
{
  return (const char *) n->name;
}

static bool
is_text (const xmlNode *n)
{
  return n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE;
}

static bool
is_ignorable (const xmlNode *n)
{
  return n->type == XML_COMMENT_NODE || n->type == XML_PI_NODE;
}

/* Step *CUR to the next element child of PARENT (the first if *CUR is
 * NULL), skipping comments and blank text (pretty-printing).  1 found,
 * 0 at the end, -1 with err_set on anything else. */
static int
next_elem (const xmlNode *parent, xmlNode **cur)
{
  xmlNode *n = *cur ? (*cur)->next : parent->children;

  for (; n; n = n->next) {
    if (n->type == XML_ELEMENT_NODE) {
      if (n->ns) {
        err_set (EPROTO, "XML-RPC: unexpected namespace on <%.40s> in "
                 "<%.40s>", tag (n), tag (parent));
        return -1;
      }
      *cur = n;
      return 1;
    }
    if (is_text (n)) {
      if (!is_blank (n->content)) {
        err_set (EPROTO, "XML-RPC: unexpected text in <%.40s>", tag (parent));
        return -1;
      }
    }
    else if (!is_ignorable (n)) {
      err_set (EPROTO, "XML-RPC: unexpected node (type %d) in <%.40s>",
               (int) n->type, tag (parent));
      return -1;
    }
  }
  *cur = NULL;
  return 0;
}

/* The one element child of PARENT, which must be named NAME. */
static xmlNode *
only_child (const xmlNode *parent, const char *name)
{
  xmlNode *e = NULL, *extra;
  int r;

  r = next_elem (parent, &e);
  if (r == -1)
    return NULL;
  if (r == 0) {
    err_set (EPROTO, "XML-RPC: <%.40s> has no <%s>", tag (parent), name);
    return NULL;
  }
  if (!is_named (e, name)) {
    err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <%.40s>",
             tag (e), tag (parent));
    return NULL;
  }
  extra = e;
  r = next_elem (parent, &extra);
  if (r == -1)
    return NULL;
  if (r == 1) {
    if (is_named (extra, name))
      err_set (EPROTO, "XML-RPC: <%.40s> has more than one <%s>",
               tag (parent), name);
    else
      err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <%.40s>",
               tag (extra), tag (parent));
    return NULL;
  }
  return e;
}

/* The text of E, kept exactly (comments dropped).  Caller frees.  NULL
 * with err_set if E holds an element. */
static char *
elem_text (const xmlNode *e)
{
  const xmlNode *n;
  size_t len = 0, k;
  char *s;

  for (n = e->children; n; n = n->next) {
    if (is_text (n))
      len += n->content ? strlen ((const char *) n->content) : 0;
    else if (n->type == XML_ELEMENT_NODE) {
      err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <%.40s>",
               tag (n), tag (e));
      return NULL;
    }
    else if (!is_ignorable (n)) {
      err_set (EPROTO, "XML-RPC: unexpected node (type %d) in <%.40s>",
               (int) n->type, tag (e));
      return NULL;
    }
  }
  s = malloc (len + 1);
  if (s == NULL) {
    err_set (ENOMEM, "XML-RPC: out of memory");
    return NULL;
  }
  for (k = 0, n = e->children; n; n = n->next)
    if (is_text (n) && n->content) {
      size_t l = strlen ((const char *) n->content);

      memcpy (s + k, n->content, l);
      k += l;
    }
  s[k] = '\0';
  return s;
}

/* The text of E without surrounding XML blanks, for numbers and times.
 * Caller frees. */
static char *
elem_trimmed (const xmlNode *e)
{
  char *s = elem_text (e), *p;
  size_t n;

  if (s == NULL)
    return NULL;
  for (p = s; *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'; p++)
    ;
  n = strlen (p);
  while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'
                   || p[n - 1] == '\r' || p[n - 1] == '\n'))
    n--;
  memmove (s, p, n);
  s[n] = '\0';
  return s;
}

static xapi_value *decode_value (const xmlNode *value, int depth);

static xapi_value *
oom (void)
{
  err_set (ENOMEM, "XML-RPC: out of memory");
  return NULL;
}

static xapi_value *
decode_array (const xmlNode *array, int depth)
{
  xmlNode *data, *e = NULL;
  xapi_value *a;
  int r;

  data = only_child (array, "data");
  if (data == NULL)
    return NULL;
  a = xv_array ();
  if (a == NULL)
    return oom ();
  while ((r = next_elem (data, &e)) == 1) {
    xapi_value *v;

    if (!is_named (e, "value")) {
      err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <data>",
               tag (e));
      goto err_a;
    }
    v = decode_value (e, depth + 1);
    if (v == NULL)
      goto err_a;
    if (xv_array_append (a, v) == -1) {
      oom ();
      goto err_a;
    }
  }
  if (r == -1)
    goto err_a;
  return a;

 err_a:
  xv_free (a);
  return NULL;
}

static int
decode_member (const xmlNode *member, xapi_value *st, int depth)
{
  xmlNode *e = NULL, *name = NULL, *value = NULL;
  CLEANUP_FREE char *key = NULL;
  xapi_value *v;
  int r;

  while ((r = next_elem (member, &e)) == 1) {
    xmlNode **slot;

    if (is_named (e, "name"))
      slot = &name;
    else if (is_named (e, "value"))
      slot = &value;
    else {
      err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <member>",
               tag (e));
      return -1;
    }
    if (*slot) {
      err_set (EPROTO, "XML-RPC: <member> has more than one <%.40s>", tag (e));
      return -1;
    }
    *slot = e;
  }
  if (r == -1)
    return -1;
  if (name == NULL || value == NULL) {
    err_set (EPROTO, "XML-RPC: <member> has no <%s>",
             name == NULL ? "name" : "value");
    return -1;
  }
  key = elem_text (name);
  if (key == NULL)
    return -1;
  v = decode_value (value, depth + 1);
  if (v == NULL)
    return -1;
  if (xv_struct_set (st, key, v) == -1) {
    oom ();
    return -1;
  }
  return 0;
}

static xapi_value *
decode_struct (const xmlNode *stn, int depth)
{
  xmlNode *e = NULL;
  xapi_value *st;
  int r;

  st = xv_struct ();
  if (st == NULL)
    return oom ();
  while ((r = next_elem (stn, &e)) == 1) {
    if (!is_named (e, "member")) {
      err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <struct>",
               tag (e));
      goto err_st;
    }
    if (decode_member (e, st, depth) == -1)
      goto err_st;
  }
  if (r == -1)
    goto err_st;
  return st;

 err_st:
  xv_free (st);
  return NULL;
}

/* A typed scalar <int>, <boolean>, … inside <value>. */
static xapi_value *
decode_scalar (const xmlNode *e)
{
  CLEANUP_FREE char *s = NULL;
  xapi_value tmp = { .type = XV_STRING };
  xapi_value *v;
  int64_t i;

  if (is_named (e, "string")) {
    s = elem_text (e);
    if (s == NULL)
      return NULL;
    v = xv_string (s);
    return v ? v : oom ();
  }
  if (is_named (e, "nil")) {
    /* XAPI never sends <nil/>; other servers mean "no value", which for
     * the string-typed fields we read is best read as "". */
    s = elem_text (e);
    if (s == NULL)
      return NULL;
    v = xv_string ("");
    return v ? v : oom ();
  }

  s = elem_trimmed (e);
  if (s == NULL)
    return NULL;
  tmp.u.s = s;
  if (is_named (e, "int") || is_named (e, "i4") || is_named (e, "i8")) {
    if (xv_to_int (&tmp, &i) == -1) {
      err_set (EPROTO, "XML-RPC: <%s> is not a 64-bit decimal integer",
               tag (e));
      return NULL;
    }
    v = xv_int (i);
  }
  else if (is_named (e, "boolean")) {
    bool b;

    if (xv_to_bool (&tmp, &b) == -1) {
      err_set (EPROTO, "XML-RPC: <boolean> is not 0 or 1");
      return NULL;
    }
    v = xv_bool (b);
  }
  else if (is_named (e, "double")) {
    locale_t c = get_c_locale ();
    char *end;
    double d;

    if (c == (locale_t) 0)
      return oom ();
    errno = 0;
    d = strtod_l (s, &end, c);
    if (*s == '\0' || *end != '\0' || errno == ERANGE) {
      err_set (EPROTO, "XML-RPC: <double> is not a number");
      return NULL;
    }
    v = xv_double (d);
  }
  else if (is_named (e, "dateTime.iso8601")) {
    if (xv_parse_time (s, &i) == -1) {
      err_set (EPROTO, "XML-RPC: <dateTime.iso8601> is not an ISO 8601 time");
      return NULL;
    }
    v = xv_datetime (i);
  }
  else {
    err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in <value>",
             tag (e));
    return NULL;
  }
  return v ? v : oom ();
}

static xapi_value *
decode_value (const xmlNode *value, int depth)
{
  xmlNode *e = NULL, *extra;
  xapi_value *v;
  int r;

  if (depth > XMLRPC_MAX_DEPTH) {
    err_set (EPROTO, "XML-RPC: values nested deeper than %d",
             XMLRPC_MAX_DEPTH);
    return NULL;
  }

  /* Find the type element while tolerating text around it; whether
   * that text matters depends on whether there is an element at all. */
  for (e = value->children; e; e = e->next)
    if (e->type == XML_ELEMENT_NODE)
      break;

  if (e == NULL) {
    /* Untyped: <value>text</value> is a string, kept exactly, spaces
     * and all; <value></value> is "". */
    CLEANUP_FREE char *s = elem_text (value);

    if (s == NULL)
      return NULL;
    v = xv_string (s);
    return v ? v : oom ();
  }

  e = NULL;
  r = next_elem (value, &e);
  if (r != 1)
    return NULL;                /* r == 0 cannot happen: we saw one */
  extra = e;
  r = next_elem (value, &extra);
  if (r == -1)
    return NULL;
  if (r == 1) {
    err_set (EPROTO, "XML-RPC: <value> holds both <%.40s> and <%.40s>",
             tag (e), tag (extra));
    return NULL;
  }

  if (is_named (e, "array"))
    return decode_array (e, depth);
  if (is_named (e, "struct"))
    return decode_struct (e, depth);
  return decode_scalar (e);
}

/* <fault><value><struct>faultCode, faultString</struct></value></fault>:
 * always NULL, with the fault as the error. */
static xapi_value *
decode_fault (const xmlNode *fault)
{
  char text[300];
  xmlNode *value;
  xapi_value *v;
  const char *str;
  int64_t code;

  value = only_child (fault, "value");
  if (value == NULL)
    return NULL;
  v = decode_value (value, 1);
  if (v == NULL)
    return NULL;
  str = xv_str (xv_get (v, "faultString"));
  if (xv_to_int (xv_get (v, "faultCode"), &code) == -1 || str == NULL) {
    xv_free (v);
    err_set (EPROTO, "XML-RPC: malformed <fault>");
    return NULL;
  }
  one_line (text, sizeof text, str);
  err_set (EPROTO, "XML-RPC fault %" PRId64 ": %s", code, text);
  xv_free (v);
  return NULL;
}

static xapi_value *
decode_doc (xmlDoc *doc)
{
  xmlNode *root = xmlDocGetRootElement (doc), *e = NULL, *param, *value;
  int r;

  if (root == NULL) {
    err_set (EPROTO, "XML-RPC: empty document");
    return NULL;
  }
  if (root->ns) {
    err_set (EPROTO, "XML-RPC: unexpected namespace on <%.40s>", tag (root));
    return NULL;
  }
  if (!is_named (root, "methodResponse")) {
    err_set (EPROTO, "XML-RPC: expected <methodResponse>, got <%.40s>",
             tag (root));
    return NULL;
  }
  r = next_elem (root, &e);
  if (r == -1)
    return NULL;
  if (r == 0) {
    err_set (EPROTO, "XML-RPC: empty <methodResponse>");
    return NULL;
  }
  if (is_named (e, "fault")) {
    if (only_child (root, "fault") == NULL)
      return NULL;
    return decode_fault (e);
  }
  if (!is_named (e, "params")) {
    err_set (EPROTO, "XML-RPC: unexpected element <%.40s> in "
             "<methodResponse>", tag (e));
    return NULL;
  }
  if (only_child (root, "params") == NULL)
    return NULL;
  param = only_child (e, "param");
  if (param == NULL)
    return NULL;
  value = only_child (param, "value");
  if (value == NULL)
    return NULL;
  return decode_value (value, 1);
}

xapi_value *
xmlrpc_decode_response (const char *body, size_t len)
{
  struct capture cap = { 0 };
  xmlStructuredErrorFunc old_handler;
  void *old_data;
  xmlParserCtxtPtr ctxt;
  xmlDoc *doc;
  xapi_value *v = NULL;

  if (len > XMLRPC_MAX_SIZE) {
    err_set (EPROTO, "XML-RPC: response of %zu bytes is over the %d MiB "
             "limit", len, XMLRPC_MAX_SIZE / (1024 * 1024));
    return NULL;
  }

  ctxt = xmlNewParserCtxt ();
  if (ctxt == NULL) {
    err_set (ENOMEM, "XML-RPC: cannot create a parser: out of memory");
    return NULL;
  }
  ctxt->_private = &cap;
  ctxt->sax->internalSubset = refuse_doctype;

  /* Per thread in libxml2; restored below so we do not disturb other
   * users of libxml2 in the process. */
  old_handler = xmlStructuredError;
  old_data = xmlStructuredErrorContext;
  xmlSetStructuredErrorFunc (&cap, capture_error);

  /* No NOENT (entity substitution), DTDLOAD, DTDVALID or XINCLUDE;
   * NOERROR/NOWARNING stop the old stderr channel should the
   * structured one be bypassed; no NOBLANKS: untyped string values
   * may be all blanks and must be kept. */
  doc = xmlCtxtReadMemory (ctxt, body, (int) len, NULL, NULL,
                           XML_PARSE_NONET | XML_PARSE_NOERROR
                           | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA
                           | XML_PARSE_HUGE | XML_PARSE_BIG_LINES);

  xmlSetStructuredErrorFunc (old_data, old_handler);

  if (cap.doctype)
    err_set (EPROTO, "XML-RPC: DOCTYPE not allowed in a response");
  else if (doc == NULL || cap.have) {
    /* Encoding errors come without a line. */
    if (cap.have && cap.line > 0)
      err_set (EPROTO, "XML-RPC: malformed XML at line %d: %s",
               cap.line, cap.msg);
    else if (cap.have)
      err_set (EPROTO, "XML-RPC: malformed XML: %s", cap.msg);
    else
      err_set (EPROTO, "XML-RPC: malformed XML");
  }
  else
    v = decode_doc (doc);

  xmlFreeDoc (doc);
  xmlFreeParserCtxt (ctxt);
  return v;
}
