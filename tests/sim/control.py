"""Control interface of the stand-in: what a test does *to* the host
(guest writes, crashes, knobs) and what it asks about it (records, stats).

Plain HTTP on loopback: POST /<op> with a JSON object body, JSON reply;
an error is HTTP 400 {"error": "..."}.  Ops are listed in OPS below and
documented in tests/sim/README.md.

Thread model: ThreadingHTTPServer, one thread per request.  Every op runs
with Model.lock held for its whole duration (guest writes must be atomic
with respect to snapshots), except drop_nbd, which takes the lock itself
inside NbdServer.drop_all.
"""

import base64
import binascii
import http.server
import json
import socketserver

import export
from model import ControlError, XapiError, NULL
from wire import DateTime

KNOBS = ("data_destroy_wait", "nbd_read_delay_ms", "nbd_drop_after_bytes",
         "xapi_delay_ms", "checksum_mib_per_s")
BOOL_KNOBS = ("nbd_impostor", "corrupt_import")
# Knobs that take one of a few words: name -> the allowed values.
WORD_KNOBS = {"vhd_source": export.SOURCES, "vhd_fault": export.FAULTS,
              "vhd_host": export.HOSTS}


def _jsonable(v):
    return str(v) if not isinstance(v, (str, int, float, bool, list, dict,
                                        type(None))) else v


def _need(body, key, typ):
    v = body.get(key)
    if not isinstance(v, typ) or isinstance(v, bool) and typ is int:
        raise ControlError("%r must be a %s" % (key, typ.__name__))
    return v


class Control:
    def __init__(self, model, nbd, log):
        self.m = model
        self.nbd = nbd
        self.log = log

    def run(self, op, body):
        fn = getattr(self, "op_" + op, None) if op.isidentifier() else None
        if fn is None:
            raise ControlError("unknown op %r" % op)
        if op == "drop_nbd":
            return fn(body)
        with self.m.lock:
            return fn(body)

    # ---- the ops (Model.lock held) ---------------------------------------

    def op_create_vm(self, b):
        disks = b.get("disks", [])
        if not isinstance(disks, list) or not all(isinstance(d, dict)
                                                  for d in disks):
            raise ControlError("disks must be a list of objects")
        return self.m.create_vm(_need(b, "name", str), disks,
                                b.get("power_state", "Running"))

    def op_write(self, b):
        vdi = self.m.vdi_by_uuid_ctl(b.get("vdi"))
        try:
            data = base64.b64decode(_need(b, "data_b64", str), validate=True)
        except binascii.Error as e:
            raise ControlError("bad base64: %s" % e)
        self.m.guest_write(vdi, _need(b, "offset", int), data)
        return {"written": len(data)}

    def op_write_file(self, b):
        vdi = self.m.vdi_by_uuid_ctl(b.get("vdi"))
        n = self.m.write_file(vdi, _need(b, "path", str))
        self.log("write_file on %s: %d block(s) changed" % (vdi.rec["uuid"], n))
        return {"changed_blocks": n}

    def op_expire_sessions(self, b):
        n = len(self.m.sessions)
        self.m.sessions.clear()
        self.log("expired %d session(s)" % n)
        return {"expired": n}

    def op_drop_nbd(self, b):
        return {"dropped": self.nbd.drop_all()}

    def op_reset_cbt(self, b):
        self.m.reset_cbt(self.m.vdi_by_uuid_ctl(b.get("vdi")))
        return {}

    def op_rename_vm(self, b):
        vm = self.m.vm_by_uuid_ctl(b.get("vm"))
        vm.rec["name_label"] = _need(b, "name", str)
        return {}

    def op_rename_vdi(self, b):
        vdi = self.m.vdi_by_uuid_ctl(b.get("vdi"))
        vdi.rec["name_label"] = _need(b, "name", str)
        return {}

    def op_resize(self, b):
        vdi = self.m.vdi_by_uuid_ctl(b.get("vdi"))
        try:
            size = self.m.resize_vdi(vdi, _need(b, "size", int), check=False)
        except XapiError as e:
            raise ControlError(" ".join(e.description))
        return {"size": size}

    def op_set_power_state(self, b):
        self.m.set_power_state(self.m.vm_by_uuid_ctl(b.get("vm")),
                               b.get("state"))
        return {}

    def op_set(self, b):
        m = self.m
        for k, v in b.items():
            if k in KNOBS:
                if not isinstance(v, (int, float)) or isinstance(v, bool) \
                        or v < 0:
                    raise ControlError("%s must be a number >= 0" % k)
                m.knobs[k] = v
            elif k in BOOL_KNOBS:
                if not isinstance(v, bool):
                    raise ControlError("%s must be true or false" % k)
                m.knobs[k] = v
            elif k in WORD_KNOBS:
                if v not in WORD_KNOBS[k] and not (
                        k == "vhd_host" and isinstance(v, str)
                        and v.startswith("http://")):
                    raise ControlError("%s must be one of %s"
                                       % (k, ", ".join(WORD_KNOBS[k])))
                m.knobs[k] = v
            elif k == "fail_next":
                # With "ref", only a call on that object fails (the
                # first argument after the session).
                for f in (v if isinstance(v, list) else [v]):
                    if not isinstance(f, dict) or \
                            not isinstance(f.get("method"), str) or \
                            not isinstance(f.get("error"), list) or \
                            not f["error"] or \
                            not isinstance(f.get("ref", ""), str):
                        raise ControlError('fail_next wants {"method": str, '
                                           '"error": [CODE, params...], '
                                           '"ref": str (optional)}')
                    m.fail_next.setdefault(f["method"], []).append(
                        ([str(x) for x in f["error"]], f.get("ref")))
            elif k == "fail_every":
                # Every call of the method fails until cleared with
                # "error": null (a host whose SR keeps refusing).
                for f in (v if isinstance(v, list) else [v]):
                    if not isinstance(f, dict) or \
                            not isinstance(f.get("method"), str) or \
                            not (f.get("error") is None or
                                 isinstance(f["error"], list) and f["error"]):
                        raise ControlError('fail_every wants {"method": str, '
                                           '"error": [CODE, params...] or '
                                           'null}')
                    if f.get("error") is None:
                        m.fail_every.pop(f["method"], None)
                    else:
                        m.fail_every[f["method"]] = [str(x)
                                                     for x in f["error"]]
            elif k in ("return_next", "raw_next", "expire_sessions_on"):
                for f in (v if isinstance(v, list) else [v]):
                    if not isinstance(f, dict) or \
                            not isinstance(f.get("method"), str):
                        raise ControlError('%s wants {"method": str, ...}' % k)
                    if k == "return_next":
                        if "value" not in f:
                            raise ControlError('return_next wants "value"')
                        m.return_next.setdefault(f["method"], []).append(
                            [f["value"]])
                    elif k == "raw_next":
                        if not isinstance(f.get("body"), str):
                            raise ControlError('raw_next wants "body": str')
                        m.raw_next.setdefault(f["method"], []).append(f["body"])
                    else:
                        m.expire_on.setdefault(f["method"], []).append(True)
            elif k == "snapshot_claims":
                self._snapshot_claims(v)
            else:
                raise ControlError("unknown knob %r" % k)
        m.cond.notify_all()
        self.log("knobs set: %s" % ", ".join(sorted(b)))
        return {"knobs": dict(m.knobs),
                "fail_next": {k: [e for e, _ in v]
                              for k, v in m.fail_next.items()},
                "fail_every": dict(m.fail_every)}

    def _snapshot_claims(self, v):
        """The next snapshot of V["vdi"] tells clients V's virtual_size
        (bytes, sent as a decimal int) and snapshot_time (seconds since
        1970, sent as a compact dateTime), whatever they really are."""
        if not isinstance(v, dict) or not isinstance(v.get("vdi"), str):
            raise ControlError('snapshot_claims wants {"vdi": uuid, ...}')
        vdi = self.m.vdi_by_uuid_ctl(v["vdi"])
        claims = {}
        for f in ("virtual_size", "snapshot_time"):
            if f in v:
                x = _need(v, f, int)
                claims[f] = DateTime(x) if f == "snapshot_time" else x
        if set(v) - {"vdi", "virtual_size", "snapshot_time"} or not claims:
            raise ControlError("snapshot_claims takes virtual_size and/or "
                               "snapshot_time (ints)")
        self.m.snapshot_claims[vdi.rec["uuid"]] = claims

    def op_nbd_override(self, b):
        # "*" stands for every VDI without an override of its own (a
        # benchmark serving snapshots through nbdkit).
        vdi = self.m if b.get("vdi") == "*" else self.m.vdi_by_uuid_ctl(b.get("vdi"))
        if b.get("address") is None:
            vdi.override = None
            return {"override": None}
        ov = {"address": _need(b, "address", str), "port": _need(b, "port", int)}
        for k in ("cert", "exportname", "subject"):
            if b.get(k) is not None:
                ov[k] = _need(b, k, str)
        vdi.override = ov
        self.log("nbd_override set on %s -> %s:%d" % (b.get("vdi"),
                                                      ov["address"], ov["port"]))
        return {"override": ov}

    def op_vdi(self, b):
        m = self.m
        vdi = m.vdi_by_uuid_ctl(b.get("uuid", b.get("vdi")))
        r = {k: _jsonable(v) for k, v in m.record(vdi).items()}
        r["ref"] = vdi.ref
        r["path"] = vdi.path
        r["cbt_parent"] = vdi.cbt_parent
        r["cbt_child"] = vdi.cbt_child
        return r

    def op_vms(self, b):
        out = []
        for ref, vm in self.m.objs["VM"].items():
            r = vm.rec
            out.append({"vm": r["uuid"], "vm_ref": ref, "name": r["name_label"],
                        "power_state": r["power_state"],
                        "is_a_template": r["is_a_template"],
                        "is_a_snapshot": r["is_a_snapshot"],
                        "is_control_domain": r["is_control_domain"],
                        "snapshot_of": r["snapshot_of"],
                        "vbds": list(r["VBDs"]),
                        "vdis": [self.m.objs["VBD"][v].rec["VDI"]
                                 for v in r["VBDs"]
                                 if self.m.objs["VBD"][v].rec["VDI"] != NULL]})
        return {"vms": out}

    def op_vdis(self, b):
        out = []
        for ref, vdi in self.m.objs["VDI"].items():
            r = vdi.rec
            out.append({"vdi": r["uuid"], "ref": ref, "name": r["name_label"],
                        "type": r["type"], "is_a_snapshot": r["is_a_snapshot"],
                        "snapshot_of": r["snapshot_of"]})
        return {"vdis": out}

    def op_stats(self, b):
        return self.m.stats_json()

    def op_reset_stats(self, b):
        self.m.reset_stats()
        return {}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # see xapi.XapiHandler

    def log_message(self, fmt, *args):
        pass

    def _reply(self, code, obj):
        body = json.dumps(obj, default=str).encode()
        self.send_response_only(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        op = self.path.strip("/").split("?")[0]
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ControlError("body must be a JSON object")
            result = self.server.control.run(op, body)
        except (ControlError, XapiError, ValueError, OSError) as e:
            msg = " ".join(e.description) if isinstance(e, XapiError) else str(e)
            self.server.control.log("control %s: error: %s" % (op, msg))
            self._reply(400, {"error": msg})
            return
        self._reply(200, result)


class ControlServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, control):
        self.control = control
        super().__init__(address, _Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
