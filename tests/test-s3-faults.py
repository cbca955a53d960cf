#!/usr/bin/env python3
"""End to end: what an object store's server can refuse, and what a
killed run leaves in it, against a Ceph RGW (the run's), each case in
a prefix (or a bucket) of its own:

1. clock skew: cbtfs under faketime two hours ahead (and half an hour
   behind) is refused by RGW (403 RequestTimeTooSkewed); the backup
   fails at once (no retries), exit 3, one line saying how far the
   clocks differ; the store is unchanged, and the next backup with the
   right time completes and verifies;
2. a full bucket: a bucket quota that a backup fills mid-way (RGW: 403
   QuotaExceeded) fails it within seconds with one line "the object
   store is full"; the point before it still reads as its disk; once the
   quota is lifted, verify passes and the next backup completes;
3. a wrong region: RGW checks the signature with the region the request
   names, whatever its zonegroup: a backup signed for another region
   works (the test says so, and fails if RGW starts refusing it);
4. multipart uploads left behind: one started under the store's prefix
   (by s3probe, as a killed run would leave it) is aborted by the next
   backup once older than CBTFS_S3_ABANDONED_AGE; one under another
   prefix is not;
5. a backup whose packs go up as multipart uploads (CBTFS_S3_PART_SIZE
   lowered to 5 MiB) reads back as its disk and verifies.

S3FAULTS_CASES=skew,full (say) runs only those cases.
Exit 0 when everything holds, 1 on failure, 77 without Ceph or faketime.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

import s3case as st  # noqa: E402

MiB = 1 << 20
BUCKET = rgw.TEST_BUCKET
PROBE = os.environ.get("S3PROBE") or os.path.join(
    os.path.dirname(HERE), "build", "tests", "s3probe")


def faketime_env(environ, offset):
    """ENVIRON with libfaketime preloaded, the wall clock moved by
    OFFSET ("+2h"); the monotonic clock left alone (lock waits, rate
    limits)."""
    p = subprocess.run(["faketime", "-f", "+0", "sh", "-c",
                        "echo $LD_PRELOAD"], capture_output=True, text=True)
    lib = p.stdout.strip()
    check(p.returncode == 0 and lib, "faketime gives no library: %r" % p)
    return dict(environ, LD_PRELOAD=lib, FAKETIME=offset,
                DONT_FAKE_MONOTONIC="1", FAKETIME_DONT_RESET="1")


def objects_in(r, bucket, prefix):
    """{key: size} under PREFIX/ in BUCKET."""
    p = r.curl("GET", "%s?list-type=2&prefix=%s" % (
        bucket, urllib.parse.quote(prefix + "/", safe="")), "-f", check=True)
    text = p.stdout.decode()
    check("<IsTruncated>false" in text, "more than a page under %s" % prefix)
    return {k: int(n) for k, n in re.findall(
        r"<Key>([^<]*)</Key>.*?<Size>(\d+)</Size>", text)}


def images_are(t, store, environ, vdi, guests, name):
    """As test-s3-store's images_are, for a STORE in any bucket, of
    its complete points."""
    _, out, _ = t.run("ls", store, "--json", environ=environ)
    pts = [p["snapshot"] for d in json.loads(out)["disks"]
           for p in d["points"] if p["complete"]]
    check(pts, "no point of %s" % vdi)
    mnt = t.env.path(name)
    os.makedirs(mnt)
    t.run("mount", store, mnt, environ=environ)
    try:
        for k, snap in enumerate(pts):
            img = os.path.join(mnt, "by-uuid", vdi, snap + ".img")
            guest = guests[min(k, len(guests) - 1)]
            check(cb.sha256(img) == cb.sha256(guest),
                  "point %d (%s) is not the disk" % (k, snap))
    finally:
        cb.unmount(mnt)


def error_lines(err):
    return [x for x in err.splitlines() if x.strip()]


# ---- 1. clock skew ----------------------------------------------------

def case_skew(t):
    r = t.r
    environ = st.s3env(r)
    vdi, guest, srv = t.disk("skewvm", 8 * MiB)
    pre = t.prefix("skew")
    store = t.store(pre)
    t.run("backup", store, "-q", *srv, environ=environ)
    before = st.objects(r, pre)

    for offset, word in (("+2h", "ahead of"), ("-30m", "behind")):
        start = time.monotonic()
        rc, _, err = t.run("backup", store, "-q", *srv, ok=False,
                           environ=faketime_env(environ, offset))
        took = time.monotonic() - start
        check(rc == 3, "a clock %s: exit %d, not 3: %s" % (offset, rc, err))
        st.one_line(err, "clock", word, "RequestTimeTooSkewed")
        # The client tries a transient failure again for about 8 s: a
        # refusal for skew is not one.
        check(took < 5, "a clock %s: the backup took %.1f s to fail"
              % (offset, took))
        h = 2 if offset == "+2h" else 0
        m = 0 if offset == "+2h" else 30
        check(re.search(r"\b%d h %02d min" % (h, m), err),
              "the message does not say the clocks are %s apart: %s"
              % (offset, err))
        check(st.objects(r, pre) == before, "a backup refused for skew "
              "changed the store")

    t.run("backup", store, "-q", *srv, environ=environ)
    pts = st.points(t, pre, environ)
    check(len(pts) == 2 and all(p["complete"] for p in pts),
          "after the skew: %s" % pts)
    t.run("verify", store, *srv[:-2], environ=environ)
    st.images_are(t, pre, environ, vdi, [guest], "m-skew")


# ---- 2. a full bucket ---------------------------------------------------

def admin(r, *args):
    p = subprocess.run(["radosgw-admin", "-c", r.conf, "-n", "client.admin"]
                       + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and "could not" not in p.stderr,
          "radosgw-admin %s: %s%s" % (" ".join(args), p.stdout, p.stderr))
    return p.stdout


def case_full(t):
    r = t.r
    bucket = "cbtfs-full-%s" % t.tag
    r.curl("PUT", bucket, "-f", check=True)
    environ = st.s3env(r)
    store = "s3://%s/full" % bucket
    vdi, guest, srv = t.disk("fullvm", 32 * MiB)
    try:
        t.run("backup", store, "-q", *srv, environ=environ)
        old = t.env.path("fullvm-old.img")
        cb.copy_sparse(guest, old)
        used = sum(objects_in(r, bucket, "full").values())
        # Room for one more pack and a little: the backup of a disk
        # changed whole needs four.
        admin(r, "quota", "set", "--quota-scope=bucket", "--bucket=" + bucket,
              "--max-size=%d" % (used + 12 * MiB))
        admin(r, "quota", "enable", "--quota-scope=bucket",
              "--bucket=" + bucket)
        cb.write_at(guest, 0, os.urandom(32 * MiB))
        t.s.control("write_file", vdi=vdi, path=guest)
        start = time.monotonic()
        # Packs in two parts each: the refused one's upload is aborted.
        rc, _, err = t.run("backup", store, "-q", *srv, ok=False,
                           environ=dict(environ, CBTFS_S3_PART_SIZE="5M"))
        took = time.monotonic() - start
        print("full: the backup failed after %.1f s (exit %d)" % (took, rc))
        check(rc != 0, "a backup into a full bucket succeeded")
        lines = error_lines(err)
        errors = [x for x in lines if "warning:" not in x]
        check(len(errors) == 1 and "the object store is full" in errors[0]
              and "QuotaExceeded" in errors[0],
              "expected one error naming the full store: %r" % err)
        check(all("full" in x for x in lines if "warning:" in x),
              "warnings not about the full store: %s" % err)
        check(took < 30, "a full bucket took %.1f s to fail the backup"
              % took)
        check(uploads(r, bucket, "full/") == [],
              "a refused multipart upload was not aborted: %s"
              % uploads(r, bucket, "full/"))
        # What was there reads as it was, quota or not.
        _, out, _ = t.run("ls", store, "--json", environ=environ)
        pts = [p["complete"] for d in json.loads(out)["disks"]
               for p in d["points"]]
        check(pts[:1] == [True] and len(pts) <= 2,
              "after the full bucket: %s" % out)
        images_are(t, store, environ, vdi, [old], "m-full")
    finally:
        admin(r, "quota", "disable", "--quota-scope=bucket",
              "--bucket=" + bucket)

    t.run("verify", store, *srv[:-2], environ=environ)
    t.run("backup", store, "-q", "--lock-wait", "0", *srv, environ=environ)
    t.run("verify", store, *srv[:-2], environ=environ)
    images_are(t, store, environ, vdi, [old, guest], "m-full2")


# ---- 3. a wrong region ----------------------------------------------------

def case_region(t):
    r = t.r
    environ = st.s3env(r, AWS_REGION="eu-west-7")
    _, _, srv = t.disk("regionvm", 4 * MiB)
    pre = t.prefix("region")
    rc, _, err = t.run("backup", t.store(pre), "-q", *srv, ok=False,
                       environ=environ)
    check(rc == 0, "RGW (zonegroup %s) refused a backup signed for "
          "eu-west-7 (exit %d): %s; README says it accepts any region"
          % (r.region, rc, err))
    check(len(st.points(t, pre, environ)) == 1, "no point made")


# ---- 4. multipart uploads left behind --------------------------------------

def uploads(r, bucket, prefix):
    """The keys of the multipart uploads under PREFIX in BUCKET."""
    p = r.curl("GET", "%s?prefix=%s&uploads=" % (
        bucket, urllib.parse.quote(prefix, safe="")), "-f", check=True)
    return re.findall(r"<Key>([^<]*)</Key>", p.stdout.decode())


def probe(r, *args):
    env = dict(os.environ, S3_ENDPOINT=r.http_url, S3_REGION=r.region,
               S3_BUCKET=BUCKET, S3_ACCESS_KEY=r.access_key,
               S3_SECRET_KEY=r.secret_key)
    p = subprocess.run([PROBE] + list(args), env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "s3probe %s: %s%s" % (" ".join(args), p.stdout,
                                                  p.stderr))
    return p.stdout


def case_abandoned(t):
    r = t.r
    environ = st.s3env(r)
    _, _, srv = t.disk("leftvm", 4 * MiB)
    pre = t.prefix("left")
    other = t.prefix("left-other")
    t.run("backup", t.store(pre), "-q", *srv, environ=environ)
    mine = pre + "/packs/x/killed"
    probe(r, "start-upload", mine)
    probe(r, "start-upload", other + "/k")
    check(uploads(r, BUCKET, pre + "/") == [mine],
          "the upload left behind is not listed: %s"
          % uploads(r, BUCKET, pre + "/"))

    # Younger than the default bound (an hour): kept.
    t.run("backup", t.store(pre), "-q", *srv, environ=environ)
    check(uploads(r, BUCKET, pre + "/") == [mine],
          "an upload younger than an hour was aborted")
    # RGW's clock counts whole seconds: older than 1 s once 2 s passed.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        time.sleep(0.1)     # waiting for time itself to pass
    t.run("backup", t.store(pre), "-q", *srv,
          environ=dict(environ, CBTFS_S3_ABANDONED_AGE="1"))
    check(uploads(r, BUCKET, pre + "/") == [],
          "the upload left behind stayed: %s" % uploads(r, BUCKET, pre + "/"))
    check(uploads(r, BUCKET, other + "/") == [other + "/k"],
          "an upload under another prefix was aborted")
    probe(r, "abort-uploads", other + "/")


# ---- 5. packs as multipart uploads -----------------------------------------

def case_multipart(t):
    r = t.r
    # Packs are 8 MiB: with 5 MiB parts each goes up in two.
    environ = st.s3env(r, CBTFS_S3_PART_SIZE="5M")
    vdi, guest, srv = t.disk("mpvm", 24 * MiB)
    pre = t.prefix("multipart")
    t.run("backup", t.store(pre), "-q", *srv, environ=environ)
    t.run("verify", t.store(pre), *srv[:-2], environ=environ)
    st.images_are(t, pre, environ, vdi, [guest], "m-mp")
    big = [k for k, size in st.objects(r, pre).items() if size > 5 * MiB]
    check(big, "no object above 5 MiB was put")
    for k in big:
        p = r.curl("HEAD", BUCKET + "/" + k, "-I", "-f", check=True)
        check(re.search(rb'(?i)etag: "[0-9a-f]{32}-2"', p.stdout),
              "%s did not go up in two parts: %s" % (k, p.stdout))
    check(uploads(r, BUCKET, pre + "/") == [],
          "multipart uploads stayed after the backup")


def main():
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    if not shutil.which("faketime"):
        cb.skip("faketime is not installed")
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    check(os.access(PROBE, os.X_OK), "%s not built" % PROBE)
    with rgw.shared() as r, sim.Sim() as s, cb.Env() as env:
        if not isinstance(r, rgw.Shared):
            r.curl("PUT", BUCKET, check=True)
        t = st.T(env, s, r)
        t.tag = "f" + uuid.uuid4().hex[:8]
        steps = [("skew", lambda: case_skew(t)),
                 ("full", lambda: case_full(t)),
                 ("region", lambda: case_region(t)),
                 ("abandoned", lambda: case_abandoned(t)),
                 ("multipart", lambda: case_multipart(t))]
        st.run_cases(steps, "S3FAULTS_CASES")
        for out in t.outputs:
            check(r.secret_key not in out, "a secret in cbtfs's output")
    print("ok")


if __name__ == "__main__":
    main()
