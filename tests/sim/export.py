"""XAPI's GET /export_raw_vdi handler (docs/vhd-export.md, "The request"),
with format=vhd (vhd.py builds the stream) and format=raw.

Why it exists: cbtfs reads the BAT of the VHD stream to learn which 2 MiB
blocks of a disk hold data, so that a baseline backup of a big sparse
disk reads only those blocks over NBD.  The checks and replies follow
xen-api's export_raw_vdi.ml, xapi_http.ml, importexport.ml and
http_svr.ml, in their order: session (401), VDI lookup (500), the slave's
302, format (HTTP/1.0 404), then the 200 headers, and only then the
checks xapi makes after attaching the disk, whose failures land *inside*
the 200 body as an "HTTP/1.1 500" document (xen-api issue #4603).

Thread model: runs in the HTTPS connection's thread (xapi.XapiHandler).
Model.lock is taken only to read the session, the VDI and the knobs, to
open the backing file, and to add to the stats; the stream itself is
produced without the lock, piece by piece, from that descriptor.
"""

import html
import os
import ssl
import urllib.parse

import disk
import vhd
from model import new_ref

PATH = "/export_raw_vdi"
REALM = "VDI.export_raw"          # assert_credentials_ok's realm
FORMATS = {"raw": "application/octet-stream", "vhd": "application/vhd"}
SOURCES = ("hybrid", "raw")
FAULTS = ("none", "missing", "http500_body", "truncate", "bad_checksum")
HOSTS = ("master", "slave", "loop")   # or an http:// URL
SEND_TIMEOUT = 120                # a client that stops reading is dropped
_PIECE = 256 << 10                # bytes per send, so "bytes" is exact
_RAW_CHUNK = 1 << 20

HTML_401 = (b"<html><body><h1>HTTP 401 unauthorised</h1>Please check your "
            b"credentials and retry.</body></html>")
_HTML_500_HEAD = (b"<html><body><h1>HTTP 500 internal server error</h1>An "
                  b"unexpected error occurred; please wait a while and try "
                  b"again. If the problem persists, please contact your "
                  b"support representative.<h1> Additional information </h1>")
# What xen-api issue #4603 shows inside a 200 body (an SM attach failure).
ISSUE_4603 = ("SR_BACKEND_FAILURE_46: [ ; The VDI is not available [opterr=VDI "
              "%s not detached cleanly];  ]")


class ClientGone(Exception):
    """The client closed the connection (or stopped reading) mid-body."""


def error_document(version, code, message, body, extra_headers=()):
    """An error reply as http_svr.ml response_error_html writes it."""
    lines = ["HTTP/%s %s %s" % (version, code, message),
             "content-length: %d" % len(body), "content-type: text/html",
             "connection: close", "cache-control: no-cache, no-store"]
    lines += list(extra_headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def internal_error(version, extra):
    """http_svr.ml response_internal_error with its "Additional information"."""
    body = _HTML_500_HEAD + extra.encode() + b"</body></html>"
    return error_document(version, "500", "Internal Error", body)


def _headers(lines):
    """Http_svr.headers: each line and a blank one, CRLF-terminated."""
    return "".join(x + "\r\n" for x in list(lines) + [""]).encode()


def _params(h):
    """(path, raw query, query dict, cookie dict); first value wins."""
    u = urllib.parse.urlsplit(h.path)
    query = {}
    for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True):
        query.setdefault(k, v)
    cookies = {}
    for part in h.headers.get("Cookie", "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep:
            cookies.setdefault(k, v)
    return u.path, u.query, query, cookies


def _stats(m):
    return m.stats["http"]["export_raw_vdi"]


def _write(h, m, data, count=True):
    """Send DATA in pieces, counting what went out as body bytes (unless
    COUNT is false: headers); ClientGone on failure."""
    view = memoryview(data)
    for pos in range(0, len(view), _PIECE):
        piece = view[pos:pos + _PIECE]
        try:
            h.wfile.write(piece)
        except OSError as e:       # BrokenPipe, ConnectionReset, SSL, timeout
            raise ClientGone(type(e).__name__)
        if count:
            with m.lock:
                _stats(m)["bytes"] += len(piece)


def _close_tls(h):
    """Send TLS close_notify without waiting for the client's: the body
    ends at close, and curl treats an EOF without it as an error."""
    try:
        h.connection.settimeout(0)
        h.connection.unwrap()
    except (OSError, ValueError, ssl.SSLError):
        pass


def _raw_body(fd, size):
    """format=raw: all SIZE bytes, holes as zeros (never read)."""
    zeros = bytes(_RAW_CHUNK)
    pos = 0
    for s, e in disk.data_extents(fd, size):
        while pos < s:
            n = min(_RAW_CHUNK, s - pos)
            yield zeros[:n]
            pos += n
        while pos < e:
            n = min(_RAW_CHUNK, e - pos)
            yield disk.pread_full(fd, n, pos)
            pos += n
    while pos < size:
        n = min(_RAW_CHUNK, size - pos)
        yield zeros[:n]
        pos += n


def _vhd_body(fd, size, source, fault):
    """format=vhd: the pieces and a summary for the log line."""
    data = vhd.data_ranges(fd, size)
    n = (size + vhd.BLOCK - 1) // vhd.BLOCK
    if source == "raw":
        # A raw LV seen through a block device: SEEK_DATA finds data
        # everywhere, so every block is sent, and vhd_from_raw puts the
        # size rounded up to whole blocks in the footer.
        included, current = [(0, n)] if n else [], n * vhd.BLOCK
    else:
        # tapdisk's BAT: a block is there iff anything was ever written.
        included, current = data, size
    k = vhd.count_blocks(included)
    pieces = vhd.stream(fd, size, current, included, data,
                        1 if fault == "bad_checksum" else 0)
    if fault == "truncate":
        pieces = [next(pieces)]        # footer + header, then the cut
    return pieces, "%d of %d block(s), %d bytes" % (
        k, n, vhd.stream_length(n, k))


class Export:
    """One GET /export_raw_vdi request."""

    def __init__(self, h):
        self.h = h
        self.srv = h.server
        self.m = h.server.api.m
        self.log = h.server.log
        self.version = "1.0" if h.request_version == "HTTP/1.0" else "1.1"

    def reply(self, data, what):
        self.log("export_raw_vdi%s: %s" % (" (slave)" if self.srv.slave else "",
                                           what))
        try:
            self.h.wfile.write(data)
        except OSError:
            pass

    def run(self):
        m = self.m
        self.h.close_connection = True
        with m.lock:
            _stats(m)["requests"] += 1
        path, raw_query, query, cookies = _params(self.h)
        # xapi_http.ml: the cookie's session_id before the query's; no
        # session at all falls to client-certificate auth, which fails.
        session = cookies.get("session_id", query.get("session_id"))
        if session is None or not self.srv.api.session_ok(session):
            self.reply(error_document(
                self.version, "401", "Unauthorised", HTML_401,
                ['WWW-Authenticate: Basic realm="%s"' % REALM]),
                "no valid session -> 401")
            return
        want = query.get("vdi", cookies.get("vdi"))
        if want is None:
            self.reply(internal_error(self.version, html.escape(
                'Failure("Missing vdi query parameter")')),
                "no vdi parameter -> 500")
            return
        with m.lock:
            vdi = m.objs["VDI"].get(want) or m.uuids["VDI"].get(want)
            fault, source = m.knobs["vhd_fault"], m.knobs["vhd_source"]
            host = m.knobs["vhd_host"]
        if vdi is None:
            self.reply(internal_error(self.version,
                                      "UUID_INVALID: [ VDI; %s ]" % want),
                       "unknown VDI -> 500")
            return
        # importexport.ml return_302_redirect: a host that cannot see the
        # SR sends the client, same path and query, to one that can.
        there = self._elsewhere(host)
        if there is not None:
            with m.lock:
                _stats(m)["redirects"] += 1
            url = "%s%s?%s" % (there, path, raw_query)
            self.reply(_headers(["HTTP/1.1 302 Found", "Connection: close",
                                 "Cache-Control: no-cache, no-store",
                                 "Location: " + url]),
                       "%s -> 302 to %s" % (vdi.rec["uuid"], there))
            return
        fmt = query.get("format", cookies.get("format", "raw")).lower()
        if fmt not in FORMATS or (fmt == "vhd" and fault == "missing"):
            self.reply(_headers(["HTTP/1.0 404 Not Found", "Connection: close",
                                 "Cache-Control: no-cache, no-store"]),
                       "%s format %r -> 404" % (vdi.rec["uuid"], fmt))
            return
        if "base" in query or "base" in cookies:
            # Differencing exports (base=, docs/vhd-export.md) are not
            # modelled: refuse them loudly.
            self.reply(_headers(["HTTP/1.0 404 Not Found", "Connection: close",
                                 "Cache-Control: no-cache, no-store"]),
                       "%s base= is not modelled -> 404" % vdi.rec["uuid"])
            return
        self.export(vdi, fmt, source, fault, query.get("task_id"))

    def _elsewhere(self, host):
        """The base URL this host sends the client to, or None to serve."""
        port = self.srv.server_address[1]
        if self.srv.slave:
            if host == "slave":
                return None
            return "https://%s:%d" % (self.m.xapi_address, port)
        if host in ("slave", "loop"):
            return "https://%s:%d" % (self.m.slave_address, port)
        if host.startswith("http://"):
            return host.rstrip("/")
        return None

    def export(self, vdi, fmt, source, fault, task_id):
        m, h = self.m, self.h
        with m.lock:
            uuid, ref = vdi.rec["uuid"], vdi.ref
            size = vdi.rec["virtual_size"]
            fd = os.open(vdi.path, os.O_RDONLY) if vdi.path else None
        what = "%s format=%s" % (uuid, fmt)
        if self.srv.slave:
            with m.lock:
                _stats(m)["slave_served"] += 1
        try:
            h.connection.settimeout(SEND_TIMEOUT)
            _write(h, m, _headers([
                "HTTP/1.1 200 OK", "Connection: close",
                "Cache-Control: no-cache, no-store",
                "task-id:" + (task_id or new_ref()),
                "content-type:" + FORMATS[fmt],
                'content-disposition: attachment; filename="%s.%s"'
                % (uuid, fmt)]), count=False)
            self._body(fd, size, uuid, ref, fmt, source, fault, what)
        except ClientGone as e:
            self.log("export_raw_vdi: %s: client went away (%s)" % (what, e))
        finally:
            if fd is not None:
                os.close(fd)

    def _body(self, fd, size, uuid, ref, fmt, source, fault, what):
        """After the 200 headers: xapi's late checks, then the stream."""
        m, h = self.m, self.h
        late = None
        if fmt == "vhd" and size > vhd.MAX_VHD_SIZE:
            late = "VDI_TOO_LARGE: [ %s; %d ]" % (ref, vhd.MAX_VHD_SIZE)
        elif fd is None:
            # No data to attach (cbt_metadata): VBD.plug refuses it.
            late = "VDI_INCOMPATIBLE_TYPE: [ %s; cbt_metadata ]" % ref
        elif fmt == "vhd" and fault == "http500_body":
            late = ISSUE_4603 % uuid
        if late is not None:
            # http_svr.ml handle_one answers the exception into the open
            # connection: a 500 document inside the 200 body (#4603).
            _write(h, m, internal_error(self.version, late))
            self.log("export_raw_vdi: %s: 200, then in the body: %s"
                     % (what, late.split(":")[0]))
            _close_tls(h)
            return
        if fmt == "raw":
            pieces, summary = _raw_body(fd, size), "%d bytes" % size
        else:
            pieces, summary = _vhd_body(fd, size, source, fault)
            what += " source=%s" % source
        for piece in pieces:
            _write(h, m, piece)
        if fault != "none" and fmt == "vhd":
            what += " fault=%s" % fault
        if fault == "truncate" and fmt == "vhd":
            self.log("export_raw_vdi: %s: cut after footer+header (of %s)"
                     % (what, summary))
            return                 # no close_notify: the stream is cut
        _close_tls(h)
        self.log("export_raw_vdi: %s: %s" % (what, summary))


def handler(h, _query):
    """XapiServer.get_handlers entry (master and slave)."""
    Export(h).run()
