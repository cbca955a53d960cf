#!/usr/bin/env python3
"""End to end: two pools, one bucket (issue 16's "done when").

Two pools (two XenServer stand-ins) each run `backup && prune
--keep-last 2` night after night, from two processes at the same time,
into one store in the run's RGW bucket; the backups share the store
lock (each holding its own disks), each prune waits within --lock-wait
for the backups running and they for it, and both succeed every night.  Afterwards, from elsewhere (a mount with a cache of its
own, as another machine would have):

  - every point left (two per disk) reads as its disk was that night,
    once from the bucket and once from the cache;
  - a `cp` of `latest` out of the mount is the disk as last backed up;
  - `cbtfs verify` passes;
  - a local directory store copied into a new prefix of the bucket
    (`cbtfs copy`) and back into a directory reads the same again.
"""
# store-kinds: s3
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
BLOCK = 65536
SIZE = 4 * MiB
NIGHTS = 4
DAY = 86400
T0 = 1_767_268_800                      # 2026-01-01 12:00:00 UTC


def time_name(when):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ.img", time.gmtime(when))


class Pool:
    def __init__(self, s, env, name):
        self.s, self.name = s, name
        self.vm, self.vdi, self.guest, self.srv = cb.random_disk(
            s, env, name, name + "-root", SIZE)
        self.want = {}                  # image name -> sha256 that night

    def change(self, night):
        for i in range(3):
            cb.write_at(self.guest, ((night * 7 + i * 13) % (SIZE // BLOCK))
                        * BLOCK, os.urandom(BLOCK))
        self.s.control("write_file", vdi=self.vdi, path=self.guest)
        when = T0 + night * DAY
        self.s.control("set", snapshot_claims={"vdi": self.vdi,
                                               "snapshot_time": when})
        self.want[time_name(when)] = cb.sha256(self.guest)

    def nightly(self, store):
        """backup && prune, as the pool's timer runs them."""
        cmd = "'%s' backup '%s' %s -q && '%s' prune '%s' --vm %s " \
              "--keep-last 2 -q" % (cb.cbtfs_binary(), store,
                                    " ".join("'%s'" % a for a in self.srv),
                                    cb.cbtfs_binary(), store, self.vm["vm"])
        return subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)


def images(mnt, pools):
    """{(pool, image name): sha256} of every point the mount shows."""
    out = {}
    for p in pools:
        d = os.path.join(mnt, "by-vm", p.name, p.name + "-root")
        for n in os.listdir(d):
            if n.endswith(".img"):
                out[(p.name, n)] = cb.sha256(os.path.join(d, n))
    return out


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with sim.Sim() as s1, sim.Sim() as s2, cb.Env() as env:
        store = env.store()
        pools = [Pool(s1, env, "web"), Pool(s2, env, "db")]
        for night in range(NIGHTS):
            for p in pools:
                p.change(night)
            procs = [p.nightly(store) for p in pools]
            for p, proc in zip(pools, procs):
                _, err = proc.communicate(timeout=600)
                check(proc.returncode == 0, "night %d: %s's backup && prune "
                      "exited %d: %s" % (night, p.name, proc.returncode, err))

        # Elsewhere: a mount with a cache of its own, read twice.
        cache = env.mkdir("other-cache")
        mnt = env.mount(store, env.mkdir("elsewhere"), "--cache", cache)
        want = {(p.name, n): h for p in pools for n, h in p.want.items()
                if n in os.listdir(os.path.join(mnt, "by-vm", p.name,
                                                p.name + "-root"))}
        check(len(want) == 2 * len(pools), "points kept: %s"
              % sorted(want))
        for p in pools:
            newest = time_name(T0 + (NIGHTS - 1) * DAY)
            check((p.name, newest) in want, "%s's last night is not kept"
                  % p.name)
        check(images(mnt, pools) == want, "a point reads other bytes from "
              "the bucket")
        cb.unmount(mnt)
        mnt = env.mount(store, env.mkdir("elsewhere-2"), "--cache", cache)
        check(images(mnt, pools) == want, "a point reads other bytes from "
              "the cache")
        restored = env.path("restored.img")
        subprocess.run(["cp", "--sparse=always", os.path.join(
            mnt, "by-vm", "web", "web-root", "latest"), restored], check=True)
        check(cb.sha256(restored) == cb.sha256(pools[0].guest),
              "the restored image is not the disk as last backed up")
        cb.unmount(mnt)
        env.cbtfs("verify", store, "-q")

        # A local store moved into the bucket and back.
        local = env.path("local")
        env.cbtfs("backup", local, *pools[1].srv, "-q")
        env.cbtfs("copy", local, store + "-moved", "-q")
        env.cbtfs("copy", store + "-moved", env.path("back"), "-q")
        m1 = env.mount(local, env.mkdir("m-local"))
        m2 = env.mount(env.path("back"), env.mkdir("m-back"))
        check(images(m1, pools[1:]) == images(m2, pools[1:]),
              "the store copied into the bucket and back reads otherwise")
    print("ok")


if __name__ == "__main__":
    main()
