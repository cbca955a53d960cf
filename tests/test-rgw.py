#!/usr/bin/env python3
"""The test Ceph RGW (tests/lib/rgw.py) is a real S3 endpoint, proven
with a client nobody here wrote: curl's own SigV4 signing.

Bucket create, PUT, GET, ranged GET (206 and the right bytes), HEAD
(length), ListObjectsV2 with a prefix, DELETE (then 404), a create-only
PUT (If-None-Match: *) of an existing key refused with 412 and the
object unchanged, a wrong secret refused, and HTTPS: accepted with the
test CA, refused with another CA before any request is sent.

Exit 0 when everything holds, 1 with a message on the first failure,
77 when Ceph is not installed.
"""
# runs-alone: it starts a Ceph cluster of its own

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))

import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402


def status(r, *a, **kw):
    """HTTP status of a curl request (body discarded)."""
    p = r.curl(*a, "-o", "/dev/null", "-w", "%{http_code}", **kw)
    cb.check(p.returncode == 0, "curl failed: %s" % p.stderr.decode())
    return int(p.stdout)


def main():
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    data = os.urandom(300000)
    with cb.Env("cbtfs-rgw") as env, rgw.Rgw() as r:
        src = env.path("obj")
        with open(src, "wb") as f:
            f.write(data)
        b = "cbtfs-test"
        cb.check(status(r, "PUT", b) == 200, "bucket create")
        cb.check(status(r, "PUT", b + "/dir/a", "--data-binary", "@" + src)
                 == 200, "PUT")
        cb.check(status(r, "PUT", b + "/other", "--data-binary", "x") == 200,
                 "PUT of a second key")

        p = r.curl("GET", b + "/dir/a", check=True)
        cb.check(p.stdout == data, "GET returned other bytes")
        p = r.curl("GET", b + "/dir/a", "-H", "Range: bytes=1000-70999",
                   "-w", "\n%{http_code}", check=True)
        body, code = p.stdout.rsplit(b"\n", 1)
        cb.check(code == b"206", "ranged GET: HTTP %s" % code.decode())
        cb.check(body == data[1000:71000], "ranged GET returned other bytes")

        p = r.curl("HEAD", b + "/dir/a", "-I", check=True)
        m = re.search(rb"(?im)^content-length:\s*(\d+)", p.stdout)
        cb.check(m and int(m.group(1)) == len(data), "HEAD length: %r" % p.stdout)
        cb.check(re.search(rb"(?im)^etag:", p.stdout), "HEAD without ETag")

        p = r.curl("GET", b + "?list-type=2&prefix=dir%2F", check=True)
        keys = re.findall(rb"<Key>([^<]*)</Key>", p.stdout)
        cb.check(keys == [b"dir/a"], "ListObjectsV2 prefix=dir/: %r" % keys)

        # Create-only: the lock primitive issue 16 relies on.
        cb.check(status(r, "PUT", b + "/dir/a", "-H", "If-None-Match: *",
                        "--data-binary", "y") == 412,
                 "create-only PUT of an existing key not refused with 412")
        p = r.curl("GET", b + "/dir/a", check=True)
        cb.check(p.stdout == data, "a refused create-only PUT changed the object")
        cb.check(status(r, "PUT", b + "/new", "-H", "If-None-Match: *",
                        "--data-binary", "y") == 200,
                 "create-only PUT of a new key")

        cb.check(status(r, "DELETE", b + "/dir/a") == 204, "DELETE")
        cb.check(status(r, "GET", b + "/dir/a") == 404, "GET after DELETE")

        cb.check(status(r, "GET", b + "/other", secret="wrong" * 8) == 403,
                 "a wrong secret was not refused")

        # HTTPS: the test CA is trusted, another CA is not (curl fails the
        # handshake, so it sends no request: exit 60, no HTTP status).
        cb.check(status(r, "GET", b + "/other", https=True) == 200,
                 "GET over https with the test CA")
        p = r.curl("GET", b + "/other", "-w", "%{http_code}", https=True,
                   ca_file=r.other_ca_file)
        cb.check(p.returncode == 60 and p.stdout == b"000",
                 "https with another CA not refused: rc %d, %r"
                 % (p.returncode, p.stdout))


if __name__ == "__main__":
    main()
    print("PASS")
