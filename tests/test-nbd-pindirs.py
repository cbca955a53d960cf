#!/usr/bin/env python3
"""End to end: what a killed cbtfs leaves in /tmp goes with the next one.

To pin the host's NBD certificate, a connection writes it into a
private directory /tmp/cbtfs-nbd-PID-XXXXXX for as long as it takes to
connect.  A process killed meanwhile leaves its directory; the next
cbtfs that connects removes those of this user's processes that are
gone, and nothing else:
- a directory named for a process that has exited goes;
- one named as an older cbtfs named them (no pid) goes once it is over
  an hour old, and stays while younger;
- one named for a process alive (this test) stays, as does one of a
  gone process that another user owns;
- the backup leaves none of its own.
"""
import os
import random
import string
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402


def pin(name, uid=None):
    if name == "cbtfs-nbd-":            # as mkdtemp(3) names it
        d = "/tmp/cbtfs-nbd-" + "".join(random.choice(
            string.ascii_letters + string.digits) for _ in range(6))
        os.mkdir(d, 0o700)
    else:
        d = tempfile.mkdtemp(prefix=name, dir="/tmp")
    with open(os.path.join(d, "ca-cert.pem"), "w") as f:
        f.write("not a certificate\n")
    if uid is not None:
        os.chown(d, uid, uid)
    return d


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (chown)")
    gone = subprocess.Popen(["true"])
    gone.wait()
    made = []
    try:
        dead = pin("cbtfs-nbd-%d-" % gone.pid)
        alive = pin("cbtfs-nbd-%d-" % os.getpid())
        old = pin("cbtfs-nbd-")
        os.utime(old, (0, os.stat(old).st_mtime - 7200))
        young = pin("cbtfs-nbd-")
        others = pin("cbtfs-nbd-%d-" % gone.pid, uid=65534)
        made = [dead, alive, old, young, others]
        with sim.Sim() as s, cb.Env() as env:
            vm, _, _, srv = cb.random_disk(s, env, "web", "root", 1 << 20)
            p = subprocess.Popen([cb.cbtfs_binary(), "backup",
                                  env.path("store"), *srv, "-q"],
                                 stdin=subprocess.DEVNULL)
            check(p.wait(timeout=300) == 0, "the backup failed")
        check(not os.path.exists(dead), "%s of a gone process stayed" % dead)
        check(not os.path.exists(old), "%s, two hours old, stayed" % old)
        for d in (alive, young, others):
            check(os.path.isdir(d), "%s was removed" % d)
        own = [n for n in os.listdir("/tmp")
               if n.startswith("cbtfs-nbd-%d-" % p.pid)]
        check(not own, "the backup left %s" % own)
    finally:
        for d in made:
            if os.path.isdir(d):
                os.unlink(os.path.join(d, "ca-cert.pem"))
                os.rmdir(d)
    print("ok")


if __name__ == "__main__":
    main()
