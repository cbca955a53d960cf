#!/usr/bin/env python3
"""End to end: backup then prune, night after night, as a timer runs them.

NIGHTS nights (90 by default, a season; PRUNE_NIGHTS sets it), each one
day after the last: the guest changes a few blocks (now and then a
block of zeros over data), a backup runs, then `prune --keep-daily 7
--keep-weekly 4 --keep-monthly 3`.  Throughout, the store holds only
what the policy keeps (at most 7 + 4 + 3 points, the newest always),
and the host only the newest CBT-metadata snapshot.  At the end every
point left reads exactly as the disk was on its night, `cbtfs verify`
passes, no prune journal is left, and the store's data takes what the
kept points need (give or take file system metadata): the first one's
non-zero blocks, and for each later one the non-zero blocks written
since the one before it (the blocks of every dropped night in between
are folded into it; none is kept twice, none is left behind).
"""
import glob
import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 4 * MiB
BLOCK = 65536
DAY = 86400
T0 = 1_767_268_800                      # 2026-01-01 12:00:00 UTC
POLICY = ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "3"]


def vdis(s):
    return s.control("vdis")["vdis"]


def main():
    nights = int(os.environ.get("PRUNE_NIGHTS", "90"))
    seed = int(os.environ.get("PRUNE_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print("seed %d, %d nights" % (seed, nights))
    with sim.Sim() as s, cb.Env() as env:
        vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        store = env.path("store")
        ref = [v["ref"] for v in vdis(s) if v["vdi"] == vdi][0]
        want = {}                       # snapshot time -> sha256 of the disk
        written = {}                    # snapshot time -> blocks written
        zeros = {}                      # snapshot time -> its zero blocks
        most = 0
        for n in range(nights):
            when = T0 + n * DAY
            written[when] = set()
            for _ in range(rng.randint(1, 4)):
                data = (bytes(BLOCK) if rng.random() < 0.2
                        else rng.randbytes(BLOCK))
                b = rng.randrange(SIZE // BLOCK)
                written[when].add(b)
                cb.write_at(guest, b * BLOCK, data)
            s.control("write_file", vdi=vdi, path=guest)
            s.control("set", snapshot_claims={"vdi": vdi,
                                              "snapshot_time": when})
            env.cbtfs("backup", store, *srv, "--vm", "web", "-q")
            with open(guest, "rb") as f:
                image = f.read()
            want[when] = hashlib.sha256(image).hexdigest()
            zeros[when] = {b for b in range(SIZE // BLOCK)
                           if image[b * BLOCK:(b + 1) * BLOCK] == bytes(BLOCK)}
            env.cbtfs("prune", store, *POLICY, "-q")
            pts = env.ls_json(store)["disks"][0]["points"]
            most = max(most, len(pts))
            check(len(pts) <= 7 + 4 + 3,
                  "night %d: %d points after prune" % (n, len(pts)))
            check(pts[-1]["time"] == when and pts[-1]["readable"],
                  "night %d: the newest point is not tonight's" % n)
            snaps = [v for v in vdis(s) if v["snapshot_of"] == ref]
            check(len(snaps) <= 1, "night %d: %d snapshots on the host"
                  % (n, len(snaps)))
        print("at most %d points over %d nights" % (most, nights))

        pts = env.ls_json(store)["disks"][0]["points"]
        mnt = env.mkdir("mnt")
        env.mount(store, mnt)
        for p in pts:
            img = os.path.join(mnt, "by-vm", "web", "root", p["name"] + ".img")
            check(cb.sha256(img) == want[p["time"]],
                  "%s does not read as the disk was that night" % p["name"])
        check(sorted(p["name"] for p in pts) == sorted(
            os.path.basename(f)[:-4] for f in glob.glob(
                os.path.join(mnt, "by-vm", "web", "root", "*.img"))),
              "the tree and ls disagree")
        cb.unmount(mnt)
        env.cbtfs("verify", store)
        disk = os.path.join(store, "disks", vdi)
        check(not os.path.exists(os.path.join(disk, "prune")),
              "a prune journal was left")
        check(os.listdir(os.path.join(store, "tmp")) == [], "tmp/ not empty")
        # The data the kept points need, and what the data files take.
        times = sorted(want)
        need, prev = 0, None
        for p in pts:
            t = p["time"]
            if prev is None:
                blocks = set(range(SIZE // BLOCK))
            else:
                blocks = set().union(*(written[u] for u in times
                                       if prev < u <= t))
            need += len(blocks - zeros[t]) * BLOCK
            prev = t
        files = glob.glob(os.path.join(disk, "*", "data"))
        data = sum(os.lstat(f).st_blocks * 512 for f in files)
        # ext4 counts a fragmented file's extent tree blocks too (4 KiB
        # each): less than one 64 KiB block per file.
        check(need <= data <= need + 16384 * len(files),
              "the data files take %d bytes; the %d kept points need %d"
              % (data, len(pts), need))
        print("ok: %d points, %d KiB of data" % (len(pts), data >> 10))


if __name__ == "__main__":
    main()
