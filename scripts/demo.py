#!/usr/bin/env python3
"""make demo: the main job end to end against the built-in XenServer
stand-in (tests/sim).

A VM with an ext4 root disk and a sparse data disk is backed up three
times with guest writes in between; the store is mounted, its tree is
printed, and each point in time of the root disk is loop-mounted
read-only to show /etc/motd as it was then.  Everything is unmounted and
stopped before it exits.  Needs root (loop mounts) and the packages
scripts/install-deps.sh installs.
"""
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402

MiB = 1 << 20


def say(msg):
    print("\n== " + msg, flush=True)


def show_tree(root):
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        depth = d[len(root):].count(os.sep)
        print("%s%s/" % ("    " * depth, os.path.basename(d) or root))
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p):
                print("%s%s -> %s" % ("    " * (depth + 1), f, os.readlink(p)))
            else:
                print("%s%s  (%d MiB)" % ("    " * (depth + 1), f,
                                          os.path.getsize(p) // MiB))


def main():
    if len(sys.argv) > 1:
        os.environ["CBTFS"] = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        sys.exit("make demo needs root: it loop-mounts the backed-up images")
    with sim.Sim() as s, cb.Env("cbtfs-demo") as env:
        mine = env.dir
        say("XenServer stand-in listening at %s (NBD on %s:%d)"
            % (s.info["xapi_url"], s.info["nbd_address"], s.info["nbd_port"]))
        vm = s.control("create_vm", name="demo-web",
                       disks=[{"name": "root", "size": 32 * MiB},
                              {"name": "data", "size": 256 * MiB}])
        root = env.path("guest-root.img")
        data = env.path("guest-data.img")
        cb.make_ext4(root, 32 * MiB, {"etc/motd": b"Hello from before backup 1\n"})
        with open(data, "wb") as f:
            f.truncate(256 * MiB)
        pw = env.password_file(name="password")
        store = env.path("store")

        motd = ["Hello from before backup 1\n", "Edited before backup 2\n",
                "Edited again before backup 3\n"]
        for i, text in enumerate(motd):
            if i:
                cb.ext4_write(root, "/etc/motd", text.encode())
                cb.write_at(data, (10 + 50 * i) * MiB, os.urandom(MiB))
            for d, img in zip(vm["disks"], (root, data)):
                s.control("write_file", vdi=d["vdi"], path=img)
            cmd = [cb.cbtfs_binary(), "backup", store, "--server",
                   s.info["xapi_url"], "--ca-file", s.info["ca_file"],
                   "--password-file", pw]
            say("backup %d: %s" % (i + 1, " ".join(cmd[1:])))
            subprocess.run(cmd, check=True)

        mnt = env.path("mnt")
        say("cbtfs mount %s %s" % (store, mnt))
        env.mount(store, mnt)
        show_tree(mnt)

        disk = os.path.join(mnt, "by-vm", "demo-web", "root")
        # Oldest first, as `cbtfs ls` lists them (a later backup within the
        # same second is "…Z.2.img", which ls(1) would sort first).
        points = [p["name"] + ".img" for d in env.ls_json(store)["disks"]
                  if d["uuid"] == vm["disks"][0]["vdi"] for p in d["points"]]
        seen = []
        for n in points:
            lm = env.path("loop")
            os.makedirs(lm, exist_ok=True)
            subprocess.run(["mount", "-o", "loop,ro,noload",
                            os.path.join(disk, n), lm], check=True)
            try:
                with open(os.path.join(lm, "etc", "motd")) as f:
                    seen.append(f.read())
                say("by-vm/demo-web/root/%s: /etc/motd says: %s"
                    % (n, seen[-1].strip()))
            finally:
                subprocess.run(["umount", lm], check=True)
        cb.unmount(mnt)
    # Only the demo's own: a user's cbtfs mounts elsewhere are theirs.
    with open("/proc/mounts") as f:
        left = [l for l in f if l.split()[1].startswith(mine + "/")]
    say("done; cbtfs mounts left: %d" % len(left))
    # make check-deb runs the demo as its test: it fails unless every
    # point showed the motd of its own backup.
    if seen != motd:
        print("demo: the points' /etc/motd read %r, not %r" % (seen, motd),
              file=sys.stderr)
        return 1
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
