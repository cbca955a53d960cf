#!/usr/bin/env python3
"""End to end: NBD connection details are asked of XAPI once per
snapshot, not once per connection.

Each ask is XAPI round trips (VDI.get_by_uuid, VDI.get_nbd_info) to a
pool that may be far away.  A mount reading several cold places of a
lazy point at once opens several connections to its snapshot with one
answer; a backup's copy opens four with one (and one for the size check
before the layer is committed).  Details that stop working (an expired
session) are asked again: test-lazy.py covers that.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with sim.Sim() as s, cb.Env() as env:
        vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        store = env.path("store")

        # A copy: one ask for the size check, one for its connections.
        s.control("reset_stats")
        env.cbtfs("backup", store, *srv)
        st = s.control("stats")
        asks = st["xapi"]["calls"].get("VDI.get_nbd_info", 0)
        check(st["nbd"]["connections"] >= 4, "the copy opened %d connections"
              % st["nbd"]["connections"])
        check(asks == 2, "%d asks for %d connections" % (asks,
                                                          st["nbd"]["connections"]))

        # A mount: readers of six cold places at once, on slow NBD reads,
        # each on a connection of its own.
        cb.write_at(guest, 0, os.urandom(SIZE))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, "--no-copy", *srv)
        snap = env.ls_json(store)["disks"][0]["points"][-1]["snapshot"]
        m = env.mount_fg(store, env.path("m"), *srv)
        img = os.path.join(m.mnt, "by-uuid", vdi, snap + ".img")
        s.control("reset_stats")
        s.control("set", nbd_read_delay_ms=300)
        offsets = [k * 8 * MiB for k in range(6)]
        barrier = threading.Barrier(len(offsets))
        got = {}

        def reader(off):
            barrier.wait()
            got[off] = cb.pread(img, off, 65536)

        threads = [threading.Thread(target=reader, args=(o,)) for o in offsets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s.control("set", nbd_read_delay_ms=0)
        for off in offsets:
            check(got.get(off) == cb.pread(guest, off, 65536),
                  "wrong data at %d" % off)
        st = s.control("stats")
        calls = st["xapi"]["calls"]
        check(st["nbd"]["connections"] >= 2, "the readers shared %d "
              "connections" % st["nbd"]["connections"])
        check(calls.get("VDI.get_nbd_info", 0) == 1
              and calls.get("VDI.get_by_uuid", 0) == 1,
              "%d connections cost %r" % (st["nbd"]["connections"], calls))
        check(m.unmount() == 0, "the mount failed: %s" % m.log())
    print("ok")


if __name__ == "__main__":
    main()
