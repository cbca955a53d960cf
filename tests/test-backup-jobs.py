#!/usr/bin/env python3
"""End to end: cbtfs backup --jobs N backs up N VMs at once.

Several VMs, one disk each, backed up with --jobs 4 and 8 connections
per copy: the stand-in must see more than one VM's disk served at once
(the jobs overlap), never more than XenServer's 16 NBD connections
(the jobs share them: 4 x 8 would be 32, and xapi-nbd refuses the
17th), and every image in the store must be the VM's disk, byte for
byte.  --jobs 0, a negative count or garbage is a usage error (exit 2).
"""
# store-kinds: dir s3
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
# Enough 1 MiB requests (64) that each of a copy's 8 workers claims some
# and connects: 4 jobs could then open 32 connections at once.
SIZE = 64 * MiB
VMS = 6


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with sim.Sim() as s, cb.Env() as env:
        disks = []
        for k in range(VMS):
            _, vdi, guest, srv = cb.random_disk(s, env, "vm%d" % k, "d%d" % k,
                                                SIZE)
            disks.append((k, vdi, guest))
        store = env.store()

        for bad in ("0", "-1", "abc", "", "4x", "65"):
            rc, _, err = env.cbtfs("backup", store, "--jobs", bad, *srv,
                                   ok=False)
            check(rc == 2, "--jobs %r exited %d, not 2: %s" % (bad, rc, err))
        check(not env.store_exists(store), "a refused command made the store")

        # Slow NBD reads keep each copy going for a while, so that the
        # jobs' copies overlap whatever the machine's speed.
        s.control("set", nbd_read_delay_ms=40)
        s.control("reset_stats")
        env.cbtfs("backup", store, "--jobs", "4", "--nbd-connections", "8",
                  *srv)
        s.control("set", nbd_read_delay_ms=0)
        st = s.control("stats")["nbd"]
        check(st["refused"] == 0, "the stand-in refused %d connections over "
              "its limit" % st["refused"])
        check(st["max_open"] <= 16, "%d NBD connections at once"
              % st["max_open"])
        check(st["max_vdis_open"] > 1, "only %d VM's disk was copied at a "
              "time" % st["max_vdis_open"])

        m = env.mount(store, env.path("m"))
        for k, vdi, guest in disks:
            img = os.path.join(m, "by-vm", "vm%d" % k, "d%d" % k, "latest")
            check(cb.sha256(img) == cb.sha256(guest),
                  "vm%d: the image differs from the disk: blocks %s"
                  % (k, cb.block_diff(img, guest)[:10]))
    print("ok")


if __name__ == "__main__":
    main()
