#!/usr/bin/env python3
"""End to end: kill -9 in the middle of a backup.

The backup is killed while it copies a baseline (after some blocks are
durable).  Afterwards the store is consistent: the earlier point reads
back exactly, the interrupted point is listed as incomplete, and the
next backup finishes it by copying only the blocks that were missing,
then takes its own delta.
"""
# store-kinds: dir s3
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
SIZE = 256 * MiB


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="db", disks=[{"name": "d", "size": SIZE},
                                                      {"name": "e", "size": SIZE}])
        first, second = vm["disks"][0]["vdi"], vm["disks"][1]["vdi"]
        guest = env.path("d.img")
        with open(guest, "wb") as f:
            f.write(os.urandom(SIZE))
        s.control("write_file", vdi=first, path=guest)
        pw = env.password_file()
        store = env.store()
        cmd = [cb.cbtfs_binary(), "backup", store, "--server", info["xapi_url"],
               "--ca-file", info["ca_file"], "--password-file", pw, "-q"]

        # A first, complete backup of both disks.
        subprocess.run(cmd, check=True)
        base = env.path("base.img")
        cb.copy_sparse(guest, base)

        # Change the whole first disk, slow the NBD server down, and kill
        # the backup once the new layer holds some durable blocks.
        with open(guest, "wb") as f:
            f.write(os.urandom(SIZE))
        s.control("write_file", vdi=first, path=guest)
        s.control("set", nbd_read_delay_ms=40)
        proc = subprocess.Popen(cmd)
        env.on_close(lambda: proc.poll() is None and proc.kill())
        old_layers = set(env.stored_layers(store, first))
        deadline = time.monotonic() + 120
        while True:
            # One index record past the header: some blocks are durable.
            if set(env.durable_layers(store, first)) - old_layers:
                break
            check(proc.poll() is None, "backup finished before it could be killed")
            check(time.monotonic() < deadline, "no durable block appeared")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s.control("set", nbd_read_delay_ms=0)

        ls = env.ls_json(store)
        d = [x for x in ls["disks"] if x["uuid"] == first][0]
        check(len(d["points"]) == 2, "points after the crash: %s" % d["points"])
        partial = d["points"][1]
        check(not partial["complete"], "the killed point claims to be complete")
        missing = partial["changed_blocks"] - partial["present_blocks"]
        check(0 < missing < partial["changed_blocks"], "present %d of %d"
              % (partial["present_blocks"], partial["changed_blocks"]))

        # The earlier point is intact.
        mnt = env.mount(store, env.path("mnt"))
        old = os.path.join(mnt, "by-uuid", first, d["points"][0]["snapshot"] + ".img")
        check(cb.sha256(old) == cb.sha256(base), "the earlier point changed")
        cb.unmount(mnt)

        # The next run finishes the interrupted layer, reading only what is
        # missing, then adds its own point.
        s.control("reset_stats")
        subprocess.run(cmd, check=True)
        read = s.control("stats")["nbd"]["by_vdi"].get(partial["snapshot"])
        check(read and read["bytes"] == missing * cb.BLOCK,
              "resuming read %s bytes, %d blocks were missing"
              % (read and read["bytes"], missing))
        d = [x for x in env.ls_json(store)["disks"] if x["uuid"] == first][0]
        check(len(d["points"]) == 3 and all(p["complete"] for p in d["points"]),
              "after resuming: %s" % d["points"])
        # Reduced once finished, and then removed: the run's own point
        # is newer.
        check(partial["snapshot"] not in [v["vdi"] for v in
                                          s.control("vdis")["vdis"]],
              "the finished snapshot is still on the host")
        mnt = env.mount(store, env.path("mnt2"))
        for p in d["points"][1:]:
            img = os.path.join(mnt, "by-uuid", first, p["snapshot"] + ".img")
            check(cb.sha256(img) == cb.sha256(guest), "%s is not the disk"
                  % p["snapshot"])
        check(second in [x["uuid"] for x in ls["disks"]], "second disk lost")
    print("ok")


if __name__ == "__main__":
    main()
