"""XAPI stand-in: XML-RPC over HTTPS (docs/xapi.md).

Api turns one (method, params) call into a response body; XapiServer is
the HTTPS listener (one for the pool master, one answering as a slave).

Thread model: XapiServer runs an accept thread (serve_forever) and one
thread per TLS connection (HTTP/1.1 keep-alive, so a connection's thread
lives as long as the client keeps it open).  The TLS handshake runs in the
connection's thread, never in the accept loop.  Every call takes
Model.lock for the model work it does; VDI.data_destroy waits on
Model.cond (which releases the lock), and VDI.checksum hashes without the
lock on a descriptor opened under it.

GET handlers (export.py: /export_raw_vdi) register in
XapiServer.get_handlers: path -> function(handler, query) and reuse
Api.session_ok() for session_id checks.
"""

import base64
import http.server
import os
import socketserver
import ssl
import sys
import time
import urllib.parse

import disk
import wire
from model import XapiError

HTML_500 = (b"<html><body><h1>HTTP 500 internal server error</h1>An unexpected "
            b"error occurred; please wait a while and try again. If the problem "
            b"persists, please contact your support representative.</body></html>")
HTML_404 = b"<html><body><h1>HTTP 404 not found</h1></body></html>"
MAX_BODY = 64 << 20


def _pop_queued(queues, method):
    """The next entry queued for METHOD in QUEUES (method -> list), or None."""
    q = queues.get(method)
    if not q:
        return None
    item = q.pop(0)
    if not q:
        del queues[method]
    return item


class Method:
    def __init__(self, fn, mandatory, optional=0, session=True):
        self.fn = fn
        self.mandatory = mandatory
        self.optional = optional
        self.session = session


class Api:
    def __init__(self, model, log):
        self.m = model
        self.log = log
        self.methods = {}
        self._register()

    # ---- dispatch ----------------------------------------------------------

    def call(self, method, params, slave=False):
        """The response body (bytes) for one XML-RPC call."""
        m = self.m
        with m.lock:
            m.count_call(method)
        with m.lock:
            raw = _pop_queued(m.raw_next, method)
        if raw is not None:
            # A test wants this answer verbatim, malformed or not.
            self.log("xapi %s -> raw answer from a test" % method)
            return raw.encode()
        try:
            value = self._call(method, params, slave)
            with m.lock:
                forced = _pop_queued(m.return_next, method)
            if forced is not None:
                value = forced[0]
        except XapiError as e:
            self.log("xapi %s%s -> %s" % ("slave " if slave else "", method,
                                          e.description[0]))
            return wire.failure(e.description)
        except Exception as e:     # a bug or an I/O error: as xapi would say
            self.log("xapi %s -> INTERNAL_ERROR %r" % (method, e))
            return wire.failure(["INTERNAL_ERROR", str(e)])
        if method in self._logged:
            self.log("xapi %s -> ok" % method)
        return wire.success(value)

    # Successes worth a log line that the model does not log itself.
    _logged = ("VDI.list_changed_blocks", "VDI.get_nbd_info", "VDI.checksum",
               "session.logout")

    def _call(self, method, params, slave):
        m = self.m
        if slave:
            # A pool member refuses to serve: the client must go to the master.
            raise XapiError("HOST_IS_SLAVE", m.xapi_address)
        spec = self.methods.get(method)
        if spec is None:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        nargs = len(params) - (1 if spec.session else 0)
        if not spec.mandatory <= nargs <= spec.mandatory + spec.optional:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method,
                            spec.mandatory, nargs)
        args = list(params)
        session = None
        with m.lock:
            if _pop_queued(m.expire_on, method) is not None:
                # The host forgot every session just before this call.
                m.sessions.clear()
            if spec.session:
                session = args.pop(0)
                m.check_session(session)
            queued = m.fail_next.get(method, [])
            for i, (desc, ref) in enumerate(queued):
                if ref is None or (args and args[0] == ref):
                    del queued[i]
                    if not queued:
                        del m.fail_next[method]
                    raise XapiError(*desc)
            if method in m.fail_every:
                raise XapiError(*m.fail_every[method])
            value = spec.fn(session, *args)
        # Slow work (VDI.checksum) comes back as a _Deferred, run unlocked.
        if isinstance(value, _Deferred):
            value = value.fn()
        return value

    def session_ok(self, ref):
        """For HTTP handlers: is REF a live session?  Takes the lock."""
        with self.m.lock:
            return ref in self.m.sessions

    # ---- registration --------------------------------------------------------

    def _register(self):
        m = self.m
        reg = self.methods

        def add(name, mandatory, optional=0, session=True):
            def deco(fn):
                reg[name] = Method(fn, mandatory, optional, session)
                return fn
            return deco

        # -- session
        @add("session.login_with_password", 2, 2, session=False)
        def login(_s, user, password, version="1.1", originator=""):
            ref = m.login(str(user), str(password))
            self.log("login as %s (originator %r)" % (user, str(originator)))
            return ref

        @add("session.logout", 0)
        def logout(s):
            m.logout(s)
            return ""

        @add("session.get_uuid", 1)
        def session_get_uuid(_s, self_):
            if self_ not in m.sessions:
                raise XapiError("HANDLE_INVALID", "session", self_)
            return m.sessions[self_]["uuid"]

        @add("session.get_this_host", 1)
        def session_get_this_host(_s, self_):
            if self_ not in m.sessions:
                raise XapiError("HANDLE_INVALID", "session", self_)
            return m.host.ref

        # -- generic per-class calls
        for cls in ("pool", "host", "SR", "VM", "VBD", "VDI", "task"):
            self._register_class(cls)

        # -- VM
        @add("VM.snapshot", 2, 1)
        def vm_snapshot(_s, vm, new_name, ignore_vdis=()):
            vm = m.get("VM", vm)
            return m.snapshot_vm(vm, str(new_name), list(ignore_vdis)).ref

        @add("VM.destroy", 1)
        def vm_destroy(_s, vm):
            m.destroy_vm(m.get("VM", vm))
            return ""

        # -- VDI
        @add("VDI.snapshot", 1, 1)
        def vdi_snapshot(_s, vdi, driver_params=None):
            return m.snapshot_vdi(m.get("VDI", vdi)).ref

        @add("VDI.enable_cbt", 1)
        def vdi_enable_cbt(_s, vdi):
            m.enable_cbt(m.get("VDI", vdi))
            return ""

        @add("VDI.disable_cbt", 1)
        def vdi_disable_cbt(_s, vdi):
            m.disable_cbt(m.get("VDI", vdi))
            return ""

        @add("VDI.list_changed_blocks", 2)
        def vdi_lcb(_s, vfrom, vto):
            a, b = m.get("VDI", vfrom), m.get("VDI", vto)
            return base64.b64encode(m.list_changed_blocks(a, b)).decode("ascii")

        @add("VDI.data_destroy", 1)
        def vdi_data_destroy(_s, ref):
            # Runs under the lock; wait_no_vbds waits on Model.cond, which
            # releases it while waiting.
            vdi = m.get("VDI", ref)
            m.check_vdi_op(vdi, "data_destroy")
            if vdi.rec["type"] == "cbt_metadata":
                return ""                          # idempotent
            old = m.begin_data_destroy(vdi)
            gone = m.wait_no_vbds(vdi, float(m.knobs["data_destroy_wait"]))
            if ref not in m.objs["VDI"]:
                raise XapiError("HANDLE_INVALID", "VDI", ref)
            if not gone:
                vdi.rec["type"] = old
                raise XapiError("VDI_IN_USE", ref, "data_destroy")
            m.finish_data_destroy(vdi)
            return ""

        @add("VDI.destroy", 1)
        def vdi_destroy(_s, ref):
            m.destroy_vdi(m.get("VDI", ref))
            return ""

        @add("VDI.get_nbd_info", 1)
        def vdi_get_nbd_info(s, ref):
            vdi = m.get("VDI", ref)
            if vdi.rec["type"] == "cbt_metadata":
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
            # Field order as xapi marshals vdi_nbd_server_info.
            info = {"exportname": "/%s?session_id=%s" % (vdi.rec["uuid"], s),
                    "address": m.nbd_address, "port": m.nbd_port,
                    "cert": m.cert_pem, "subject": m.subject}
            ov = vdi.override or m.override
            if ov is not None:
                info["address"] = ov["address"]
                info["port"] = ov["port"]
                if ov.get("exportname") is not None:
                    info["exportname"] = ov["exportname"]
                if ov.get("cert") is not None:
                    info["cert"] = ov["cert"]
                if ov.get("subject") is not None:
                    info["subject"] = ov["subject"]
            return [info]

        @add("VDI.checksum", 1)
        def vdi_checksum(_s, ref):
            # Called under the lock only to open the file; see below.
            vdi = m.get("VDI", ref)
            if vdi.path is None:
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, vdi.rec["type"])
            fd = os.open(vdi.path, os.O_RDONLY)
            size = vdi.rec["virtual_size"]
            rate = m.knobs["checksum_mib_per_s"]
            return _Deferred(lambda: _checksum(fd, size, rate))

        @add("VDI.create", 1)
        def vdi_create(_s, record):
            return m.vdi_create(record).ref

        # -- task (what a client of the HTTP handlers needs)
        @add("task.create", 2)
        def task_create(_s, label, description):
            return m.create_task(str(label), str(description)).ref

        @add("task.destroy", 1)
        def task_destroy(_s, ref):
            m.remove(m.get("task", ref))
            return ""

        @add("VDI.resize", 2)
        def vdi_resize(_s, ref, size):
            try:
                size = int(size)
            except (TypeError, ValueError):
                raise XapiError("FIELD_TYPE_ERROR", "size")
            m.resize_vdi(m.get("VDI", ref), size)
            return ""

    def _register_class(self, cls):
        m = self.m
        reg = self.methods

        def get_all(_s):
            return list(m.objs[cls])

        def get_all_records(_s):
            return {ref: m.record(o) for ref, o in m.objs[cls].items()}

        def get_record(_s, ref):
            return m.record(m.get(cls, ref))

        def get_by_uuid(_s, uuid):
            return m.by_uuid(cls, uuid).ref

        def get_by_name_label(_s, label):
            return [r for r, o in m.objs[cls].items()
                    if o.rec.get("name_label") == label]

        reg[cls + ".get_all"] = Method(get_all, 0)
        reg[cls + ".get_all_records"] = Method(get_all_records, 0)
        reg[cls + ".get_record"] = Method(get_record, 1)
        reg[cls + ".get_by_uuid"] = Method(get_by_uuid, 1)
        if cls in ("VM", "VDI", "SR", "host"):
            reg[cls + ".get_by_name_label"] = Method(get_by_name_label, 1)
        for field in m.fields(cls):
            reg["%s.get_%s" % (cls, field)] = Method(self._getter(cls, field), 1)
        if cls in ("VM", "VDI", "SR"):
            for field in ("name_label", "name_description"):
                reg["%s.set_%s" % (cls, field)] = Method(
                    self._setter(cls, field), 2)

    def _getter(self, cls, field):
        m = self.m

        def get(_s, ref):
            return m.record(m.get(cls, ref))[field]
        return get

    def _setter(self, cls, field):
        m = self.m

        def set_(_s, ref, value):
            m.get(cls, ref).rec[field] = str(value)
            return ""
        return set_


class _Deferred:
    """A result to compute after the model lock is released (slow work)."""

    def __init__(self, fn):
        self.fn = fn


def _checksum(fd, size, rate):
    """md5 of the disk, taking as long as reading SIZE bytes at RATE
    MiB/s would (0: no slower than hashing): a host reads the whole
    disk from its SR for VDI.checksum."""
    start = time.monotonic()
    try:
        md5 = disk.md5_fd(fd, size)
    finally:
        os.close(fd)
    if rate > 0:
        time.sleep(max(0.0, size / (rate * 1048576) - (time.monotonic() - start)))
    return md5



class XapiHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY every
    # call would wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass    # the Api logs one line per notable call

    def _send(self, code, body, ctype):
        # No Server/Date headers: xapi sends none.
        self.send_response_only(code)
        self.send_header("content-length", str(len(body)))
        self.send_header("content-type", ctype)
        self.send_header("cache-control", "no-cache, no-store")
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += n
                if total > MAX_BODY:
                    return None
                parts.append(self.rfile.read(n))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length)

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if path not in ("/", "/RPC2"):
            self.close_connection = True
            self._send(404, HTML_404, "text/html")
            return
        try:
            body = self._read_body()
        except ValueError:
            body = None
        if body is None:
            self.close_connection = True
            self._send(500, HTML_500, "text/html")
            return
        try:
            method, params = wire.parse_call(body)
        except ValueError:
            self.server.log("xapi: malformed request -> HTTP 500")
            self._send(500, HTML_500, "text/html")
            return
        delay = self.server.api.m.knobs["xapi_delay_ms"]
        if delay:
            # A slow host: the answer comes late (no lock held here).
            time.sleep(delay / 1000.0)
        out = self.server.api.call(method, params, slave=self.server.slave)
        self._send(200, out, "text/xml")

    def handle_expect_100(self):
        # xapi's http_svr.ml ignores "Expect: 100-continue": no interim
        # reply; a client waits for its timeout or the final reply.
        return True

    def do_PUT(self):
        self._handle(self.server.put_handlers)

    def do_GET(self):
        self._handle(self.server.get_handlers)

    def _handle(self, handlers):
        u = urllib.parse.urlsplit(self.path)
        handler = handlers.get(u.path.rstrip("/") or "/")
        if handler is None:
            self.close_connection = True
            self._send(404, HTML_404, "text/html")
            return
        handler(self, urllib.parse.parse_qs(u.query))


class XapiServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, ssl_ctx, api, slave, log):
        self.ssl_ctx = ssl_ctx
        self.api = api
        self.slave = slave
        self.log = log
        self.get_handlers = {}
        self.put_handlers = {}
        super().__init__(address, XapiHandler)

    def server_bind(self):
        # HTTPServer.server_bind would do a reverse DNS lookup; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread: handshake here, not in accept.
        try:
            request.settimeout(30)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (OSError, ssl.SSLError) as e:
            self.log("xapi: TLS handshake failed: %s" % e)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        self.log("xapi: connection error: %s" % (sys.exc_info()[1],))


def bind_pair(master_addr, slave_addr, ssl_ctx, api, log, tries=50,
              slave_ctx=None):
    """Master on MASTER_ADDR:free port and slave on SLAVE_ADDR:same port
    (with SLAVE_CTX if it has a certificate of its own)."""
    last = None
    for _ in range(tries):
        master = XapiServer((master_addr, 0), ssl_ctx, api, False, log)
        port = master.server_address[1]
        try:
            slave = XapiServer((slave_addr, port), slave_ctx or ssl_ctx, api,
                               True, log)
        except OSError as e:
            last = e
            master.server_close()
            continue
        return master, slave
    raise OSError("cannot bind master and slave on one port: %s" % last)

