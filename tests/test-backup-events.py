#!/usr/bin/env python3
"""End to end: what happens to a pool between backups.

Following HOST_IS_SLAVE to the master, choosing VMs with --vm, names
that are unsafe or taken later, a session expiring mid-run, CBT reset by
a host crash, a chain XAPI calls unrelated, a disk that grows, a disk
whose size is not a whole number of blocks; then every point in time is
checked through a foreground mount, which ends with fusermount3 -u.
"""
# store-kinds: dir s3
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
ROOT = 8 * MiB + 4608           # the last 64 KiB block is partial


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        web = s.control("create_vm", name="web",
                        disks=[{"name": "root", "size": ROOT}])
        odd = s.control("create_vm", name="../x/y",
                        disks=[{"name": "d", "size": 4 * MiB}])
        s.control("create_vm", name="other", disks=[{"name": "o", "size": MiB}])
        root_vdi = web["disks"][0]["vdi"]

        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.truncate(ROOT)
        pw = env.password_file()
        store = env.store()
        states = {}         # snapshot uuid -> copy of the guest disk then

        def backup(*extra, server=None):
            s.control("write_file", vdi=root_vdi, path=guest)
            _, _, err = env.cbtfs("backup", store, "--server",
                                  server or info["xapi_url"], "--ca-file",
                                  info["ca_file"], "--password-file", pw, *extra)
            ls = env.ls_json(store)
            for d in ls["disks"]:
                if d["uuid"] == root_vdi:
                    snap = d["points"][-1]["snapshot"]
                    if snap not in states:
                        states[snap] = env.path("state-%d" % len(states))
                        cb.copy_sparse(guest, states[snap])
            return err, ls

        def root_points(ls):
            return [d for d in ls["disks"] if d["uuid"] == root_vdi][0]["points"]

        # 1. Through the pool member: cbtfs must follow HOST_IS_SLAVE.  Only
        #    the VMs asked for (by name and by uuid) are backed up.
        cb.write_at(guest, 0, b"boot sector")
        cb.write_at(guest, ROOT - 4608, b"the very last bytes" * 200)
        err, ls = backup("--vm", "web", "--vm", odd["vm"],
                         server=info["slave_url"])
        vms = sorted((d["vm"], d["vm_name_label"]) for d in ls["disks"])
        check(vms == [(".._x_y", "../x/y"), ("web", "web")],
              "backed up VMs %s" % vms)

        # 2. The session expires in the middle of a run: log in again.
        logins = s.control("stats")["sessions"]["logins"]
        s.control("set", expire_sessions_on={"method": "VDI.get_nbd_info"})
        cb.write_at(guest, 3 * MiB, b"second" * 1000)
        err, ls = backup("--vm", "web")
        check(s.control("stats")["sessions"]["logins"] == logins + 2,
              "cbtfs did not log in again after SESSION_INVALID")
        pts = root_points(ls)
        check(len(pts) == 2 and pts[1]["kind"] == "delta", "points %s" % pts)

        # 3. A host crash switches CBT off: new baseline, old chain kept.
        s.control("reset_cbt", vdi=root_vdi)
        cb.write_at(guest, 5 * MiB, b"third" * 1000)
        err, ls = backup("--vm", "web")
        check("CBT was switched off" in err, "no warning about CBT: %s" % err)
        pts = root_points(ls)
        check(pts[2]["kind"] == "baseline" and pts[2]["chain"] != pts[0]["chain"],
              "after a CBT reset: %s" % pts[2])

        # 4. XAPI says the chain is unrelated: new baseline again.
        s.control("set", fail_next={"method": "VDI.list_changed_blocks", "error": [
            "SR_BACKEND_FAILURE_460", "",
            "Failed to calculate changed blocks for given VDIs. "
            "[opterr=Source and target VDI are unrelated]", ""]})
        cb.write_at(guest, 6 * MiB, b"fourth" * 1000)
        err, ls = backup("--vm", "web")
        check("chain is broken" in err and "SR_BACKEND_FAILURE_460" in err,
              "no warning about the broken chain: %s" % err)
        check(root_points(ls)[3]["kind"] == "baseline", "not a new baseline")

        # 5. The disk grows: the new point is larger, older ones keep their size.
        grown = ROOT + 2 * MiB
        s.control("resize", vdi=root_vdi, size=grown)
        with open(guest, "r+b") as f:
            f.truncate(grown)
        cb.write_at(guest, ROOT + MiB, b"in the new space" * 100)
        err, ls = backup("--vm", "web")
        pts = root_points(ls)
        check(pts[4]["size"] == grown and pts[3]["size"] == ROOT,
              "sizes %s" % [p["size"] for p in pts])
        check(pts[4]["kind"] == "delta", "growth broke the chain")

        # 5b. The VM snapshot cannot be removed: the disk snapshot keeps
        #     its data (data_destroy would fail on its VBDs), and the next
        #     backup removes the VM snapshot and reduces the disk snapshot.
        s.control("set", fail_next={"method": "VM.destroy",
                                    "error": ["OTHER_OPERATION_IN_PROGRESS"]})
        cb.write_at(guest, 7 * MiB, b"fifth" * 1000)
        err, ls = backup("--vm", "web")
        check("could not destroy the VM snapshot" in err, "no warning: %r" % err)
        kept = root_points(ls)[-1]["snapshot"]
        check(s.control("vdi", uuid=kept)["type"] == "user",
              "the snapshot was reduced while its VM snapshot held it")
        # 5c. A disk of the leftover VM snapshot cannot be read: it may
        #     be one the store lacks, which only the VM snapshot leads to,
        #     so the VM snapshot stays for the next run.
        left = [v for v in s.control("vms")["vms"] if v["is_a_snapshot"]]
        check(len(left) == 1 and left[0]["vbds"], "leftover: %s" % left)
        s.control("set", fail_next={"method": "VBD.get_record",
                                    "ref": left[0]["vbds"][0],
                                    "error": ["INTERNAL_ERROR", "disk busy"]})
        err, ls = backup("--vm", "web")
        check("keeping the snapshot an interrupted backup left" in err,
              "no warning: %r" % err)
        check([v["vm"] for v in s.control("vms")["vms"] if v["is_a_snapshot"]]
              == [left[0]["vm"]], "the VM snapshot went with a disk unread")
        err, ls = backup("--vm", "web")
        check("left by an interrupted backup" in err, "no cleanup: %r" % err)
        # Reduced, and then removed as an older metadata snapshot.
        check(kept not in [v["vdi"] for v in s.control("vdis")["vdis"]],
              "the next backup neither reduced nor removed %s" % kept)
        check(not [v for v in s.control("vms")["vms"] if v["is_a_snapshot"]],
              "a VM snapshot is left")

        # 6. A VM created later with a name already shown gets the suffix.
        s.control("create_vm", name="web", disks=[{"name": "root", "size": MiB}])
        err, ls = backup()

        # Through a foreground mount: names and every point's bytes.
        mnt = env.mkdir("mnt")
        proc = subprocess.Popen([cb.cbtfs_binary(), "mount", "-f", store, mnt])
        env.on_close(lambda: proc.poll() is None and proc.kill())
        env.on_close(cb.unmount, mnt)
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            check(proc.poll() is None, "cbtfs mount -f exited early")
            check(time.monotonic() < deadline, "mount never appeared")
            time.sleep(0.05)
        byvm = sorted(os.listdir(os.path.join(mnt, "by-vm")))
        check(byvm == [".._x_y", "other", "web", "web.2"], "by-vm: %s" % byvm)
        first = os.path.join(mnt, "by-vm", "web", "root")
        check(len(os.listdir(first)) == 10, "web/root: %s" % os.listdir(first))
        second = os.listdir(os.path.join(mnt, "by-vm", "web.2", "root"))
        check(len(second) == 2, "web.2/root: %s" % second)
        for snap, copy in states.items():
            img = os.path.join(mnt, "by-uuid", root_vdi, snap + ".img")
            check(os.path.getsize(img) == os.path.getsize(copy),
                  "%s: size %d, disk was %d" % (snap, os.path.getsize(img),
                                                os.path.getsize(copy)))
            check(cb.sha256(img) == cb.sha256(copy), "%s differs from the "
                  "disk at its backup" % snap)
        check(len(states) == 9, "expected 9 points of web/root, saw %d" % len(states))

        subprocess.run(["fusermount3", "-u", mnt], check=True)
        check(proc.wait(timeout=30) == 0, "mount -f exited %s after "
              "fusermount3 -u" % proc.returncode)
    print("ok")


if __name__ == "__main__":
    main()
