#!/usr/bin/env python3
"""Test-side helpers for the XenServer stand-in (tests/sim/xsim.py).

As a module:

    import sim
    with sim.Sim() as s:                     # starts xsim, waits for ready
        s.info["xapi_url"], s.info["nbd_port"], ...
        vm = s.control("create_vm", name="vm", disks=[{"name": "d", "size": 1 << 20}])
        ctx = s.ssl_context()                # trusts the stand-in's cert
        x = s.xapi()                         # logged-in xmlrpc ServerProxy + session

The stand-in runs with stdin connected to a pipe we hold: it exits when we
close it (Sim.close, or our own death), so no test leaves one behind.  Its
stderr goes to a log file whose tail is shown when something fails.

As a command (for shell tests), see `sim.py --help`:

    sim.py ctl URL OP [JSON]         POST a control op, print the JSON reply
    sim.py xapi READY METHOD [ARG..] log in, call METHOD, print the result
    sim.py get JSONFILE KEY[.KEY..]  print a field of a JSON file
"""

import json
import os
import selectors
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
XSIM = os.path.join(ROOT, "tests", "sim", "xsim.py")
READY_TIMEOUT = 60.0     # generous: only a hung start-up ever hits it


class SimError(Exception):
    pass


class ControlError(SimError):
    """The control interface answered HTTP 400."""


def control(url, op, body=None):
    """POST /OP with BODY (dict) to the control URL; the decoded reply."""
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/" + op, data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", "")
        except ValueError:
            msg = ""
        raise ControlError("control %s: HTTP %d: %s" % (op, e.code, msg)) from None


def ssl_context(ca_file):
    """A client context trusting only the stand-in's certificate."""
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx


class Sim:
    """A running stand-in.  ARGS are extra xsim.py options."""

    def __init__(self, *args, python=None, keep_state=False):
        self.tmp = tempfile.mkdtemp(prefix="cbtfs-sim-")
        self.state = os.path.join(self.tmp, "state")
        self.log_path = os.path.join(self.tmp, "xsim.log")
        self.keep_state = keep_state
        self.proc = None
        self.info = None
        try:
            self._start([python or sys.executable, XSIM, "--state", self.state]
                        + list(args))
        except BaseException:
            self.close()
            raise

    def _start(self, cmd):
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=logf)
        # Block until the ready line (or EOF if it dies); the deadline only
        # guards against a hung start-up.
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(READY_TIMEOUT):
            raise SimError("xsim not ready after %ds\n%s" % (READY_TIMEOUT,
                                                              self.log_tail()))
        sel.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SimError("xsim exited (rc %s) before ready\n%s"
                           % (self.proc.returncode, self.log_tail()))
        self.info = json.loads(line)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def control(self, op, **body):
        return control(self.info["control_url"], op, body)

    def ssl_context(self):
        return ssl_context(self.info["ca_file"])

    def transport(self):
        return xmlrpc.client.SafeTransport(context=self.ssl_context())

    def server_proxy(self, url=None):
        return xmlrpc.client.ServerProxy(url or self.info["xapi_url"],
                                         transport=self.transport())

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.close()      # EOF: xsim exits by itself
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = None
        if not self.keep_state:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- command line (for shell tests) ---------------------------------------

def run_checks(name, body, errors=()):
    """Run BODY(sim) against a fresh stand-in, for a test that prints one
    PASS or FAIL line named NAME.  SimError, OSError and ERRORS are
    failures, shown with the tail of the stand-in's log.  Returns the
    exit status."""
    s = None
    try:
        s = Sim()
        body(s)
    except (SimError, OSError) + tuple(errors) as e:
        print("FAIL %s: %s" % (name, e))
        if s is not None:
            print("--- xsim log tail ---\n" + s.log_tail())
        return 1
    finally:
        if s is not None:
            s.close()
    print("PASS %s" % name)
    return 0


def _xapi_call(ready, method, args):
    with open(ready) as f:
        info = json.load(f)
    user = os.environ.get("XSIM_USER", "root")
    password = os.environ.get("XSIM_PASSWORD", "secret")
    px = xmlrpc.client.ServerProxy(
        info["xapi_url"], transport=xmlrpc.client.SafeTransport(
            context=ssl_context(info["ca_file"])))
    r = px.session.login_with_password(user, password, "1.0", "cbtfs-test")
    if r["Status"] != "Success":
        raise SimError("login: %s" % r["ErrorDescription"])
    # The session stays logged in: an NBD export name embeds it.
    params = [r["Value"]] + [json.loads(a) if a and a[0] in "[{\"" else a
                             for a in args]
    r = getattr(px, method)(*params)
    if r["Status"] != "Success":
        raise SimError("%s: %s" % (method, r["ErrorDescription"]))
    return r["Value"]


def main(argv):
    usage = __doc__.split("As a command")[1]
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("usage:" + usage)
        return 0 if len(argv) >= 2 else 2
    cmd, rest = argv[1], argv[2:]
    try:
        if cmd == "ctl" and len(rest) in (2, 3):
            body = json.loads(rest[2]) if len(rest) == 3 else {}
            out = control(rest[0], rest[1], body)
        elif cmd == "xapi" and len(rest) >= 2:
            out = _xapi_call(rest[0], rest[1], rest[2:])
        elif cmd == "get" and len(rest) == 2:
            with open(rest[0]) as f:
                out = json.load(f)
            for k in rest[1].split("."):
                out = out[int(k)] if isinstance(out, list) else out[k]
        else:
            print("usage:" + usage, file=sys.stderr)
            return 2
    except (SimError, OSError, KeyError, IndexError, ValueError) as e:
        print("sim.py %s: %s" % (cmd, e), file=sys.stderr)
        return 1
    print(out if isinstance(out, str) else json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
