#!/usr/bin/env python3
"""The systemd units `make install` puts in PREFIX/lib/systemd/system,
and the example mount unit, pass `systemd-analyze verify --root=DESTDIR`
(which needs no running systemd): cbtfs-backup@site1.service and
.timer, and mnt-backups.mount copied to the root's /etc/systemd/system.
The root holds this machine's own systemd units (the targets every unit
depends on) and verify checks Documentation= against the installed man
page.  The service runs /etc/cbtfs/site1.conf, nightly with a random
delay, at idle I/O priority, hardened; and verify fails once the binary
the service runs is gone from the root.

No systemd runs as init here, so the service's command stands in for
it: its ExecStart line with %i and its Environment= expanded as
systemd would, every absolute path in it moved into the root (the
installed binary, the store under /srv/cbtfs, /etc/cbtfs/site1.conf,
which the test writes there naming the XenServer stand-in), run with
systemd's bare environment: the backup succeeds and the store holds a
complete point of the VM's disk.  The unit's sandboxing
(ProtectSystem= and the rest) is not applied: verify checks those
settings, systemd enforces them."""
# runs-alone: it runs make on the build under test (make install relinks cbtfs)
import os
import re
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

PREFIX = "/usr/local"
UNITS = PREFIX + "/lib/systemd/system"


def verify(root, *units):
    env = dict(os.environ, MANPATH=root + PREFIX + "/share/man")
    return subprocess.run(["systemd-analyze", "verify", "--root=" + root,
                           *units], capture_output=True, text=True, env=env)


def settings(path):
    """KEY=VALUE lines of a unit file, the last of each key."""
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f
                    if "=" in line and not line.startswith("#"))


def in_root(root, word):
    """WORD with each absolute path in it (a word, or an option's
    =VALUE) moved under ROOT."""
    return re.sub(r"(^|=)/", lambda m: m.group(1) + root + "/", word)


def run_service(env, root, svc, instance):
    """The service's ExecStart for INSTANCE as systemd would run it, its
    paths in ROOT, against a stand-in with one VM: check that the backup
    succeeds and the store has the point."""
    spec = {"%i": instance, "%I": instance, "%%": "%"}

    def expand(text):
        return re.sub(r"%[iI%]", lambda m: spec[m.group(0)], text)

    unit_env = dict(expand(kv).split("=", 1)
                    for kv in shlex.split(svc["Environment"]))
    cmd = [re.sub(r"\$\{(\w+)\}", lambda m: unit_env[m.group(1)], w)
           for w in shlex.split(expand(svc["ExecStart"]))]
    cmd = [in_root(root, w) for w in cmd]
    store = in_root(root, unit_env["CBTFS_STORE"])
    conf = cmd[cmd.index("--config") + 1]
    check(conf == os.path.join(root, "etc/cbtfs", instance + ".conf")
          and os.path.dirname(store) == os.path.join(root, "srv/cbtfs"),
          "the service's paths: %r" % cmd)
    with sim.Sim() as s:
        _, vdi, _, srv = cb.random_disk(s, env, "web", "root", 4 << 20)
        os.makedirs(os.path.dirname(conf))
        os.makedirs(os.path.dirname(store))     # the unit does not make it
        pw = os.path.join(os.path.dirname(conf), instance + ".pw")
        shutil.copy(srv[srv.index("--password-file") + 1], pw)
        with open(conf, "w") as f:
            f.write("[cbtfs]\nserver=%s\npassword-file=%s\nca-file=%s\n"
                    % (s.info["xapi_url"], pw, s.info["ca_file"]))
        # systemd's environment for a system service: PATH and the unit's.
        environ = dict(unit_env, PATH="/usr/local/sbin:/usr/local/bin:"
                       "/usr/sbin:/usr/bin:/sbin:/bin")
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, env=environ, timeout=600)
        check(p.returncode == 0, "%s exited %d: %s" % (" ".join(cmd),
                                                       p.returncode, p.stderr))
        disks = env.ls_json(store)["disks"]
        check(len(disks) == 1 and disks[0]["uuid"] == vdi
              and len(disks[0]["points"]) == 1
              and disks[0]["points"][0]["complete"],
              "the store after the service ran: %s" % disks)


def main():
    if shutil.which("systemd-analyze") is None:
        cb.skip("no systemd-analyze (Debian's systemd package)")
    with cb.Env() as env:
        root = env.path("root")
        cb.make("install", "DESTDIR=" + root, "PREFIX=" + PREFIX)
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
        run_service(env, root, svc, "site1")
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
