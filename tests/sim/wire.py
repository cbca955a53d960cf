"""XML-RPC wire format exactly as XAPI writes it (docs/xapi.md, "The
XML-RPC envelope").

XAPI's encoder (ocaml-rpc xmlrpc.ml) differs from Python's xmlrpc.client in
ways a client must cope with, so the stand-in writes responses itself
instead of using xmlrpc.client.dumps:

  - strings carry no type tag: <value>text</value>, "" is <value></value>;
  - int64 is bare decimal text, <value>10809</value>, i.e. on the wire it is
    indistinguishable from a string (clients parse ints from text);
  - bool is <boolean>1|0</boolean>;
  - datetimes are compact: <dateTime.iso8601>20250319T04:16:24Z</...>;
  - sets are <array><data>, maps and records are <struct>;
  - in strings & < > " are escaped, tab/LF/CR kept, other bytes below 0x20
    dropped (struct member names are written as they are).

Requests are parsed with xmlrpc.client.loads, which, like ocaml-rpc, takes
both <value>x</value> and <value><string>x</string></value> as strings.

Pure functions, no state: safe from any thread.
"""

import datetime
import xmlrpc.client

XML_HEADER = '<?xml version="1.0"?>'


class DateTime:
    """A XAPI dateTime: whole seconds, UTC, written in compact form."""

    __slots__ = ("seconds",)

    def __init__(self, seconds):
        self.seconds = int(seconds)

    def __str__(self):
        t = datetime.datetime.fromtimestamp(self.seconds, datetime.timezone.utc)
        return t.strftime("%Y%m%dT%H:%M:%SZ")

    def __eq__(self, other):
        return isinstance(other, DateTime) and other.seconds == self.seconds

    def __hash__(self):
        return hash(self.seconds)


EPOCH = DateTime(0)

# Characters XAPI escapes; control characters other than tab, LF and CR are
# dropped (ocaml-rpc keeps every byte >= 0x20, so DEL and UTF-8 pass through).
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_DROP = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}


def escape(s):
    s = s.translate(_DROP)
    if any(c in s for c in _ESCAPES):
        s = "".join(_ESCAPES.get(c, c) for c in s)
    return s


def _add(out, v):
    # bool before int: bool is a subclass of int in Python.
    if isinstance(v, bool):
        out.append("<value><boolean>1</boolean></value>" if v
                   else "<value><boolean>0</boolean></value>")
    elif isinstance(v, int):
        out.append("<value>%d</value>" % v)
    elif isinstance(v, str):
        out.append("<value>%s</value>" % escape(v))
    elif isinstance(v, DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % v)
    elif isinstance(v, float):
        out.append("<value><double>%.16g</double></value>" % v)
    elif isinstance(v, dict):
        out.append("<value><struct>")
        for k, x in v.items():
            out.append("<member><name>%s</name>" % k)
            _add(out, x)
            out.append("</member>")
        out.append("</struct></value>")
    elif isinstance(v, (list, tuple)):
        out.append("<value><array><data>")
        for x in v:
            _add(out, x)
        out.append("</data></array></value>")
    elif v is None:
        # XAPI's API has no nil; void results are sent as "".
        out.append("<value></value>")
    else:
        raise TypeError("cannot encode %r" % type(v))


def encode_value(v):
    out = []
    _add(out, v)
    return "".join(out)


def _response(struct):
    return (XML_HEADER + "<methodResponse><params><param>" + encode_value(struct)
            + "</param></params></methodResponse>").encode("utf-8")


def success(value):
    """The body of a successful XAPI response carrying VALUE."""
    return _response({"Status": "Success", "Value": value})


def failure(description):
    """The body of a failed XAPI response; DESCRIPTION is [CODE, params...]."""
    return _response({"Status": "Failure",
                      "ErrorDescription": [str(x) for x in description]})


def parse_call(body):
    """(method, params) from a methodCall body; raises ValueError if malformed."""
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as e:  # expat errors, bad tags, bad base64 ...
        raise ValueError("malformed XML-RPC request: %s" % e) from None
    if not method:
        raise ValueError("malformed XML-RPC request: no methodName")
    return method, list(params)
