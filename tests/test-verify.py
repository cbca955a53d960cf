#!/usr/bin/env python3
"""End to end: proving backups restore (cbtfs verify, backup --verify).

backup --verify compares each new image with the host's VDI.checksum
before data_destroy (waiting for it as long as the disk's size needs,
not --timeout), and keeps the snapshot's data when they differ --
also on later runs: the verdict is recorded in the store, `cbtfs ls`
shows the point as unverified, and the next backup takes a new baseline
rather than build on it, until verify --server finds the image equal or
verify --accept lets it go (then cbtfs fetch reduces it).  A checksum
that cannot be had fails the run.  verify --server passes on a good
chain (also through a lazy point, read without changing any data); a
byte flipped in the store makes verify fail naming every point in time
the block shows through, makes verify --server fail, makes the mounted
read return EIO, not data, and makes the next backup of a chain built
on it start a new baseline.
"""
# store-kinds: dir s3
import errno
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vm = s.control("create_vm", name="db", disks=[{"name": "data", "size": SIZE}])
        vdi = vm["disks"][0]["vdi"]
        guest = env.path("data.img")
        with open(guest, "wb") as f:
            f.truncate(SIZE)
        cb.write_at(guest, 0, os.urandom(16 * MiB))
        s.control("write_file", vdi=vdi, path=guest)
        pw = env.password_file()
        store = env.store()
        srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
               "--password-file", pw]

        def points():
            return env.ls_json(store)["disks"][0]["points"]

        def vdi_type(p):
            return s.control("vdi", uuid=p["snapshot"])["type"]

        # backup --verify: checked against the host, then reduced.  The
        # host's checksum takes 4 s, longer than --timeout: it is given
        # time for the disk's size.
        s.control("set", checksum_mib_per_s=16)
        _, _, err = env.cbtfs("backup", store, "--verify", "-v", "--timeout",
                              "2", *srv)
        s.control("set", checksum_mib_per_s=0)
        check("verified against the host" in err, "no verification: %r" % err)
        check(vdi_type(points()[0]) == "cbt_metadata", "not reduced after --verify")

        # A lazy point: verify --server reads it through NBD, changing nothing.
        cb.write_at(guest, 40 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, "--no-copy", *srv)
        def data_of(ps):
            return [{k: v for k, v in p.items() if k not in ("verdict", "held")}
                    for p in ps]

        before = points()
        _, _, err = env.cbtfs("verify", store, "-v", *srv)
        check("matches the host" in err and "1 points match" in err,
              "verify --server did not compare the lazy point: %r" % err)
        check(data_of(points()) == data_of(before), "verify changed the store")
        check(points()[1]["verdict"] == "match", "no verdict: %r" % points()[1])
        env.cbtfs("fetch", store, *srv)

        # The host disagrees: backup --verify keeps the snapshot's data.
        cb.write_at(guest, 50 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", return_next={"method": "VDI.checksum",
                                      "value": "0" * 32})
        rc, _, err = env.cbtfs("backup", store, "--verify", *srv, ok=False)
        check(rc == 1 and "differs from the host" in err, "rc %d: %r" % (rc, err))
        p3 = points()[2]
        check(p3["complete"] and vdi_type(p3) == "user",
              "a mismatching snapshot lost its data: %s" % p3)
        check(p3["verdict"] == "differs" and p3["held"], "not held: %r" % p3)
        _, out, _ = env.cbtfs("ls", store)
        check("unverified: differs" in out, "ls does not say so: %r" % out)

        # The next plain backup keeps it too, and builds no delta on it.
        _, _, err = env.cbtfs("backup", store, *srv)
        check(vdi_type(p3) == "user", "a plain backup reduced a point that "
              "differed from the host")
        check(points()[3]["kind"] == "baseline" and "taking a new baseline" in err,
              "a delta was built on a point that differed: %r" % err)
        # verify --server finds it equal now (the host's real checksum):
        # the hold is lifted, and fetch reduces it.
        _, _, err = env.cbtfs("verify", store, "-v", *srv)
        check(points()[2]["verdict"] == "match", "hold not lifted: %r" % err)
        env.cbtfs("fetch", store, p3["snapshot"], *srv)
        check(vdi_type(p3) == "cbt_metadata", "fetch did not reduce it")

        # Once more, let go by the user this time.
        cb.write_at(guest, 52 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", return_next={"method": "VDI.checksum",
                                      "value": "0" * 32})
        env.cbtfs("backup", store, "--verify", *srv, ok=False)
        p5 = points()[4]
        check(p5["held"] and vdi_type(p5) == "user", "not held: %r" % p5)
        env.cbtfs("verify", store, "--accept", p5["snapshot"])
        check(points()[4]["verdict"] == "accepted", "not accepted")
        env.cbtfs("fetch", store, p5["snapshot"], *srv)
        check(vdi_type(p5) == "cbt_metadata", "fetch did not reduce it")

        # A checksum the host cannot give fails the run; the data stays.
        cb.write_at(guest, 54 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", fail_next={"method": "VDI.checksum",
                                    "error": ["INTERNAL_ERROR", "test"]})
        rc, _, err = env.cbtfs("backup", store, "--verify", *srv, ok=False)
        check(rc == 1 and "cannot verify" in err, "rc %d: %r" % (rc, err))
        check(vdi_type(points()[5]) == "user", "unverified point reduced")
        env.cbtfs("verify", store, "--accept", points()[5]["snapshot"])
        env.cbtfs("fetch", store, points()[5]["snapshot"], *srv)

        # Flip one byte of a stored block of the first point that the later
        # points still show.
        p1 = points()[0]
        off = 3 * MiB + 12345
        env.flip_block_byte(store, vdi, p1["snapshot"], off)
        rc, _, err = env.cbtfs("verify", store, ok=False)
        check(rc == 1, "verify passed a damaged store")
        for p in points():
            if p["chain"] == p1["chain"]:
                check("%s): 1 blocks fail" % p["snapshot"] in err,
                      "verify did not name %s: %r" % (p["snapshot"], err))
        check(points()[0]["verdict"] == "damaged", "damage not recorded")
        rc, _, err = env.cbtfs("verify", store, *srv, ok=False)
        check(rc == 1 and "damaged" in err, "verify --server passed: %r" % err)

        # An object store's mount starts with an empty local cache here,
        # so that it reads the bucket, not a copy kept before the damage.
        if not cb.is_dir_store(store):
            os.environ["CBTFS_S3_CACHE"] = env.path("empty-cache")
        mnt = env.mount(store, env.path("mnt"))
        img = os.path.join(mnt, "by-uuid", vdi, p1["snapshot"] + ".img")
        fd = os.open(img, os.O_RDONLY)
        try:
            os.pread(fd, 4096, off - off % 4096)
            check(False, "a damaged block was served as data")
        except OSError as e:
            check(e.errno == errno.EIO, "damaged read: %s" % e)
        finally:
            os.close(fd)
        # Blocks elsewhere still read.
        with open(img, "rb") as f, open(guest, "rb") as g:
            f.seek(8 * MiB)
            g.seek(8 * MiB)
            check(f.read(MiB) == g.read(MiB), "undamaged blocks read wrong")
        cb.unmount(mnt)

        # Damage in the point the next delta would build on: verify
        # records it, and the next backup starts a new baseline.
        newest = points()[-1]
        at = 54 * MiB + 777                     # a block it changed
        env.flip_block_byte(store, vdi, newest["snapshot"], at)
        env.cbtfs("verify", store, ok=False)
        check(points()[-1]["verdict"] == "damaged", "damage not recorded")
        _, _, err = env.cbtfs("backup", store, *srv)
        check(points()[-1]["kind"] == "baseline"
              and "found damaged" in err and "taking a new baseline" in err,
              "a delta was built on a damaged point: %r" % err)

        # A manifest damaged so that its layer cannot be listed at all:
        # verify says so and fails, rather than pass what it never saw.
        newest = points()[-1]
        env.flip_manifest_byte(store, vdi, newest["snapshot"], 20)
        rc, _, err = env.cbtfs("verify", store, ok=False)
        check(rc == 1 and "could not be read at all" in err
              and newest["snapshot"] in err,
              "verify passed a store with an unreadable layer: rc %d %r"
              % (rc, err))
    print("ok")


if __name__ == "__main__":
    main()
