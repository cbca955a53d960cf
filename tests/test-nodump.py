#!/usr/bin/env python3
"""End to end: a cbtfs process that holds the password or a session, or
an object store's secret key or encryption key, is not dumpable, so no other process, not even one of the same user, can
read its memory or environment (and it leaves no core file).

Everything runs as user 65534, with a store, password file and mount
point that user owns.  Each command that reads the password (backup,
fetch, verify --server, mount --server) is caught while it opens the
password file, a FIFO nobody writes to until it has been checked (so is
`ls` of a bucket given --s3-secret-file, --encrypt-key-file or the
secret key in its environment, while it reads its --config); the
daemonised child of `mount --server` is checked after it has fetched a
block with its own session.  The check is what another process of that
user would try: open /proc/PID/environ as uid 65534.  A dumpable
process of the same user (cat) is the control: it must be readable.

FUSE as uid 65534 needs /dev/fuse open to that user: the mount runs in
a mount namespace of its own, where a node for the same device with
mode 0666 is bound over /dev/fuse (Debian's own mode; some containers
have 0600).
"""
import errno
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def environ_readable(pid):
    """Can uid 65534 open /proc/PID/environ?  Fails the test when the
    answer is neither yes nor EACCES (the process is gone, say)."""
    r = subprocess.run(NOBODY + ["cat", "/proc/%d/environ" % pid],
                       stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode == 0:
        return True
    err = r.stderr.decode(errors="replace")
    check("Permission denied" in err, "probing %d: %s" % (pid, err.strip()))
    return False


def own(path, mode):
    os.chown(path, 65534, 65534)
    os.chmod(path, mode)
    return path


def caught_reading_password(env, fifo, args, opt="--password-file",
                            environ=None):
    """Run cbtfs ARGS as 65534 with OPT FIFO (and ENVIRON); once it has
    the FIFO open (it blocks there until a writer comes), return
    whether its environ is readable, then let it go on (it reads an
    empty file and fails: that part is not under test)."""
    log = open(env.path("caught.log"), "w")
    p = subprocess.Popen(NOBODY + [cb.cbtfs_binary()] + args + [opt, fifo],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         env=environ)
    log.close()
    env.on_close(lambda: p.poll() is None and p.kill())
    deadline = time.monotonic() + 60
    while True:
        try:
            # Succeeds only while a reader has the FIFO open.
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            check(e.errno == errno.ENXIO, "open %s: %s" % (fifo, e))
        check(p.poll() is None, "%s exited without reading the password: %s"
              % (args[0], open(env.path("caught.log")).read()))
        check(time.monotonic() < deadline, "%s never read the password" % args[0])
        time.sleep(0.01)
    # The FIFO's reader is cbtfs (not setpriv before its exec, which,
    # having changed its uid, is not dumpable either), and still runs
    # (a zombie's environ is root's): it waits for the FIFO's end.
    check(os.path.realpath(os.readlink("/proc/%d/exe" % p.pid))
          == os.path.realpath(cb.cbtfs_binary()), "not cbtfs at the FIFO")
    readable = environ_readable(p.pid)
    with open("/proc/%d/status" % p.pid) as f:
        check("State:\tZ" not in f.read(), "%s ended before its environ "
              "was tried: %s" % (args[0], open(env.path("caught.log")).read()))
    os.close(fd)
    p.wait(timeout=120)
    return readable


def daemon_pid(mnt):
    """The pid of the process serving MNT (cbtfs mount … MNT)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and mnt.encode() in argv \
                and os.path.basename(argv[0]) == b"cbtfs":
            found.append(int(d))
    check(len(found) == 1, "processes serving %s: %r" % (mnt, found))
    return found[0]


def gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def main():
    if os.geteuid() != 0:
        cb.skip("needs root to run cbtfs as another user")
    for tool in ("setpriv", "unshare", "nsenter", "fusermount3"):
        if shutil.which(tool) is None:
            cb.skip("needs " + tool)
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web", disks=[{"name": "root", "size": 4 * MiB}])
        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.write(os.urandom(4 * MiB))
        s.control("write_file", vdi=vm["disks"][0]["vdi"], path=guest)

        # A home for uid 65534 (the scratch directory is root's 0700).
        os.chmod(env.dir, 0o711)
        home = own(env.mkdir("home"), 0o700)
        ca = own(shutil.copy(info["ca_file"], os.path.join(home, "ca.pem")), 0o644)
        pw = own(env.password_file(name="home/pw"), 0o600)
        fifo = os.path.join(home, "pw.fifo")
        os.mkfifo(fifo)
        own(fifo, 0o600)
        mnt = own(env.mkdir("home", "mnt"), 0o700)
        store = os.path.join(home, "store")
        srv = ["--server", info["xapi_url"], "--ca-file", ca]

        control = subprocess.Popen(NOBODY + ["sh", "-c", "echo ready; exec cat"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        env.on_close(lambda: control.poll() is None and control.kill())
        check(control.stdout.readline() == b"ready\n", "the control did not start")
        check(environ_readable(control.pid),
              "uid 65534 cannot read the environ of its own dumpable process")
        control.stdin.close()
        control.wait(timeout=60)

        r = subprocess.run(NOBODY + [cb.cbtfs_binary(), "backup", store, "--no-copy"]
                           + srv + ["--password-file", pw], capture_output=True, text=True)
        check(r.returncode == 0, "backup as 65534: %s" % r.stderr)

        for args in (["backup", store], ["fetch", store], ["verify", store],
                     ["mount", store, mnt]):
            check(not caught_reading_password(env, fifo, args + srv),
                  "%s: uid 65534 read its environ while it read the password"
                  % args[0])
            print("%s: not dumpable when it reads the password" % args[0])

        # An object store's secrets: its secret key (from a file, or the
        # environment's) and an encryption key, held once read; caught
        # while it reads the configuration file, which comes after.
        # Nothing is asked of the bucket before.
        secret = own(env.password_file(name="home/s3.secret"), 0o600)
        key = os.path.join(home, "s3.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        own(key, 0o600)
        bucket = ["ls", "s3://nodump/x", "--s3-endpoint", "http://127.0.0.1:9",
                  "--s3-allow-http", "--s3-access-key", "a"]
        for how, extra, environ in (
                ("--s3-secret-file", ["--s3-secret-file", secret], None),
                ("--encrypt-key-file", ["--encrypt-key-file", key], None),
                ("AWS_SECRET_ACCESS_KEY", [],
                 dict(os.environ, AWS_SECRET_ACCESS_KEY="k"))):
            check(not caught_reading_password(env, fifo, bucket + extra,
                                              "--config", environ),
                  "ls of a bucket with %s: uid 65534 read its environ"
                  % how)
            print("ls of a bucket with %s: not dumpable" % how)

        # The daemonised child of mount --server, holding a session.
        fuse = os.stat("/dev/fuse").st_rdev
        devdir = env.mkdir("dev")
        script = ('mount -t tmpfs -o mode=0755 none "$1" && '
                  'mknod -m 0666 "$1/fuse" c %d %d && '
                  'mount --bind "$1/fuse" /dev/fuse && shift && exec "$@"'
                  % (os.major(fuse), os.minor(fuse)))
        r = subprocess.run(["unshare", "--mount", "--propagation", "private",
                            "sh", "-c", script, "sh", devdir] + NOBODY
                           + [cb.cbtfs_binary(), "mount", store, mnt] + srv
                           + ["--password-file", pw], capture_output=True, text=True)
        check(r.returncode == 0, "mount as 65534: %s" % r.stderr)
        pid = daemon_pid(mnt)
        env.on_close(lambda: gone(pid) or os.kill(pid, 9))
        with open("/proc/%d/status" % pid) as f:
            check("Uid:\t65534\t" in f.read(), "the mount does not run as 65534")
        img = os.path.join(mnt, "by-vm/web/root/latest")
        r = subprocess.run(["nsenter", "--target", str(pid), "--mount"] + NOBODY
                           + ["cat", img], capture_output=True)
        check(r.returncode == 0 and r.stdout == open(guest, "rb").read(),
              "reading the --no-copy point through the mount: %s" % r.stderr)
        check(not environ_readable(pid),
              "uid 65534 read the environ of the mount's serving process")
        print("mount: its daemonised child is not dumpable")
        subprocess.run(["nsenter", "--target", str(pid), "--mount",
                        "fusermount3", "-u", mnt], check=True)
        deadline = time.monotonic() + 60
        while not gone(pid):
            check(time.monotonic() < deadline, "the mount did not exit")
            time.sleep(0.02)
    print("ok")


if __name__ == "__main__":
    main()
