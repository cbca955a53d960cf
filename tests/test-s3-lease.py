#!/usr/bin/env python3
"""End to end: an object store's leases expire unless renewed, and a
holder that lost one stops (FORMAT.md, "Leases").

Against a Ceph RGW, each case in a fresh prefix of a bucket, every cbtfs
with CBTFS_S3_LEASE_SECONDS=3:

1. expired: a store lock put by "another host" (ttl 3 s: a prune
   there) refuses a backup at once, naming that host and until when it
   holds unless renewed; the next backup waits until the server says it
   is older than 3 s, says so and succeeds beside it (backups never take
   the exclusive lock), and a prune then takes it over.  A record
   without a ttl (an older cbtfs) is refused with the object to delete.
2. live: a backup slowed to run for many times the ttl keeps its disk's
   lease: a second backup of the same VM, whose clock is 10 minutes
   ahead (faketime), waits more than twice the ttl and fails naming the
   holder, while the lease's Last-Modified moves on; a backup of another
   VM (--no-copy) meanwhile succeeds; the first completes and verifies.
3. lost: a backup stopped (SIGSTOP) for longer than the ttl loses its
   disk's lease to a second backup of the same VM; continued (SIGCONT)
   while that one still runs, it fails with "lost the lease on",
   deletes nothing of the other's, which completes the stopped one's
   point and its own, and the store verifies.

Exit 0 when everything holds, 1 on failure, 77 without Ceph.
"""
import email.utils
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402
from s3case import get_object, leases, put_object, run_cases  # noqa: E402

MiB = 1 << 20
BUCKET = rgw.TEST_BUCKET
TTL = 3


# ---- the bucket, seen with curl -----------------------------------------

def record(r, key):
    """The lease KEY's record as {field: value}, None without one."""
    text = get_object(r, key)
    if text is None:
        return None
    return dict(x.split(" ", 1) for x in text.decode().splitlines() if " " in x)


def last_modified(r, key):
    """KEY's Last-Modified (unix seconds, the server's clock)."""
    p = r.curl("HEAD", BUCKET + "/" + key, "-I", "-f", check=True)
    for line in p.stdout.decode().splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "last-modified":
            return email.utils.parsedate_to_datetime(value.strip()).timestamp()
    check(False, "no Last-Modified for %s" % key)
    return None


# ---- running cbtfs ---------------------------------------------------------

def s3env(r):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("AWS_", "CBTFS_S3_"))}
    e.update(AWS_ENDPOINT_URL=r.http_url, AWS_REGION=r.region,
             AWS_ACCESS_KEY_ID=r.access_key,
             AWS_SECRET_ACCESS_KEY=r.secret_key,
             CBTFS_S3_PATH_STYLE="yes", CBTFS_S3_ALLOW_HTTP="yes",
             CBTFS_S3_LEASE_SECONDS=str(TTL))
    return e


def one_line(err, *words):
    lines = [x for x in err.splitlines() if x.strip()]
    check(len(lines) == 1 and all(w in lines[0] for w in words),
          "expected one line naming %s, got: %r" % (" and ".join(words), err))
    return lines[0]


class T:
    def __init__(self, env, s, r):
        self.env, self.s, self.r = env, s, r
        self.environ = s3env(r)
        self.tag = uuid.uuid4().hex[:8]

    def prefix(self, name):
        return "s3lease-%s-%s" % (self.tag, name)

    @staticmethod
    def store(prefix):
        return "s3://%s/%s" % (BUCKET, prefix)

    def run(self, *args, ok=True, wrap=()):
        cmd = list(wrap) + [cb.cbtfs_binary()] + [str(a) for a in args]
        environ = self.environ
        if wrap:
            # faketime preloads itself: an ASan build's runtime then
            # cannot come first, as it would insist.
            asan = environ.get("ASAN_OPTIONS")
            environ = dict(environ, ASAN_OPTIONS=(asan + ":" if asan else "")
                           + "verify_asan_link_order=0")
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=600, env=environ)
        sys.stderr.write(p.stderr)
        check(not ok or p.returncode == 0, "%s exited %d: %s"
              % (" ".join(args[:2]), p.returncode, p.stderr.strip()))
        return p.returncode, p.stderr

    def popen(self, args, name):
        log = open(self.env.path(name + ".log"), "w+")
        p = subprocess.Popen([cb.cbtfs_binary()] + [str(a) for a in args],
                             stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=self.environ)
        p.log = log

        def stop():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        self.env.on_close(stop)
        return p

    @staticmethod
    def finish(p, timeout=300):
        rc = p.wait(timeout=timeout)
        p.log.seek(0)
        out = p.log.read()
        p.log.close()
        sys.stderr.write(out)
        return rc, out

    def disk(self, vm, size):
        """A VM VM with one disk of SIZE random bytes: (vdi, server
        arguments, the same with --vm VM)."""
        _, vdi, _, srv = cb.random_disk(self.s, self.env, vm, vm + "-d", size)
        return vdi, srv, srv + ["--vm", vm]

    def points(self, prefix):
        import json
        _, out = self.run_out("ls", self.store(prefix), "--json")
        return {d["uuid"]: d["points"] for d in json.loads(out)["disks"]}

    def run_out(self, *args):
        p = subprocess.run([cb.cbtfs_binary()] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=600, env=self.environ)
        check(p.returncode == 0, "%s: %s" % (" ".join(args[:2]), p.stderr))
        return p.returncode, p.stdout


def wait_holder(r, key, pid, proc, seconds=60):
    """Until the lease KEY names PID, while PROC runs."""
    deadline = time.monotonic() + seconds
    while True:
        rec = record(r, key)
        if rec and rec.get("pid") == str(pid):
            return rec
        check(proc.poll() is None, "pid %d ended (rc %s) before it held %s"
              % (pid, proc.returncode, key))
        check(time.monotonic() < deadline, "pid %d never held %s: %s"
              % (pid, key, rec))
        time.sleep(0.1)         # polling the bucket, which has no signal


def until_time(line):
    """The HH:MM:SS UTC of "until HH:MM:SS UTC unless renewed", as the
    seconds from now it names (within the day)."""
    m = re.search(r"until (\d\d):(\d\d):(\d\d) UTC unless renewed", line)
    check(m, "no expiry in: %s" % line)
    t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    now = time.time() % 86400
    return (t - now + 43200) % 86400 - 43200


# ---- 1. a foreign host's lease expires ------------------------------------

def case_expired(t):
    r = t.r
    pre = t.prefix("expired")
    store = t.store(pre)
    vdi, _, srv = t.disk("expvm", 2 * MiB)
    t.run("backup", store, "-q", *srv)

    put_object(r, pre + "/lock", (
        "pid 4242\ncommand backup\nsince %d\nhost elsewhere.example\n"
        "boot %s\nttl %d\n" % (time.time(), uuid.uuid4(), TTL)).encode())
    put_at = time.monotonic()
    rc, err = t.run("backup", store, "--lock-wait", "0", "-q", *srv,
                    ok=False)
    check(time.monotonic() - put_at < TTL,
          "too slow to see the lease before it expired")
    check(rc == 1, "a fresh foreign lease: exit %d, not 1: %s" % (rc, err))
    line = one_line(err, "pid 4242 on elsewhere.example", "unless renewed")
    left = until_time(line)
    check(0 <= left <= TTL + 2, "the lease expires in %d s, not within "
          "%d s: %s" % (left, TTL + 2, line))
    check(record(r, pre + "/lock").get("host") == "elsewhere.example",
          "the refused backup replaced the lease")

    # Waited for, by the server's clock: gone on beside once more than
    # TTL seconds passed since the PUT, no sooner.
    rc, err = t.run("backup", store, "--lock-wait", "60", "-v", *srv)
    took = time.monotonic() - put_at
    print("the backup went on beside the expired lock %.1f s after its "
          "PUT" % took)
    check(took > TTL, "gone on after %.1f s, before its %d s ran out"
          % (took, TTL))
    check("has not renewed its lease for more than %d s" % TTL in err,
          "going on was not said: %s" % err)
    check(record(r, pre + "/lock").get("host") == "elsewhere.example",
          "the backup took the exclusive lock")
    pts = t.points(pre)[vdi]
    check(len(pts) == 2 and all(p["complete"] for p in pts),
          "after the expired lock: %s" % pts)
    rc, err = t.run("prune", store, "--keep-last", "2", "--lock-wait", "0",
                    "-v")
    check("has not renewed its lease for more than %d s" % TTL in err
          and "taking its lease over" in err,
          "the takeover was not said: %s" % err)
    check(record(r, pre + "/lock") is None, "the lock stayed after the "
          "prune")

    # A record without a ttl never expires: the message says what to do.
    put_object(r, pre + "/lock", (
        "pid 4242\ncommand backup\nsince %d\nhost elsewhere.example\n"
        % time.time()).encode())
    rc, err = t.run("backup", store, "--lock-wait", str(TTL + 2), "-q", *srv,
                    ok=False)
    check(rc == 1, "a lease without a ttl: exit %d, not 1: %s" % (rc, err))
    one_line(err, "on elsewhere.example", "does not expire",
             "delete s3://%s/%s/lock" % (BUCKET, pre))
    r.curl("DELETE", BUCKET + "/" + pre + "/lock", "-f", check=True)


# ---- 2. a live holder keeps its lease ------------------------------------

def case_live(t):
    r, s = t.r, t.s
    pre = t.prefix("live")
    store = t.store(pre)
    vdi, _, srv = t.disk("livevm", 24 * MiB)
    vdi2, _, srv2 = t.disk("livevm2", 1 * MiB)
    s.control("set", nbd_read_delay_ms=800)
    a = t.popen(["backup", store, "--nbd-connections", "1", "-q"] + srv,
                "live-a")
    start = time.monotonic()
    key = pre + "/disklocks/" + vdi
    wait_holder(r, key, a.pid, a)
    taken = last_modified(r, key)

    # Another VM's disk is another lease: backed up beside the first
    # (--no-copy: the stand-in's NBD reads are slow for every VM).
    t.run("backup", store, "--lock-wait", "0", "--no-copy", "-q", *srv2)
    check(a.poll() is None, "the slow backup ended (rc %s) before the "
          "other VM's was done" % a.returncode)
    check(len(t.points(pre).get(vdi2, [])) == 1, "the other VM's backup "
          "beside the slow one made no point")

    # A waiting host whose clock is 10 minutes ahead (within SigV4's
    # 15) still judges the lease by the server's clock.
    wrap = []
    if os.environ.get("TSAN_OPTIONS"):
        # libfaketime wraps pthread_cond_timedwait (the share's renewer
        # waits in it) past ThreadSanitizer's interceptor, which then
        # sees the renewer keep the lease's mutex: a false report.
        print("ThreadSanitizer: the waiting host's clock is right")
    elif shutil.which("faketime"):
        wrap = ["faketime", "-f", "+600s"]
    else:
        print("no faketime: the waiting host's clock is right")
    wait = 2 * TTL + 3
    rc, err = t.run("backup", store, "--lock-wait", str(wait), "-q", *srv,
                    ok=False, wrap=wrap)
    check(a.poll() is None, "the slow backup ended (rc %s) after %.1f s, "
          "before the wait did" % (a.returncode, time.monotonic() - start))
    check(rc == 1, "a live lease: exit %d, not 1: %s" % (rc, err))
    one_line(err, "the disk %s of the store" % vdi,
             "cbtfs backup (pid %d" % a.pid, "unless renewed",
             "gave up after %d s" % wait)
    renewed = last_modified(r, key)
    check(renewed - taken >= wait - TTL, "the lease's Last-Modified moved "
          "from %d by %d s only in %d s" % (taken, renewed - taken, wait))

    rc, out = t.finish(a)
    s.control("set", nbd_read_delay_ms=0)
    print("the slow backup took %.1f s (%.1f ttl)"
          % (time.monotonic() - start, (time.monotonic() - start) / TTL))
    check(rc == 0, "the live holder failed (%d): %s" % (rc, out))
    check(leases(r, pre) == [], "leases stayed: %s" % leases(r, pre))
    pts = t.points(pre)[vdi]
    check(len(pts) == 1 and pts[0]["complete"], "the slow backup: %s" % pts)
    t.run("verify", store, *srv[:-2])


# ---- 3. a stopped holder loses its lease ---------------------------------

def case_lost(t):
    r, s = t.r, t.s
    pre = t.prefix("lost")
    store = t.store(pre)
    vdi, _, srv = t.disk("lostvm", 24 * MiB)
    s.control("set", nbd_read_delay_ms=300)
    a = t.popen(["backup", store, "--nbd-connections", "1", "-q"] + srv,
                "lost-a")
    key = pre + "/disklocks/" + vdi
    wait_holder(r, key, a.pid, a)
    # Some of it committed: its layer exists, with blocks.
    deadline = time.monotonic() + 60
    while not t.points(pre).get(vdi):
        check(a.poll() is None, "the backup ended (rc %s) before it could "
              "be stopped" % a.returncode)
        check(time.monotonic() < deadline, "the backup made no point")
        time.sleep(0.2)
    a.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()

    b = t.popen(["backup", store, "--nbd-connections", "1", "--lock-wait",
                 "60"] + srv, "lost-b")
    wait_holder(r, key, b.pid, b)
    print("the stopped backup's lease was taken over %.1f s after SIGSTOP"
          % (time.monotonic() - stopped))
    a.send_signal(signal.SIGCONT)
    check(b.poll() is None, "the second backup ended before the first "
          "went on: nothing to test")
    rc, out = t.finish(a)
    check(rc == 1, "a holder that lost its lease: exit %d, not 1: %s"
          % (rc, out))
    check("lost the lease on" in out, "not said: %s" % out)
    check(b.poll() is None, "the second backup ended before the first "
          "had failed: nothing to test")
    rc, out = t.finish(b)
    s.control("set", nbd_read_delay_ms=0)
    check(rc == 0, "the backup that took the lease over failed (%d): %s"
          % (rc, out))
    check(leases(r, pre) == [], "leases stayed: %s" % leases(r, pre))
    # The stopped backup's writer lease expired with it: the second
    # took it over and finished that point before its own.
    pts = t.points(pre).get(vdi, [])
    check(len(pts) == 2 and all(p["complete"] for p in pts),
          "after the second backup: %s" % pts)
    t.run("verify", store, *srv[:-2])


def main():
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    with rgw.shared() as r, sim.Sim() as s, cb.Env() as env:
        if not isinstance(r, rgw.Shared):
            r.curl("PUT", BUCKET, check=True)
        t = T(env, s, r)
        steps = [("expired", lambda: case_expired(t)),
                 ("live", lambda: case_live(t)),
                 ("lost", lambda: case_lost(t))]
        run_cases(steps, "S3LEASE_CASES")
    print("ok")


if __name__ == "__main__":
    main()
