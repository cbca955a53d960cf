#!/usr/bin/env python3
"""End to end: a mount that is up follows the store.

One mount stays up while ten nights of backups (one of them --no-copy,
then completed by cbtfs fetch beside the mount), a second VM's first
backup and a prune run.  Meanwhile a reader thread hashes every image
the mount lists, over and over, and follows `latest`.

- after each backup the new point shows without a remount: in its
  disk's folder (whose listing the kernel had cached) and in by-uuid,
  `latest` names it, and it reads the guest's bytes of that night;
- images that stay keep their inode numbers, and a file held open
  across all of it reads the same bytes at the end;
- after the prune, the dropped points are gone from listings and from
  lookups the kernel had cached; the kept ones, one of them now the
  layer the dropped ones were folded into, read right when opened
  again (before a mount followed the store, that open failed with EIO
  until a remount);
- a point whose backup is still copying it is in the store (ls lists
  it) but not in the mount, and `latest` names the one before, until
  that backup is done;
- the reader never got wrong bytes, and an error only for a point the
  prune dropped.
"""
# store-kinds: dir s3
import errno
import hashlib
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 2 * MiB
T0 = 1_700_000_000
DAY = 86400
# How long a change may take to show here; the goal (2 s) is measured by
# make bench, this only bounds a test that would otherwise hang.
SHOW_WAIT = 60


def name_of(when):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) + ".img"


class Reader(threading.Thread):
    """Hashes every image under by-vm, and what `latest` names, until
    stopped; records what it read wrong."""

    def __init__(self, mnt, want):
        super().__init__(daemon=True)
        self.mnt, self.want = mnt, want
        self.stop = threading.Event()
        self.hashed = 0
        self.errors = []            # (path, errno) of failed reads
        self.wrong = []             # paths that read other bytes

    def one(self, path, name):
        try:
            h = cb.sha256(path)
        except OSError as e:
            self.errors.append((name, e.errno))
            return
        if name in self.want and h != self.want[name]:
            self.wrong.append(name)
        self.hashed += 1

    def run(self):
        d = os.path.join(self.mnt, "by-vm", "web", "root")
        while not self.stop.is_set():
            try:
                names = sorted(os.listdir(d))
                latest = os.readlink(os.path.join(d, "latest"))
            except OSError as e:
                self.errors.append(("listing", e.errno))
                continue
            for n in [latest] + [n for n in names if n.endswith(".img")]:
                self.one(os.path.join(d, n), n)


def main():
    with sim.Sim() as s, cb.Env() as env:
        vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        store = env.store()
        want = {}                   # image name -> sha256 of that night

        def night(i, *extra, during=None):
            if i:
                for _ in range(3):
                    cb.write_at(guest, os.urandom(1)[0] % 32 * 65536,
                                os.urandom(65536))
                s.control("write_file", vdi=vdi, path=guest)
            when = T0 + i * DAY
            s.control("set", snapshot_claims={"vdi": vdi,
                                              "snapshot_time": when})
            cmd = ["backup", store, *srv, "--vm", vm["vm"], "-q", *extra]
            if during is None:
                env.cbtfs(*cmd)
            else:
                p = subprocess.Popen([cb.cbtfs_binary()] + cmd,
                                     stdin=subprocess.DEVNULL)
                try:
                    during(name_of(when), p)
                finally:
                    rc = p.wait(timeout=600)
                check(rc == 0, "night %d: the backup exited %d" % (i, rc))
            want[name_of(when)] = cb.sha256(guest)
            return name_of(when)

        def unseen(name, p):
            """While P (a slowed backup) runs: as long as ls lists its
            point incomplete, the mount must not show it, nor `latest`
            name it.  The mount is looked at first: a point ls still
            finds incomplete after that was incomplete then too."""
            copying = False
            while p.poll() is None:
                shown = (name in os.listdir(d)
                         or os.readlink(os.path.join(d, "latest")) == name)
                mine = [x for dk in env.ls_json(store)["disks"]
                        for x in dk["points"] if x["name"] + ".img" == name]
                if mine and mine[0]["present_blocks"] < \
                        mine[0]["changed_blocks"]:
                    copying = True
                    check(not shown, "%s shows in the mount while its "
                          "backup copies it" % name)
            check(copying, "the backup ended before ls listed its point "
                  "incomplete")

        night(0)
        mnt = env.mount(store, env.mkdir("mnt"))
        d = os.path.join(mnt, "by-vm", "web", "root")
        check(sorted(os.listdir(d)) == sorted(["latest", name_of(T0)]),
              "the first listing: %s" % os.listdir(d))
        held = open(os.path.join(d, name_of(T0)), "rb")
        ino = {name_of(T0): os.stat(os.path.join(d, name_of(T0))).st_ino}
        reader = Reader(mnt, want)
        reader.start()

        def shows(name):
            try:
                return (name in os.listdir(d)
                        and os.readlink(os.path.join(d, "latest")) == name)
            except OSError:
                return False

        try:
            for i in range(1, 10):
                lazy = i == 5
                slow = i == 7       # about 6 s: the mount looks every 1 s
                name = night(i, *(["--no-copy"] if lazy else []),
                             *(["--limit-rate", "32768"] if slow else []),
                             during=unseen if slow else None)
                check(cb.wait_for(lambda: shows(name), SHOW_WAIT),
                      "night %d: %s not shown by the mount that is up "
                      "(listing %s)" % (i, name, sorted(os.listdir(d))))
                if lazy:
                    # Only the host has its blocks: fetch them beside the
                    # mount, which then reads them from the store.
                    env.cbtfs("fetch", store, *srv, "-q")
                check(cb.sha256(os.path.join(d, name)) == want[name],
                      "night %d: %s reads other bytes" % (i, name))
                ino[name] = os.stat(os.path.join(d, name)).st_ino
                for n, x in ino.items():
                    check(os.stat(os.path.join(d, n)).st_ino == x,
                          "night %d: %s has another inode number" % (i, n))
                by_uuid = os.path.join(mnt, "by-uuid", vdi)
                check(len(os.listdir(by_uuid)) == i + 1,
                      "night %d: by-uuid lists %d points" %
                      (i, len(os.listdir(by_uuid))))

            # A second VM shows as a new folder.
            db = s.control("create_vm", name="db",
                           disks=[{"name": "sys", "size": MiB}])
            env.cbtfs("backup", store, *srv, "--vm", db["vm"], "-q")
            check(cb.wait_for(lambda: os.path.isdir(
                os.path.join(mnt, "by-vm", "db", "sys")), SHOW_WAIT),
                "the second VM's folder never showed")

            # Prune to the newest three: six points go, folded into the
            # oldest that stays.
            names = sorted(ino)
            kept, dropped = names[-3:], names[:-3]
            for n in dropped:           # the kernel has them cached now
                os.stat(os.path.join(d, n))
            env.cbtfs("prune", store, "--vm", vm["vm"], "--keep-last", "3",
                      "-q")
            check(cb.wait_for(lambda: not any(
                os.path.exists(os.path.join(d, n)) for n in dropped),
                SHOW_WAIT), "dropped points still show: %s" %
                [n for n in dropped if os.path.exists(os.path.join(d, n))])
            check(sorted(os.listdir(d)) == sorted(kept + ["latest"]),
                  "after the prune the folder lists %s" % os.listdir(d))
            for n in kept:
                p = os.path.join(d, n)
                check(os.stat(p).st_ino == ino[n],
                      "%s has another inode number after the prune" % n)
                check(cb.sha256(p) == want[n],
                      "%s, opened after the prune, reads other bytes" % n)
            check(os.readlink(os.path.join(d, "latest")) == names[-1],
                  "latest moved in the prune")
            # And the next backup still shows.
            name = night(10)
            check(cb.wait_for(lambda: shows(name), SHOW_WAIT),
                  "the backup after the prune never showed")
            check(cb.sha256(os.path.join(d, name)) == want[name],
                  "the backup after the prune reads other bytes")
        finally:
            reader.stop.set()
            reader.join()

        # The file held open since the first night: its point was
        # dropped; it reads as before, or fails (never other bytes).
        # Where nothing was pruned it reads as before.
        try:
            held.seek(0)
            h = hashlib.sha256(held.read()).hexdigest()
            check(h == want[name_of(T0)],
                  "the file held open reads other bytes")
        except OSError as e:
            check(e.errno == errno.EIO and dropped,
                  "the held file fails with %s" % e)
        held.close()

        check(reader.hashed > 0, "the reader never hashed an image")
        check(not reader.wrong, "the reader got wrong bytes from %s" %
              sorted(set(reader.wrong)))
        bad = [(n, e) for n, e in reader.errors
               if n not in dropped or e not in (errno.ENOENT, errno.EIO)]
        check(not bad, "the reader failed on %s" % bad)
        print("mount-follows: %d images hashed beside the changes, %d "
              "failed reads of dropped points" % (reader.hashed,
                                                  len(reader.errors)))


if __name__ == "__main__":
    main()
