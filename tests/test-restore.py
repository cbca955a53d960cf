#!/usr/bin/env python3
"""End to end: cbtfs restore, into the stand-in's PUT /import_raw_vdi,
checked with XenServer's SDK (XenAPI.py) and the stand-in's files.

- --sr makes a VDI (the SR rounds its size up to 2 MiB) that holds the
  point, the rest zeros, sent as a VHD that leaves out the 2 MiB block
  the point has nothing in; --json says what it did; by a tree path too.
- --vdi overwrites a halted VM's disk, raw (its old data in the point's
  hole is overwritten too); then backup --verify (the host's
  VDI.checksum against the new point's md5) passes with a delta: the
  import was tracked by CBT, so the chain stays exact.
- refused, and nothing written or created: a VDI a running VM has
  attached, a VDI smaller than the point, both or neither of --sr/--vdi
  (exit 2), a point that cannot be read completely (its snapshot's data
  gone from the host: no VDI created, checked with the SDK, no upload),
  a server whose certificate the CA file does not vouch for (no login).
- a lazy point (--no-copy) is restored by fetching its blocks over NBD.
- an SR only the pool's other host sees: the upload follows the 302.
- the host keeping other bytes than were sent (the corrupt_import knob):
  exit 1, "differs", and the VDI is left for inspection.
- progress on a terminal, nothing on stderr with -q.
- a block that fails its checksum stops the upload before it is sent,
  and the VDI made for it is destroyed.
"""
# store-kinds: dir s3
import json
import os
import pty
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, os.path.join(ROOT, "build", "xenapi"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

try:
    import XenAPI  # noqa: E402
except ImportError:
    cb.skip("build/xenapi/XenAPI.py missing; run scripts/install-deps.sh")

MiB = 1 << 20
SIZE = 6 * MiB + 65536          # not whole 2 MiB blocks: the SR rounds up


def vdi_file(s, uuid):
    with open(s.control("vdi", uuid=uuid)["path"], "rb") as f:
        return f.read()


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        x = XenAPI.Session(info["xapi_url"], transport=s.transport())
        x.xenapi.login_with_password("root", "secret", "1.0", "test")
        srs = x.xenapi.SR.get_all_records()
        main_sr = [v["uuid"] for v in srs.values()
                   if v["name_label"] == "Local storage"][0]
        slave_sr = [v["uuid"] for v in srs.values()
                    if v["name_label"] != "Local storage"][0]

        rec, vdi, guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        cb.write_at(guest, 2 * MiB, bytes(2 * MiB))       # a hole
        s.control("write_file", vdi=vdi, path=guest)
        store = env.store()
        env.cbtfs("backup", store, "-q", *srv)
        with open(guest, "rb") as f:
            img1 = f.read()
        cb.write_at(guest, 0, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, "-q", *srv)
        with open(guest, "rb") as f:
            img2 = f.read()
        pts = env.ls_json(store)["disks"][0]["points"]
        p1, p2 = pts[0]["snapshot"], pts[1]["snapshot"]

        def sr_vdis():
            return sorted(x.xenapi.VDI.get_all())

        def imports():
            return s.control("stats")["http"]["import_raw_vdi"]

        # -- --sr, by snapshot uuid, --json: a VHD without the hole --------
        sent0 = imports()["bytes"]
        rc, out, err = env.cbtfs("restore", store, p1, "--sr", main_sr,
                                 "--json", *srv)
        j = json.loads(out)
        # 4 VHD blocks, [2, 4) MiB a hole: head, 3 blocks, footer.
        check(j["format"] == "vhd" and j["sent"] == 2560
              + 3 * (512 + 2 * MiB) + 512, "--sr: not a VHD without the "
              "hole: %r" % j)
        check(imports()["bytes"] - sent0 == j["sent"],
              "the host got other than --json says was sent")
        check(j["created"] and j["matches"] and j["snapshot"] == p1
              and j["size"] == SIZE and j["vdi_size"] == 8 * MiB
              and j["md5"] == j["host_md5"], "--json: %r" % j)
        check(j["point"].startswith("by-vm/web/root/"), "point: %r" % j)
        got = vdi_file(s, j["vdi"])
        check(got == img1 + bytes(8 * MiB - SIZE),
              "--sr: the new VDI does not hold the point, then zeros")
        r = x.xenapi.VDI.get_record(x.xenapi.VDI.get_by_uuid(j["vdi"]))
        check(r["name_label"] == "restore" and r["VBDs"] == [],
              "new VDI's record: %r" % r)

        # -- by a path in the tree, --name, -q: nothing on stderr -----------
        rc, out, err = env.cbtfs("restore", store, "by-vm/web/root/latest",
                                 "--sr", main_sr, "--name", "web-root", "-q",
                                 *srv)
        check(err == "" and out == "", "-q printed: %r %r" % (out, err))
        new = [v for v in x.xenapi.VDI.get_all_records().values()
               if v["name_label"] == "web-root"]
        check(len(new) == 1, "--name: %r" % new)
        check(vdi_file(s, new[0]["uuid"])[:SIZE] == img2,
              "latest restored is not the newest point")

        # -- refusals: attached, too small, usage ----------------------------
        before, n0 = vdi_file(s, vdi), imports()["requests"]
        rc, _, err = env.cbtfs("restore", store, p1, "--vdi", vdi, *srv,
                               ok=False)
        check(rc == 1 and "attached to VM 'web'" in err
              and err.count("\n") == 1, "attached: %d %r" % (rc, err))
        check(vdi_file(s, vdi) == before and imports()["requests"] == n0,
              "an attached VDI was written to")
        small = x.xenapi.VDI.create({
            "name_label": "small", "SR": x.xenapi.SR.get_by_uuid(main_sr),
            "virtual_size": str(2 * MiB), "type": "user", "sharable": False,
            "read_only": False, "other_config": {}})
        small_uuid = x.xenapi.VDI.get_uuid(small)
        rc, _, err = env.cbtfs("restore", store, p1, "--vdi", small_uuid,
                               *srv, ok=False)
        check(rc == 1 and "too small" in err, "small: %d %r" % (rc, err))
        check(vdi_file(s, small_uuid) == bytes(2 * MiB),
              "a too small VDI was written to")
        for args in ([], ["--sr", main_sr, "--vdi", vdi],
                     ["--vdi", vdi, "--name", "x"]):
            rc, _, err = env.cbtfs("restore", store, p1, *args, *srv,
                                   ok=False)
            check(rc == 2, "usage %r: %d %r" % (args, rc, err))
        rc, _, err = env.cbtfs("restore", store, "by-vm/web/nope/latest",
                               "--sr", main_sr, *srv, ok=False)
        check(rc == 1 and "no point" in err, "unknown point: %r" % err)

        # -- wrong CA: refused before any login -----------------------------
        logins = s.control("stats")["sessions"]["logins"]
        bad = [a if a != info["ca_file"] else
               os.path.join(info["impostor_tls_dir"], "ca-cert.pem")
               for a in srv]
        rc, _, err = env.cbtfs("restore", store, p1, "--sr", main_sr, *bad,
                               ok=False)
        check(rc == 3 and "not trusted" in err, "wrong CA: %r" % err)
        check(s.control("stats")["sessions"]["logins"] == logins,
              "logged in despite an untrusted certificate")

        # -- --vdi into the halted VM's disk, then backup --verify ----------
        s.control("set_power_state", vm=rec["vm"], state="Halted")
        # Old data where point 1 has a hole: --vdi must write it over.
        s.control("write", vdi=vdi, offset=2 * MiB + 4096,
                  data_b64="b2xkIGRhdGE=")
        rc, out, _ = env.cbtfs("restore", store, p1, "--vdi", vdi, "--json",
                               *srv)
        check(json.loads(out)["format"] == "raw"
              and json.loads(out)["sent"] == SIZE, "--vdi: %r" % out)
        check(vdi_file(s, vdi) == img1, "--vdi: the disk is not point 1")
        _, _, err = env.cbtfs("backup", store, "--verify", "-v", *srv)
        check("verified against the host" in err, "no --verify: %r" % err)
        pts = env.ls_json(store)["disks"][0]["points"]
        check(len(pts) == 3 and pts[2]["kind"] == "delta",
              "the backup after a restore is not a delta: %r" % pts[2])
        p3 = pts[2]["snapshot"]
        # And its image in the store is point 1's: restore it and see.
        rc, out, _ = env.cbtfs("restore", store, p3, "--sr", main_sr,
                               "--json", *srv)
        check(vdi_file(s, json.loads(out)["vdi"])[:SIZE] == img1,
              "the point after the restore is not what was restored")

        # -- a lazy point, fetched over NBD --------------------------------
        s.control("set_power_state", vm=rec["vm"], state="Running")
        cb.write_at(guest, 4 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, "--no-copy", "-q", *srv)
        with open(guest, "rb") as f:
            img4 = f.read()
        p4 = env.ls_json(store)["disks"][0]["points"][3]["snapshot"]
        nbd0 = s.control("stats")["nbd"]["bytes"]
        rc, out, _ = env.cbtfs("restore", store, p4, "--sr", main_sr,
                               "--json", *srv)
        check(vdi_file(s, json.loads(out)["vdi"])[:SIZE] == img4,
              "a lazy point restored wrong")
        check(s.control("stats")["nbd"]["bytes"] > nbd0,
              "the lazy point's blocks were not fetched")

        # -- a point that cannot be read: nothing created -------------------
        cb.write_at(guest, 5 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, "--no-copy", "-q", *srv)
        p5 = env.ls_json(store)["disks"][0]["points"][4]["snapshot"]
        x.xenapi.VDI.destroy(x.xenapi.VDI.get_by_uuid(p5))
        vdis0, n0 = sr_vdis(), imports()["requests"]
        rc, _, err = env.cbtfs("restore", store, p5, "--sr", main_sr, *srv,
                               ok=False)
        check(rc == 1 and "cannot be read completely" in err,
              "unreadable: %d %r" % (rc, err))
        check(sr_vdis() == vdis0 and imports()["requests"] == n0,
              "a VDI was created or an upload started for an unreadable "
              "point")

        # -- the slave's SR: the upload follows the 302 ---------------------
        st0 = imports()
        rc, out, _ = env.cbtfs("restore", store, p2, "--sr", slave_sr,
                               "--json", *srv)
        st = imports()
        check(json.loads(out)["matches"]
              and st["redirects"] == st0["redirects"] + 1
              and st["slave_served"] == st0["slave_served"] + 1,
              "no redirect to the slave: %r %r" % (st0, st))
        check(vdi_file(s, json.loads(out)["vdi"])[:SIZE] == img2,
              "the slave's VDI is wrong")

        # -- the host keeps other bytes: exit 1, said so --------------------
        s.control("set", corrupt_import=True)
        rc, _, err = env.cbtfs("restore", store, p1, "--sr", main_sr, *srv,
                               ok=False)
        check(rc == 1 and "differs" in err, "corruption: %d %r" % (rc, err))

        # -- progress on a terminal -----------------------------------------
        master, slave = pty.openpty()
        p = subprocess.run([cb.cbtfs_binary(), "restore", store, p1, "--sr",
                            main_sr] + srv, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        tty = b""
        try:
            while True:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                tty += chunk
        except OSError:
            pass
        os.close(master)
        check(p.returncode == 0 and b"restore: " in tty and b"MiB" in tty
              and b"matches" in tty, "no progress on a terminal: %r" % tty)

        # -- a damaged block: the restore stops before it, the VDI goes --
        # (an object store's reads start with an empty local cache, so
        # that they read the bucket, not a copy kept before the damage)
        if not cb.is_dir_store(store):
            os.environ["CBTFS_S3_CACHE"] = env.path("empty-cache")
        env.flip_block_byte(store, vdi, p1, 5 * MiB + 1)
        vdis0, sent0 = sr_vdis(), imports()["bytes"]
        rc, _, err = env.cbtfs("restore", store, p2, "--sr", main_sr, *srv,
                               ok=False)
        check(rc == 1 and "checksum" in err and "destroyed again" in err,
              "damaged: %d %r" % (rc, err))
        check(sr_vdis() == vdis0, "the VDI of a failed restore stayed")
        check(imports()["bytes"] - sent0 <= 5 * MiB,
              "bytes at or past the damaged block were sent")
        x.xenapi.session.logout()
    print("PASS test-restore")


if __name__ == "__main__":
    main()
