#!/usr/bin/env python3
"""The store contract (tests/unit/test-store-backend.c) on the object
store backend: the unit test built with STORE_S3, run against the run's
Ceph RGW (or one of its own) in fresh prefixes of a bucket, with the
keys in its environment, never its argv.  Then the same run with the
wrong secret must fail, naming the refused credentials, and the
contract again in an encrypted store (CBTFS_ENCRYPT_KEY_FILE, a fresh
key), whose marker must then say so.

STORE_BACKEND_S3 overrides the binary's path (e.g. an ASan build's).
Exit 0 when everything holds, 1 on failure, 77 without Ceph.
"""

import os
import subprocess
import sys
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))

import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402

BINARY = os.environ.get("STORE_BACKEND_S3") or os.path.join(
    os.path.dirname(HERE), "build", "tests", "test-store-backend-s3")


def keys(r, prefix):
    """The keys under PREFIX/ in the bucket (the first 1000 are enough:
    every store of the contract has a marker and a root among them)."""
    q = "%s?list-type=2&prefix=%s" % (
        rgw.TEST_BUCKET, urllib.parse.quote(prefix + "/", safe=""))
    root = ET.fromstring(r.curl("GET", q, "-f", check=True).stdout)
    return [el.text for el in root.iter() if el.tag.endswith("}Key")]


def run(r, secret, key_file=None, prefix=None):
    env = dict(os.environ, AWS_ENDPOINT_URL=r.http_url, AWS_REGION=r.region,
               AWS_ACCESS_KEY_ID=r.access_key, AWS_SECRET_ACCESS_KEY=secret,
               CBTFS_S3_PATH_STYLE="yes", CBTFS_S3_ALLOW_HTTP="yes",
               CBTFS_TEST_STORE="s3://%s/%s" % (
                   rgw.TEST_BUCKET, prefix or "unit-%s" % uuid.uuid4()))
    env.pop("CBTFS_ENCRYPT_KEY_FILE", None)
    if key_file:
        env["CBTFS_ENCRYPT_KEY_FILE"] = key_file
    p = subprocess.run([BINARY], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=600)
    return p.returncode, p.stdout.decode(errors="replace")


def main():
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    cb.check(os.access(BINARY, os.X_OK), "%s not built" % BINARY)
    with rgw.shared() as r:
        if not isinstance(r, rgw.Shared):
            r.curl("PUT", rgw.TEST_BUCKET, check=True)
        rc, out = run(r, r.secret_key)
        cb.check(rc == 0, "the store contract fails on the object store "
                 "backend (rc %d):\n%s" % (rc, out))
        rc, out = run(r, "not" + r.secret_key)
        cb.check(rc != 0 and "credentials refused" in out,
                 "a wrong secret was not refused (rc %d):\n%s" % (rc, out))
        cb.check(r.secret_key not in out, "the secret in the output")
        with cb.Env() as env:
            key = env.path("key")
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            os.chmod(key, 0o600)
            prefix = "unit-enc-%s" % uuid.uuid4()
            rc, out = run(r, r.secret_key, key, prefix)
            cb.check(rc == 0, "the store contract fails on an encrypted "
                     "object store (rc %d):\n%s" % (rc, out))
            found = keys(r, prefix)
            markers = [k for k in found if k.endswith("/cbtfs-store")]
            roots = [k for k in found if "/roots/" in k]
            cb.check(markers and roots, "no store in %s: %r"
                     % (prefix, found[:5]))
            for k in markers:
                text = r.curl("GET", rgw.TEST_BUCKET + "/" + k, "-f",
                              check=True).stdout
                cb.check(b"\nencrypted aes-256-gcm " in text,
                         "%s does not say it is encrypted: %r" % (k, text))
            for k in roots:
                body = r.curl("GET", rgw.TEST_BUCKET + "/" + k, "-f",
                              check=True).stdout
                cb.check(body.startswith(b"CBE1")
                         and b"cbtfs-root" not in body,
                         "%s is not sealed: %r" % (k, body[:40]))


if __name__ == "__main__":
    main()
