#!/usr/bin/env python3
"""End to end: secrets stay secret, the store stays private, TLS stays on.

- The password and session ids (an NBD export name carries one), and
  an object store's secret key, appear in no argument list, log line or
  error message of backup, mount, fetch or verify, even with -v.
- A directory store is created 0700 and every file in it 0600 (an
  object store's local cache likewise); the mount is not open to other
  users unless -o allow_other is given, and then only as far as the
  store directory's owner, group and read bits allow: a 0700 store's
  images stay its owner's, a 0750 store's group reads them.  An object
  store mounts as a 0700 store of the user who mounts it.
- TLS to XAPI is always verified: --insecure is not an option (a usage
  error) of any command; an NBD server that does not offer TLS is
  refused, never used in clear (test-nbd-pin.py: one with another
  certificate is refused too).
"""
# store-kinds: dir s3
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
PASSWORD = "s3cret-Pa55word"


def main():
    if os.geteuid() != 0:
        cb.skip("needs root to try the mount as another user")
    with sim.Sim("--password", PASSWORD) as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web", disks=[{"name": "root", "size": 8 * MiB}])
        vdi = vm["disks"][0]["vdi"]
        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.write(os.urandom(8 * MiB))
        s.control("write_file", vdi=vdi, path=guest)
        pw = env.password_file(PASSWORD)
        store = env.store()
        srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
               "--password-file", pw]
        said = []

        def run(*args, ok=True):
            r = env.cbtfs(*args, ok=ok)
            said.append(r[1] + r[2])
            return r

        run("backup", store, "-v", *srv)
        run("backup", store, "--no-copy", "-v", *srv)
        s.control("expire_sessions")      # errors quoting a session ref?
        m = env.mount_fg(store, env.path("m"), "-v", *srv)
        with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
            said.append(f.read().decode(errors="replace"))
        latest = os.path.join(m.mnt, "by-vm/web/root/latest")
        check(cb.sha256(latest) == cb.sha256(guest), "lazy read wrong")
        mounts = open("/proc/mounts").read()
        line = [ln for ln in mounts.splitlines() if m.mnt in ln][0]
        check("allow_other" not in line, "mounted with allow_other: %s" % line)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "ls", m.mnt], capture_output=True)
        check(r.returncode != 0, "another user could list the mount")
        check(m.unmount() == 0, "mount failed")
        said.append(m.log())
        run("verify", store, "-v", *srv)
        run("fetch", store, "-v", *srv)
        run("backup", store, "-v", *srv[:-2], "--password-file",
            env.password_file("wrong", name="bad"), ok=False)
        secrets = [PASSWORD, "OpaqueRef:", "session_id"]
        if not cb.is_dir_store(store):
            secrets.append(os.environ["AWS_SECRET_ACCESS_KEY"])
        for text in said:
            for secret in secrets:
                check(secret not in text, "%r appeared in: %r" % (secret, text))

        # The store (an object store's local cache) is private.
        private = store if cb.is_dir_store(store) else env.path("s3-cache")
        check(os.stat(private).st_mode & 0o777 == 0o700, "%s is not 0700"
              % private)
        for d, dirs, files in os.walk(private):
            for x in dirs:
                mode = os.stat(os.path.join(d, x)).st_mode & 0o777
                check(mode == 0o700, "%s is %o" % (os.path.join(d, x), mode))
            for x in files:
                mode = os.stat(os.path.join(d, x)).st_mode & 0o777
                check(mode == 0o600, "%s is %o" % (os.path.join(d, x), mode))

        # XAPI: no --ca-file is an error, and nothing turns the check off
        # (XAPI gives the NBD certificates: it would unpin NBD too).
        rc, _, err = env.cbtfs("backup", store, "--server", info["xapi_url"],
                               "--password-file", pw, ok=False)
        check(rc == 3 and "not trusted" in err, "unverified TLS accepted: %r" % err)
        for cmd in (["backup", store], ["fetch", store], ["verify", store],
                    ["mount", store, env.path("m-insecure")]):
            rc, _, err = env.cbtfs(*cmd, "--server", info["xapi_url"],
                                   "--password-file", pw, "--insecure", ok=False)
            check(rc == 2 and "unknown option '--insecure'" in err
                  and "usage:" in err, "%s --insecure: %d %r" % (cmd[0], rc, err))

        # NBD: a server without TLS is refused, never read in clear.
        cb.write_at(guest, 0, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        run("backup", store, "--no-copy", *srv)
        snap = env.ls_json(store)["disks"][0]["points"][-1]["snapshot"]
        path = s.control("vdi", uuid=snap)["path"]
        nbdkit, port = env.nbdkit(path, info["nbd_address"])   # no TLS
        s.control("nbd_override", vdi=snap, address=info["nbd_address"], port=port)
        rc, _, err = env.cbtfs("fetch", store, snap, *srv, ok=False)
        check(rc == 1 and "TLS" in err, "a clear-text NBD server was used: %r" % err)
        check("retrying" not in err, "refused TLS was retried: %r" % err)
        pts = env.ls_json(store)["disks"][0]["points"]
        check(pts[-1]["present_blocks"] == 0, "blocks came over clear text")
        # A backup meeting it commits no layer (no retry changes that).
        s.control("nbd_override", vdi="*", address=info["nbd_address"], port=port)
        rc, _, err = env.cbtfs("backup", store, *srv, ok=False)
        check(rc == 1 and "TLS" in err and "retrying" not in err,
              "a backup used or retried a clear-text NBD server: %r" % err)
        check(len(env.ls_json(store)["disks"][0]["points"]) == len(pts),
              "a layer was committed for a server that refused TLS")
        s.control("nbd_override", vdi="*")

        shared_modes(env, store, pts[0]["name"])
    print("ok")


def shared_modes(env, store, name):
    """With -o allow_other, the mount opens up only what the store
    directory does: its owner, group and read bits."""
    def as_user(gid, *cmd):
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=%d" % gid,
                               "--clear-groups"] + list(cmd), capture_output=True)

    os.chmod(env.dir, 0o711)            # others may reach the mount points
    img = os.path.join("by-vm", "web", "root", name + ".img")   # complete
    m = env.mount(store, env.path("private"), "-o", "allow_other")
    check("allow_other" in open("/proc/mounts").read(), "no allow_other")
    modes = {p: oct(os.stat(os.path.join(m, p)).st_mode & 0o7777)
             for p in ("", "by-vm", "by-vm/web/root", "by-uuid", img)}
    check(modes == {"": "0o500", "by-vm": "0o500", "by-vm/web/root": "0o500",
                    "by-uuid": "0o500", img: "0o400"},
          "a 0700 store mounts as %r" % modes)
    check(as_user(65534, "ls", m).returncode != 0,
          "another user could list a 0700 store's mount")
    check(as_user(65534, "cat", os.path.join(m, img)).returncode != 0,
          "another user could read an image of a 0700 store")
    cb.unmount(m)
    if not cb.is_dir_store(store):
        return                  # no directory whose group could be given

    # Shared as README says: the store's group and its read bits.
    os.chown(store, 0, 65534)
    os.chmod(store, 0o750)
    m = env.mount(store, env.path("shared"), "-o", "allow_other")
    st = os.stat(os.path.join(m, img))
    check(st.st_mode & 0o7777 == 0o440 and st.st_gid == 65534,
          "a 0750 store's image is %o, group %d" % (st.st_mode, st.st_gid))
    r = as_user(65534, "ls", os.path.join(m, "by-vm", "web", "root"))
    check(r.returncode == 0 and b"latest" in r.stdout,
          "the store's group cannot list the mount: %r" % r.stderr)
    r = as_user(65534, "cat", os.path.join(m, img))
    check(r.returncode == 0 and r.stdout == open(os.path.join(m, img), "rb").read(),
          "the store's group cannot read an image: %r" % r.stderr)
    check(as_user(65533, "cat", os.path.join(m, img)).returncode != 0,
          "a user outside the store's group read an image")
    cb.unmount(m)


if __name__ == "__main__":
    main()
