#!/usr/bin/env python3
"""End to end: cbtfs forget, removing a decommissioned VM's points.

Three VMs on the stand-in, backed up four nights into one store with
random writes between: "web" (disks root and data), "db" (sys and
scratch) and "old" (one disk); the fourth night of web and old is
--no-copy, so their newest snapshots still hold data on the host (they
too must go).  A mount of the store stays up through everything below.

- Usage errors exit 2 with one line starting "cbtfs: ": no --vm, a
  --vm or --disk that names nothing, --password-file without
  --server; without --yes forget says what it would remove and exits
  2; none of these changes a byte of the store.
- While web still exists on the host, forget --server refuses (exit 1,
  "still exists on the host"), as it does for db's scratch disk; nothing
  changes, in the store or on the host.  Another process holding the
  store's lock makes it exit 1 with store_lock's message naming the
  holder (with --lock-wait 0 at once; a bad --lock-wait is a usage
  error).
- web destroyed on the host (VM and disks): forget --server -v removes
  its eight points, one line each, and every snapshot of them on the
  host, whatever its type; db's and old's points stay byte-identical
  (their folders in the store hash the same, their images read as
  their disks did) and so do their snapshots.  The mount that was up
  reads db's images as before, and each of web's either as before or
  fails with EIO.
- scratch destroyed (db lives on): forget --disk scratch --json removes
  scratch's points only, also its oldest layer, which is damaged (the
  catalog leaves it out: it goes first); the host refuses VDI.destroy
  this time, which costs one warning naming the snapshot, and the
  points go all the same.
- old destroyed: forget is killed with -9 right after its first
  removal (the stand-in answers XAPI slowly, so the kill lands while it
  waits for the next answer); the three points left read as before,
  and a second forget (without --server: one warning that the host's
  snapshots stay, and they do) finishes.
"""
# store-kinds: dir s3
import errno
import json
import os
import random
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 1 * MiB
VMS = {"web": ("root", "data"), "db": ("sys", "scratch"), "old": ("disk",)}
NIGHTS = 4


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    with sim.Sim() as s, cb.Env() as env:
        vdi, live_ref, vm_ref, vm_uuid, guest = {}, {}, {}, {}, {}
        for vm, disks in VMS.items():
            rec = s.control("create_vm", name=vm, disks=[
                {"name": n, "size": SIZE} for n in disks])
            vm_ref[vm], vm_uuid[vm] = rec["vm_ref"], rec["vm"]
            for n, d in zip(disks, rec["disks"]):
                vdi[vm, n], live_ref[vm, n] = d["vdi"], d["vdi_ref"]
                guest[vm, n] = env.path("%s-%s.img" % (vm, n))
                with open(guest[vm, n], "wb") as f:
                    f.write(rng.randbytes(SIZE))
                s.control("write_file", vdi=d["vdi"], path=guest[vm, n])
        srv = ["--server", s.info["xapi_url"], "--ca-file", s.info["ca_file"],
               "--password-file", env.password_file()]
        store = env.store()
        want = {}               # snapshot uuid -> sha256 of its disk that night

        def points():
            """{(vm, disk): [snapshot uuids, oldest first]} in the store."""
            by_uuid = {d["uuid"]: [p["snapshot"] for p in d["points"]]
                       for d in env.ls_json(store)["disks"]}
            return {k: by_uuid.get(v, []) for k, v in vdi.items()}

        # Four nights; the last one of web and old with --no-copy.
        for night in range(1, NIGHTS + 1):
            for k in vdi:
                with open(guest[k], "r+b") as f:
                    for _ in range(rng.randint(1, 3)):
                        length = rng.randint(1, 100000)
                        f.seek(rng.randrange(SIZE - length))
                        f.write(rng.randbytes(length))
                s.control("write_file", vdi=vdi[k], path=guest[k])
            if night < NIGHTS:
                env.cbtfs("backup", store, *srv)
            else:
                env.cbtfs("backup", store, "--vm", "db", *srv)
                env.cbtfs("backup", store, "--vm", "web", "--vm", "old",
                          "--no-copy", *srv)
            for k, pts in points().items():
                check(len(pts) == night, "night %d: %s has %d points"
                      % (night, k, len(pts)))
                want[pts[-1]] = cb.sha256(guest[k])
        pts0 = points()

        def host():
            """{snapshot uuid: type} of every snapshot VDI on the host."""
            return {v["vdi"]: v["type"] for v in s.control("vdis")["vdis"]
                    if v["is_a_snapshot"]}

        def folder(k):
            return env.store_state(store, vdi[k])

        for vm in ("web", "old"):
            for n in VMS[vm]:
                newest = pts0[vm, n][-1]
                check(host().get(newest) == "user", "%s/%s: the --no-copy "
                      "point's snapshot is %r on the host"
                      % (vm, n, host().get(newest)))

        mnt = env.mount(store, env.path("mnt"))

        def image(m, k, snap):
            return os.path.join(m, "by-uuid", vdi[k], snap + ".img")

        def refused(args, status, pattern):
            """Run forget ARGS: exit STATUS, one line on stderr matching
            PATTERN, nothing on stdout, the store and the host unchanged."""
            before, hb = env.store_state(store), host()
            st, out, err = env.cbtfs("forget", store, *args, ok=False)
            lines = err.strip().splitlines()
            check(st == status, "forget %r: exit %d, not %d: %s"
                  % (args, st, status, err))
            check(len(lines) == 1 and lines[0].startswith("cbtfs: ")
                  and re.search(pattern, lines[0]),
                  "forget %r: stderr is not one line matching %r: %r"
                  % (args, pattern, err))
            check(out == "", "forget %r printed %r" % (args, out))
            check(env.store_state(store) == before, "forget %r changed the store"
                  % (args,))
            check(host() == hb, "forget %r changed the host's snapshots"
                  % (args,))
            return lines[0]

        # Usage errors, and no --yes.
        refused([], 2, r"--vm")
        refused(["--vm", "nosuch", "--yes"], 2, r"nosuch")
        refused(["--vm", "web", "--disk", "nosuch", "--yes"], 2, r"nosuch")
        refused(["--vm", "web", "--yes", "--password-file",
                 env.password_file()], 2, r"--server")
        line = refused(["--vm", "web"], 2, r"8 points of VM 'web'")
        check("'root', 'data'" in line and "--yes" in line, line)
        line = refused(["--vm", "db", "--disk",
                        vdi["db", "scratch"].upper(), *srv], 2,
                       r"4 points of VM 'db'")
        check("'scratch'" in line and "'sys'" not in line
              and "on the host" in line, line)

        # Still on the host: refused, with --server.
        refused(["--vm", "web", "--yes", *srv], 1,
                r"VM 'web' .*still exists on the host.*prune")
        refused(["--vm", "db", "--disk", "scratch", "--yes", *srv], 1,
                r"disk 'scratch' .*still exists on the host")

        # Another holder of the store's lock, as its record names it.
        with env.hold_store_lock(store, "pid %d\ncommand backup\n"
                                 "since 1796299384\n" % os.getpid()):
            refused(["--vm", "web", "--yes", "--lock-wait", "0"], 1,
                    r"the store .* is in use by cbtfs backup \(pid %d, since "
                    r"2026-12-03 12:03:04 UTC\)$" % os.getpid())
            refused(["--vm", "web", "--yes", "--lock-wait", "0.2", "-q"], 1,
                    r"is in use by cbtfs backup \(pid %d, .*; gave up after "
                    r"0.2 s$" % os.getpid())
        refused(["--vm", "web", "--yes", "--lock-wait", "-5"], 2,
                r"--lock-wait -5: expected a number of seconds")
        refused(["--vm", "web", "--yes", "--lock-wait", "x"], 2,
                r"--lock-wait x")

        # web decommissioned: the VM and its disks destroyed on the host.
        px = s.server_proxy()
        sess = px.session.login_with_password("root", "secret")["Value"]

        def xapi(method, *args):
            obj, name = method.split(".")
            r = getattr(getattr(px, obj), name)(sess, *args)
            check(r["Status"] == "Success", "%s: %r" % (method, r))
            return r["Value"]

        def decommission(vm):
            s.control("set_power_state", vm=vm_uuid[vm], state="Halted")
            xapi("VM.destroy", vm_ref[vm])
            for n in VMS[vm]:
                xapi("VDI.destroy", live_ref[vm, n])

        web_snaps = {u for n in VMS["web"] for u in pts0["web", n]}
        others = [k for k in vdi if k[0] != "web"]
        host_before = host()
        kept_host = {u: t for u, t in host_before.items() if u not in web_snaps}
        check(len(kept_host) < len(host_before), "web has no snapshots on "
              "the host: %r" % host_before)
        folders = {k: folder(k) for k in others}
        check(all(folders.values()), "a disk with no folder: %r" % folders)
        # What the mount reads before forget, to read again after.
        mounted_before = {u: cb.sha256(image(mnt, k, u)) for k in vdi
                          for u in pts0[k][:-1]}
        decommission("web")

        _, out, err = env.cbtfs("forget", store, "--vm", "web", "--yes", "-v",
                                *srv)
        forgot = [l for l in out.splitlines() if l.startswith("forgot by-vm/")]
        check(len(forgot) == 8, "forget -v printed %d point lines, not 8:\n%s"
              % (len(forgot), out))
        for n in VMS["web"]:
            lines = [l for l in forgot if l.startswith("forgot by-vm/web/%s/" % n)]
            got = [l.split()[2] for l in lines]
            check(got == pts0["web", n][::-1], "disk %s: forgot %r, not newest "
                  "first %r" % (n, got, pts0["web", n][::-1]))
            check(all("host snapshot:" in l for l in lines), out)
        check(re.search(r"^forgot 8 of 8 points of VM 'web' .*disks 'root', "
                        r"'data'; host snapshots: (\d+) destroyed",
                        out, re.M), "summary: %r" % out)
        check("warning" not in err, "warnings: %r" % err)
        h = host()
        check(not (web_snaps & set(h)), "web's snapshots still on the host: "
              "%r" % (web_snaps & set(h)))
        check(h == kept_host, "the other snapshots on the host changed: "
              "%r, not %r" % (h, kept_host))
        pts = points()
        for n in VMS["web"]:
            check(pts["web", n] == [], "web/%s still has points %r"
                  % (n, pts["web", n]))
        check("web" not in [d["vm"] for d in env.ls_json(store)["disks"]],
              "ls still lists web")
        for k in others:
            check(pts[k] == pts0[k], "%s's points changed: %r" % (k, pts[k]))
            check(folder(k) == folders[k], "%s's folder in the store changed"
                  % (k,))
        # The mount that was up: the others read as before; web's points
        # read as before, fail with EIO, or are gone (the mount follows
        # the store, so its watcher may have dropped them already), but
        # never read as other data.
        for k in vdi:
            for u in pts0[k][:-1]:
                if k[0] != "web":
                    check(cb.sha256(image(mnt, k, u)) == mounted_before[u],
                          "the mount that was up reads %s's %s differently"
                          % (k, u))
                    continue
                try:
                    got = cb.sha256(image(mnt, k, u))
                except OSError as e:
                    check(e.errno in (errno.EIO, errno.ENOENT),
                          "web %s: %s" % (u, e))
                else:
                    check(got == mounted_before[u], "web %s reads other data "
                          "after forget" % u)
        # ... and it drops web without a remount.
        check(cb.wait_for(lambda: not os.path.exists(
            os.path.join(mnt, "by-uuid", vdi["web", "root"])), 30),
            "the mount that was up still shows web's disk after forget")
        cb.unmount(mnt)

        # A fresh mount: the others' complete points read as their disks did.
        m2 = env.mount(store, env.path("m2"))
        for k in others:
            for u in pts0[k]:
                if k[0] == "old" and u == pts0[k][-1]:
                    continue            # --no-copy: only on the host
                check(cb.sha256(image(m2, k, u)) == want[u], "%s: %s does not "
                      "read as its disk did" % (k, u))
            check(not os.path.exists(os.path.join(m2, "by-uuid",
                                                  vdi["web", "root"])),
                  "web's disk is still in a fresh mount")
        cb.unmount(m2)

        # db's scratch disk destroyed, db lives on: --disk, --json.
        s.control("set_power_state", vm=vm_uuid["db"], state="Halted")
        xapi("VDI.destroy", live_ref["db", "scratch"])
        s.control("set_power_state", vm=vm_uuid["db"], state="Running")
        sys_folder, old_folder = folder(("db", "sys")), folder(("old", "disk"))
        # scratch's oldest layer damaged (its manifest, and the copies
        # of the disk's manifests): the catalog leaves it out, and it
        # goes first, all the same.
        scratch = pts0["db", "scratch"]
        damaged = env.manifest_bytes(store, vdi["db", "scratch"], scratch[0])
        env.manifest_bytes(store, vdi["db", "scratch"], scratch[0],
                           b"XXXX" + damaged[4:])
        env.drop_manifest_copies(store, vdi["db", "scratch"])
        # The host refuses to destroy its snapshot: one warning, and the
        # points go all the same.
        s.control("set", fail_every={"method": "VDI.destroy", "error": [
            "SR_BACKEND_FAILURE_1", "", "test: the SR refuses", ""]})
        _, out, err = env.cbtfs("forget", store, "--vm", "db", "--disk",
                                "scratch", "--yes", "--json", *srv)
        s.control("set", fail_every={"method": "VDI.destroy", "error": None})
        warnings = [l for l in err.splitlines() if "from the host" in l]
        check(len(warnings) == 1 and scratch[-1] in warnings[0],
              "a refused VDI.destroy: warnings %r" % warnings)
        doc = json.loads(out)
        check(doc["forgotten"] == 4 and doc["remaining"] == 0,
              "--json: %r" % doc)
        check([d["name"] for d in doc["disks"]] == ["scratch"], "--json: %r"
              % doc)
        jp = doc["disks"][0]["points"]
        check([p["snapshot"] for p in jp] == scratch[:1] + scratch[:0:-1]
              and all(p["removed"] for p in jp), "--json points: %r" % doc)
        check(jp[0]["name"] is None and all(p["name"] for p in jp[1:]),
              "--json names: %r" % doc)
        check(doc["host"] == {"destroyed": 0, "gone": 3, "kept": 1},
              "--json host: %r" % doc)
        check([p["host"] for p in jp] == ["gone", "kept", "gone", "gone"],
              "--json points: %r" % doc)
        stray = [n for n in env.stored_layers(store, vdi["db", "scratch"])
                 if n in scratch]
        check(stray == [], "scratch's folder still holds layers %r" % stray)
        pts = points()
        check(pts["db", "scratch"] == [] and pts["db", "sys"] == pts0["db", "sys"],
              "after --disk scratch: %r" % pts)
        check(folder(("db", "sys")) == sys_folder and
              folder(("old", "disk")) == old_folder,
              "--disk scratch changed another disk's folder")
        check(host().get(pts0["db", "scratch"][-1]) == "cbt_metadata",
              "scratch's snapshot, which the host would not destroy, is gone")
        check(pts0["db", "sys"][-1] in host(), "sys's snapshot is gone")

        # old: killed -9 right after its first removal.  Each XAPI answer
        # comes 1.5 s late, so after the first point's line the process
        # is waiting for the host when the kill comes.
        decommission("old")
        k = ("old", "disk")
        s.control("set", xapi_delay_ms=1500)
        p = subprocess.Popen([cb.cbtfs_binary(), "forget", store, "--vm", "old",
                              "--yes", "-v", *srv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, text=True)
        env.on_close(lambda: p.poll() is None and p.kill())
        first = p.stdout.readline()
        p.kill()
        p.wait()
        p.stdout.close()
        s.control("set", xapi_delay_ms=0)
        check(first.startswith("forgot by-vm/old/disk/")
              and pts0[k][-1] in first, "first line: %r" % first)
        pts = points()
        check(pts[k] == pts0[k][:-1], "after the kill old has %r, not all but "
              "its newest %r" % (pts[k], pts0[k][:-1]))
        check(pts0[k][-1] not in host(), "the killed forget left the newest "
              "point's snapshot on the host")
        m3 = env.mount(store, env.path("m3"))
        for u in pts[k]:
            check(cb.sha256(image(m3, k, u)) == want[u], "after the kill %s "
                  "does not read as its disk did" % u)
        cb.unmount(m3)
        _, out, _ = env.cbtfs("verify", store)

        # Finished without --server: the host's snapshots stay.
        left = pts0[k][-2]
        check(host().get(left) == "cbt_metadata", "old's %s is %r on the host"
              % (left, host().get(left)))
        _, out, err = env.cbtfs("forget", store, "--vm", "old", "--yes")
        warnings = [l for l in err.splitlines() if "warning" in l]
        check(len(warnings) == 1 and "host" in warnings[0], "no --server: "
              "warnings %r" % warnings)
        check(re.search(r"^forgot 3 of 3 points of VM 'old'.*not asked", out,
                        re.M), "summary: %r" % out)
        check(points()[k] == [], "old still has points")
        check(host().get(left) == "cbt_metadata", "forget without --server "
              "touched the host")
        check(points()["db", "sys"] == pts0["db", "sys"], "db's sys changed")
        refused(["--vm", "old", "--yes"], 2, r"old")
        px.session.logout(sess)
    print("ok")


if __name__ == "__main__":
    main()
