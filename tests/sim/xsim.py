#!/usr/bin/env python3
"""XenServer stand-in for cbtfs tests: XAPI (XML-RPC over HTTPS, pool master
plus a slave that redirects), xapi-nbd (NBD over TLS) and a plain-HTTP
control interface, all on loopback.  Follows docs/xapi.md, docs/xapi-nbd.md
and docs/vhd-export.md; see README.md.

  xsim.py --state DIR [--user root] [--password secret]
          [--xapi-address 127.0.0.1] [--nbd-address 127.0.0.2]
          [--slave-address 127.0.0.3]

When everything listens it prints one JSON line on stdout (the "ready
line") and keeps running until SIGTERM/SIGINT or until its stdin reaches
EOF, so it dies with the test that spawned it.  Logs go to stderr, one line
per notable event, never a password or a session ref.

Thread model: the main thread starts everything and then waits for the
stop event.  Other threads: XAPI master and slave accept loops plus one
thread per HTTPS connection (xapi.py), the NBD accept loop plus one thread
per NBD connection (nbdserver.py), the control accept loop plus one thread
per request (control.py), and a stdin watcher.  All of them share one
Model (model.py), protected by Model.lock.  Standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import control  # noqa: E402
import export   # noqa: E402
import model    # noqa: E402
import nbdserver  # noqa: E402
import vdi_import  # noqa: E402
import xapi     # noqa: E402

SUBJECT = "xs-sim.example"

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        sys.stderr.write("xsim[%d]: %s\n" % (os.getpid(), msg))
        sys.stderr.flush()


def make_cert(state, ip_names, prefix="", tls_dir=None):
    """Self-signed EC P-256 cert naming SUBJECT and IP_NAMES (not the NBD
    address: XenServer's NBD network is usually not in the host cert), as
    STATE/PREFIXcert.pem and its key; also laid out in STATE/TLS_DIR (if
    given) as nbdkit --tls-certificates and libnbd's set_tls_certificates
    expect, for tests that serve or read with them.  Returns (cert, key,
    that directory or None)."""
    cert = os.path.join(state, prefix + "cert.pem")
    key = os.path.join(state, prefix + "key.pem")
    san = ",".join(["DNS:" + SUBJECT] + ["IP:" + a for a in ip_names])
    old = os.umask(0o077)
    try:
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "3650", "-sha256",
             "-subj", "/CN=" + SUBJECT, "-addext", "subjectAltName=" + san],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
    finally:
        os.umask(old)
    if r.returncode != 0:
        raise SystemExit("xsim: openssl failed: %s" % r.stdout.decode(errors="replace"))
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    if tls_dir is None:
        return cert, key, None
    tls = os.path.join(state, tls_dir)
    os.makedirs(tls, exist_ok=True)
    shutil.copyfile(cert, os.path.join(tls, "ca-cert.pem"))
    shutil.copyfile(cert, os.path.join(tls, "server-cert.pem"))
    shutil.copyfile(key, os.path.join(tls, "server-key.pem"))
    os.chmod(os.path.join(tls, "server-key.pem"), 0o600)
    return cert, key, tls


def tls12_context(cert, key, nbd=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # XenServer speaks TLS 1.2 only, on both XAPI and NBD.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if nbd:
        # xapi-nbd: init_tls_get_ctx ~curve:"secp384r1", ECDHE + AES-GCM.
        ctx.set_ecdh_curve("secp384r1")
        ctx.set_ciphers("ECDHE+AESGCM")
    return ctx


def main(argv=None):
    p = argparse.ArgumentParser(description="XenServer stand-in for tests")
    p.add_argument("--state", required=True)
    p.add_argument("--user", default="root")
    p.add_argument("--password", default="secret")
    p.add_argument("--xapi-address", default="127.0.0.1")
    p.add_argument("--nbd-address", default="127.0.0.2")
    p.add_argument("--slave-address", default="127.0.0.3")
    p.add_argument("--slave-own-cert", action="store_true",
                   help="the slave has a certificate of its own, as each "
                   "host of a real pool does (default: one for both)")
    a = p.parse_args(argv)

    state = os.path.abspath(a.state)
    os.makedirs(state, exist_ok=True)
    ips = list(dict.fromkeys([a.xapi_address] + (
        [] if a.slave_own_cert else [a.slave_address])))
    cert, key, tls_dir = make_cert(state, ips, tls_dir="tls")
    # The same names with another key: what someone on the path to the
    # NBD network could present (knob nbd_impostor; nbdkit in tests).
    imp_cert, imp_key, imp_tls_dir = make_cert(state, ips, "impostor-",
                                               "impostor-tls")
    slave_cert = slave_ctx = None
    if a.slave_own_cert:
        slave_cert, slave_key, _ = make_cert(state, [a.slave_address],
                                             "slave-")
        slave_ctx = tls12_context(slave_cert, slave_key)
    with open(cert) as f:
        cert_pem = f.read()

    m = model.Model(state, a.user, a.password, a.xapi_address, a.nbd_address,
                    cert_pem, SUBJECT, log)
    m.slave_address = a.slave_address
    api = xapi.Api(m, log)
    master, slave = xapi.bind_pair(a.xapi_address, a.slave_address,
                                   tls12_context(cert, key), api, log,
                                   slave_ctx=slave_ctx)
    for srv in (master, slave):
        srv.get_handlers[export.PATH] = export.handler
        srv.put_handlers[vdi_import.PATH] = vdi_import.handler
    nbd = nbdserver.NbdServer(m, a.nbd_address, tls12_context(cert, key, True),
                              log, tls12_context(imp_cert, imp_key, True))
    m.nbd_port = nbd.port
    ctl = control.ControlServer(("127.0.0.1", 0), control.Control(m, nbd, log))

    for srv, name in ((master, "xapi"), (slave, "xapi-slave"), (ctl, "control")):
        threading.Thread(target=srv.serve_forever, name=name, daemon=True).start()
    nbd.start()

    stop = threading.Event()

    def on_signal(signum, _frame):
        log("signal %d: stopping" % signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin():
        # EOF on stdin means the test that started us is gone.
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        log("stdin closed: stopping")
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    port = master.server_address[1]
    ready = {
        "xapi_url": "https://%s:%d" % (a.xapi_address, port),
        "slave_url": "https://%s:%d" % (a.slave_address, port),
        "ca_file": cert,
        "slave_ca_file": slave_cert or cert,
        "control_url": "http://127.0.0.1:%d" % ctl.server_address[1],
        "nbd_address": a.nbd_address,
        "nbd_port": nbd.port,
        "subject": SUBJECT,
        "pid": os.getpid(),
        "tls_dir": tls_dir,
        "impostor_tls_dir": imp_tls_dir,
    }
    log("ready: xapi %s, slave %s, nbd %s:%d, control %s" % (
        ready["xapi_url"], ready["slave_url"], a.nbd_address, nbd.port,
        ready["control_url"]))
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()

    # A timed wait keeps the main thread responsive to signals.
    while not stop.wait(0.5):
        pass
    nbd.stop()
    for srv in (master, slave, ctl):
        srv.socket.close()
    log("stopped")
    sys.stderr.flush()
    # Daemon threads may sit in blocking calls; leave without joining them.
    os._exit(0)


if __name__ == "__main__":
    main()
