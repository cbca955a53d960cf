#!/usr/bin/env python3
"""End to end: two stores backing up one pool never remove each other's
snapshots.

Each store has an identity (in its cbtfs-store file), and the VM
snapshots a backup takes carry it in their name_label, so the cleanup
of what an interrupted run left removes only the store's own.  XAPI's
VDI.destroy does not refuse a disk only because a VM snapshot's
(unplugged) VBD points at it, so a cleanup that took another store's
snapshot for its own would destroy the data of a point that store still
needs.  Snapshots named "cbtfs backup" alone (older versions) are
removed only by a store that has a layer for one of their disks.
"""
# store-kinds: dir s3
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20


def store_id(env, store):
    lines = (env.store_file(store, "cbtfs-store") or b"").decode().splitlines()
    check(lines and lines[0] == "cbtfs-store 2" and lines[1].startswith("id "),
          "no identity in %s: %r" % (store, lines))
    return lines[1][3:]


def snapshot_vms(s):
    """name_label of every VM snapshot, by uuid."""
    return {v["vm"]: v["name"] for v in s.control("vms")["vms"]
            if v["is_a_snapshot"]}


def main():
    with sim.Sim() as s, cb.Env() as env:
        vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", 8 * MiB)
        a, b = env.store("a"), env.store("b")

        # A records a point whose data stays on the host (--no-copy), and
        # its run cannot remove its VM snapshot: the snapshot is left.
        env.cbtfs("backup", b, *srv)           # B exists and has a baseline
        s.control("set", fail_next={"method": "VM.destroy",
                                    "error": ["INTERNAL_ERROR", "test"]})
        env.cbtfs("backup", a, "--no-copy", *srv)
        ida, idb = store_id(env, a), store_id(env, b)
        check(ida != idb, "two stores share an identity")
        left = [u for u, n in snapshot_vms(s).items() if n == "cbtfs backup " + ida]
        check(len(left) == 1, "A's VM snapshot should be left, named with its "
              "id: %r" % snapshot_vms(s))
        point = env.ls_json(a)["disks"][0]["points"][-1]["snapshot"]
        check(s.control("vdi", uuid=point)["type"] == "user", "A's point has no data")

        # B's backup leaves A's leftovers alone.
        env.cbtfs("backup", b, *srv)
        check(left[0] in snapshot_vms(s), "B removed A's VM snapshot")
        check(s.control("vdi", uuid=point)["type"] == "user",
              "B destroyed the snapshot A's point needs")

        # A's next run removes its own VM snapshot but keeps the disk
        # snapshot its point needs; fetch then finishes the point.
        env.cbtfs("backup", a, "--no-copy", *srv)
        check(left[0] not in snapshot_vms(s), "A left its own VM snapshot")
        env.cbtfs("fetch", a, point, *srv)
        m = env.mount(a, env.path("ma"))
        img = os.path.join(m, "by-uuid", vdi, point + ".img")
        check(cb.sha256(img) == cb.sha256(guest), "A's point reads wrong")
        cb.unmount(m)

        # Older versions named snapshots "cbtfs backup": a store with no
        # layer for any of its disks leaves one alone (with a warning),
        # the store that has one removes it.
        px = s.server_proxy()
        sess = px.session.login_with_password("root", "secret")["Value"]
        vm_ref = vm["vm_ref"]
        legacy = px.VM.snapshot(sess, vm_ref, "cbtfs backup")["Value"]
        legacy_uuid = px.VM.get_uuid(sess, legacy)["Value"]
        vbds = px.VM.get_VBDs(sess, legacy)["Value"]
        disks = [px.VBD.get_VDI(sess, x)["Value"] for x in vbds]
        disk_uuids = [px.VDI.get_uuid(sess, d)["Value"] for d in disks
                      if d != "OpaqueRef:NULL"]
        _, _, err = env.cbtfs("backup", b, *srv)
        check(legacy_uuid in snapshot_vms(s), "B removed a legacy snapshot "
              "none of whose disks it has")
        check("leaving VM snapshot %s alone" % legacy_uuid in err,
              "no warning about the legacy snapshot: %r" % err)
        for u in disk_uuids:
            check(s.control("vdi", uuid=u)["type"] == "user",
                  "B destroyed a disk of a legacy snapshot")
        # Make it A's: A has a layer for its disk (as if an old cbtfs
        # had recorded it and then been killed).
        env.bare_layer(a, vdi, disk_uuids[0])
        env.cbtfs("backup", a, "--no-copy", *srv)
        check(legacy_uuid not in snapshot_vms(s), "A kept its legacy snapshot")
        check(s.control("vdi", uuid=disk_uuids[0])["type"] == "user",
              "A destroyed a disk snapshot it has a layer for")
        px.session.logout(sess)
    print("ok")


if __name__ == "__main__":
    main()
