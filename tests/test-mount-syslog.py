#!/usr/bin/env python3
"""End to end: a daemonised mount (no -f) logs to syslog as "cbtfs",
and no secret.

glibc's syslog(3) writes to /dev/log, which only a running syslog
daemon or journald provides, and cbtfs has (rightly) no other place to
send it.  So the test runs in a private mount namespace (unshare -m)
whose /dev is a fresh tmpfs holding the device nodes a mount needs
(bound from the real /dev) and, at /dev/log, a datagram socket the test
reads: the machine's /dev is not touched.  There, cbtfs mount -v with
--server (a --no-copy point, read from the stand-in over NBD with a
session) returns once it serves in the background; a read while the
host refuses NBD (an error, naming the point) and a backup that
changes the store (a debug line) make it log.  Every line it sent
is tagged cbtfs[PID] with the daemon's pid, and none holds the
password, a session id, an OpaqueRef or an object store's secret key.
"""
# store-kinds: dir s3
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
DEVICES = ("null", "zero", "full", "random", "urandom", "fuse")
SECRET = "secret"                      # the stand-in's password


def private_dev(scratch):
    """In this (private) mount namespace: /dev a tmpfs with DEVICES bound
    from the real one, and a datagram socket at /dev/log."""
    real = os.path.join(scratch, "real-dev")
    os.mkdir(real)
    subprocess.run(["mount", "--rbind", "/dev", real], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "cbtfs-test",
                    "/dev"], check=True)
    for d in DEVICES:
        open(os.path.join("/dev", d), "w").close()
        subprocess.run(["mount", "--bind", os.path.join(real, d),
                        os.path.join("/dev", d)], check=True)
    # Gone before anything could remove the scratch directory (and,
    # through this mount, the real /dev's nodes).
    subprocess.run(["umount", "-l", real], check=True)
    os.rmdir(real)
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind("/dev/log")
    os.chmod("/dev/log", 0o666)
    return log


def receive_until(log, lines, pattern):
    """Take datagrams from LOG into LINES until one matches PATTERN
    (fails after 60 s without one)."""
    log.settimeout(60)
    while not any(re.search(pattern, ln) for ln in lines):
        try:
            lines.append(log.recv(65536).decode("utf-8", "replace"))
        except socket.timeout:
            check(False, "no syslog message matching %r in 60 s: %r"
                  % (pattern, lines))


def daemon_pid(mnt):
    """The pid of the cbtfs mount serving MNT."""
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[1] == b"mount" and mnt.encode() in argv:
            found.append(int(p))
    check(len(found) == 1, "cbtfs mount processes for %s: %r" % (mnt, found))
    return found[0]


def inside(args):
    """The part in the private namespace: mount, make it log, unmount."""
    env = cb.Env()
    log = private_dev(env.dir)
    mnt = env.mkdir("m")
    lines = []
    try:
        env.cbtfs("mount", args["store"], mnt, "-v", *args["server"])
        check(cb.mounted(mnt), "cbtfs mount returned without a mount")
        pid = daemon_pid(mnt)
        image = os.path.join(mnt, args["image"])
        # The host refuses NBD for a while: a read fails, and says why.
        nbd = {"method": "VDI.get_nbd_info",
               "error": ["INTERNAL_ERROR", "no NBD just now"]}
        sim.control(args["control"], "set", {"fail_every": nbd})
        try:
            with open(image, "rb") as f:
                f.read(cb.BLOCK)
            check(False, "a read without NBD succeeded")
        except OSError as e:
            check(e.errno == errno.EIO, "a read without NBD: %s" % e)
        receive_until(log, lines, r"^<27>")             # daemon.err
        sim.control(args["control"], "set",
                    {"fail_every": dict(nbd, error=None)})
        env.cbtfs("backup", args["store"], "-q", *args["server"])
        receive_until(log, lines, r"the store changed")
    finally:
        cb.unmount(mnt)
        env.close()
    log.setblocking(False)
    try:
        while True:
            lines.append(log.recv(65536).decode("utf-8", "replace"))
    except BlockingIOError:
        pass
    return pid, lines


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        pid, lines = inside(json.loads(sys.argv[2]))
        print(json.dumps({"pid": pid, "lines": lines}))
        return
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE, a mount namespace)")
    for tool in ("unshare", "mount", "fusermount3"):
        if shutil.which(tool) is None:
            cb.skip("no %s" % tool)
    with sim.Sim() as s, cb.Env() as env:
        _, vdi, _, srv = cb.random_disk(s, env, "web", "root", 4 * MiB,
                                        password=SECRET)
        store = env.store()
        env.cbtfs("backup", store, "--no-copy", "-q", *srv)
        point = env.ls_json(store)["disks"][0]["points"][0]
        args = {"store": store, "server": srv,
                "control": s.info["control_url"],
                "image": "by-uuid/%s/%s.img" % (vdi, point["snapshot"])}
        p = subprocess.run(["unshare", "-m", "--propagation", "private",
                            sys.executable, os.path.abspath(__file__),
                            "--inside", json.dumps(args)],
                           capture_output=True, text=True, timeout=600)
        sys.stderr.write(p.stderr)
        check(p.returncode == 0, "in the namespace: exit %d" % p.returncode)
        out = json.loads(p.stdout.splitlines()[-1])
        lines = out["lines"]
        check(lines, "nothing reached syslog")
        for ln in lines:
            print(ln)
        secrets = [SECRET, "session_id", "OpaqueRef"]
        if not cb.is_dir_store(store):
            secrets.append(os.environ["AWS_SECRET_ACCESS_KEY"])
        tag = re.compile(r"^<\d+>.*? cbtfs\[%d\]: " % out["pid"])
        for ln in lines:
            check(tag.match(ln), "not tagged cbtfs[%d]: %r" % (out["pid"], ln))
            for secret in secrets:
                check(secret not in ln, "%r in syslog: %r" % (secret, ln))
    print("ok: %d syslog lines from cbtfs[%d]" % (len(lines), out["pid"]))


if __name__ == "__main__":
    main()
