#!/usr/bin/env python3
"""End to end: faults around a backup, against real processes.

- NBD connections dropped mid-copy: cbtfs reconnects and the backup
  completes, byte-exact; when every connection fails, it stops with a
  clear message and the next run finishes the copy.
- XAPI slow, NBD slow: bounded by --timeout, one clear message.
- Two backups of one VM on one store at once: with --lock-wait 0 the
  second refuses at once (exit 1), naming the first (cbtfs backup, its
  pid) as the holder of the store (a directory) or of the VM's disk (an
  object store); with a generous --lock-wait it says it waits, and
  succeeds once the first is done.  A backup of another VM meanwhile is
  refused the same way on a directory store and runs beside the first
  on an object store.
- A backup committing while a mount is live leaves open readers alone.
- kill -9 of the mount daemon: fusermount3 -u recovers, a new mount works.
"""
# store-kinds: dir s3
import fcntl
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 32 * MiB


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web", disks=[{"name": "root", "size": SIZE}])
        vdi = vm["disks"][0]["vdi"]
        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.write(os.urandom(SIZE))
        s.control("write_file", vdi=vdi, path=guest)
        pw = env.password_file()
        store = env.store()
        base = ["backup", store, "--server", info["xapi_url"], "--ca-file",
                info["ca_file"], "--password-file", pw]

        def points():
            return [d for d in env.ls_json(store)["disks"]
                    if d["uuid"] == vdi][0]["points"]

        def held(key, record):
            """Whether the store's lock object (file) KEY names RECORD."""
            return (env.store_file(store, key) or b"").startswith(
                record.encode())

        def text(path):
            with open(path) as f:
                return f.read()

        def one_error_line(err, *words):
            lines = [ln for ln in err.splitlines() if "warning" not in ln]
            check(len(lines) == 1, "expected one error line: %r" % err)
            for w in words:
                check(w in lines[0], "%r not in %r" % (w, lines[0]))

        # Every connection drops after 3 MiB: reconnect and finish.
        s.control("set", nbd_drop_after_bytes=3 * MiB)
        _, _, err = env.cbtfs(*base)
        check("retrying" in err, "no reconnect happened: %r" % err)
        s.control("set", nbd_drop_after_bytes=0)
        check(points()[0]["readable"], "the backup did not complete")
        mnt = env.mount(store, env.path("m1"))
        check(cb.sha256(os.path.join(mnt, "by-vm/web/root/latest"))
              == cb.sha256(guest), "the image differs after reconnects")
        cb.unmount(mnt)

        # Every read fails: a clear error; the next run finishes the copy.
        cb.write_at(guest, 0, os.urandom(8 * MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", nbd_drop_after_bytes=1)
        rc, _, err = env.cbtfs(*base, "--nbd-connections", "1", ok=False)
        s.control("set", nbd_drop_after_bytes=0)
        check(rc == 1, "a backup whose reads all failed exited %d" % rc)
        one_error_line(err, "NBD", "read at offset")
        p = points()[1]
        check(not p["complete"], "a failed copy claims to be complete")
        check(s.control("vdi", uuid=p["snapshot"])["type"] == "user",
              "the unfinished snapshot lost its data")
        s.control("reset_stats")
        env.cbtfs(*base)
        pts = points()
        check(all(q["readable"] for q in pts), "not finished: %s" % pts)
        missing = p["changed_blocks"] - p["present_blocks"]
        got = s.control("stats")["nbd"]["by_vdi"][p["snapshot"]]
        check(got["bytes"] == missing * cb.BLOCK, "finishing read %d bytes for "
              "%d missing blocks" % (got["bytes"], missing))

        # A slow host: bounded by --timeout, one clear line.
        before = points()
        s.control("set", xapi_delay_ms=3000)
        rc, _, err = env.cbtfs(*base, "--timeout", "1", ok=False)
        s.control("set", xapi_delay_ms=0)
        check(rc == 3, "a slow XAPI exited %d" % rc)
        one_error_line(err, "timed out")
        check(points() == before, "a failed login changed the store")

        # Slow NBD: each wait bounded, then a clear failure.
        cb.write_at(guest, 9 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", nbd_read_delay_ms=3000)
        rc, _, err = env.cbtfs(*base, "--timeout", "1", "--nbd-connections", "1",
                               ok=False)
        s.control("set", nbd_read_delay_ms=0)
        check(rc == 1, "slow NBD exited %d" % rc)
        one_error_line(err, "no answer within 1 s")
        env.cbtfs(*base)                      # and it finishes later

        # Two backups at once.  The first is held still (SIGSTOP) once
        # the store's lock (a directory's) or its disk's lease (an
        # object store's) names it, so that it surely holds them while
        # the others try: no race with how fast it is.  (Stopped, it
        # renews no lease: what follows takes seconds, well within the
        # 60 s a lease counts as held unrenewed.)
        cb.write_at(guest, 20 * MiB, os.urandom(4 * MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", nbd_read_delay_ms=300)
        if cb.is_dir_store(store):
            lock, holds = "lock", "the store %s" % store
        else:
            lock = "disklocks/" + vdi
            holds = "the disk %s of the store %s" % (vdi, store)
        first = subprocess.Popen([cb.cbtfs_binary()] + base + ["-q"])
        env.on_close(lambda: first.poll() is None and first.kill())
        record = "pid %d\ncommand backup\nsince " % first.pid
        deadline = time.monotonic() + 60
        while not held(lock, record):
            check(first.poll() is None, "the first backup ended early")
            check(time.monotonic() < deadline, "the first backup took no lock")
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGSTOP)
        if cb.is_dir_store(store):
            with open(os.path.join(store, "lock")) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    check(False, "the first backup let the store go too soon")
                except BlockingIOError:
                    pass
        # --lock-wait 0: refused at once, naming the first.
        rc, _, err = env.cbtfs(*base, "--lock-wait", "0", ok=False)
        check(rc == 1, "a second backup did not refuse: %d %r" % (rc, err))
        one_error_line(err, "%s is in use by cbtfs backup (pid %d, since "
                       % (holds, first.pid))
        check("gave up" not in err, "--lock-wait 0 waited: %r" % err)
        # Another VM: it waits for the store on a directory; on an
        # object store only its own disk's lease, which is free.
        other = s.control("create_vm", name="other", disks=[
            {"name": "d", "size": MiB}])["disks"][0]["vdi"]
        rc, _, err = env.cbtfs(*base, "--vm", "other", "--lock-wait", "0",
                               ok=False)
        others = [d["points"] for d in env.ls_json(store)["disks"]
                  if d["uuid"] == other]
        if cb.is_dir_store(store):
            check(rc == 1 and others == [], "another VM's backup beside "
                  "the first: %d %r" % (rc, err))
            one_error_line(err, "the store %s is in use by cbtfs backup "
                           "(pid %d, since " % (store, first.pid))
        else:
            check(rc == 0 and len(others) == 1 and others[0][0]["complete"],
                  "another VM's backup beside the first: %d %r %s"
                  % (rc, err, others))
        check(held(lock, record), "the first backup let %s go" % lock)
        # A generous wait: it says so, and waits for the first to finish.
        third_err = env.path("third.err")
        with open(third_err, "w") as f:
            third = subprocess.Popen([cb.cbtfs_binary()] + base
                                     + ["--lock-wait", "600", "-v"],
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=f)
        env.on_close(lambda: third.poll() is None and third.kill())
        waiting = "%s is in use by cbtfs backup (pid %d, since " % (
            holds, first.pid)
        deadline = time.monotonic() + 60
        while "waiting up to 600 s" not in text(third_err):
            check(third.poll() is None, "the waiting backup ended: %r"
                  % text(third_err))
            check(time.monotonic() < deadline, "the third backup does not "
                  "say that it waits: %r" % text(third_err))
            time.sleep(0.02)
        check(waiting in text(third_err), "the waiting backup does "
              "not name the first: %r" % text(third_err))
        os.kill(first.pid, signal.SIGCONT)
        s.control("set", nbd_read_delay_ms=0)
        check(first.wait(timeout=120) == 0, "the first backup failed")
        rc = third.wait(timeout=120)
        err = text(third_err)
        check(rc == 0, "the waiting backup failed (%d): %r" % (rc, err))
        check(err.count("waiting up to") == 1, "said more than once: %r" % err)

        # A backup committing under a live mount: open readers carry on.
        mnt = env.mount(store, env.path("m2"))
        img = os.path.join(mnt, "by-vm/web/root/latest")
        with open(guest, "rb") as g:
            want = g.read()
        f = open(img, "rb")
        check(f.read(SIZE // 2) == want[:SIZE // 2], "first half wrong")
        cb.write_at(guest, 0, os.urandom(SIZE))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs(*base)
        check(f.read() == want[SIZE // 2:], "an open reader was disturbed by "
              "a backup")
        f.close()
        cb.unmount(mnt)

        # kill -9 of the mount daemon: recoverable, and a new mount works.
        m = env.mount_fg(store, env.path("m3"))
        m.proc.kill()
        m.proc.wait()
        subprocess.run(["fusermount3", "-u", m.mnt], check=True)
        check(not cb.mounted(m.mnt), "still mounted after fusermount3 -u")
        mnt = env.mount(store, m.mnt)
        check(cb.sha256(os.path.join(mnt, "by-vm/web/root/latest"))
              == cb.sha256(guest), "the new mount reads wrong")
    print("ok")


if __name__ == "__main__":
    main()
