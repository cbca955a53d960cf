#!/usr/bin/env python3
"""`make install` into a DESTDIR, and `make uninstall`.

- the tree: bin/cbtfs, lib/cbtfs/nbdkit-cbtfs-plugin.so, the man pages
  in share/man/man1, man5 and man8 (mount.cbtfs's), README, FORMAT.md
  and docs/ in share/doc/cbtfs, the example mount unit in
  share/doc/cbtfs/examples, the systemd units in lib/systemd/system, the bash completion in
  share/bash-completion/completions, mount.cbtfs in /sbin (not under
  PREFIX: libmount looks nowhere else), and nothing else;
- mount.cbtfs and the backup service run the installed binary
  (PREFIX/bin/cbtfs);
- the installed binary runs (--version), and `cbtfs serve` finds the
  installed plugin (CBTFS_NBDKIT_PLUGIN unset): it answers nbdinfo with
  a point of a store the installed binary backed up;
- `make uninstall` leaves no file behind.
"""
# runs-alone: it runs make on the build under test (make install relinks cbtfs)
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

PREFIX = "/usr/local"
MiB = 1 << 20


def files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def main():
    with cb.Env() as env:
        dest = env.path("dest")
        cb.make("install", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
        want = ["usr/local/bin/cbtfs",
                "usr/local/lib/cbtfs/nbdkit-cbtfs-plugin.so",
                "usr/local/share/man/man1/cbtfs.1",
                "usr/local/share/man/man5/cbtfs-store.5",
                "usr/local/share/man/man8/mount.cbtfs.8",
                "usr/local/share/doc/cbtfs/examples/mnt-backups.mount",
                "usr/local/lib/systemd/system/cbtfs-backup@.service",
                "usr/local/lib/systemd/system/cbtfs-backup@.timer",
                "usr/local/share/bash-completion/completions/cbtfs",
                "sbin/mount.cbtfs"]
        docs = ["README", "FORMAT.md", "BENCHMARKS.md"] + [
            "docs/" + f for f in os.listdir(os.path.join(cb.TOP, "docs"))
            if f.endswith(".md")]
        want += ["usr/local/share/doc/cbtfs/" + os.path.basename(d)
                 for d in docs]
        got = files(dest)
        check(got == sorted(want), "installed %s, expected %s" % (got, sorted(want)))
        exe = os.path.join(dest, "usr/local/bin/cbtfs")
        check(os.stat(exe).st_mode & 0o777 == 0o755, "cbtfs is not 0755")
        helper = os.path.join(dest, "sbin/mount.cbtfs")
        check(os.stat(helper).st_mode & 0o777 == 0o755, "mount.cbtfs is not 0755")
        for f, line in ((helper, "cbtfs=%s/bin/cbtfs\n" % PREFIX),
                        (os.path.join(dest, "usr/local/lib/systemd/system/"
                                      "cbtfs-backup@.service"),
                         "ExecStart=%s/bin/cbtfs backup " % PREFIX)):
            with open(f) as fh:
                text = fh.read()
            check(line in text and "@BINDIR@" not in text,
                  "%s does not run %s/bin/cbtfs" % (f, PREFIX))

        out = subprocess.run([exe, "--version"], capture_output=True,
                             text=True, check=True).stdout
        check(out.startswith("cbtfs ") and "store format" in out, out)

        with sim.Sim() as s:
            env_vars = dict(os.environ)
            env_vars.pop("CBTFS_NBDKIT_PLUGIN", None)
            _, _, _, srv = cb.random_disk(s, env, "web", "root", 2 * MiB)
            store = env.path("store")
            subprocess.run([exe, "backup", store, *srv, "-q"], check=True,
                           env=env_vars)
            sock, pidfile = env.path("s.sock"), env.path("s.pid")
            log = open(env.path("serve.log"), "w")
            proc = subprocess.Popen([exe, "serve", store,
                                     "by-vm/web/root/latest", "--unix", sock,
                                     "--pidfile", pidfile],
                                    stdin=subprocess.DEVNULL, stderr=log,
                                    env=env_vars)
            env.on_close(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
            cb.wait_for_file(pidfile, proc)
            p = subprocess.run(["nbdinfo", "--size",
                                "nbd+unix:///?socket=%s" % sock],
                               capture_output=True, text=True)
            check(p.returncode == 0 and p.stdout.strip() == str(2 * MiB),
                  "nbdinfo: %r %r" % (p.stdout, p.stderr))
            proc.terminate()
            check(proc.wait(timeout=60) == 0, "serve exited %d" % proc.returncode)
            log.close()

        # Moved away from its plugin: serve says where it looked.
        os.rename(os.path.join(dest, "usr/local/lib/cbtfs"), env.path("away"))
        p = subprocess.run([exe, "serve", store, "--unix", sock],
                           capture_output=True, text=True, env=env_vars)
        check(p.returncode == 1 and "cannot find nbdkit-cbtfs-plugin.so" in p.stderr
              and "/usr/local/lib/cbtfs" in p.stderr, "no plugin: %d %r"
              % (p.returncode, p.stderr))
        os.rename(env.path("away"), os.path.join(dest, "usr/local/lib/cbtfs"))

        cb.make("uninstall", "DESTDIR=" + dest, "PREFIX=" + PREFIX)
        left = files(dest)
        check(left == [], "left after uninstall: %s" % left)
    print("ok")


if __name__ == "__main__":
    main()
