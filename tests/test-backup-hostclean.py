#!/usr/bin/env python3
"""End to end: backup keeps the host clean of its older CBT-metadata
snapshots.

Nightly backups of a VM with two disks, with random writes between
them.  After each successful run the host holds exactly one of the
store's cbt_metadata snapshots per disk, its newest point's (the next
VDI.list_changed_blocks starts from it); the older ones are destroyed,
which folds their changed-block logs into their neighbours on the host
(docs/xapi.md).  What must stay does: a user's own cbt_metadata
snapshot of the same disk, the snapshots of a second store backing up
the same VM (whose deltas then span the destroyed ones), and a
--no-copy point's snapshot, which still holds data the store lacks
(until cbtfs fetch copies it and reduces it; the next backup removes
it then).  When VDI.destroy fails the backup still exits 0, with one
warning line per snapshot it could not remove, and the next run
removes them.  At the end every point of both stores reads
byte-identical to its disk as it was that night.
"""
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 4 * MiB
DISKS = ("root", "data")
REMOVED = re.compile(r"VM 'web' disk '(\w+)' \(\d+\): removed (\d+) older "
                     r"CBT-metadata snapshots? from the host")


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    with sim.Sim() as s, cb.Env() as env:
        rec = s.control("create_vm", name="web", disks=[
            {"name": n, "size": SIZE} for n in DISKS])
        vdi = {n: d["vdi"] for n, d in zip(DISKS, rec["disks"])}
        live_ref = {n: d["vdi_ref"] for n, d in zip(DISKS, rec["disks"])}
        guest = {n: env.path(n + ".img") for n in DISKS}
        for n in DISKS:
            with open(guest[n], "wb") as f:
                f.write(rng.randbytes(SIZE))
            s.control("write_file", vdi=vdi[n], path=guest[n])
        srv = ["--server", s.info["xapi_url"], "--ca-file", s.info["ca_file"],
               "--password-file", env.password_file()]
        a, b = env.path("a"), env.path("b")
        want = {}               # snapshot uuid -> sha256 of its disk that night

        def night_writes():
            """A few random writes to each disk, as a guest makes them."""
            for n in DISKS:
                with open(guest[n], "r+b") as f:
                    for _ in range(rng.randint(1, 4)):
                        length = rng.randint(1, 150000)
                        f.seek(rng.randrange(SIZE - length))
                        f.write(rng.randbytes(length))
                s.control("write_file", vdi=vdi[n], path=guest[n])

        def points(store):
            """{disk name: [snapshot uuids, oldest first]} of STORE."""
            by_uuid = {d["uuid"]: [p["snapshot"] for p in d["points"]]
                       for d in env.ls_json(store)["disks"]}
            return {n: by_uuid.get(vdi[n], []) for n in DISKS}

        def backup(store, *extra, night):
            """Back STORE up; record what its new points must read as.
            {disk: snapshots removed (from -v)} and stderr."""
            _, _, err = env.cbtfs("backup", store, "-v", *extra, *srv)
            for n in DISKS:
                want[points(store)[n][-1]] = cb.sha256(guest[n])
            removed = {}
            for m in REMOVED.finditer(err):
                check(m.group(1) not in removed, "night %d: two removal lines "
                      "for disk %s: %s" % (night, m.group(1), err))
                removed[m.group(1)] = int(m.group(2))
            return removed, err

        def host():
            """{snapshot uuid: (type, live disk name)} of the VM's disks."""
            of = {ref: n for n, ref in live_ref.items()}
            return {v["vdi"]: (v["type"], of[v["snapshot_of"]])
                    for v in s.control("vdis")["vdis"]
                    if v["is_a_snapshot"] and v["snapshot_of"] in of}

        keep = {}               # snapshot uuid -> type it must keep, and why

        def check_host(night):
            """A's metadata snapshots on the host: its newest point's
            only; and everything in KEEP still there, as it was."""
            h, pa = host(), points(a)
            for n in DISKS:
                mine = sorted(u for u, (t, d) in h.items()
                              if d == n and t == "cbt_metadata"
                              and u in pa[n])
                check(mine == [pa[n][-1]], "night %d, disk %s: store A's "
                      "cbt_metadata snapshots on the host are %r, not just "
                      "its newest point's %s" % (night, n, mine, pa[n][-1]))
            for u, (t, why) in keep.items():
                check(u in h, "night %d: %s (%s) was destroyed"
                      % (night, why, u))
                check(h[u][0] == t, "night %d: %s (%s) is %s, not %s"
                      % (night, why, u, h[u][0], t))

        # Night 1: the baseline; nothing older to remove.
        removed, _ = backup(a, night=1)
        check(removed == {}, "night 1: removed %r" % removed)
        check_host(1)

        # Night 2: a user's own metadata snapshot of root, and a second
        # store, B, backing up the same VM; then A.
        night_writes()
        px = s.server_proxy()
        sess = px.session.login_with_password("root", "secret")["Value"]
        users = px.VDI.snapshot(sess, live_ref["root"], {})["Value"]
        check(px.VDI.data_destroy(sess, users)["Status"] == "Success",
              "data_destroy of the user's snapshot")
        keep[px.VDI.get_uuid(sess, users)["Value"]] = (
            "cbt_metadata", "the user's own metadata snapshot")
        px.session.logout(sess)
        backup(b, night=2)
        for n in DISKS:
            keep[points(b)[n][-1]] = ("cbt_metadata", "store B's newest point")
        night_writes()
        removed, _ = backup(a, night=2)
        check(removed == {"root": 1, "data": 1}, "night 2: removed %r" % removed)
        check_host(2)

        # Night 3: A, then B, whose delta spans A's destroyed snapshot.
        night_writes()
        removed, _ = backup(a, night=3)
        check(removed == {"root": 1, "data": 1}, "night 3: removed %r" % removed)
        check_host(3)
        keep = {u: k for u, k in keep.items() if k[1] != "store B's newest point"}
        backup(b, night=3)
        for n in DISKS:
            keep[points(b)[n][-1]] = ("cbt_metadata", "store B's newest point")
        check_host(3)

        # Night 4: --no-copy: the snapshots keep their data, nothing is
        # removed.  Night 5 removes night 3's but keeps night 4's.
        night_writes()
        removed, _ = backup(a, "--no-copy", night=4)
        check(removed == {}, "night 4 (--no-copy): removed %r" % removed)
        lazy = {n: points(a)[n][-1] for n in DISKS}
        for n in DISKS:
            keep[lazy[n]] = ("user", "the --no-copy point's snapshot (data)")
        night_writes()
        removed, _ = backup(a, night=5)
        check(removed == {"root": 1, "data": 1}, "night 5: removed %r" % removed)
        check_host(5)
        night5 = {n: points(a)[n][-1] for n in DISKS}

        # Night 6: VDI.destroy fails; the backup still succeeds, with one
        # warning per snapshot it could not remove.
        s.control("set", fail_every={"method": "VDI.destroy", "error": [
            "SR_BACKEND_FAILURE_1", "", "test: the SR refuses", ""]})
        night_writes()
        removed, err = backup(a, night=6)
        s.control("set", fail_every={"method": "VDI.destroy", "error": None})
        check(removed == {}, "night 6: removed %r" % removed)
        warnings = [l for l in err.splitlines() if "warning:" in l]
        check(len(warnings) == 2, "night 6: %d warning lines, not one per "
              "snapshot it could not remove: %r" % (len(warnings), warnings))
        for n in DISKS:
            check(sum(night5[n] in l and "disk '%s'" % n in l
                      for l in warnings) == 1,
                  "night 6: no one warning naming %s's snapshot %s: %r"
                  % (n, night5[n], warnings))
        h = host()
        for n in DISKS:
            check(h.get(night5[n], ("gone",))[0] == "cbt_metadata",
                  "night 6: %s's snapshot %s is gone though destroy failed"
                  % (n, night5[n]))

        # fetch finishes the --no-copy points and reduces their snapshots;
        # night 7 removes them, and what night 6 could not.
        env.cbtfs("fetch", a, *srv)
        for n in DISKS:
            del keep[lazy[n]]
        night_writes()
        removed, _ = backup(a, night=7)
        check(removed == {"root": 3, "data": 3}, "night 7: removed %r (night "
              "4's, 5's and 6's of each disk)" % removed)
        check_host(7)

        # B's delta spans every snapshot A destroyed since night 3.
        keep = {u: k for u, k in keep.items() if k[1] != "store B's newest point"}
        backup(b, night=7)
        kinds = {d["uuid"]: d["points"][-1]["kind"]
                 for d in env.ls_json(b)["disks"]}
        check(kinds == {vdi[n]: "delta" for n in DISKS},
              "store B's night 7 is not a delta on each disk: %r" % kinds)
        for n in DISKS:
            keep[points(b)[n][-1]] = ("cbt_metadata", "store B's newest point")
        check_host(7)

        # Every point of both stores reads as its disk did that night.
        for store in (a, b):
            m = env.mount(store, env.path("m" + os.path.basename(store)))
            pts = points(store)
            for n in DISKS:
                for u in pts[n]:
                    img = os.path.join(m, "by-uuid", vdi[n], u + ".img")
                    check(cb.sha256(img) == want[u], "store %s, disk %s: "
                          "point %s does not read as the disk did"
                          % (os.path.basename(store), n, u))
            cb.unmount(m)
        check(len(points(a)["root"]) == 7 and len(points(b)["root"]) == 3,
              "points: %r %r" % (points(a), points(b)))
    print("ok")


if __name__ == "__main__":
    main()
