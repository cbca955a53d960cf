#!/usr/bin/env python3
"""A real S3 endpoint for the tests: a single-node Ceph RGW.

One monitor, one BlueStore OSD on a sparse file and radosgw (beast) on
loopback, from Debian 12's packages (scripts/install-deps.sh), started
by hand in a private directory as docs/ceph-rgw.md describes (its
settings and pitfalls were verified on this kind of machine).  No
ceph-mgr: S3 does not need it.

    import rgw
    with rgw.Rgw() as r:
        r.http_url, r.https_url          # http://127.0.0.1:P, https://...
        r.ca_file                        # the test CA that signed beast's cert
        r.other_ca_file                  # a CA that signed nothing here
        r.access_key, r.secret_key, r.region
        r.curl("PUT", "bucket")          # a signed request with curl
        r.stop_rgw(); r.start_rgw()      # radosgw alone down, then up again

Only the daemons this object started are ever stopped (by their PIDs,
each checked to name our ceph.conf), and its directory is removed.

tests/run starts one cluster for the whole run (`rgw.py --serve FILE`,
which writes what a test needs to FILE as JSON and runs until
SIGTERM) and names FILE in CBTFS_TEST_RGW; rgw.shared() then gives a
test that cluster (and starts one of its own when there is none):

    with rgw.shared() as r:              # the same attributes as above
        ...
"""

import json
import os
import shutil
import signal
import sys
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

START_TIMEOUT = 120.0    # generous: a start takes 2-4 s; only a hang hits it
STOP_TIMEOUT = 30.0


class RgwError(Exception):
    pass


def have_ceph():
    """True when the daemons and tools are installed."""
    return all(shutil.which(p) for p in
               ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin",
                "ceph-authtool", "monmaptool", "ceph"))


def _free_port():
    # Bound then released: another process could take it meanwhile, which
    # makes a start fail loudly, never pass wrongly.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, timeout=60, check=True):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    if check and r.returncode != 0:
        raise RgwError("%s failed (rc %d): %s" % (
            " ".join(cmd[:3]), r.returncode,
            r.stdout.decode(errors="replace")[-2000:]))
    return r


def make_ca(d, name):
    """A throwaway CA: D/NAME-ca.pem and its key.  Returns (cert, key)."""
    cert = os.path.join(d, name + "-ca.pem")
    key = os.path.join(d, name + "-ca.key")
    _run(["openssl", "req", "-x509", "-newkey", "ec",
          "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", key, "-out", cert, "-days", "3650", "-sha256",
          "-subj", "/CN=cbtfs test CA " + name,
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return cert, key


def make_server_cert(d, ca_cert, ca_key):
    """A certificate for 127.0.0.1 and localhost signed by the CA.
    Returns (cert, key)."""
    key = os.path.join(d, "server.key")
    csr = os.path.join(d, "server.csr")
    cert = os.path.join(d, "server.pem")
    ext = os.path.join(d, "server.ext")
    _run(["openssl", "req", "-new", "-newkey", "ec",
          "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert,
          "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "3650",
          "-sha256", "-extfile", ext])
    return cert, key


CONF = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$cluster-$name.asok
log file = {d}/log/$cluster-$name.log
pid file = {d}/run/$cluster-$name.pid
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$id
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
paxos propose interval = 0.05

[osd]
osd objectstore = bluestore
bluestore block path = {d}/osd/$id/block.img
bluestore block create = true
bluestore block size = 8 GiB
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bdev aio poll ms = 20
osd memory target = 1 GiB
osd crush initial weight = 1
osd op num shards = 2

[client.rgw.{rgw}]
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{http_port} ssl_endpoint=127.0.0.1:{https_port} ssl_certificate={cert} ssl_private_key={key} tcp_nodelay=1
rgw enable lc threads = false
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw dynamic resharding = false
"""


class Rgw:
    """A running single-node cluster with radosgw and one S3 user."""

    region = "default"          # RGW's zonegroup: what SigV4 must name
    rgw_name = "gw"

    def __init__(self, keep=False):
        self.dir = tempfile.mkdtemp(prefix="cbtfs-rgw-")
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.keep = keep
        self.procs = []                 # (name, Popen), in start order
        self.access_key = "CBTFSTESTACCESS" + uuid.uuid4().hex[:5].upper()
        self.secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # ---- start ----

    def _ceph(self, *args, timeout=20, check=True):
        # Every ceph command in timeout: without a mgr some never return.
        return _run(["ceph", "-c", self.conf, "-n", "client.admin",
                     "--connect-timeout", "10"] + list(args),
                    timeout=timeout, check=check)

    def _daemon(self, name, cmd):
        # Appended to: a restarted daemon's output follows the first's.
        log = open(os.path.join(self.dir, "log", name + ".out"), "ab")
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.procs.append((name, p))
        with open(os.path.join(self.dir, "pids"), "a") as f:
            f.write("%s %d\n" % (name, p.pid))
        return p

    def _alive(self, name, p):
        if p.poll() is not None:
            raise RgwError("%s exited (rc %s) while starting\n%s"
                           % (name, p.returncode, self.log_tail(name)))

    def _start(self):
        d = self.dir
        for sub in ("run", "log", "mon", "osd/0", "rgw", "tls"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        tls = os.path.join(d, "tls")
        ca, ca_key = make_ca(tls, "test")
        self.ca_file = ca
        self.other_ca_file, _ = make_ca(tls, "other")
        cert, key = make_server_cert(tls, ca, ca_key)

        self.mon_port = _free_port()
        self.http_port = _free_port()
        self.https_port = _free_port()
        while self.https_port == self.http_port:
            self.https_port = _free_port()
        fsid = str(uuid.uuid4())
        with open(self.conf, "w") as f:
            f.write(CONF.format(fsid=fsid, d=d, mon_port=self.mon_port,
                                rgw=self.rgw_name, http_port=self.http_port,
                                https_port=self.https_port, cert=cert,
                                key=key))
        self.http_url = "http://127.0.0.1:%d" % self.http_port
        self.https_url = "https://127.0.0.1:%d" % self.https_port

        kr = os.path.join(d, "keyring")
        auth = ["ceph-authtool"]
        _run(auth + [kr, "--create-keyring", "--gen-key", "-n", "mon.",
                     "--cap", "mon", "allow *"])
        _run(auth + [kr, "--gen-key", "-n", "client.admin",
                     "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                     "--cap", "mds", "allow *", "--cap", "mgr", "allow *"])
        _run(auth + [kr, "--gen-key", "-n", "osd.0",
                     "--cap", "mon", "allow profile osd",
                     "--cap", "mgr", "allow profile osd",
                     "--cap", "osd", "allow *"])
        _run(auth + [kr, "--gen-key", "-n", "client.rgw." + self.rgw_name,
                     "--cap", "mon", "allow rw", "--cap", "osd", "allow rwx",
                     "--cap", "mgr", "allow rw"])
        monmap = os.path.join(d, "monmap")
        _run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
              "[v2:127.0.0.1:%d]" % self.mon_port, monmap])
        _run(["ceph-mon", "-c", self.conf, "--mkfs", "-i", "a",
              "--monmap", monmap, "--keyring", kr])
        mon = self._daemon("mon", ["ceph-mon", "-c", self.conf, "-i", "a",
                                   "-f"])

        # `ceph osd new` also proves the monitor is up: retried until then.
        osd_uuid = str(uuid.uuid4())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._alive("mon", mon)
            r = self._ceph("osd", "new", osd_uuid, check=False)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RgwError("monitor not answering: %s"
                               % r.stdout.decode(errors="replace")[-500:])
            time.sleep(0.1)     # polling a daemon that has no ready signal
        _run(["ceph-osd", "-c", self.conf, "-i", "0", "--mkfs",
              "--osd-uuid", osd_uuid], timeout=120)
        osd = self._daemon("osd", ["ceph-osd", "-c", self.conf, "-i", "0",
                                   "-f"])
        while True:
            self._alive("osd", osd)
            r = self._ceph("osd", "dump", "-f", "json", check=False)
            if r.returncode == 0:
                try:
                    osds = json.loads(r.stdout).get("osds", [])
                except ValueError:
                    osds = []
                if any(o.get("up") == 1 for o in osds):
                    break
            if time.monotonic() > deadline:
                raise RgwError("OSD not up\n%s" % self.log_tail("osd"))
            time.sleep(0.1)

        self.start_rgw(deadline)
        _run(["radosgw-admin", "-c", self.conf, "-n", "client.admin",
              "user", "create", "--uid=cbtfs", "--display-name=cbtfs test",
              "--access-key=" + self.access_key,
              "--secret-key=" + self.secret_key])

    def start_rgw(self, deadline=None):
        """Start radosgw (again, after stop_rgw: the same command line,
        so the same ports and keys) and return once it answers."""
        if deadline is None:
            deadline = time.monotonic() + START_TIMEOUT
        gw = self._daemon("rgw", ["radosgw", "-c", self.conf,
                                  "-n", "client.rgw." + self.rgw_name, "-f"])
        while True:
            self._alive("rgw", gw)
            try:
                with urllib.request.urlopen(self.http_url + "/", timeout=5):
                    break
            except urllib.error.HTTPError:
                break           # an S3 error answer is an answer
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RgwError("radosgw not answering\n%s"
                               % self.log_tail("rgw"))
            time.sleep(0.1)     # polling a daemon that has no ready signal

    def stop_rgw(self, sig=signal.SIGKILL):
        """Stop radosgw alone (SIG, by the PID we started, if it still
        names our ceph.conf), as a crash would: the monitor and the OSD,
        and so the data, stay.  Only for a cluster of our own."""
        gws = [p for name, p in self.procs
               if name == "rgw" and p.poll() is None and self._ours(p)]
        if not gws:
            raise RgwError("no radosgw of ours is running")
        for p in gws:
            p.send_signal(sig)
            p.wait(timeout=STOP_TIMEOUT)

    # ---- use ----

    def log_tail(self, name, n=30):
        out = []
        for p in (os.path.join(self.dir, "log", name + ".out"),):
            try:
                with open(p, errors="replace") as f:
                    out += f.readlines()[-n:]
            except OSError:
                pass
        return "".join(out)

    def rgw_log(self):
        """radosgw's own log (its request lines included)."""
        try:
            with open(os.path.join(self.dir, "log",
                                   "ceph-client.rgw.%s.log" % self.rgw_name),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def curl(self, method, path, *args, https=False, ca_file=None,
             secret=None, check=False):
        """Run curl with SigV4 on METHOD URL/PATH (plus ARGS).  The keys
        go to curl in a config file on stdin, never in its argv.
        Returns the CompletedProcess (stdout bytes, stderr bytes)."""
        url = (self.https_url if https else self.http_url) + "/" + path
        cmd = ["curl", "-sS", "-K", "-", "-X", method,
               "--aws-sigv4", "aws:amz:%s:s3" % self.region,
               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]
        if https:
            cmd += ["--cacert", ca_file or self.ca_file]
        cmd += list(args) + [url]
        cfg = 'user = "%s:%s"\n' % (self.access_key,
                                    secret if secret else self.secret_key)
        r = subprocess.run(cmd, input=cfg.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if check and r.returncode != 0:
            raise RgwError("curl %s %s: %s" % (method, path,
                                              r.stderr.decode(errors="replace")))
        return r

    def get_many(self, paths, workdir):
        """GET every one of PATHS (BUCKET/KEY) in one curl process, 16 at
        a time (a process per object makes a test reading a whole store
        slow); returns {path: bytes, or None for a 404}."""
        out, cfg = {}, ['user = "%s:%s"\n' % (self.access_key,
                                              self.secret_key)]
        files = {}
        for i, p in enumerate(paths):
            files[p] = os.path.join(workdir, "get-%d" % i)
            cfg.append('url = "%s/%s"\noutput = "%s"\n'
                       % (self.http_url, p, files[p]))
        if not paths:
            return out
        cmd = ["curl", "-sS", "-K", "-", "--parallel", "--parallel-max", "16",
               "--aws-sigv4", "aws:amz:%s:s3" % self.region,
               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
               "-w", "%{http_code} %{filename_effective}\n"]
        r = subprocess.run(cmd, input="".join(cfg).encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=300)
        codes = {}
        for line in r.stdout.decode().splitlines():
            code, _, name = line.partition(" ")
            codes[name] = code
        for p, f in files.items():
            code = codes.get(f)
            if code == "404":
                out[p] = None
            elif code is None or not code.startswith("2"):
                raise RgwError("GET %s: HTTP %s %s" % (
                    p, code, r.stderr.decode(errors="replace")))
            else:
                with open(f, "rb") as fh:
                    out[p] = fh.read()
            if os.path.exists(f):
                os.unlink(f)
        return out

    # ---- stop ----

    def _ours(self, p):
        try:
            with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                return self.conf.encode() in f.read().split(b"\0")
        except OSError:
            return False

    def close(self):
        # Reverse order, each by the PID we started and hold (so it is
        # ours to reap: no zombie left to PID 1), only if it still names
        # our ceph.conf.
        for name, p in reversed(self.procs):
            if p.poll() is None and self._ours(p):
                p.terminate()
                try:
                    p.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The bucket the run's cluster holds the tests' stores in (each store
# under a prefix of its own: cbtfs.Env.store).
TEST_BUCKET = "cbtfs-tests"

# What a test of another process needs of a running cluster.
SHARED_FIELDS = ("dir", "conf", "http_url", "https_url", "ca_file",
                 "other_ca_file", "access_key", "secret_key", "region",
                 "rgw_name")


class Shared(Rgw):
    """The run's cluster (tests/run), described by the JSON file PATH:
    used, never stopped."""

    def __init__(self, path):  # pylint: disable=super-init-not-called
        with open(path) as f:
            state = json.load(f)
        for k in SHARED_FIELDS:
            setattr(self, k, state[k])
        self.procs = []
        self.keep = True

    def close(self):
        pass


def shared():
    """The run's cluster if tests/run started one, else a new one."""
    path = os.environ.get("CBTFS_TEST_RGW")
    if path and os.path.exists(path):
        return Shared(path)
    return Rgw()


def serve(path):
    """Start a cluster, describe it in PATH (written whole, then
    renamed: a reader sees all of it or nothing), run until SIGTERM."""
    r = Rgw()
    try:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        r.curl("PUT", TEST_BUCKET, check=True)
        state = {k: getattr(r, k) for k in SHARED_FIELDS}
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.rename(path + ".tmp", path)
        while True:
            signal.pause()
    finally:
        r.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit("usage: rgw.py --serve STATE-FILE")
