#!/usr/bin/env python3
"""End to end: lazy points in time (backup --no-copy, mount --server,
cbtfs fetch).

A 2 GiB disk holding ext4 is backed up without copying.  Through a mount
with --server, reading one small file inside it fetches only the blocks
the filesystem needs (counted by the stand-in's NBD server), each once,
and keeps them: a later mount without --server serves them and fails
the rest with EIO and a log line.  Two readers of one cold region cause
one fetch; an expired session and dropped connections are renewed; an
unreachable host gives EIO, not a hang.  cbtfs fetch completes the
layers, with and without --keep-data, while a mount that read from them
stays mounted, and that mount then reads what fetch stored; fetch waits
a few seconds for a layer another process holds.  A mount given
relative paths (store, password and CA files) works once detached.
"""
# store-kinds: dir s3
import errno
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
SIZE = 2 * GiB


def read_fails_eio(path, off):
    try:
        cb.pread(path, off, 4096)
    except OSError as e:
        return e.errno == errno.EIO
    return False


def main():
    if os.geteuid() != 0:
        cb.skip("needs root for loop mounts")
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web", disks=[{"name": "root", "size": SIZE}])
        vdi = vm["disks"][0]["vdi"]
        guest = env.path("root.img")
        cb.make_ext4(guest, SIZE, {"note.txt": b"a small note\n",
                                   "big.bin": os.urandom(8 * MiB)}, lazy=True)
        cb.write_at(guest, GiB, os.urandom(8 * MiB))  # data in a cold region
        cb.write_at(guest, GiB + 256 * MiB, os.urandom(2 * MiB))  # m8's own
        s.control("write_file", vdi=vdi, path=guest)
        pw = env.password_file()
        store = env.store()
        srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
               "--password-file", pw]

        # A backup that copies nothing.
        env.cbtfs("backup", store, "--no-copy", *srv)
        p1 = env.ls_json(store)["disks"][0]["points"][0]
        check(not p1["complete"] and p1["present_blocks"] == 0,
              "--no-copy copied: %s" % p1)
        check(s.control("vdi", uuid=p1["snapshot"])["type"] == "user",
              "--no-copy reduced the snapshot")
        img1 = "by-uuid/%s/%s.img" % (vdi, p1["snapshot"])

        # Read one small file inside it: only what ext4 needs is fetched.
        s.control("reset_stats")
        m = env.mount_fg(store, env.path("m1"), *srv)
        lm = env.loop_mount(os.path.join(m.mnt, img1), env.path("loop1"))
        with open(os.path.join(lm, "note.txt"), "rb") as f:
            check(f.read() == b"a small note\n", "note.txt reads wrong")
        cb.subprocess.run(["umount", lm], check=True)
        check(m.unmount() == 0, "mount exited non-zero: %s" % m.log())
        nbd = s.control("stats")["nbd"]
        got = nbd["by_vdi"][p1["snapshot"]]
        fetched = len(got["blocks"])

        # Relative paths work although the mount serves from / once it
        # has detached (and logs in only when a read first needs it).
        rel = [cb.cbtfs_binary(), "mount",
               "store" if cb.is_dir_store(store) else store, "m-rel", "--server",
               info["xapi_url"], "--password-file", os.path.basename(pw),
               "--ca-file", os.path.relpath(info["ca_file"], env.dir)]
        os.mkdir(env.path("m-rel"))
        cb.subprocess.run(rel, cwd=env.dir, check=True)
        env.on_close(cb.unmount, env.path("m-rel"))
        with open(os.path.join(env.path("m-rel"), img1), "rb") as f:
            check(f.read(MiB) == cb.pread(guest, 0, MiB),
                  "a mount given relative paths reads wrong")
        cb.unmount(env.path("m-rel"))
        print("reading note.txt fetched %d blocks (%d requests)"
              % (fetched, got["requests"]))
        check(0 < fetched <= SIZE // cb.BLOCK // 100,
              "fetched %d of %d blocks to read one small file"
              % (fetched, SIZE // cb.BLOCK))
        check(got["bytes"] == fetched * cb.BLOCK, "blocks fetched twice: %d "
              "bytes for %d blocks" % (got["bytes"], fetched))
        p1 = env.ls_json(store)["disks"][0]["points"][0]
        check(p1["present_blocks"] == fetched, "kept %d of %d fetched blocks"
              % (p1["present_blocks"], fetched))

        # Without --server: the kept blocks serve, the rest is EIO.
        m = env.mount_fg(store, env.path("m2"))
        lm = env.loop_mount(os.path.join(m.mnt, img1), env.path("loop2"))
        with open(os.path.join(lm, "note.txt"), "rb") as f:
            check(f.read() == b"a small note\n", "kept blocks read wrong")
        cb.subprocess.run(["umount", lm], check=True)
        check(read_fails_eio(os.path.join(m.mnt, img1), GiB), "a block never "
              "fetched did not fail with EIO")
        check(p1["snapshot"] in m.log() and "offset %d" % GiB in m.log(),
              "no log line naming the snapshot and offset: %r" % m.log())
        check(s.control("stats")["nbd"]["bytes"] == got["bytes"],
              "a mount without --server used NBD")
        check(m.unmount() == 0, "mount exited non-zero")

        # Two points share the cold region; two readers at once, through
        # the two files (two page caches), with a slow NBD server: one
        # fetch.
        env.cbtfs("backup", store, "--no-copy", *srv)
        p2 = env.ls_json(store)["disks"][0]["points"][1]
        img2 = "by-uuid/%s/%s.img" % (vdi, p2["snapshot"])
        m = env.mount_fg(store, env.path("m3"), *srv)
        s.control("reset_stats")
        s.control("set", nbd_read_delay_ms=1000)
        barrier = threading.Barrier(2)
        results = {}

        def reader(name):
            barrier.wait()
            results[name] = cb.pread(os.path.join(m.mnt, name), GiB, 65536)

        threads = [threading.Thread(target=reader, args=(n,)) for n in (img1, img2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s.control("set", nbd_read_delay_ms=0)
        with open(guest, "rb") as f:
            f.seek(GiB)
            want = f.read(65536)
        check(results[img1] == want and results[img2] == want,
              "concurrent readers got wrong data")
        got = s.control("stats")["nbd"]["by_vdi"][p1["snapshot"]]
        check(GiB // cb.BLOCK in got["blocks"], "the region was not fetched")
        check(got["bytes"] == len(got["blocks"]) * cb.BLOCK,
              "two readers fetched the same blocks twice: %d bytes for %d "
              "blocks" % (got["bytes"], len(got["blocks"])))

        # Sessions expire and connections drop: the mount logs in again.
        logins = s.control("stats")["sessions"]["logins"]
        s.control("expire_sessions")
        s.control("drop_nbd")
        off = GiB + 512 * 1024
        check(cb.pread(os.path.join(m.mnt, img1), off, 4096)
              == open(guest, "rb").read(off + 4096)[off:],
              "read after session expiry is wrong")
        check(s.control("stats")["sessions"]["logins"] > logins,
              "no new login after the session expired")
        check(m.unmount() == 0, "mount exited non-zero")

        # An unreachable host: EIO in bounded time, one line; kept blocks fine.
        closed = sim_free_port()
        m = env.mount_fg(store, env.path("m4"), "--server",
                         "https://127.0.0.1:%d" % closed, "--password-file", pw,
                         "--timeout", "5")
        check("warning" in m.log() and "cannot connect" in m.log(),
              "no warning about the unreachable host: %r" % m.log())
        check(read_fails_eio(os.path.join(m.mnt, img1), GiB + 2 * MiB),
              "an unreachable host did not give EIO")
        lines = [ln for ln in m.log().splitlines()
                 if "offset %d" % (GiB + 2 * MiB) in ln]
        check(len(lines) == 1 and p1["snapshot"] in lines[0],
              "expected one line naming the snapshot and offset: %r" % m.log())
        check(cb.pread(os.path.join(m.mnt, img1), GiB, 4096) == want[:4096],
              "a kept block did not read while the host was unreachable")
        check(m.unmount() == 0, "mount exited non-zero")

        # kill -9 of the mount right after a fetch: whatever was not yet
        # durable is fetched again; nothing wrong is ever served.
        m = env.mount_fg(store, env.path("m6"), *srv)
        region = GiB + 4 * MiB
        with open(guest, "rb") as g:
            g.seek(region)
            want2 = g.read(MiB)
        check(cb.pread(os.path.join(m.mnt, img1), region, MiB) == want2,
              "fetched data read wrong")
        m.proc.kill()
        m.proc.wait()
        cb.subprocess.run(["fusermount3", "-u", m.mnt], check=True)
        kept = env.ls_json(store)["disks"][0]["points"][0]["present_blocks"]
        m = env.mount_fg(store, env.path("m7"), *srv)
        check(cb.pread(os.path.join(m.mnt, img1), region, MiB) == want2,
              "after kill -9 the region reads wrong")
        check(m.unmount() == 0, "mount exited non-zero")
        check(env.ls_json(store)["disks"][0]["points"][0]["present_blocks"]
              >= kept, "blocks were lost after a clean unmount")

        # A mount that kept blocks of a layer gives its writer lock back
        # once idle, so cbtfs fetch can finish the layer while it stays
        # mounted (m8).  Its region holds data no read before reached
        # (nor their readahead), so the mount keeps blocks: wait until
        # they are durable (the index grows), then until it lets go.
        def present():
            return env.ls_json(store)["disks"][0]["points"][0]["present_blocks"]
        before = present()
        if cb.is_dir_store(store):
            index = os.path.join(store, "disks", vdi, p1["snapshot"], "index")
            index_size = os.path.getsize(index)
            def kept():
                return os.path.getsize(index) > index_size
        else:
            def kept():         # an object store's index is its objects'
                return present() > before
        m = env.mount_fg(store, env.path("m8"), *srv)
        region = GiB + 256 * MiB
        with open(guest, "rb") as g:
            g.seek(region)
            check(cb.pread(os.path.join(m.mnt, img1), region, MiB) == g.read(MiB),
                  "fetched data read wrong")
        check(cb.wait_for(kept, 30),
              "the mount kept none of the blocks it fetched")
        check(cb.wait_for(lambda: env.writer_free(store, vdi, p1["snapshot"]),
                          30), "the idle mount kept "
              "the writer lock of %s for 30 s" % p1["snapshot"])
        check(present() > before, "ls does not count the blocks the mount kept")

        # cbtfs fetch waits a few seconds for a layer another process
        # holds, then gives up on it with one line; one let go of while
        # it waits is fetched.
        fetch1 = ["fetch", store, p1["snapshot"], "--keep-data", "-v"] + srv
        held_says = ("being filled by another cbtfs process"
                     if cb.is_dir_store(store) else "is in use by")
        with env.hold_writer(store, vdi, p1["snapshot"]) as held:
            rc, _, err = env.cbtfs(*fetch1, ok=False)
            check(rc == 1 and "waiting up to" in err and held_says in err,
                  "fetch of a held layer: exit %d: %s" % (rc, err))
            proc = cb.subprocess.Popen([cb.cbtfs_binary()] + fetch1,
                                       text=True, stdin=cb.subprocess.DEVNULL,
                                       stderr=cb.subprocess.PIPE)
            for line in proc.stderr:
                if "waiting up to" in line:
                    break
            held.release()
            err = proc.stderr.read()
        check(proc.wait() == 0 and "fetched" in err,
              "fetch of a layer let go of: exit %d: %s" % (proc.returncode, err))

        # That fetch kept the point's data on the host (--keep-data); now
        # the rest.
        pts = env.ls_json(store)["disks"][0]["points"]
        check(pts[0]["complete"] and not pts[1]["complete"] or
              pts[1]["changed_blocks"] == 0, "after fetch: %s" % pts)
        check(s.control("vdi", uuid=p1["snapshot"])["type"] == "user",
              "--keep-data reduced the snapshot")
        env.cbtfs("fetch", store, *srv)
        pts = env.ls_json(store)["disks"][0]["points"]
        check(all(p["readable"] for p in pts), "after fetch: %s" % pts)
        for p in pts:
            check(s.control("vdi", uuid=p["snapshot"])["type"] == "cbt_metadata",
                  "fetch kept the data of %s" % p["snapshot"])
        mnt = env.mount(store, env.path("m5"))
        check(cb.sha256(os.path.join(mnt, img1)) == cb.sha256(guest),
              "the fetched image differs from the disk")
        # m8, mounted all along, reads what fetch stored from the store:
        # the host has dropped the snapshot's data.
        check(cb.sha256(os.path.join(m.mnt, img1)) == cb.sha256(guest),
              "the mount that outlived the fetch reads the image wrong")
        check(m.unmount() == 0, "mount exited non-zero: %s" % m.log())
    print("ok")






def sim_free_port():
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


if __name__ == "__main__":
    main()
