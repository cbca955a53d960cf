#!/usr/bin/env python3
"""s3/ (the S3 client module) against a real Ceph RGW: starts one
(tests/lib/rgw.py), makes an empty bucket with curl, and runs
build/tests/s3probe (tests/s3/s3probe.c), which checks every operation,
listing across pages, ranged reads, create-only, multi-object delete,
wrong credentials, a missing bucket, https with the right CA and with
another (refused before the request reaches the server), and plain
http refused unless allowed.
The secret reaches the probe in its environment, never its argv.

Then, from RGW's own request log: the put the probe made with the
untrusted CA never arrived.

S3PROBE overrides the probe's path (e.g. an ASan build's).
Exit 0 when everything holds, 1 on failure, 77 without Ceph.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))

import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402

PROBE = os.environ.get("S3PROBE") or os.path.join(
    os.path.dirname(HERE), "build", "tests", "s3probe")


def main():
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    cb.check(os.access(PROBE, os.X_OK), "%s not built (make %s)"
             % (PROBE, "build/tests/s3probe"))
    with rgw.shared() as r:
        bucket = "cbtfs-probe"
        p = r.curl("PUT", bucket, "-o", "/dev/null", "-w", "%{http_code}")
        cb.check(p.stdout == b"200", "bucket create: %r" % p.stdout)
        env = dict(os.environ, S3_ENDPOINT=r.http_url,
                   S3_HTTPS_ENDPOINT=r.https_url, S3_CA=r.ca_file,
                   S3_OTHER_CA=r.other_ca_file, S3_REGION=r.region,
                   S3_BUCKET=bucket, S3_ACCESS_KEY=r.access_key,
                   S3_SECRET_KEY=r.secret_key)
        p = subprocess.run([PROBE], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=600)
        out = p.stdout.decode(errors="replace")
        cb.check(p.returncode == 0, "s3probe failed (rc %d):\n%s"
                 % (p.returncode, out))
        cb.check(r.secret_key not in out, "the secret in the probe's output")
        log = r.rgw_log()
        cb.check('"HEAD /%s/never-sent ' % bucket in log,
                 "RGW's log lacks the probe's HEAD of never-sent")
        cb.check('"PUT /%s/never-sent ' % bucket not in log,
                 "a request made with an untrusted certificate reached RGW")


if __name__ == "__main__":
    main()
    print("PASS")
