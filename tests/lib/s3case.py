"""Helpers of the object store tests (test-s3-store.py, test-s3-faults.py,
test-s3-lease.py): the run's RGW bucket seen with curl, the environment
that reaches it, and a case runner."""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import cbtfs as cb
import rgw
from cbtfs import check

BUCKET = rgw.TEST_BUCKET


# ---- the bucket, seen with curl ---------------------------------------

def objects(r, prefix):
    """{key: size} of every object under PREFIX/ in BUCKET."""
    out, token = {}, None
    while True:
        q = "%s?list-type=2&prefix=%s" % (
            BUCKET, urllib.parse.quote(prefix + "/", safe=""))
        if token:
            q += "&continuation-token=" + urllib.parse.quote(token, safe="")
        p = r.curl("GET", q, "-f", check=True)
        root = ET.fromstring(p.stdout)
        token = None
        for el in root:
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "Contents":
                f = {c.tag.rsplit("}", 1)[-1]: c.text for c in el}
                out[f["Key"]] = int(f["Size"])
            elif tag == "NextContinuationToken":
                token = el.text
        if not token:
            return out


def get_object(r, key):
    """The bytes of BUCKET/KEY, None if there is no such object."""
    p = r.curl("GET", BUCKET + "/" + key, "-f")
    return p.stdout if p.returncode == 0 else None


def put_object(r, key, data):
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                        "s3obj-%s" % uuid.uuid4().hex)
    with open(path, "wb") as f:
        f.write(data)
    try:
        r.curl("PUT", BUCKET + "/" + key, "-f", "--data-binary", "@" + path,
               check=True)
    finally:
        os.unlink(path)


def delete_object(r, key):
    r.curl("DELETE", BUCKET + "/" + key, "-f", check=True)


def lease_record(r, key):
    """The lease record at BUCKET/KEY as {field: value}, None if there is
    none (FORMAT.md, Leases)."""
    text = get_object(r, key)
    if text is None:
        return None
    return dict(x.split(" ", 1) for x in text.decode().splitlines()
                if " " in x)


def leases(r, prefix):
    """The keys of the store leases under PREFIX: the exclusive lock,
    backups' shares and their disks' leases (not layers' writers)."""
    return sorted(k for k in objects(r, prefix)
                  if k == prefix + "/lock"
                  or k.startswith((prefix + "/shares/",
                                   prefix + "/disklocks/")))


# ---- running cbtfs ------------------------------------------------------

def clean_environ():
    """Ours without any object store setting."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "CBTFS_S3_"))}


def s3env(r, **over):
    """The environment that reaches R over http, with OVER's changes
    (None: unset)."""
    e = clean_environ()
    # A mount's local cache in the run's scratch space, not the
    # machine's /var/cache/cbtfs.
    e.update(AWS_ENDPOINT_URL=r.http_url, AWS_REGION=r.region,
             AWS_ACCESS_KEY_ID=r.access_key,
             AWS_SECRET_ACCESS_KEY=r.secret_key,
             CBTFS_S3_PATH_STYLE="yes", CBTFS_S3_ALLOW_HTTP="yes",
             CBTFS_S3_CACHE=os.path.join(tempfile.gettempdir(),
                                         "s3-store-cache-%d" % os.getpid()))
    for k, v in over.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def one_line(err, *words):
    """ERR (stderr) is one line, holding each of WORDS."""
    lines = [x for x in err.splitlines() if x.strip()]
    check(len(lines) == 1 and all(w in lines[0] for w in words),
          "expected one line naming %s, got: %r" % (" and ".join(words), err))


class T:
    """What every case uses: the scratch env, the stand-in, the run's
    RGW, and every output of every cbtfs run (the secret must be in
    none)."""

    def __init__(self, env, s, r):
        self.env, self.s, self.r = env, s, r
        self.tag = uuid.uuid4().hex[:8]
        self.outputs = []
        self.secrets = [r.secret_key]       # and an own RGW's

    def prefix(self, name):
        return "s3store-%s-%s" % (self.tag, name)

    @staticmethod
    def store(prefix):
        return "s3://%s/%s" % (BUCKET, prefix)

    def run(self, *args, environ, ok=True, timeout=600):
        rc, out, err = self.env.cbtfs(*args, ok=ok, timeout=timeout,
                                      environ=environ)
        self.outputs += [out, err]
        return rc, out, err

    def popen(self, args, environ, name):
        """cbtfs ARGS in the background, its output to a file NAME."""
        log = open(self.env.path(name + ".log"), "w+")
        p = subprocess.Popen([cb.cbtfs_binary()] + [str(a) for a in args],
                             stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=environ)
        p.log = log
        self.env.on_close(lambda: p.poll() is None and p.kill())
        return p

    def finish(self, p, timeout=300):
        """Wait for P; its exit status and output."""
        rc = p.wait(timeout=timeout)
        p.log.seek(0)
        out = p.log.read()
        p.log.close()
        self.outputs.append(out)
        sys.stderr.write(out)
        return rc, out

    def disk(self, vm, size, s=None):
        """A VM VM with one disk of SIZE random bytes: (vdi, guest image,
        backup arguments for it alone)."""
        _, vdi, guest, srv = cb.random_disk(s or self.s, self.env, vm,
                                            vm + "-d", size)
        return vdi, guest, srv + ["--vm", vm]


def points(t, prefix, environ, *args):
    """Every point of every disk in the store in PREFIX (ls --json)."""
    _, out, _ = t.run("ls", t.store(prefix), "--json", *args,
                      environ=environ)
    return [p for d in json.loads(out)["disks"] for p in d["points"]]


def nbd_bytes(s):
    """What the stand-in's NBD server has sent so far."""
    return s.control("stats")["nbd"]["bytes"]


def bytes_under(r, prefix):
    return sum(objects(r, prefix).values())


def wait_bytes(r, prefix, least, proc):
    """Until the objects under PREFIX hold LEAST bytes, while PROC runs."""
    deadline = time.monotonic() + 120
    while bytes_under(r, prefix) < least:
        check(proc.poll() is None, "the backup finished (rc %s) before "
              "it could be interrupted" % proc.returncode)
        check(time.monotonic() < deadline, "no data reached the bucket")
        time.sleep(0.1)         # polling the bucket, which has no signal


def images_are(t, prefix, environ, vdi, guests, name):
    """The points of disk VDI in the store in PREFIX, oldest first, read
    (mounted) as the files GUESTS, the last of which also stands for
    any later."""
    pts = [p["snapshot"] for p in points(t, prefix, environ)]
    check(pts, "no point of %s" % vdi)
    mnt = t.env.path(name)
    os.makedirs(mnt)
    t.run("mount", t.store(prefix), mnt, environ=environ)
    try:
        for k, snap in enumerate(pts):
            img = os.path.join(mnt, "by-uuid", vdi, snap + ".img")
            guest = guests[min(k, len(guests) - 1)]
            check(cb.sha256(img) == cb.sha256(guest),
                  "point %d (%s) is not the disk: blocks %s"
                  % (k, snap, cb.block_diff(img, guest)[:10]))
    finally:
        cb.unmount(mnt)


def run_cases(steps, var):
    """Run the (name, function) STEPS in order, or only those the
    environment variable VAR names (comma-separated), saying how long
    each took."""
    only = os.environ.get(var)
    for name, fn in steps:
        if only and name not in only.split(","):
            continue
        start = time.monotonic()
        fn()
        print("ok %s (%.1f s)" % (name, time.monotonic() - start))
