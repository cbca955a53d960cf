#!/usr/bin/env python3
"""End to end: what only a store in an object store can get wrong.

Against a Ceph RGW (the run's, and for the last case one of the test's
own, whose radosgw it stops), each case in a fresh prefix of a bucket:

1. credentials: a wrong secret is exit 3 naming the refusal and makes
   nothing; a missing bucket, a malformed s3:// name and no access key
   are exit 2;
2. TLS: https with --s3-ca-file of the right CA works; another CA is
   exit 3 "not trusted" and no request reaches RGW; plain http without
   --s3-allow-http is exit 2 and sends nothing;
3. secrets: a --s3-secret-file others may read is exit 2, a 0600 one
   works; the secret is in no process's argv while a mount is up nor in
   any output; the configuration file's s3-* keys work alone, the
   environment wins over them and the command line over the environment;
4. a backup killed mid-copy leaves its share of the store lock and its
   disk's lease naming its dead pid, which the next backup takes over
   at once; it completes, every image is the disk, verify passes, no
   lease and no unreferenced object stays;
5. a store lock held on another host refuses a backup (exit 1, naming
   the host) until deleted; two backups of two pools into one new
   prefix at once both succeed;
6. radosgw killed and started again mid-backup: the backup completes;
   stopped for good: it fails naming the connection, and the next one,
   once RGW is back, completes.

S3STORE_CASES=crash,leases (say) runs only those cases, by the names
they print.  Only P/cbtfs-store and the leases (P/lock, P/shares/,
P/disklocks/ and the record's format) are looked at below a prefix: the
rest of the layout may change.
Exit 0 when everything holds, 1 on failure, 77 without Ceph.
"""
# runs-alone: it stops and restarts the run's RGW
import json
import os
import signal
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402
from s3case import (  # noqa: E402
    objects, put_object, delete_object, clean_environ, s3env,
    one_line, T, points, nbd_bytes, bytes_under, wait_bytes, images_are,
    run_cases, lease_record, leases)

MiB = 1 << 20
BUCKET = rgw.TEST_BUCKET
PACK = 8 * MiB          # some data reached the bucket: a pack's worth


# ---- 1. credentials ----------------------------------------------------

def case_credentials(t, srv):
    r = t.r
    pre = t.prefix("creds")
    wrong = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    rc, _, err = t.run("backup", t.store(pre), *srv, "-q", ok=False,
                       environ=s3env(r, AWS_SECRET_ACCESS_KEY=wrong))
    check(rc == 3, "a wrong secret: exit %d, not 3: %s" % (rc, err))
    one_line(err, "refused")
    check(objects(r, pre) == {}, "a refused backup made objects: %s"
          % objects(r, pre))

    rc, _, err = t.run("backup", "s3://cbtfs-no-such-%s/p" % t.tag, *srv,
                       "-q", ok=False, environ=s3env(r))
    check(rc == 2, "a missing bucket: exit %d, not 2: %s" % (rc, err))
    one_line(err, "no such bucket")

    for bad in ("s3://b/../x", "s3://%s/../x" % BUCKET,
                "s3://%s/a//b" % BUCKET):
        rc, _, err = t.run("backup", bad, *srv, "-q", ok=False,
                           environ=s3env(r))
        check(rc == 2, "%s: exit %d, not 2: %s" % (bad, rc, err))

    rc, _, err = t.run("backup", t.store(pre), *srv, "-q", ok=False,
                       environ=s3env(r, AWS_ACCESS_KEY_ID=None))
    check(rc == 2, "no access key: exit %d, not 2: %s" % (rc, err))
    check(objects(r, pre) == {}, "a refused backup made objects")


# ---- 2. TLS -------------------------------------------------------------

def case_tls(t, srv):
    r = t.r
    https = s3env(r, AWS_ENDPOINT_URL=r.https_url, CBTFS_S3_ALLOW_HTTP=None)
    good, other, plain = (t.prefix("tls-good"), t.prefix("tls-other"),
                          t.prefix("plain-http"))
    t.run("backup", t.store(good), "--s3-ca-file", r.ca_file, *srv, "-q",
          environ=https)
    pts = points(t, good, https, "--s3-ca-file", r.ca_file)
    check(len(pts) == 1 and pts[0]["complete"], "over https: %s" % pts)

    rc, _, err = t.run("backup", t.store(other), "--s3-ca-file",
                       r.other_ca_file, *srv, "-q", ok=False, environ=https)
    check(rc == 3, "another CA: exit %d, not 3: %s" % (rc, err))
    one_line(err, "not trusted")

    rc, _, err = t.run("backup", t.store(plain), *srv, "-q", ok=False,
                       environ=s3env(r, CBTFS_S3_ALLOW_HTTP=None))
    check(rc == 2, "plain http not allowed: exit %d, not 2: %s" % (rc, err))
    one_line(err, "http")

    # A request made after both, once in RGW's log, says that what they
    # had sent would be there by now.
    marker = t.prefix("marker")
    t.run("ls", t.store(marker), ok=False, environ=s3env(r))
    check(cb.wait_for(lambda: marker in r.rgw_log(), 30),
          "RGW's log never showed a request (for %s)" % marker)
    log = r.rgw_log()
    check(good in log, "RGW's log lacks the https backup's requests")
    check(other not in log, "a request with an untrusted certificate "
          "reached RGW")
    check(plain not in log, "a request went out over plain http")



# ---- 3. secrets ---------------------------------------------------------

def secret_file(t, name, text):
    p = t.env.path(name)
    with open(p, "w") as f:
        f.write(text + "\n")
    os.chmod(p, 0o600)
    return p


def config_file(t, name, **keys):
    p = t.env.path(name)
    with open(p, "w") as f:
        f.write("[cbtfs]\n")
        for k, v in keys.items():
            f.write("%s = %s\n" % (k.replace("_", "-"), v))
    return p


def argv_with(needle):
    """The PIDs whose command line holds NEEDLE (bytes)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if needle in f.read():
                    out.append(int(pid))
        except OSError:
            pass                # gone meanwhile
    return out


def case_secrets(t, srv, vdi, guest):
    r = t.r
    pre = t.prefix("secret")
    store = t.store(pre)
    sf = secret_file(t, "s3.secret", r.secret_key)
    nokey = s3env(r, AWS_SECRET_ACCESS_KEY=None)

    os.chmod(sf, 0o644)
    rc, _, err = t.run("backup", store, "--s3-secret-file", sf, *srv, "-q",
                       ok=False, environ=nokey)
    check(rc == 2, "a secret file others may read: exit %d, not 2: %s"
          % (rc, err))
    one_line(err, sf)
    check(objects(r, pre) == {}, "a refused backup made objects")
    os.chmod(sf, 0o600)
    t.run("backup", store, "--s3-secret-file", sf, *srv, "-q", environ=nokey)

    # While a mount (a daemon of its own) is up, nobody's argv holds the
    # secret, and the mount reads the disk.
    mnt = t.env.path("m-secret")
    os.makedirs(mnt)
    t.run("mount", store, mnt, "--s3-secret-file", sf, environ=nokey)
    try:
        check(argv_with(mnt.encode() + b"\0"), "no process shows the mount "
              "in its argv: the look at /proc saw nothing")
        check(not argv_with(r.secret_key.encode()),
              "the secret is in a process's argv: %s"
              % argv_with(r.secret_key.encode()))
        img = os.path.join(mnt, "by-uuid", vdi)
        imgs = [x for x in os.listdir(img) if x.endswith(".img")]
        check(len(imgs) == 1 and cb.sha256(os.path.join(img, imgs[0]))
              == cb.sha256(guest), "the mount does not read the disk")
    finally:
        cb.unmount(mnt)

    # The configuration file alone.
    bare = clean_environ()
    cfg = config_file(t, "s3.conf", s3_endpoint=r.http_url,
                      s3_region=r.region, s3_access_key=r.access_key,
                      s3_secret_file=sf, s3_path_style="yes",
                      s3_allow_http="yes")
    pts = points(t, pre, bare, "--config", cfg)
    check(len(pts) == 1, "with the configuration file alone: %s" % pts)

    # The environment wins over the file, the command line over both.
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        nowhere = "http://127.0.0.1:%d" % so.getsockname()[1]
    wrong = secret_file(t, "wrong.secret", uuid.uuid4().hex)
    cfg = config_file(t, "wrong.conf", s3_endpoint=nowhere,
                      s3_region=r.region, s3_access_key=r.access_key,
                      s3_secret_file=wrong, s3_path_style="yes",
                      s3_allow_http="yes")
    pts = points(t, pre, dict(bare, AWS_ENDPOINT_URL=r.http_url,
                              AWS_SECRET_ACCESS_KEY=r.secret_key),
                 "--config", cfg)
    check(len(pts) == 1, "the environment over the file: %s" % pts)
    pts = points(t, pre, s3env(r, AWS_ENDPOINT_URL=nowhere,
                               AWS_SECRET_ACCESS_KEY=uuid.uuid4().hex),
                 "--s3-endpoint", r.http_url, "--s3-secret-file", sf)
    check(len(pts) == 1, "the command line over the environment: %s" % pts)


# ---- 4. a backup killed mid-copy ----------------------------------------

def lease(r, prefix):
    """The store lock's record as {field: value}, None if there is none."""
    return lease_record(r, prefix + "/lock")


def no_rubbish(t, r, prefix, environ):
    """The objects under PREFIX are what the points hold, and little
    more (the marker, the notes, the manifests)."""
    held = sum(p["stored_bytes"] for p in points(t, prefix, environ))
    total = bytes_under(r, prefix)
    print("%s: %d bytes in objects, %d held by points" % (prefix, total, held))
    check(total <= held + MiB, "%d bytes under %s, the points hold %d: "
          "unreferenced objects stayed" % (total, prefix, held))


def case_crash(t, environ):
    r, s = t.r, t.s
    vdi, guest, srv = t.disk("crashvm", 64 * MiB)
    pre = t.prefix("crash")
    store = t.store(pre)
    s.control("set", nbd_read_delay_ms=100)
    p = t.popen(["backup", store, "--nbd-connections", "1", "-q"] + srv,
                environ, "crash")
    wait_bytes(r, pre, PACK, p)
    p.send_signal(signal.SIGKILL)
    t.finish(p)
    s.control("set", nbd_read_delay_ms=0)

    pts = points(t, pre, environ)
    check(len(pts) == 1 and not pts[0]["complete"],
          "after the kill: %s" % pts)
    # Its share of the store lock and its disk's lease stay.
    left = leases(r, pre)
    check(len(left) == 2 and left[0] == pre + "/disklocks/" + vdi
          and left[1].startswith(pre + "/shares/"),
          "the killed backup's leases: %s" % left)
    for key in left:
        held = lease_record(r, key)
        check(held.get("pid") == str(p.pid) and held.get("command")
              == "backup" and held.get("host") == socket.gethostname(),
              "%s does not name the dead backup (pid %d): %s"
              % (key, p.pid, held))

    # --lock-wait 0: the leases are taken over, not waited for.
    t.run("backup", store, "--lock-wait", "0", "-q", *srv, environ=environ)
    check(leases(r, pre) == [], "leases stayed after the backup: %s"
          % leases(r, pre))
    pts = points(t, pre, environ)
    check(len(pts) == 2 and all(x["complete"] for x in pts),
          "after the resumed backup: %s" % pts)
    images_are(t, pre, environ, vdi, [guest], "m-crash")
    t.run("verify", store, *srv[:-2], environ=environ)
    no_rubbish(t, r, pre, environ)


# ---- 5. leases ------------------------------------------------------------

def case_leases(t, environ, srv):
    r = t.r
    pre = t.prefix("lease")
    store = t.store(pre)
    t.run("backup", store, "-q", *srv, environ=environ)
    # A live-looking holder on another host: never taken over.
    put_object(r, pre + "/lock", (
        "pid %d\ncommand backup\nsince %d\nhost elsewhere.example\n"
        "boot %s\n" % (os.getpid(), time.time(), uuid.uuid4())).encode())
    rc, _, err = t.run("backup", store, "--lock-wait", "1", "-q", *srv,
                       ok=False, environ=environ)
    check(rc == 1, "a lease held elsewhere: exit %d, not 1: %s" % (rc, err))
    one_line(err, "on elsewhere.example")
    check(lease(r, pre).get("host") == "elsewhere.example",
          "the other host's lease was replaced")
    delete_object(r, pre + "/lock")
    t.run("backup", store, "-q", *srv, environ=environ)
    check(len(points(t, pre, environ)) == 2, "the backup after the lease "
          "went made no point")

    # Two pools' hosts back up into one new prefix at once.
    pre = t.prefix("two")
    store = t.store(pre)
    with sim.Sim() as s2:
        vdis = []
        procs = []
        for k, stand_in in enumerate((t.s, s2)):
            vdi, _, srv2 = t.disk("pool%d" % k, 16 * MiB, s=stand_in)
            stand_in.control("set", nbd_read_delay_ms=20)
            vdis.append(vdi)
            procs.append((["backup", store, "--lock-wait", "120", "-q"]
                          + srv2))
        procs = [t.popen(a, environ, "two-%d" % k)
                 for k, a in enumerate(procs)]
        results = [t.finish(p) for p in procs]
        for stand_in in (t.s, s2):
            stand_in.control("set", nbd_read_delay_ms=0)
    for rc, out in results:
        check(rc == 0, "one of two backups at once failed (%d): %s"
              % (rc, out))
    _, out, _ = t.run("ls", store, "--json", environ=environ)
    got = {d["uuid"]: d["points"] for d in json.loads(out)["disks"]}
    for vdi in vdis:
        check(len(got.get(vdi, [])) == 1 and got[vdi][0]["complete"],
              "disk %s after two backups at once: %s" % (vdi, got))
    check(leases(r, pre) == [], "leases stayed after both backups: %s"
          % leases(r, pre))


# ---- 6. radosgw going away ------------------------------------------------

def case_rgw_restart(t):
    s = t.s
    with rgw.Rgw() as own:
        own.curl("PUT", BUCKET, check=True)
        t.secrets.append(own.secret_key)
        environ = s3env(own)
        vdi, guest, srv = t.disk("gwvm", 48 * MiB)
        pre = t.prefix("restart")
        store = t.store(pre)

        # Killed and started again within the client's ~8 s of retries.
        s.control("set", nbd_read_delay_ms=100)
        p = t.popen(["backup", store, "--nbd-connections", "1", "-q"] + srv,
                    environ, "restart")
        wait_bytes(own, pre, PACK, p)
        read = nbd_bytes(s)
        own.stop_rgw(signal.SIGKILL)
        down = time.monotonic()
        # Down until the backup has read a pack's worth more (so it has
        # tried to put one meanwhile), or for 2 s if a put it is trying
        # again holds it up; radosgw's start adds a second or two: within
        # the client's 8 s of retries.
        cb.wait_for(lambda: nbd_bytes(s) >= read + PACK
                    or p.poll() is not None, 2)
        if p.poll() is not None:
            check(False, "the backup ended (rc %s) %.1f s after radosgw "
                  "went: %s" % (p.returncode, time.monotonic() - down,
                                t.finish(p)[1]))
        up = time.monotonic()
        own.start_rgw()
        gap = time.monotonic() - down
        print("radosgw was down for %.1f s (its start took %.1f s); the "
              "backup read %d MiB meanwhile" % (
                  gap, time.monotonic() - up, (nbd_bytes(s) - read) // MiB))
        rc, out = t.finish(p)
        s.control("set", nbd_read_delay_ms=0)
        check(rc == 0, "radosgw down for %.1f s failed the backup (%d): %s"
              % (gap, rc, out))
        t.run("verify", store, *srv[:-2], environ=environ)
        images_are(t, pre, environ, vdi, [guest], "m-restart")

        # Stopped for good: the backup gives up, naming the connection.
        # Two packs' worth changed: each request after the first costs
        # the client's 8 s of retries.
        old = t.env.path("gwvm-old.img")
        cb.copy_sparse(guest, old)
        cb.write_at(guest, 0, os.urandom(2 * PACK))
        s.control("write_file", vdi=vdi, path=guest)
        before = bytes_under(own, pre)
        s.control("set", nbd_read_delay_ms=100)
        p = t.popen(["backup", store, "--nbd-connections", "1", "-q"] + srv,
                    environ, "stopped")
        wait_bytes(own, pre, before + PACK, p)
        own.stop_rgw(signal.SIGKILL)
        down = time.monotonic()
        rc, out = t.finish(p)
        print("radosgw gone: the backup gave up after %.1f s"
              % (time.monotonic() - down))
        s.control("set", nbd_read_delay_ms=0)
        check(rc != 0, "the backup succeeded with radosgw gone")
        # One error; what it could not do after (let the leases go,
        # count what the point holds) are warnings, each naming the same
        # outage.
        lines = [x for x in out.splitlines() if x.strip()]
        one_line("\n".join(x for x in lines if "warning:" not in x),
                 "cannot connect")
        check(all("cannot connect" in x for x in lines if "warning:" in x),
              "warnings not about the outage: %s" % out)

        own.start_rgw()
        t.run("backup", store, "--lock-wait", "0", "-q", *srv,
              environ=environ)
        t.run("verify", store, *srv[:-2], environ=environ)
        images_are(t, pre, environ, vdi, [old, guest], "m-stopped")
        no_rubbish(t, own, pre, environ)


def main():
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with rgw.shared() as r, sim.Sim() as s, cb.Env() as env:
        if not isinstance(r, rgw.Shared):
            r.curl("PUT", BUCKET, check=True)
        t = T(env, s, r)
        vdi, guest, srv = t.disk("small", 4 * MiB)
        steps = [("credentials", lambda: case_credentials(t, srv)),
                 ("tls", lambda: case_tls(t, srv)),
                 ("secrets", lambda: case_secrets(t, srv, vdi, guest)),
                 ("crash", lambda: case_crash(t, s3env(r))),
                 ("leases", lambda: case_leases(t, s3env(r), srv)),
                 ("rgw restart", lambda: case_rgw_restart(t))]
        run_cases(steps, "S3STORE_CASES")
        for out in t.outputs:
            for secret in t.secrets:
                check(secret not in out, "a secret in cbtfs's output")
    print("ok")


if __name__ == "__main__":
    main()
