#!/usr/bin/env python3
"""mount.cbtfs, mount(8)'s helper (`make install` puts it in /sbin):

- called as mount(8) calls it (SPEC DIR -o OPTIONS), with the options
  mount(8) and systemd act on (rw, which mount(8) passes when no ro is
  given, nofail, _netdev, x-systemd.*...) and FUSE's nosuid/nodev: the
  store is mounted read-only, as fuse.cbtfs, with nosuid and nodev, and
  shows the point the backup made; umount(8) unmounts it;
- -f (fake) mounts nothing; a store that is not one, an unknown FUSE
  option (libfuse's line, then cbtfs's), config= without a value and -N
  fail with one line, nonzero, and nothing mounted;
- mount(8) itself with a temporary fstab (`mount -T FSTAB DIR`), and
  `mount -t cbtfs`, with the helper copied to /sbin for the while (not
  when a mount.cbtfs is there already, as on a machine where cbtfs is
  installed: that part is then skipped); with config=FILE when cbtfs
  mount takes --config;
- against a stand-in cbtfs that prints its arguments: the options map to
  cbtfs mount's long options (config= to --config, server=, user=,
  password-file=, ca-file=, timeout=) and the rest go to FUSE's -o; the
  exit status is mount(8)'s (cbtfs's 2 is 1, others 32).
"""
# runs-alone: it runs make on the build under test (make install relinks cbtfs)
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SBIN_HELPER = "/sbin/mount.cbtfs"


def run(*cmd):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def mount_entry(mnt):
    """(type, options) of MNT in /proc/self/mounts, or None."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == mnt:
                return fields[2], fields[3].split(",")
    return None


def check_mounted(mnt, guest):
    entry = mount_entry(mnt)
    check(entry is not None, "%s is not mounted" % mnt)
    check(entry[0] == "fuse.cbtfs" and "ro" in entry[1],
          "%s is mounted as %r" % (mnt, entry))
    image = os.path.join(mnt, "by-vm", "web", "root", "latest")
    check(cb.sha256(image) == cb.sha256(guest), "%s differs from the guest" % image)
    return entry[1]


def check_umount(mnt):
    rc, _, err = run("umount", mnt)
    check(rc == 0 and mount_entry(mnt) is None, "umount %s: %d %r" % (mnt, rc, err))


def check_fails(helper, mnt, args, status, words, lines=1):
    """The helper fails with STATUS and LINES lines (libfuse has its own
    word on a bad option before cbtfs's) that say WORDS."""
    rc, out, err = run(helper, *args)
    check(rc == status and out == "" and len(err.splitlines()) == lines
          and words in err and mount_entry(mnt) is None,
          "mount.cbtfs %s: %d %r %r" % (" ".join(args), rc, out, err))


def direct(env, helper, store, mnt, guest):
    """The helper called as mount(8) calls it."""
    rc, out, err = run(helper, store, mnt, "-o", "rw,nofail,_netdev,noauto,"
                       "x-systemd.automount,defaults,comment=x,auto")
    env.on_close(cb.unmount, mnt)
    check(rc == 0 and out == "" and err == "", "mount.cbtfs: %d %r" % (rc, err))
    check_mounted(mnt, guest)
    try:
        open(os.path.join(mnt, "new"), "w")
        check(False, "%s took a new file" % mnt)
    except OSError:
        pass
    check_umount(mnt)
    rc, _, err = run(helper, store, mnt, "-o", "ro,nosuid,nodev", "-n", "-v")
    check(rc == 0, "mount.cbtfs -o nosuid,nodev: %d %r" % (rc, err))
    opts = check_mounted(mnt, guest)
    check("nosuid" in opts and "nodev" in opts, "options %r" % opts)
    check_umount(mnt)

    rc, _, err = run(helper, store, mnt, "-f", "-o", "ro")
    check(rc == 0 and mount_entry(mnt) is None, "-f: %d %r" % (rc, err))
    # No store there: cbtfs's configuration error (2), mount(8)'s 1.
    check_fails(helper, mnt, [env.path("nostore"), mnt], 1, "nostore")
    check_fails(helper, mnt, [store, mnt, "-o", "ro,bogus"], 32, "bogus", 2)
    check_fails(helper, mnt, [store, mnt, "-o", "config="], 1, "config=")
    check_fails(helper, mnt, [store, mnt, "-o", "config"], 1, "config")
    check_fails(helper, mnt, [store, mnt, "-N", "1"], 1, "-N")


def with_mount8(env, helper, store, mnt, guest):
    """mount(8) and umount(8) themselves, the helper in /sbin meanwhile."""
    if os.path.lexists(SBIN_HELPER):
        print("skipped mount(8): %s exists (not ours to replace)" % SBIN_HELPER)
        return
    opts = "ro,nofail"
    rc, out, _ = run(cb.cbtfs_binary(), "mount", "--help")
    if "--config" in out:
        conf = env.path("cbtfs.conf")
        with open(conf, "w") as f:
            f.write("[cbtfs]\n")
        opts += ",config=" + conf
    fstab = env.path("fstab")
    with open(fstab, "w") as f:
        f.write("# a test's own fstab\n%s %s cbtfs %s 0 0\n" % (store, mnt, opts))
    shutil.copy(helper, SBIN_HELPER)
    try:
        rc, _, err = run("mount", "-T", fstab, mnt)
        check(rc == 0, "mount -T %s %s: %d %r" % (fstab, mnt, rc, err))
        check_mounted(mnt, guest)
        check_umount(mnt)
        rc, _, err = run("mount", "-t", "cbtfs", store, mnt)
        check(rc == 0, "mount -t cbtfs: %d %r" % (rc, err))
        check_mounted(mnt, guest)
        rc, _, err = run("fusermount3", "-u", mnt)
        check(rc == 0 and mount_entry(mnt) is None, "fusermount3 -u: %r" % err)
        rc, _, err = run("mount", "-t", "cbtfs", env.path("nostore"), mnt)
        check(rc == 1 and "nostore" in err and mount_entry(mnt) is None,
              "mount(8) of no store: %d %r" % (rc, err))
    finally:
        os.remove(SBIN_HELPER)


STUB = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done > "$0.args"
exit "$(cat "$0.status")"
"""


def mapping(env, helper, prefix):
    """The options against a stand-in cbtfs that tells what it got."""
    stub = os.path.join(prefix, "bin", "cbtfs")
    with open(stub, "w") as f:
        f.write(STUB)
    os.chmod(stub, 0o755)
    opts = ("ro,config=/etc/cbtfs/a b.conf,server=https://xs1,user=root,"
            "password-file=/etc/cbtfs/pw,ca-file=/etc/cbtfs/ca.pem,timeout=9,"
            "nofail,user,allow_other,x-systemd.requires=a,_netdev,noatime")
    for status, want in ((0, 0), (1, 32), (2, 1), (3, 32)):
        with open(stub + ".status", "w") as f:
            f.write("%d\n" % status)
        rc, _, err = run(helper, "/srv/st", "/mnt/b", "-o", opts, "-v")
        check(rc == want, "cbtfs exiting %d: mount.cbtfs %d %r" % (status, rc, err))
    with open(stub + ".args") as f:
        got = f.read().splitlines()
    check(got == ["mount", "/srv/st", "/mnt/b", "-o", "allow_other,noatime",
                  "-v", "--config", "/etc/cbtfs/a b.conf", "--server",
                  "https://xs1", "--user", "root", "--password-file",
                  "/etc/cbtfs/pw", "--ca-file", "/etc/cbtfs/ca.pem",
                  "--timeout", "9"], "cbtfs ran with %r" % got)
    os.remove(stub + ".args")
    run(helper, "/srv/st", "/mnt/b", "-o", "rw,defaults")
    with open(stub + ".args") as f:
        got = f.read().splitlines()
    check(got == ["mount", "/srv/st", "/mnt/b"], "rw,defaults: %r" % got)


def main():
    if os.geteuid() != 0:
        cb.skip("mounting through mount(8) needs root")
    with sim.Sim() as s, cb.Env() as env:
        _, _, guest, srv = cb.random_disk(s, env, "web", "root", 2 * MiB)
        store = env.path("store")
        env.cbtfs("backup", store, *srv, "-q")
        prefix, sbin = env.path("usr"), env.path("sbin")
        cb.make("install", "PREFIX=" + prefix, "MOUNTHELPERDIR=" + sbin)
        helper = os.path.join(sbin, "mount.cbtfs")
        mnt = env.mkdir("mnt")

        direct(env, helper, store, mnt, guest)
        with_mount8(env, helper, store, mnt, guest)
        mapping(env, helper, prefix)
    print("ok")


if __name__ == "__main__":
    main()
