#!/usr/bin/env python3
"""End to end: a snapshot served by nbdkit instead of the stand-in.

get_nbd_info hands out an nbdkit export (with TLS and the stand-in's
certificate) so nbdkit's filters can watch and constrain cbtfs:
- a failed get_nbd_info leaves the layer incomplete and the snapshot's
  data on the host;
- an export whose size disagrees with XAPI's virtual_size is refused
  with a clear message, and nothing is stored from it;
- through blocksize-policy (512-byte minimum, errors on misalignment),
  noparallel and multi-conn=disable, as XenServer's server behaves, the
  next run completes the layer; nbdkit's log filter shows every read
  512-byte aligned, clamped to the disk's end, covering it once.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 32 * MiB + 4608          # a partial last block


def start_nbdkit(env, s, image, filters):
    """nbdkit serving IMAGE on the stand-in's NBD address with TLS."""
    return env.nbdkit(image, s.info["nbd_address"], s.info["tls_dir"], filters)


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="web", disks=[{"name": "root", "size": SIZE}])
        vdi = vm["disks"][0]["vdi"]
        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.truncate(SIZE)
        cb.write_at(guest, 0, os.urandom(5 * MiB))
        cb.write_at(guest, SIZE - 4608, os.urandom(4608))
        s.control("write_file", vdi=vdi, path=guest)
        pw = env.password_file()
        store = env.path("store")
        backup = ["backup", store, "--server", info["xapi_url"], "--ca-file",
                  info["ca_file"], "--password-file", pw]

        # XAPI cannot say where the data is: the layer stays incomplete.
        # (Once for the backup's check of the export before it commits the
        # layer, which leaves such failures to the copy; once for the copy.)
        s.control("set", fail_next=[{"method": "VDI.get_nbd_info",
                                     "error": ["INTERNAL_ERROR", "no NBD today"]}] * 2)
        rc, _, err = env.cbtfs(*backup, "--nbd-connections", "1", ok=False)
        check(rc == 1 and "INTERNAL_ERROR [no NBD today]" in err, err)
        point = env.ls_json(store)["disks"][0]["points"][0]
        check(not point["complete"] and point["present_blocks"] == 0,
              "after a failed copy: %s" % point)
        snap = point["snapshot"]
        rec = s.control("vdi", uuid=snap)
        check(rec["type"] == "user" and rec["path"], "the snapshot lost its data")

        # An export of the wrong size is refused outright.
        short, port = start_nbdkit(env, s, rec["path"],
                                   [("truncate", "truncate=%d" % (SIZE - 512))])
        s.control("nbd_override", vdi=snap, address=info["nbd_address"], port=port)
        rc, _, err = env.cbtfs(*backup, ok=False)
        check(rc == 1 and "is %d bytes but XAPI says its virtual size is %d"
              % (SIZE - 512, SIZE) in err, err)
        check("retrying" not in err, "a size mismatch was retried: %s" % err)
        points = env.ls_json(store)["disks"][0]["points"]
        check(points[0]["present_blocks"] == 0, "stored blocks from a wrong export")
        # Today's backup still happened, as a delta on the unfinished layer
        # (no full copy for a bad night); it is not readable until that
        # layer is finished.
        check(len(points) == 2 and points[1]["kind"] == "delta"
              and points[1]["complete"] and not points[1]["readable"],
              "after the failed resume: %s" % points)
        short.terminate()
        short.wait()

        # As XenServer serves: aligned reads only, one request at a time.
        log = env.path("nbdkit.log")
        good, port = start_nbdkit(env, s, rec["path"], [
            ("log", "logfile=" + log),
            ("blocksize-policy", "blocksize-minimum=512",
             "blocksize-error-policy=error"),
            ("noparallel",),
            ("multi-conn", "multi-conn-mode=disable")])
        s.control("nbd_override", vdi=snap, address=info["nbd_address"], port=port)
        env.cbtfs(*backup)
        good.terminate()
        good.wait()

        reads = [(int(m.group(1), 16), int(m.group(2), 16)) for m in
                 re.finditer(r"Read id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)",
                             open(log).read())]
        check(reads, "nbdkit saw no reads")
        check(all(o % 512 == 0 and c % 512 == 0 for o, c in reads),
              "unaligned reads: %s" % [r for r in reads if r[0] % 512 or r[1] % 512])
        check(max(o + c for o, c in reads) == SIZE, "reads not clamped to the end")
        # The baseline reads the 2 MiB regions holding data (the stand-in's
        # VHD export lists them): [0, 6 MiB) and the last, partial one.
        want = [(0, 6 * MiB), (32 * MiB, SIZE)]
        got = []
        for o, c in sorted(reads):
            check(not got or o >= got[-1][1], "reads overlap at %d" % o)
            if got and o == got[-1][1]:
                got[-1] = (got[-1][0], o + c)
            else:
                got.append((o, o + c))
        check(got == want, "reads covered %s, not %s" % (got, want))

        disk = env.ls_json(store)["disks"][0]
        check([p["kind"] for p in disk["points"]] == ["baseline", "delta", "delta"]
              and all(p["readable"] for p in disk["points"]),
              "points: %s" % disk["points"])
        # Reduced once finished, then removed: the run's own point is newer.
        check(snap not in [v["vdi"] for v in s.control("vdis")["vdis"]],
              "the finished snapshot is still on the host")
        mnt = env.mount(store, env.path("mnt"))
        for p in disk["points"]:
            img = os.path.join(mnt, "by-uuid", vdi, p["snapshot"] + ".img")
            check(cb.sha256(img) == cb.sha256(guest), "%s differs" % p["snapshot"])
    print("ok")


if __name__ == "__main__":
    main()
