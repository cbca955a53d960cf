#!/usr/bin/env python3
"""The systemd units `make install` puts in PREFIX/lib/systemd/system,
and the example mount unit, pass `systemd-analyze verify --root=DESTDIR`
(which needs no running systemd): cbtfs-backup@site1.service and
.timer, and mnt-backups.mount copied to the root's /etc/systemd/system.
The root holds this machine's own systemd units (the targets every unit
depends on) and verify checks Documentation= against the installed man
page.  The service runs /etc/cbtfs/site1.conf, nightly with a random
delay, at idle I/O priority, hardened; and verify fails once the binary
the service runs is gone from the root."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
from cbtfs import check  # noqa: E402

PREFIX = "/usr/local"
UNITS = PREFIX + "/lib/systemd/system"


def make(*args):
    build = os.path.dirname(cb.cbtfs_binary())
    if os.path.basename(build) != "build":     # ./cbtfs: the default BUILD
        build = os.path.join(cb.TOP, "build")
    p = subprocess.run(["make", "-C", cb.TOP, "BUILD=" + build, *args],
                       capture_output=True, text=True)
    check(p.returncode == 0, "make %s: %s%s" % (" ".join(args), p.stdout,
                                               p.stderr))


def verify(root, *units):
    env = dict(os.environ, MANPATH=root + PREFIX + "/share/man")
    return subprocess.run(["systemd-analyze", "verify", "--root=" + root,
                           *units], capture_output=True, text=True, env=env)


def settings(path):
    """KEY=VALUE lines of a unit file, the last of each key."""
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f
                    if "=" in line and not line.startswith("#"))


def main():
    if shutil.which("systemd-analyze") is None:
        cb.skip("no systemd-analyze (Debian's systemd package)")
    with cb.Env() as env:
        root = env.path("root")
        make("install", "DESTDIR=" + root, "PREFIX=" + PREFIX)
        shutil.copytree("/usr/lib/systemd/system",
                        os.path.join(root, "usr/lib/systemd/system"),
                        symlinks=True)
        etc = os.path.join(root, "etc/systemd/system")
        os.makedirs(etc)
        shutil.copy(os.path.join(root, PREFIX[1:],
                                 "share/doc/cbtfs/examples/mnt-backups.mount"), etc)

        units = ("cbtfs-backup@site1.service", "cbtfs-backup@site1.timer",
                 "mnt-backups.mount")
        p = verify(root, *units)
        check(p.returncode == 0 and p.stderr == "",
              "verify: %d %r" % (p.returncode, p.stderr))

        svc = settings(os.path.join(root, UNITS[1:], "cbtfs-backup@.service"))
        check(svc["ExecStart"] == PREFIX + "/bin/cbtfs backup ${CBTFS_STORE} "
              "--config /etc/cbtfs/%i.conf", "ExecStart=%s" % svc["ExecStart"])
        for k, v in (("Type", "oneshot"), ("IOSchedulingClass", "idle"),
                     ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                     ("PrivateTmp", "yes"), ("ReadWritePaths", "-/srv/cbtfs"),
                     ("Environment", "CBTFS_STORE=/srv/cbtfs/%i")):
            check(svc.get(k) == v, "service: %s=%r, expected %r" % (k, svc.get(k), v))
        check(int(svc["Nice"]) > 0, "service: Nice=%s" % svc["Nice"])
        tmr = settings(os.path.join(root, UNITS[1:], "cbtfs-backup@.timer"))
        for k, v in (("Persistent", "true"), ("WantedBy", "timers.target")):
            check(tmr.get(k) == v, "timer: %s=%r" % (k, tmr.get(k)))
        check("OnCalendar" in tmr and "RandomizedDelaySec" in tmr,
              "timer: %r" % tmr)

        # The binary the service runs, gone: verify says so.
        os.remove(os.path.join(root, PREFIX[1:], "bin/cbtfs"))
        p = verify(root, units[0])
        check(p.returncode != 0 and PREFIX + "/bin/cbtfs" in p.stderr,
              "verify without the binary: %d %r" % (p.returncode, p.stderr))
        # A mount unit whose name is not its mount point: refused.
        os.rename(os.path.join(etc, "mnt-backups.mount"),
                  os.path.join(etc, "mnt-other.mount"))
        p = verify(root, "mnt-other.mount")
        check(p.returncode != 0 and "Where=" in p.stderr,
              "verify of a misnamed mount unit: %d %r" % (p.returncode, p.stderr))
    print("ok")


if __name__ == "__main__":
    main()
