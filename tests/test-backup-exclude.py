#!/usr/bin/env python3
"""End to end: cbtfs backup --exclude-disk NAME-OR-UUID.

A VM with three disks: one excluded by its name, one by its VDI uuid.
They are said to be skipped, get no folder and no point in the store,
nothing is read of them over NBD, and no snapshot of them is left on
the host (VM.snapshot takes every disk; cbtfs removes the snapshots of
the excluded ones).  The third disk is backed up whole.  A disk
excluded by name in one VM is excluded in every VM.  A name that
names no disk (a typo) is warned about, naming it.
"""
# store-kinds: dir s3
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 8 * MiB


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with sim.Sim() as s, cb.Env() as env:
        rec = s.control("create_vm", name="db", disks=[
            {"name": "root", "size": SIZE}, {"name": "scratch", "size": SIZE},
            {"name": "swap", "size": SIZE}])
        vdis = {n: d["vdi"] for n, d in zip(("root", "scratch", "swap"),
                                            rec["disks"])}
        for name, vdi in vdis.items():
            guest = env.path(name + ".img")
            with open(guest, "wb") as f:
                f.write(os.urandom(SIZE))
            s.control("write_file", vdi=vdi, path=guest)
        srv = ["--server", s.info["xapi_url"], "--ca-file", s.info["ca_file"],
               "--password-file", env.password_file()]
        store = env.store()

        s.control("reset_stats")
        _, _, err = env.cbtfs("backup", store, "-v", "--exclude-disk",
                              "scratch", "--exclude-disk", vdis["swap"],
                              "--exclude-disk", "scrach", *srv)
        for name in ("scratch", "swap"):
            check("disk '%s' (" % name in err and "skipped" in err,
                  "backup did not say it skipped %s: %s" % (name, err))
        warned = [l for l in err.splitlines() if "--exclude-disk" in l
                  and "no disk" in l]
        check(len(warned) == 1 and "scrach" in warned[0],
              "the name that named no disk: %r" % warned)
        disks = env.ls_json(store)["disks"]
        check([d["uuid"] for d in disks] == [vdis["root"]],
              "the store holds %r, not just root (%s)"
              % ([d["uuid"] for d in disks], vdis["root"]))
        if cb.is_dir_store(store):
            check(sorted(os.listdir(os.path.join(store, "disks")))
                  == [vdis["root"]], "excluded disks got a folder in the store")
        else:
            for name in vdis:
                check(bool(env.store_state(store, vdis[name]))
                      == (name == "root"), "disk %s has %d objects in the "
                      "store" % (name, len(env.store_state(store, vdis[name]))))
        by_vdi = s.control("stats")["nbd"]["by_vdi"]
        snaps = {v["vdi"]: v for v in s.control("vdis")["vdis"]
                 if v["is_a_snapshot"]}
        live_ref = {v["vdi"]: v["ref"] for v in s.control("vdis")["vdis"]}
        for name in ("scratch", "swap"):
            left = [u for u, v in snaps.items()
                    if v["snapshot_of"] == live_ref[vdis[name]]]
            check(left == [], "snapshots of excluded %s left on the host: %r"
                  % (name, left))
        for u in by_vdi:
            check(u not in snaps or snaps[u]["snapshot_of"]
                  == live_ref[vdis["root"]],
                  "read over NBD from a snapshot of an excluded disk (%s)" % u)
        m = env.mount(store, env.path("m"))
        img = os.path.join(m, "by-vm", "db", "root", "latest")
        check(cb.sha256(img) == cb.sha256(env.path("root.img")),
              "the image of root differs from the disk")
    print("ok")


if __name__ == "__main__":
    main()
