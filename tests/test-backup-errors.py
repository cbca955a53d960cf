#!/usr/bin/env python3
"""End to end: bad input gets one clear line and loses nothing.

Wrong password, an untrusted certificate, an unreachable host, plain
http, a missing password file, an unknown --vm, a store locked by
another process (named as the lock file's record says, or "another
cbtfs process" when it has none; at once with --lock-wait 0, else after
the wait), a bad --lock-wait, a directory that is not a store, a
malformed XAPI answer and a changed-block bitmap of the wrong length:
each must fail with a one-line message naming the problem, commit no
layer, and leave every earlier point in time readable byte for byte.
On an object store the lock is the lease object `lock` (hold_store_lock
puts it as another process would) and "a directory that is not a
store" is a prefix holding other objects.
"""
# store-kinds: dir s3
import base64
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20


def free_port():
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web",
                       disks=[{"name": "root", "size": 8 * MiB}])
        vdi = vm["disks"][0]["vdi"]
        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.truncate(8 * MiB)
        cb.write_at(guest, MiB, os.urandom(100000))
        s.control("write_file", vdi=vdi, path=guest)

        pw = env.password_file()
        bad_pw = env.password_file("wrong", name="bad-pw")
        store = env.store()

        def backup(*args, server=None, ca=True, password=pw):
            cmd = ["backup", store, "--server", server or info["xapi_url"],
                   "--password-file", password] + list(args)
            if ca:
                cmd += ["--ca-file", info["ca_file"]]
            return env.cbtfs(*cmd, ok=False)

        def fails_with(result, *words):
            rc, _, err = result
            lines = [ln for ln in err.splitlines() if ln.strip()]
            check(rc != 0, "expected failure, got exit 0")
            check(len(lines) == 1, "expected one line, got %r" % err)
            for w in words:
                check(w in lines[0], "%r not in %r" % (w, lines[0]))
            for secret in ("secret", "OpaqueRef:", "session_id"):
                check(secret not in err, "%r leaked into %r" % (secret, err))

        # A good baseline first: nothing below may damage it.
        env.cbtfs("backup", store, "--server", info["xapi_url"], "--ca-file",
                  info["ca_file"], "--password-file", pw, "-q")
        base = env.path("base.img")
        cb.copy_sparse(guest, base)
        before = env.ls_json(store)

        fails_with(backup(password=bad_pw), "SESSION_AUTHENTICATION_FAILED")
        fails_with(backup(ca=False), "not trusted")
        fails_with(backup(server="https://127.0.0.1:%d" % free_port()),
                   "cannot connect", "refused")
        fails_with(backup(server="http://127.0.0.1:1"), "plain http")
        fails_with(backup(password=env.path("nonexistent")), "password-file",
                   "No such file")
        fails_with(backup("--vm", "nosuch"), "nosuch", "no VM")

        # Another process holds the store.  Its record in the lock
        # (FORMAT.md) names it; without one, or a garbled one, the
        # message says only "another cbtfs process".
        with env.hold_store_lock(store, ""):
            start = time.monotonic()
            r = backup("--lock-wait", "0")
            fails_with(r, "the store %s is in use by another cbtfs process"
                       % store)
            check(r[0] == 1, "a held store: exit %d" % r[0])
            check(time.monotonic() - start < 30, "--lock-wait 0 waited")
            check("gave up" not in r[2], "--lock-wait 0: %r" % r[2])
        with env.hold_store_lock(store, "pid %d\ncommand prune\nsince "
                                 "1796299384\n" % os.getpid()):
            r = backup("--lock-wait", "0.5")
            fails_with(r, "the store %s is in use by cbtfs prune (pid %d, "
                       "since 2026-12-03 12:03:04 UTC); gave up after 0.5 s"
                       % (store, os.getpid()))
            check(r[0] == 1, "a held store: exit %d" % r[0])
        with env.hold_store_lock(store, "pid 12\x00x\ncommand BACKUP\n"
                                 "since yesterday\n"):
            fails_with(backup("--lock-wait", "0"), "is in use by another "
                       "cbtfs process")
        for bad in ("-1", "soon", "", "nan", "inf", "5s"):
            r = backup("--lock-wait", bad)
            fails_with(r, "--lock-wait")
            check(r[0] == 2, "--lock-wait %r: exit %d, not 2" % (bad, r[0]))

        # A directory (a bucket's prefix) holding other things is never
        # taken over.
        other = env.store("other")
        if cb.is_dir_store(other):
            os.mkdir(other)
            with open(os.path.join(other, "precious"), "w") as f:
                f.write("keep me")
        else:
            env.s3_object(other, "precious", "PUT", b"keep me")
        rc, _, err = env.cbtfs("backup", other, "--server", info["xapi_url"],
                               "--password-file", pw, ok=False)
        check(rc != 0 and "not a cbtfs store" in err, "took over %s" % other)
        if cb.is_dir_store(other):
            check(os.listdir(other) == ["precious"], "touched %s" % other)
        else:
            check(env.store_objects(other) == {"precious": 7},
                  "touched %s" % other)

        # XAPI answers garbage.
        s.control("set", raw_next={"method": "VM.get_all_records",
                                   "body": "<methodResponse><params><param>"})
        fails_with(backup(), "XML-RPC", "malformed")

        # A changed-block bitmap of the wrong length: no layer committed,
        # and the snapshot taken for it does not linger on the host.
        cb.write_at(guest, 2 * MiB, b"changed" * 1000)
        s.control("write_file", vdi=vdi, path=guest)
        vms_before = len([v for v in s.control("vms")["vms"]])
        s.control("set", return_next={"method": "VDI.list_changed_blocks",
                                      "value": base64.b64encode(b"\xff").decode()})
        rc, _, err = backup()
        check(rc == 1, "bad bitmap: exit %d" % rc)
        check("bitmap is 1 bytes, expected 16" in err, "message: %r" % err)
        after = env.ls_json(store)
        check(after == before, "the store changed after a failed backup")
        check(len(s.control("vms")["vms"]) == vms_before,
              "a VM snapshot was left behind")

        # Everything still reads back exactly; the next backup works.
        mnt = env.mount(store, env.path("mnt"))
        img = os.path.join(mnt, "by-vm", "web", "root", "latest")
        check(cb.sha256(img) == cb.sha256(base), "the baseline changed")
        cb.unmount(mnt)
        rc, _, err = backup()
        check(rc == 0, "the backup after the failures failed: %s" % err)
        pts = env.ls_json(store)["disks"][0]["points"]
        check(len(pts) == 2 and pts[1]["kind"] == "delta", "points: %s" % pts)
    print("ok")


if __name__ == "__main__":
    main()
