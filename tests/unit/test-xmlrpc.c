/* cbtfs: unit test of the XML-RPC codec, the value getters and the
 * transport-free parts of the XAPI session (envelopes, URLs).
 *
 * libxml2 must never print to stderr itself, so stderr is sent to a
 * temporary file while the tests run and checked to be empty at the
 * end; failures are reported on the original stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "xapi/session.h"
#include "xapi/value.h"
#include "xapi/xmlrpc.h"

#define HEAD "<?xml version=\"1.0\"?><methodResponse><params><param>"
#define TAIL "</param></params></methodResponse>"

static FILE *out;               /* the real stderr */
static char deep[4000000];      /* for the deep-nesting documents */

/* Build in DEEP a response whose value is nested DEPTH levels deep,
 * unterminated (just the opening tags) unless CLOSE. */
static const char *
nested (int depth, bool close)
{
  static const char head[] = HEAD, open[] = "<value><array><data>",
    leaf[] = "<value>x</value>", shut[] = "</data></array></value>",
    tail[] = TAIL;
  size_t n = 0;
  int k;

#define PUT(s) (memcpy (deep + n, (s), sizeof (s) - 1), n += sizeof (s) - 1)
  PUT (head);
  for (k = 1; k < depth; k++)
    PUT (open);
  if (close) {
    PUT (leaf);
    for (k = 1; k < depth; k++)
      PUT (shut);
  }
  PUT (tail);
#undef PUT
  deep[n] = '\0';
  return deep;
}

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (out, "%s:%d: check failed: %s (last error: %s)\n",      \
               __FILE__, __LINE__, #cond, err_get ());                  \
      exit (1);                                                         \
    }                                                                   \
  } while (0)


static xapi_value *
dec (const char *s)
{
  return xmlrpc_decode_response (s, strlen (s));
}

/* The decoder must fail with EPROTO and a one-line message holding
 * WANT. */
#define FAILS(doc, want) fails_at (__LINE__, (doc), strlen (doc), (want))
static void
fails_at (int line, const char *doc, size_t len, const char *want)
{
  xapi_value *v;

  err_clear ();
  errno = 0;
  v = xmlrpc_decode_response (doc, len);
  if (v != NULL || errno != EPROTO || strstr (err_get (), want) == NULL
      || strchr (err_get (), '\n') != NULL) {
    fprintf (out, "%s:%d: expected failure \"%s\", got %s, errno %d, "
             "\"%s\"\n", __FILE__, line, want, v ? "a value" : "NULL",
             errno, err_get ());
    exit (1);
  }
}

static void
test_values (void)
{
  xapi_value *v, *a, *st;
  int64_t i;
  bool b;

  /* Ints from decimal strings, with overflow checks. */
  v = xv_string ("9223372036854775807");
  CHECK (xv_to_int (v, &i) == 0 && i == INT64_MAX);
  xv_free (v);
  v = xv_string ("-9223372036854775808");
  CHECK (xv_to_int (v, &i) == 0 && i == INT64_MIN);
  xv_free (v);
  v = xv_string ("-42");
  CHECK (xv_to_int (v, &i) == 0 && i == -42);
  xv_free (v);
  {
    static const char *const bad[] = {
      "9223372036854775808", "-9223372036854775809", "", "-", "12x",
      " 12", "12 ", "0x10", "1e3", "+", NULL
    };
    for (size_t k = 0; bad[k]; k++) {
      v = xv_string (bad[k]);
      errno = 0;
      CHECK (xv_to_int (v, &i) == -1 && errno == EINVAL);
      xv_free (v);
    }
  }
  v = xv_int (7);
  CHECK (xv_to_int (v, &i) == 0 && i == 7);
  CHECK (xv_to_bool (v, &b) == -1);
  CHECK (xv_str (v) == NULL);
  xv_free (v);
  CHECK (xv_to_int (NULL, &i) == -1);

  /* Bools. */
  v = xv_bool (true);
  CHECK (xv_to_bool (v, &b) == 0 && b);
  xv_free (v);
  v = xv_string ("false");
  CHECK (xv_to_bool (v, &b) == 0 && !b);
  xv_free (v);
  v = xv_string ("1");
  CHECK (xv_to_bool (v, &b) == 0 && b);
  xv_free (v);
  v = xv_string ("yes");
  CHECK (xv_to_bool (v, &b) == -1 && errno == EINVAL);
  xv_free (v);

  /* Times. */
  CHECK (xv_parse_time ("20250319T04:16:24Z", &i) == 0 && i == 1742357784);
  CHECK (xv_parse_time ("2025-03-19T04:16:24Z", &i) == 0 && i == 1742357784);
  CHECK (xv_parse_time ("20250319T04:16:24", &i) == 0 && i == 1742357784);
  CHECK (xv_parse_time ("2025-03-19T05:16:24+01:00", &i) == 0
         && i == 1742357784);
  CHECK (xv_parse_time ("2025-03-19T04:16:24.123Z", &i) == 0
         && i == 1742357784);
  CHECK (xv_parse_time ("19700101T00:00:00Z", &i) == 0 && i == 0);
  CHECK (xv_parse_time ("20240229T23:59:60Z", &i) == 0 && i == 1709251200);
  CHECK (xv_parse_time ("20230229T00:00:00Z", &i) == -1);
  CHECK (xv_parse_time ("20251319T04:16:24Z", &i) == -1);
  CHECK (xv_parse_time ("2025-0319T04:16:24Z", &i) == -1);
  CHECK (xv_parse_time ("20250319 04:16:24Z", &i) == -1);
  CHECK (xv_parse_time ("20250319T04:16:24Zjunk", &i) == -1);
  CHECK (xv_parse_time ("", &i) == -1 && errno == EINVAL);
  v = xv_datetime (5);
  CHECK (xv_to_time (v, &i) == 0 && i == 5);
  xv_free (v);
  v = xv_string ("20250319T04:16:24Z");
  CHECK (xv_to_time (v, &i) == 0 && i == 1742357784);
  xv_free (v);

  /* Trees; append/set take ownership even on failure. */
  st = xv_struct ();
  a = xv_array ();
  CHECK (st && a);
  for (int k = 0; k < 100; k++)
    CHECK (xv_array_append (a, xv_int (k)) == 0);
  CHECK (a->u.a.n == 100 && a->u.a.v[99]->u.i == 99);
  CHECK (xv_array_append (st, xv_int (1)) == -1 && errno == EINVAL);
  CHECK (xv_array_append (a, NULL) == -1);
  for (int k = 0; k < 50; k++) {
    char key[16];

    snprintf (key, sizeof key, "k%d", k);
    CHECK (xv_struct_set (st, key, xv_int (k)) == 0);
  }
  CHECK (xv_struct_set (st, "a", a) == 0);
  CHECK (xv_get (st, "k49")->u.i == 49);
  CHECK (xv_get (st, "a") == a);
  CHECK (xv_get (st, "nope") == NULL);
  CHECK (xv_get (a, "a") == NULL);
  CHECK (xv_struct_set (a, "x", xv_int (1)) == -1);
  xv_free (st);
  xv_free (NULL);
}

static void
test_encode (void)
{
  xapi_value *p[6], *st, *a;
  char *s;
  size_t k;

  p[0] = xv_string ("OpaqueRef:a&b<c>\"d'\te\r\nf");
  p[1] = xv_int (-9223372036854775807 - 1);
  p[2] = xv_bool (true);
  p[3] = xv_datetime (1742357784);
  p[4] = st = xv_struct ();
  p[5] = a = xv_array ();
  CHECK (xv_struct_set (st, "k<", xv_string ("")) == 0);
  CHECK (xv_struct_set (st, "n", xv_double (0.5)) == 0);
  CHECK (xv_array_append (a, xv_string ("\xc3\xa9\xe2\x82\xac"
                                        "\xf0\x9f\x98\x80")) == 0);
  CHECK (xv_array_append (a, xv_array ()) == 0);
  s = xmlrpc_encode_call ("VDI.snapshot", p, 6);
  CHECK (s != NULL);
  CHECK (strcmp (s,
                 "<?xml version=\"1.0\"?><methodCall>"
                 "<methodName>VDI.snapshot</methodName><params>"
                 "<param><value><string>OpaqueRef:a&amp;b&lt;c&gt;&quot;d'"
                 "\te&#13;\nf</string></value></param>"
                 "<param><value><string>-9223372036854775808</string>"
                 "</value></param>"
                 "<param><value><boolean>1</boolean></value></param>"
                 "<param><value><dateTime.iso8601>20250319T04:16:24Z"
                 "</dateTime.iso8601></value></param>"
                 "<param><value><struct>"
                 "<member><name>k&lt;</name><value><string></string>"
                 "</value></member>"
                 "<member><name>n</name><value><double>0.5</double>"
                 "</value></member>"
                 "</struct></value></param>"
                 "<param><value><array><data>"
                 "<value><string>\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                 "</string></value>"
                 "<value><array><data></data></array></value>"
                 "</data></array></value></param>"
                 "</params></methodCall>") == 0);
  free (s);
  for (k = 0; k < 6; k++)
    xv_free (p[k]);

  s = xmlrpc_encode_call ("pool.get_all", NULL, 0);
  CHECK (s && strcmp (s, "<?xml version=\"1.0\"?><methodCall><methodName>"
                      "pool.get_all</methodName><params></params>"
                      "</methodCall>") == 0);
  free (s);

  /* Strings XML cannot carry are refused, without quoting them (they
   * may be passwords). */
  {
    static const struct { const char *s, *want; } bad[] = {
      { "secret\xff", "parameter 1 is not valid UTF-8" },
      { "secret\xc0\xaf", "not valid UTF-8" },          /* overlong */
      { "secret\xed\xa0\x80", "not valid UTF-8" },      /* surrogate */
      { "secret\xf4\x90\x80\x80", "not valid UTF-8" },  /* > U+10FFFF */
      { "secret\xe2\x82", "not valid UTF-8" },          /* truncated */
      { "secret\x01", "character U+0001" },
      { "secret\x1b[0m", "character U+001B" },
      { "secret\xef\xbf\xbe", "character U+FFFE" },
    };
    for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
      p[0] = xv_string (bad[k].s);
      errno = 0;
      s = xmlrpc_encode_call ("session.login_with_password", p, 1);
      CHECK (s == NULL && errno == EINVAL);
      CHECK (strstr (err_get (), bad[k].want) != NULL);
      CHECK (strstr (err_get (), "secret") == NULL);
      xv_free (p[0]);
    }
    p[0] = xv_struct ();
    CHECK (xv_struct_set (p[0], "bad\x02key", xv_string ("x")) == 0);
    CHECK (xmlrpc_encode_call ("m", p, 1) == NULL);
    CHECK (strstr (err_get (), "U+0002") != NULL);
    xv_free (p[0]);
    CHECK (xmlrpc_encode_call ("bad\x7f\x80", NULL, 0) == NULL);
    CHECK (strstr (err_get (), "method name") != NULL);
  }
}

static void
test_decode (void)
{
  xapi_value *v;
  const xapi_value *m, *x;
  int64_t i;
  bool b;

  /* XAPI's shapes: untyped strings, kept exactly. */
  v = dec (HEAD "<value>OpaqueRef:1234</value>" TAIL);
  CHECK (v && v->type == XV_STRING && strcmp (v->u.s, "OpaqueRef:1234") == 0);
  xv_free (v);
  v = dec (HEAD "<value></value>" TAIL);
  CHECK (v && xv_str (v) && strcmp (xv_str (v), "") == 0);
  xv_free (v);
  v = dec (HEAD "<value/>" TAIL);
  CHECK (v && xv_str (v) && strcmp (xv_str (v), "") == 0);
  xv_free (v);
  v = dec (HEAD "<value>  \n </value>" TAIL);
  CHECK (v && xv_str (v) && strcmp (xv_str (v), "  \n ") == 0);
  xv_free (v);
  v = dec (HEAD "<value> a &amp; b &lt;&#233;&#x20AC;<!-- c -->"
           "<![CDATA[<x>]]> </value>" TAIL);
  CHECK (v && xv_str (v)
         && strcmp (xv_str (v), " a & b <\xc3\xa9\xe2\x82\xac<x> ") == 0);
  xv_free (v);
  v = dec (HEAD "<value><string>x</string></value>" TAIL);
  CHECK (v && strcmp (xv_str (v), "x") == 0);
  xv_free (v);
  v = dec (HEAD "<value><string> x </string></value>" TAIL);
  CHECK (v && strcmp (xv_str (v), " x ") == 0);
  xv_free (v);
  v = dec (HEAD "<value><string/></value>" TAIL);
  CHECK (v && strcmp (xv_str (v), "") == 0);
  xv_free (v);
  v = dec (HEAD "<value><nil/></value>" TAIL);
  CHECK (v && strcmp (xv_str (v), "") == 0);
  xv_free (v);

  /* int64 as decimal strings (XAPI) and as <int>/<i4>/<i8>. */
  v = dec (HEAD "<value>9223372036854775807</value>" TAIL);
  CHECK (v && v->type == XV_STRING && xv_to_int (v, &i) == 0
         && i == INT64_MAX);
  xv_free (v);
  v = dec (HEAD "<value>-10809</value>" TAIL);
  CHECK (v && xv_to_int (v, &i) == 0 && i == -10809);
  xv_free (v);
  v = dec (HEAD "<value>9223372036854775808</value>" TAIL);
  CHECK (v && xv_to_int (v, &i) == -1 && errno == EINVAL);
  xv_free (v);
  v = dec (HEAD "<value><int> 42 </int></value>" TAIL);
  CHECK (v && v->type == XV_INT && v->u.i == 42);
  xv_free (v);
  v = dec (HEAD "<value><i4>-7</i4></value>" TAIL);
  CHECK (v && v->type == XV_INT && v->u.i == -7);
  xv_free (v);
  v = dec (HEAD "<value><i8>-9223372036854775808</i8></value>" TAIL);
  CHECK (v && v->type == XV_INT && v->u.i == INT64_MIN);
  xv_free (v);
  v = dec (HEAD "<value><double>-1.5e3</double></value>" TAIL);
  CHECK (v && v->type == XV_DOUBLE && v->u.d == -1500.0);
  xv_free (v);

  /* bool and compact datetime. */
  v = dec (HEAD "<value><boolean>1</boolean></value>" TAIL);
  CHECK (v && v->type == XV_BOOL && xv_to_bool (v, &b) == 0 && b);
  xv_free (v);
  v = dec (HEAD "<value><boolean>0</boolean></value>" TAIL);
  CHECK (v && v->type == XV_BOOL && !v->u.b);
  xv_free (v);
  v = dec (HEAD "<value><dateTime.iso8601>20250319T04:16:24Z"
           "</dateTime.iso8601></value>" TAIL);
  CHECK (v && v->type == XV_DATETIME && v->u.t == 1742357784);
  xv_free (v);

  /* A pretty-printed VDI record with nested arrays and structs. */
  v = dec ("<?xml version='1.0'?>\n"
           "<methodResponse>\n"
           "  <params>\n"
           "    <param>\n"
           "      <value>\n"
           "        <struct>\n"
           "          <member>\n"
           "            <name>Status</name>\n"
           "            <value>Success</value>\n"
           "          </member>\n"
           "          <member>\n"
           "            <name>Value</name>\n"
           "            <value><struct>\n"
           "              <member><name>uuid</name>"
           "<value>3f6c0e1e-1111-2222-3333-444455556666</value></member>\n"
           "              <member><name>name_label</name>"
           "<value>  disk 0 </value></member>\n"
           "              <member><name>virtual_size</name>"
           "<value>10737418240</value></member>\n"
           "              <member><name>cbt_enabled</name>"
           "<value><boolean>1</boolean></value></member>\n"
           "              <member><name>snapshot_time</name>"
           "<value><dateTime.iso8601>19700101T00:00:00Z"
           "</dateTime.iso8601></value></member>\n"
           "              <member>\n"
           "                <name>VBDs</name>\n"
           "                <value>\n"
           "                  <array>\n"
           "                    <data>\n"
           "                      <value>OpaqueRef:a</value>\n"
           "                      <value><array><data>"
           "<value><struct></struct></value></data></array></value>\n"
           "                    </data>\n"
           "                  </array>\n"
           "                </value>\n"
           "              </member>\n"
           "              <member><name>other_config</name>"
           "<value><struct/></value></member>\n"
           "              <member><name>empty</name><value/></member>\n"
           "            </struct></value>\n"
           "          </member>\n"
           "        </struct>\n"
           "      </value>\n"
           "    </param>\n"
           "  </params>\n"
           "</methodResponse>\n");
  CHECK (v && v->type == XV_STRUCT && v->u.st.n == 2);
  CHECK (strcmp (xv_str (xv_get (v, "Status")), "Success") == 0);
  m = xv_get (v, "Value");
  CHECK (m && m->type == XV_STRUCT && m->u.st.n == 8);
  CHECK (strcmp (m->u.st.k[0], "uuid") == 0);       /* wire order */
  CHECK (strcmp (xv_str (xv_get (m, "name_label")), "  disk 0 ") == 0);
  CHECK (xv_to_int (xv_get (m, "virtual_size"), &i) == 0
         && i == 10737418240);
  CHECK (xv_to_bool (xv_get (m, "cbt_enabled"), &b) == 0 && b);
  CHECK (xv_to_time (xv_get (m, "snapshot_time"), &i) == 0 && i == 0);
  x = xv_get (m, "VBDs");
  CHECK (x && x->type == XV_ARRAY && x->u.a.n == 2);
  CHECK (strcmp (xv_str (x->u.a.v[0]), "OpaqueRef:a") == 0);
  CHECK (x->u.a.v[1]->type == XV_ARRAY && x->u.a.v[1]->u.a.n == 1
         && x->u.a.v[1]->u.a.v[0]->type == XV_STRUCT
         && x->u.a.v[1]->u.a.v[0]->u.st.n == 0);
  CHECK (xv_get (m, "other_config")->type == XV_STRUCT);
  CHECK (strcmp (xv_str (xv_get (m, "empty")), "") == 0);
  xv_free (v);

  /* 64 levels of values are fine, 65 are not. */
  v = dec (nested (64, true));
  CHECK (v != NULL);
  xv_free (v);
  FAILS (nested (65, true), "XML-RPC: values nested deeper than 64");

  /* A fault. */
  FAILS ("<?xml version=\"1.0\"?><methodResponse><fault><value><struct>"
         "<member><name>faultCode</name><value><int>4</int></value></member>"
         "<member><name>faultString</name><value>Too many\nparameters"
         "</value></member></struct></value></fault></methodResponse>",
         "XML-RPC fault 4: Too many parameters");
}

static void
test_malformed (void)
{

  FAILS ("", "XML-RPC: malformed XML");
  FAILS ("HTTP/1.1 500 Internal Error", "XML-RPC: malformed XML at line 1: ");
  FAILS ("<html><body>500</body></html>",
         "XML-RPC: expected <methodResponse>, got <html>");
  FAILS (HEAD "<value>OpaqueRef:1234</value>",
         "XML-RPC: malformed XML at line 1: ");
  FAILS ("<?xml version=\"1.0\"?>\n<methodResponse>\n<params>\n<param>\n"
         "<value><string>x</value>" TAIL,
         "XML-RPC: malformed XML at line 5: ");
  FAILS (HEAD "<value>a</value></param><param><value>b</value>" TAIL,
         "XML-RPC: <params> has more than one <param>");
  FAILS ("<methodResponse><params></params></methodResponse>",
         "XML-RPC: <params> has no <param>");
  FAILS ("<methodResponse></methodResponse>",
         "XML-RPC: empty <methodResponse>");
  FAILS ("<methodResponse><params><param><value>a</value></param></params>"
         "<params/></methodResponse>",
         "XML-RPC: <methodResponse> has more than one <params>");
  FAILS (HEAD "<value><foo/></value>" TAIL,
         "XML-RPC: unexpected element <foo> in <value>");
  FAILS (HEAD "<value><base64>AA==</base64></value>" TAIL,
         "XML-RPC: unexpected element <base64> in <value>");
  FAILS (HEAD "<value><string>a</string><string>b</string></value>" TAIL,
         "XML-RPC: <value> holds both <string> and <string>");
  FAILS (HEAD "<value>text<string>a</string></value>" TAIL,
         "XML-RPC: unexpected text in <value>");
  FAILS (HEAD "<value><string>a<b/></string></value>" TAIL,
         "XML-RPC: unexpected element <b> in <string>");
  FAILS (HEAD "<value><int>12ab</int></value>" TAIL,
         "XML-RPC: <int> is not a 64-bit decimal integer");
  FAILS (HEAD "<value><int></int></value>" TAIL,
         "XML-RPC: <int> is not a 64-bit decimal integer");
  FAILS (HEAD "<value><i8>9223372036854775808</i8></value>" TAIL,
         "XML-RPC: <i8> is not a 64-bit decimal integer");
  FAILS (HEAD "<value><boolean>2</boolean></value>" TAIL,
         "XML-RPC: <boolean> is not 0 or 1");
  FAILS (HEAD "<value><double>1.5x</double></value>" TAIL,
         "XML-RPC: <double> is not a number");
  FAILS (HEAD "<value><dateTime.iso8601>yesterday</dateTime.iso8601>"
         "</value>" TAIL,
         "XML-RPC: <dateTime.iso8601> is not an ISO 8601 time");
  FAILS (HEAD "<value><array><value>a</value></array></value>" TAIL,
         "XML-RPC: unexpected element <value> in <array>");
  FAILS (HEAD "<value><array><data><string>a</string></data></array>"
         "</value>" TAIL,
         "XML-RPC: unexpected element <string> in <data>");
  FAILS (HEAD "<value><struct><member><name>a</name></member></struct>"
         "</value>" TAIL,
         "XML-RPC: <member> has no <value>");
  FAILS (HEAD "<value><struct><member><value>a</value></member></struct>"
         "</value>" TAIL,
         "XML-RPC: <member> has no <name>");
  FAILS (HEAD "<value><struct><member><name>a</name><name>b</name>"
         "<value>a</value></member></struct></value>" TAIL,
         "XML-RPC: <member> has more than one <name>");
  FAILS (HEAD "<value><struct><value>a</value></struct></value>" TAIL,
         "XML-RPC: unexpected element <value> in <struct>");
  FAILS ("<methodResponse><fault><value>oops</value></fault>"
         "</methodResponse>", "XML-RPC: malformed <fault>");
  FAILS ("<methodResponse><params><param><value>a</value></param>"
         "</params> junk</methodResponse>",
         "XML-RPC: unexpected text in <methodResponse>");
  FAILS ("<m:methodResponse xmlns:m=\"urn:x\"><params><param><value>a"
         "</value></param></params></m:methodResponse>",
         "XML-RPC: unexpected namespace on <methodResponse>");
  FAILS (HEAD "<value><x:string xmlns:x=\"urn:x\">a</x:string></value>" TAIL,
         "XML-RPC: unexpected namespace on <string> in <value>");
  /* (US-ASCII is built into libxml2: iconv would load a module.) */
  FAILS ("<?xml version=\"1.0\" encoding=\"US-ASCII\"?>"
         "<methodResponse><params><param><value>\xff</value></param>"
         "</params></methodResponse>", "XML-RPC: malformed XML");
  FAILS (HEAD "<value>&undefined;</value>" TAIL,
         "XML-RPC: malformed XML at line 1: ");

  /* Invalid UTF-8, and a NUL in the middle. */
  FAILS (HEAD "<value>\xff\xfe</value>" TAIL,
         "XML-RPC: malformed XML at line 1: ");
  FAILS (HEAD "<value>\xc0\xaf</value>" TAIL,
         "XML-RPC: malformed XML at line 1: ");
  fails_at (__LINE__, HEAD "<value>a\0b</value>" TAIL,
            sizeof (HEAD "<value>a\0b</value>" TAIL) - 1,
            "XML-RPC: malformed XML");

  /* Billion laughs and XXE: any DTD is refused before entities are
   * declared, so nothing expands and nothing is read. */
  FAILS ("<?xml version=\"1.0\"?>\n"
         "<!DOCTYPE lolz [\n"
         " <!ENTITY lol \"lol\">\n"
         " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
         " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
         " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
         " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
         " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
         " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
         " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
         " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
         " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
         "]>\n"
         HEAD "<value>&lol9;</value>" TAIL,
         "XML-RPC: DOCTYPE not allowed in a response");
  FAILS ("<?xml version=\"1.0\"?>\n"
         "<!DOCTYPE m [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n"
         HEAD "<value>&xxe;</value>" TAIL,
         "XML-RPC: DOCTYPE not allowed in a response");
  FAILS ("<?xml version=\"1.0\"?>\n"
         "<!DOCTYPE methodResponse SYSTEM \"http://127.0.0.1:1/x.dtd\">\n"
         HEAD "<value>a</value>" TAIL,
         "XML-RPC: DOCTYPE not allowed in a response");

  /* Deep nesting: 1000 levels stop at our cap; 100000 at libxml2's. */
  FAILS (nested (1000, true), "XML-RPC: values nested deeper than 64");
  FAILS (nested (100000, false), "XML-RPC: malformed XML at line 1: ");

  /* Over 64 MiB is refused before parsing. */
  fails_at (__LINE__, "<", (size_t) 64 * 1024 * 1024 + 1,
            "over the 64 MiB limit");
}

static void
test_unwrap (void)
{
  struct xapi_error e;
  xapi_value *resp, *val;

  /* Success: Value moves out. */
  resp = dec (HEAD "<value><struct><member><name>Status</name>"
              "<value>Success</value></member><member><name>Value</name>"
              "<value>OpaqueRef:abc</value></member></struct></value>" TAIL);
  CHECK (resp);
  CHECK (xapi_unwrap (resp, &val, &e) == 0);
  CHECK (val && strcmp (xv_str (val), "OpaqueRef:abc") == 0);
  CHECK (e.code == NULL);
  xv_free (val);
  xv_free (resp);

  /* Failure: code and params, "CODE [a, b]" on one line. */
  resp = dec (HEAD "<value><struct><member><name>Status</name>"
              "<value>Failure</value></member>"
              "<member><name>ErrorDescription</name><value><array><data>"
              "<value>SR_BACKEND_FAILURE_460</value><value></value>"
              "<value>Failed to calculate changed blocks for given VDIs. "
              "[opterr=Source and target VDI are unrelated]</value>"
              "<value>line1\nline2</value>"
              "</data></array></value></member></struct></value>" TAIL);
  CHECK (resp);
  errno = 0;
  CHECK (xapi_unwrap (resp, &val, &e) == -1 && val == NULL);
  CHECK (errno == EIO);
  CHECK (e.code && strcmp (e.code, "SR_BACKEND_FAILURE_460") == 0);
  CHECK (e.nparams == 3 && strcmp (e.params[0], "") == 0
         && strstr (e.params[1], "unrelated") != NULL
         && strcmp (e.params[2], "line1\nline2") == 0);
  CHECK (strcmp (err_get (),
                 "SR_BACKEND_FAILURE_460 [Failed to calculate changed "
                 "blocks for given VDIs. [opterr=Source and target VDI are "
                 "unrelated], line1 line2]") == 0);
  xapi_error_clear (&e);
  CHECK (e.code == NULL && e.params == NULL && e.nparams == 0);
  xv_free (resp);

  resp = dec (HEAD "<value><struct><member><name>Status</name>"
              "<value>Failure</value></member>"
              "<member><name>ErrorDescription</name><value><array><data>"
              "<value>SESSION_AUTHENTICATION_FAILED</value>"
              "<value>root</value><value>Authentication failure</value>"
              "</data></array></value></member></struct></value>" TAIL);
  CHECK (xapi_unwrap (resp, &val, &e) == -1);
  CHECK (strcmp (err_get (), "SESSION_AUTHENTICATION_FAILED [root, "
                 "Authentication failure]") == 0);
  xapi_error_clear (&e);
  xv_free (resp);

  resp = dec (HEAD "<value><struct><member><name>Status</name>"
              "<value>Failure</value></member>"
              "<member><name>ErrorDescription</name><value><array><data>"
              "<value>SESSION_INVALID</value>"
              "</data></array></value></member></struct></value>" TAIL);
  CHECK (xapi_unwrap (resp, &val, &e) == -1);
  CHECK (strcmp (err_get (), "SESSION_INVALID") == 0 && e.nparams == 0);
  xapi_error_clear (&e);
  xv_free (resp);

  /* Malformed envelopes: EPROTO, E empty. */
  {
    static const char *const bad[] = {
      HEAD "<value>Success</value>" TAIL,
      HEAD "<value><struct><member><name>Status</name><value>Maybe</value>"
      "</member></struct></value>" TAIL,
      HEAD "<value><struct><member><name>Status</name><value>Failure"
      "</value></member></struct></value>" TAIL,
      HEAD "<value><struct><member><name>Status</name><value>Failure"
      "</value></member><member><name>ErrorDescription</name><value>"
      "<array><data></data></array></value></member></struct></value>" TAIL,
      HEAD "<value><struct><member><name>Status</name><value>Failure"
      "</value></member><member><name>ErrorDescription</name><value>"
      "<array><data><value>X</value><value><struct/></value></data>"
      "</array></value></member></struct></value>" TAIL,
      NULL
    };
    for (size_t k = 0; bad[k]; k++) {
      resp = dec (bad[k]);
      CHECK (resp);
      errno = 0;
      CHECK (xapi_unwrap (resp, &val, &e) == -1 && errno == EPROTO);
      CHECK (val == NULL && e.code == NULL && e.nparams == 0);
      CHECK (strncmp (err_get (), "XAPI: malformed response", 24) == 0);
      xv_free (resp);
    }
  }
}

/* xapi_login's checks that need no server. */
static void
test_login_args (void)
{
  static const struct { const char *url, *want; } bad[] = {
    { "ftp://h", "XAPI URL: scheme must be https" },
    { "https://root:hunter2@h", "user info" },
    { "https://h/some/path", "without a path" },
    { "https://h:0", "expected https://host[:port]" },
    { "https://h:65536", "expected https://host[:port]" },
    { "https://h:12x", "expected https://host[:port]" },
    { "https://[::1", "expected https://host[:port]" },
    { "https://", "expected https://host[:port]" },
    { "https://h h", "expected https://host[:port]" },
    { "http://192.0.2.1", "plain http would send the password" },
  };
  struct xapi_opts o = { .user = "root", .password = "hunter2" };
  size_t k;

  for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    o.url = bad[k].url;
    errno = 0;
    CHECK (xapi_login (&o) == NULL && errno == EINVAL);
    if (strstr (err_get (), bad[k].want) == NULL
        || strstr (err_get (), "hunter2") != NULL) {
      fprintf (out, "%s:%d: %s: got \"%s\"\n", __FILE__, __LINE__,
               bad[k].url, err_get ());
      exit (1);
    }
  }
  o.url = NULL;
  CHECK (xapi_login (&o) == NULL && strstr (err_get (), "URL") != NULL);

  /* The password is encoded before anything is sent. */
  o.url = "https://127.0.0.1:1";
  o.password = "hunter2\x01";
  CHECK (xapi_login (&o) == NULL && errno == EINVAL);
  CHECK (strcmp (err_get (), "login failed: XML-RPC: parameter 2 contains "
                 "character U+0001, which XML cannot carry") == 0);
  o.password = "hunter2";
  o.ca_file = "/nonexistent/ca.pem";
  CHECK (xapi_login (&o) == NULL && errno == ENOENT);
  CHECK (strcmp (err_get (), "CA file /nonexistent/ca.pem: No such file or "
                 "directory") == 0);
  o.ca_file = NULL;

  /* Nothing listens on port 1 of this machine. */
  o.url = "https://127.0.0.1:1";
  o.timeout = 5;
  CHECK (xapi_login (&o) == NULL);
  CHECK (strcmp (err_get (),
                 "cannot connect to https://127.0.0.1:1: "
                 "Connection refused") == 0);
  CHECK (errno == ECONNREFUSED);
  o.url = "[::1]:1";
  CHECK (xapi_login (&o) == NULL);
  CHECK (strncmp (err_get (), "cannot connect to https://[::1]:1: ", 35)
         == 0);
}

int
main (void)
{
  char path[] = "/tmp/test-xmlrpc-stderr.XXXXXX";
  int fd, saved;
  off_t size;

  saved = dup (2);
  out = saved >= 0 ? fdopen (saved, "w") : NULL;
  fd = mkstemp (path);
  if (out == NULL || fd == -1 || dup2 (fd, 2) == -1) {
    perror ("test-xmlrpc: setup");
    return 1;
  }
  setvbuf (out, NULL, _IONBF, 0);
  unlink (path);

  CHECK (xapi_global_init () == 0);
  test_values ();
  test_encode ();
  test_decode ();
  test_malformed ();
  test_unwrap ();
  test_login_args ();
  xapi_global_cleanup ();

  size = lseek (fd, 0, SEEK_END);
  if (size != 0) {
    char buf[512] = "";

    if (pread (fd, buf, sizeof buf - 1, 0) < 0)
      buf[0] = '\0';
    fprintf (out, "test-xmlrpc: something wrote to stderr:\n%s\n", buf);
    return 1;
  }
  close (fd);
  fclose (out);
  return 0;
}
