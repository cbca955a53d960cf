#!/usr/bin/env python3
"""End to end: kill -9 of cbtfs backup at random moments.

CRASH_TRIALS times (5 by default; `make check-crash` runs 50): the guest
changes some blocks, a backup starts and is killed at a random moment of
its run (XAPI and NBD are slowed a little so the moments spread over
snapshotting, describing, copying, syncing and data_destroy).  After
every kill, cbtfs verify must pass.  At the end one backup runs to
completion: it must succeed, every point in time must be complete, and
each must read back, through the mount, exactly as the disk was when its
snapshot was taken.  Nothing may be left on the host: no VM snapshots,
no snapshot still holding data, and of each disk's snapshots only the
newest point's, reduced to CBT metadata.
"""
# store-kinds: dir s3
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 32 * MiB


def main():
    trials = int(os.environ.get("CRASH_TRIALS", "5"))
    seed = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print("seed %d, %d trials" % (seed, trials))
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="db", disks=[{"name": "a", "size": SIZE},
                                                      {"name": "b", "size": SIZE}])
        disks = [(d["vdi"], env.path("guest-%d.img" % i))
                 for i, d in enumerate(vm["disks"])]
        for _, img in disks:
            with open(img, "wb") as f:
                f.truncate(SIZE)
        pw = env.password_file()
        store = env.store()
        cmd = [cb.cbtfs_binary(), "backup", store, "--server", info["xapi_url"],
               "--ca-file", info["ca_file"], "--password-file", pw, "-q"]
        states = {}         # snapshot uuid -> copy of its disk then
        seen = set()

        def guest_writes(k):
            for vdi, img in disks:
                for _ in range(rng.randint(1, 6)):
                    cb.write_at(img, rng.randrange(0, SIZE - MiB, 4096),
                                os.urandom(rng.choice([4096, 65536, MiB])))
                s.control("write_file", vdi=vdi, path=img)
            return k

        def note_new_points(k):
            for d in env.ls_json(store)["disks"]:
                img = [img for vdi, img in disks if vdi == d["uuid"]][0]
                for p in d["points"]:
                    if p["snapshot"] not in seen:
                        seen.add(p["snapshot"])
                        states[p["snapshot"]] = env.path("state-%s" % p["snapshot"])
                        cb.copy_sparse(img + ".at-%d" % k, states[p["snapshot"]])

        # How long an undisturbed backup takes, to aim the kills.
        s.control("set", xapi_delay_ms=10, nbd_read_delay_ms=10)
        guest_writes(0)
        for _, img in disks:
            cb.copy_sparse(img, img + ".at-0")
        t0 = time.monotonic()
        subprocess.run(cmd, check=True)
        span = time.monotonic() - t0
        note_new_points(0)

        for k in range(1, trials + 1):
            guest_writes(k)
            for _, img in disks:
                cb.copy_sparse(img, img + ".at-%d" % k)
            proc = subprocess.Popen(cmd)
            try:
                proc.wait(timeout=rng.uniform(0, span))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            note_new_points(k)
            rc, _, err = env.cbtfs("verify", store, ok=False)
            check(rc == 0, "trial %d: verify failed after kill -9: %s" % (k, err))

        # A last, undisturbed backup finishes everything.
        guest_writes(trials + 1)
        for _, img in disks:
            cb.copy_sparse(img, img + ".at-%d" % (trials + 1))
        s.control("set", xapi_delay_ms=0, nbd_read_delay_ms=0)
        subprocess.run(cmd, check=True)
        note_new_points(trials + 1)
        ls = env.ls_json(store)
        mnt = env.mount(store, env.path("mnt"))
        on_host = {v["vdi"]: v["type"] for v in s.control("vdis")["vdis"]}
        for d in ls["disks"]:
            for p in d["points"]:
                check(p["readable"], "point %s is not complete after the final "
                      "backup" % p["snapshot"])
                img = os.path.join(mnt, "by-uuid", d["uuid"], p["snapshot"] + ".img")
                check(cb.sha256(img) == cb.sha256(states[p["snapshot"]]),
                      "point %s differs from the disk at its snapshot"
                      % p["snapshot"])
            # The newest point's snapshot stays, reduced to CBT metadata;
            # the older ones were removed.
            newest = d["points"][-1]["snapshot"]
            check(on_host.get(newest) == "cbt_metadata", "the newest snapshot "
                  "%s is %s on the host" % (newest, on_host.get(newest, "gone")))
            older = [p["snapshot"] for p in d["points"][:-1]
                     if p["snapshot"] in on_host]
            check(not older, "older snapshots left on the host: %s" % older)
        left = [v for v in s.control("vms")["vms"] if v["is_a_snapshot"]]
        check(not left, "VM snapshots left on the host: %s" % left)
        left = [v for v in s.control("vdis")["vdis"]
                if v["is_a_snapshot"] and v["type"] != "cbt_metadata"]
        check(not left, "disk snapshots holding data left on the host: %s" % left)
        print("%d points, %d kills" % (len(seen), trials))
    print("ok")


if __name__ == "__main__":
    main()
