#!/usr/bin/env python3
"""End to end: three backups of a VM with an ext4 disk and a sparse disk,
guest writes between them, then every point in time through the mount.

Checks that each image's sha256 equals the disk at its backup, that a
loop mount of the oldest image shows a file as it was then, that cp of
an image is byte-exact, that a delta moves only the changed blocks over
NBD (counted by the stand-in's NBD server), and that the store is thin.
"""
# store-kinds: dir s3
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
ROOT_SIZE = 64 * MiB
DATA_SIZE = 1024 * MiB


def main():
    if os.geteuid() != 0:
        cb.skip("needs root for loop mounts")
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web",
                       disks=[{"name": "root", "size": ROOT_SIZE},
                              {"name": "data", "size": DATA_SIZE}])
        root_vdi, data_vdi = vm["disks"][0]["vdi"], vm["disks"][1]["vdi"]

        # The guest's disks, kept here too so every state can be compared.
        root = env.path("root.img")
        data = env.path("data.img")
        cb.make_ext4(root, ROOT_SIZE, {
            "hello.txt": b"version 1\n",
            "dir/big.bin": os.urandom(3 * MiB),
        })
        with open(data, "wb") as f:
            f.truncate(DATA_SIZE)
        cb.write_at(data, 5 * MiB, os.urandom(200000))
        cb.write_at(data, 900 * MiB + 12345, b"tail data" * 100)

        pw = env.password_file()
        store = env.store()
        backup = ["backup", store, "--server", info["xapi_url"],
                  "--ca-file", info["ca_file"], "--password-file", pw]

        states = []     # (root copy, data copy) at each backup
        moved = []      # NBD blocks read per backup, per VDI read

        def guest_sync():
            for vdi, img in ((root_vdi, root), (data_vdi, data)):
                s.control("write_file", vdi=vdi, path=img)

        def take_backup():
            s.control("reset_stats")
            env.cbtfs(*backup)
            n = len(states)
            r, d = env.path("root.%d" % n), env.path("data.%d" % n)
            cb.copy_sparse(root, r)
            cb.copy_sparse(data, d)
            states.append((r, d))
            moved.append(s.control("stats")["nbd"])

        # Backup 1: baselines.
        guest_sync()
        take_backup()

        # Guest writes, backup 2.
        cb.ext4_write(root, "/hello.txt", b"version 2\n")
        cb.ext4_write(root, "/new.txt", b"created after the first backup\n")
        cb.write_at(data, 5 * MiB + 70000, b"\xff" * 65536)
        guest_sync()
        take_backup()

        # A store from before disks kept copies of their manifests: the
        # next backup writes the copies its mounts lack (a directory
        # store's file; an object store never lacked them).
        if cb.is_dir_store(store):
            os.unlink(os.path.join(store, "disks", data_vdi, "manifests"))

        # More guest writes, backup 3.
        cb.ext4_write(root, "/hello.txt", b"version 3\n")
        cb.write_at(data, 512 * MiB, os.urandom(3 * 65536))
        guest_sync()
        take_backup()

        # The second backup read exactly the changed blocks, nothing else.
        for k in (1, 2):
            want = {}
            for vdi, i in ((root_vdi, 0), (data_vdi, 1)):
                want[vdi] = cb.block_diff(states[k - 1][i], states[k][i])
                check(want[vdi], "backup %d: the test changed nothing on %s"
                      % (k + 1, vdi))
            by = moved[k]["by_vdi"]
            check(len(by) == 2, "backup %d read %d VDIs over NBD, expected 2"
                  % (k + 1, len(by)))
            got = sorted(sorted(v["blocks"]) for v in by.values())
            exp = sorted(sorted(v) for v in want.values())
            check(got == exp, "backup %d read blocks %s over NBD; the guest "
                  "changed %s" % (k + 1, got, exp))
            total = sum(len(v) for v in want.values()) * cb.BLOCK
            check(moved[k]["bytes"] == total, "backup %d moved %d bytes over "
                  "NBD, expected %d" % (k + 1, moved[k]["bytes"], total))

        # The store knows three complete points per disk.
        ls = env.ls_json(store)
        check(len(ls["disks"]) == 2, "ls shows %d disks" % len(ls["disks"]))
        for d in ls["disks"]:
            check(len(d["points"]) == 3, "disk %s has %d points"
                  % (d["name"], len(d["points"])))
            check(all(p["complete"] for p in d["points"]), "incomplete point")
            check([p["kind"] for p in d["points"]] == ["baseline", "delta", "delta"],
                  "kinds: %s" % [p["kind"] for p in d["points"]])

        # Each disk's manifests file holds a copy of every layer's manifest.
        for d in ls["disks"] if cb.is_dir_store(store) else ():
            ddir = os.path.join(store, "disks", d["uuid"])
            with open(os.path.join(ddir, "manifests"), "rb") as f:
                copies = f.read().split(b"\n\n")
            own = []
            for p in d["points"]:
                with open(os.path.join(ddir, p["snapshot"], "layer"), "rb") as f:
                    own.append(f.read().rstrip(b"\n"))
            copies = sorted(c.strip(b"\n") for c in copies if c.strip(b"\n"))
            check(copies == sorted(own), "disk %s: manifests holds %d copies "
                  "for %d layers" % (d["name"], len(copies), len(own)))

        # Thin: only non-zero blocks are stored, and they take no more.
        stored = sum(p["stored_blocks"] for d in ls["disks"] for p in d["points"])
        nonzero = (cb.nonzero_blocks(states[0][0]) + cb.nonzero_blocks(states[0][1]))
        changed = sum(len(cb.block_diff(states[k - 1][i], states[k][i]))
                      for k in (1, 2) for i in (0, 1))
        check(stored <= nonzero + changed, "store holds %d blocks; at most %d "
              "are non-zero" % (stored, nonzero + changed))
        used = env.store_bytes(store)
        check(used > 0, "the store takes no space for %d blocks" % stored)
        check(used < 2 * (nonzero + changed) * cb.BLOCK + 4 * MiB,
              "store takes %d bytes for %d stored blocks (not thin)"
              % (used, stored))
        check(used < DATA_SIZE // 4, "store takes %d bytes" % used)

        # Mount and check every point in time.
        mnt = env.mount(store, env.path("mnt"))
        byvm = os.path.join(mnt, "by-vm", "web")
        check(sorted(os.listdir(byvm)) == ["data", "root"],
              "by-vm/web holds %s" % os.listdir(byvm))
        # Points oldest first, as ls lists them ("…Z.2.img" for a second
        # backup within the same second sorts before "…Z.img" in ls(1)).
        order = {d["uuid"]: [p["name"] + ".img" for p in d["points"]]
                 for d in ls["disks"]}
        for i, disk, vdi in ((0, "root", root_vdi), (1, "data", data_vdi)):
            names = order[vdi]
            listed = sorted(n for n in os.listdir(os.path.join(byvm, disk))
                            if n != "latest")
            check(listed == sorted(names), "%s has %s, ls says %s"
                  % (disk, listed, names))
            for k, n in enumerate(names):
                img = os.path.join(byvm, disk, n)
                check(os.path.getsize(img) == (ROOT_SIZE, DATA_SIZE)[i],
                      "%s has the wrong size" % img)
                check(cb.sha256(img) == cb.sha256(states[k][i]),
                      "%s differs from the disk at backup %d" % (img, k + 1))
            latest = os.readlink(os.path.join(byvm, disk, "latest"))
            check(latest == names[-1], "latest -> %s, not %s" % (latest, names[-1]))
            # by-uuid names the same files (same inode).
            uuid_dir = os.path.join(mnt, "by-uuid", vdi)
            snaps = os.listdir(uuid_dir)
            check(len(snaps) == 3, "by-uuid/%s has %s" % (vdi, snaps))
            inos = {os.stat(os.path.join(uuid_dir, x)).st_ino for x in snaps}
            inos2 = {os.stat(os.path.join(byvm, disk, x)).st_ino for x in names}
            check(inos == inos2, "by-uuid and by-vm name different files")

        oldest = os.path.join(byvm, "root", order[root_vdi][0])
        newest = os.path.join(byvm, "root", "latest")

        # cp of a point in time is byte-exact.
        cp = env.path("restored.img")
        subprocess.run(["cp", oldest, cp], check=True)
        check(subprocess.run(["cmp", cp, states[0][0]]).returncode == 0,
              "cp of the oldest image differs from the disk at backup 1")

        # A loop mount of the oldest image shows the file as it was then.
        lm = env.loop_mount(oldest, env.path("old"))
        with open(os.path.join(lm, "hello.txt"), "rb") as f:
            check(f.read() == b"version 1\n", "hello.txt in the oldest image "
                  "is not version 1")
        check(not os.path.exists(os.path.join(lm, "new.txt")),
              "new.txt exists in the image taken before it was written")
        lm2 = env.loop_mount(newest, env.path("new"))
        with open(os.path.join(lm2, "hello.txt"), "rb") as f:
            check(f.read() == b"version 3\n", "hello.txt in the newest image "
                  "is not version 3")
        with open(os.path.join(lm2, "new.txt"), "rb") as f:
            check(f.read().startswith(b"created after"), "new.txt wrong")

        # The newest snapshot of each disk is left on the host, reduced
        # to CBT metadata; the older ones were removed.
        on_host = {v["vdi"]: v["type"] for v in s.control("vdis")["vdis"]}
        for d in ls["disks"]:
            newest = d["points"][-1]["snapshot"]
            check(on_host.get(newest) == "cbt_metadata", "snapshot %s is "
                  "%s" % (newest, on_host.get(newest, "gone")))
            for p in d["points"][:-1]:
                check(p["snapshot"] not in on_host, "older snapshot %s is "
                      "still on the host (%s)" % (p["snapshot"],
                                                  on_host.get(p["snapshot"])))
    print("ok")


if __name__ == "__main__":
    main()
