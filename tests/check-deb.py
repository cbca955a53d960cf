#!/usr/bin/env python3
"""make check-deb: the Debian package that `make deb` built, installed
as a user installs it.  Not a tests/test-*.py, so that tests/run (make
check) leaves it out: it installs and purges a package on this machine.
.ci/run runs it after make check.

- the .deb: its version is VERSION's; Depends names what dpkg-shlibdeps
  found and fuse3 (fusermount3) and nbdkit (serve); it carries what
  `make install` installs: the binary, the plugin, the man pages, the
  mount helper /sbin/mount.cbtfs, the systemd units and the bash
  completion (the helper and the service running /usr/bin/cbtfs), and
  no test and no path of the tree it was built in, nothing in /usr/etc
  or /usr/local, and every file in /etc is a conffile;
- `apt-get install ./cbtfs_*.deb`, refused if a cbtfs package is
  installed already (purging a user's is not ours to do);
- /usr/bin/cbtfs --version says VERSION; /sbin/mount.cbtfs -f takes
  good options (exit 0) and refuses a bad one (exit 1);
- the demo (scripts/demo.py) with /usr/bin/cbtfs: three backups from the
  XenServer stand-in, a mount, and every point's image loop-mounted
  showing the /etc/motd of its own backup;
- the installed serve finds the installed plugin and answers nbdinfo;
- `apt-get purge -y cbtfs` leaves none of the package's files.

usage: check-deb.py build/deb/cbtfs_VERSION_ARCH.deb
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

EXE = "/usr/bin/cbtfs"
MiB = 1 << 20


def run(*cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    check(p.returncode == 0, "%s exited %d: %s%s" % (" ".join(cmd), p.returncode,
                                                     p.stdout, p.stderr))
    return p.stdout


def apt(*args):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return run("apt-get", "-y", "-q", *args, env=env)


def installed():
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "cbtfs"],
                       capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.endswith(" installed")


def check_deb(deb, version, env):
    """What the .deb says and holds, before it is installed."""
    got = run("dpkg-deb", "-f", deb, "Version").strip()
    check(got == version, "package version %r, VERSION %r" % (got, version))
    deps = [d.split()[0] for d in run("dpkg-deb", "-f", deb, "Depends").split(",")]
    for want in ("fuse3", "nbdkit", "libfuse3", "libnbd", "libcurl", "libxml2",
                 "libgnutls", "libc6"):
        check(any(d.startswith(want) for d in deps),
              "Depends lacks %s: %s" % (want, deps))
    root = env.mkdir("deb")
    run("dpkg-deb", "-x", deb, root)
    names = sorted(os.path.relpath(os.path.join(d, f), root)
                   for d, _, fs in os.walk(root) for f in fs)
    for want in ("usr/bin/cbtfs", "usr/lib/cbtfs/nbdkit-cbtfs-plugin.so",
                 "usr/share/man/man1/cbtfs.1.gz", "usr/share/man/man5/cbtfs-store.5.gz",
                 "usr/share/man/man8/mount.cbtfs.8.gz", "sbin/mount.cbtfs",
                 "lib/systemd/system/cbtfs-backup@.service",
                 "lib/systemd/system/cbtfs-backup@.timer",
                 "usr/share/bash-completion/completions/cbtfs",
                 "usr/share/doc/cbtfs/examples/mnt-backups.mount",
                 "usr/share/doc/cbtfs/copyright"):
        check(want in names, "the package lacks %s: %s" % (want, names))
    for f, line in (("sbin/mount.cbtfs", "cbtfs=%s\n" % EXE),
                    ("lib/systemd/system/cbtfs-backup@.service",
                     "ExecStart=%s backup " % EXE)):
        with open(os.path.join(root, f)) as fh:
            check(line in fh.read(), "%s does not run %s" % (f, EXE))
    # PREFIX=/usr, but configuration in /etc, and each file there a
    # conffile (dh_installdeb marks them), so an upgrade keeps the admin's.
    stray = [n for n in names if n.startswith(("usr/etc/", "usr/local/"))]
    check(stray == [], "installed outside the FHS: %s" % stray)
    ctrl = env.mkdir("ctrl")
    run("dpkg-deb", "-e", deb, ctrl)
    conffiles = []
    if os.path.exists(os.path.join(ctrl, "conffiles")):
        with open(os.path.join(ctrl, "conffiles")) as f:
            conffiles = sorted(l.strip().lstrip("/") for l in f if l.strip())
    etc = [n for n in names if n.startswith("etc/")]
    check(conffiles == etc, "conffiles %s, files in /etc %s" % (conffiles, etc))
    tests = [n for n in names if "test" in os.path.basename(n)
             or "/tests/" in "/" + n or "xsim" in n]
    check(tests == [], "the package carries tests: %s" % tests)
    top = cb.TOP.encode()
    for n in names:
        with open(os.path.join(root, n), "rb") as f:
            check(top not in f.read(), "%s holds the build's path %s" % (n, cb.TOP))


def check_helper(env):
    """The installed mount helper, faking (-f): it mounts nothing."""
    store, mnt = env.mkdir("helper-store"), env.mkdir("helper-mnt")
    for opts, want in (("ro,nofail,allow_other", 0), ("config", 1)):
        p = subprocess.run(["/sbin/mount.cbtfs", store, mnt, "-f", "-o", opts],
                           capture_output=True, text=True)
        check(p.returncode == want, "mount.cbtfs -f -o %s exited %d, not %d: %r"
              % (opts, p.returncode, want, p.stderr))


def check_serve(env):
    """The installed serve loads the installed plugin (no override)."""
    env_vars = dict(os.environ)
    env_vars.pop("CBTFS_NBDKIT_PLUGIN", None)
    with sim.Sim() as s:
        _, _, _, srv = cb.random_disk(s, env, "web", "root", 2 * MiB)
        store = env.path("store")
        run(EXE, "backup", store, *srv, "-q", env=env_vars)
        sock, pidfile = env.path("s.sock"), env.path("s.pid")
        with open(env.path("serve.log"), "w") as log:
            proc = subprocess.Popen([EXE, "serve", store, "by-vm/web/root/latest",
                                     "--unix", sock, "--pidfile", pidfile],
                                    stdin=subprocess.DEVNULL, stderr=log,
                                    env=env_vars)
        env.on_close(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        cb.wait_for_file(pidfile, proc)
        size = run("nbdinfo", "--size", "nbd+unix:///?socket=%s" % sock).strip()
        check(size == str(2 * MiB), "nbdinfo --size: %r" % size)
        proc.terminate()
        check(proc.wait(timeout=60) == 0, "serve exited %d" % proc.returncode)


def main():
    if len(sys.argv) != 2 or not os.path.isfile(sys.argv[1]):
        sys.exit("usage: check-deb.py build/deb/cbtfs_VERSION_ARCH.deb (one)")
    if os.geteuid() != 0:
        sys.exit("check-deb needs root: it installs the package")
    deb = os.path.abspath(sys.argv[1])
    with open(os.path.join(cb.TOP, "VERSION")) as f:
        version = f.read().strip()
    check(not installed(), "a cbtfs package is installed already: check-deb "
          "would replace and purge it (apt-get purge cbtfs first)")
    with cb.Env("cbtfs-deb") as env:
        check_deb(deb, version, env)
        try:
            apt("install", "--no-install-recommends", deb)
            check(installed(), "apt-get install did not install cbtfs")
            out = run(EXE, "--version")
            check(out.startswith("cbtfs %s\n" % version), "--version: %r" % out)
            check_helper(env)
            demo = subprocess.run([sys.executable,
                                   os.path.join(cb.TOP, "scripts", "demo.py"), EXE])
            check(demo.returncode == 0, "the demo with %s exited %d"
                  % (EXE, demo.returncode))
            check_serve(env)
        finally:
            files = [l for l in run("dpkg", "-L", "cbtfs").splitlines()
                     if l.startswith("/")] if installed() else []
            apt("purge", "cbtfs")
    check(not installed(), "cbtfs is still installed after apt-get purge")
    check(files, "dpkg -L cbtfs listed nothing")
    # Directories such as /usr/bin are others' too: only the package's
    # own files and its own directories must be gone.
    left = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)]
    left += [d for d in ("/usr/lib/cbtfs", "/usr/share/doc/cbtfs") if os.path.lexists(d)]
    check(left == [], "left after apt-get purge: %s" % left)
    check(not os.path.lexists(EXE), "%s is still there" % EXE)
    print("ok")


if __name__ == "__main__":
    main()
