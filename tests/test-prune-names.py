#!/usr/bin/env python3
"""End to end: names in the tree stay when prune drops points beside them.

Two VMs both named "web" (the one backed up first is by-vm/web, the
other by-vm/web.2) and, in the first, two points taken in the same
second (…Z.img and …Z.2.img).  Prune drops the first VM's oldest points:
the …Z.2 point's own name, and the first VM's folder, would change if
names were derived from the points that remain (its first point is then
newer than the other VM's).  They must not: every kept point keeps its
path and its bytes, and the next backups of both VMs add points beside
them under the names they had.

And prune shares the store's lock with backup: while a backup holds it,
prune --lock-wait 0 exits 1 naming that backup, and changes nothing;
with -q and a wait it says only that it gave up, not that it waited.
"""
# store-kinds: dir s3
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 1 * MiB
T0 = 1_700_000_000


def tree(env, store):
    """{path in by-vm: sha256} of every point, through a fresh mount."""
    mnt = env.mkdir("mnt-%d" % len(os.listdir(env.path())))
    env.mount(store, mnt)
    out = {os.path.relpath(p, mnt): cb.sha256(p)
           for p in glob.glob(os.path.join(mnt, "by-vm", "*", "*", "*.img"))}
    cb.unmount(mnt)
    return out


def main():
    with sim.Sim() as s, cb.Env() as env:
        a, a_vdi, a_guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        b = s.control("create_vm", name="web", disks=[{"name": "root",
                                                       "size": SIZE}])
        b_vdi = b["disks"][0]["vdi"]
        store = env.store()

        def night(vm, vdi, guest, when):
            if guest:
                cb.write_at(guest, (when % 16) * 65536, os.urandom(65536))
                s.control("write_file", vdi=vdi, path=guest)
            else:
                s.control("write", vdi=vdi, offset=(when % 16) * 65536,
                          data_b64="AAECAw==")
            s.control("set", snapshot_claims={"vdi": vdi,
                                              "snapshot_time": when})
            env.cbtfs("backup", store, *srv, "--vm", vm["vm"], "-q")

        night(a, a_vdi, a_guest, T0)
        night(b, b_vdi, None, T0 + 100)
        night(a, a_vdi, a_guest, T0 + 200)
        night(a, a_vdi, a_guest, T0 + 200)     # the same second: ….2
        night(a, a_vdi, a_guest, T0 + 300)
        before = tree(env, store)
        first = "by-vm/web/root/2023-11-14T22:16:40Z"   # T0 + 200
        check(first + ".img" in before and first + ".2.img" in before
              and any(p.startswith("by-vm/web.2/") for p in before),
              "names before the prune: %s" % sorted(before))

        # Keep the first VM's newest two: its first point and the
        # first of the same-second pair go.
        _, out, err = env.cbtfs("prune", store, "--vm", a["vm"],
                                "--keep-last", "2")
        after = tree(env, store)
        want = {p: h for p, h in before.items()
                if p not in ("by-vm/web/root/2023-11-14T22:13:20Z.img",
                             first + ".img")}
        check(after == want, "after the prune the tree is %s, not %s"
              % (sorted(after), sorted(want)))

        # New points come beside the kept ones, under the same folders.
        night(a, a_vdi, a_guest, T0 + 400)
        night(b, b_vdi, None, T0 + 500)
        again = tree(env, store)
        for p, h in after.items():
            check(again.get(p) == h, "%s changed after new backups" % p)
        new = sorted(set(again) - set(after))
        check(new == ["by-vm/web.2/root/2023-11-14T22:21:40Z.img",
                      "by-vm/web/root/2023-11-14T22:20:00Z.img"],
              "new points: %s" % new)

        # A backup (as its record in the lock says) holds the store.
        def files_but_lock():
            t = env.store_state(store, mtime=True)
            t.pop("lock", None)
            return t

        files = files_but_lock()
        with env.hold_store_lock(store, "pid %d\ncommand backup\n"
                                 "since 1796299384\n" % os.getpid()):
            rc, out, err = env.cbtfs("prune", store, "--keep-last", "1",
                                     "--lock-wait", "0", ok=False)
            check(rc == 1 and len(err.strip().splitlines()) == 1
                  and "in use by cbtfs backup (pid %d" % os.getpid() in err,
                  "prune beside a backup: exit %d, %r" % (rc, err))
            # -q (cron): the failure alone, not that it waited.
            rc, out, err = env.cbtfs("prune", store, "--keep-last", "1",
                                     "--lock-wait", "0.3", "-q", ok=False)
            check(rc == 1 and len(err.strip().splitlines()) == 1
                  and "gave up after 0.3 s" in err and out == "",
                  "prune -q beside a backup: exit %d, %r" % (rc, err))
        check(files_but_lock() == files,
              "the refused prune changed the store")
        print("ok")


if __name__ == "__main__":
    main()
