#!/usr/bin/env python3
"""End to end: baselines copy only the parts of a disk that hold data.

XenServer's NBD server cannot say which blocks hold data; the block
table at the head of XAPI's VHD export (GET /export_raw_vdi?format=vhd)
can.  A 2040 GiB disk (the largest XAPI exports as VHD) with a few MiB
written is backed up reading only the
2 MiB regions the table lists (counted by the stand-in's NBD server),
reads back right through a mount, zeros elsewhere, and takes deltas as
usual.  An ext4 image comes back byte for byte.  When the export fails
in any of the ways XAPI's can (no handler, an error page in a 200 body,
a truncated stream, a damaged header) the backup says so in one line
and copies the whole disk; a raw SR's table (every region) copies it
all without a warning.  A 302 to the host that sees the SR is followed;
one to plain http (the session in the clear) or a loop of them is
refused in one line, and the disk copied whole; so is one to a host
whose certificate the CA file does not hold (each host of a pool has its
own).  A lazy baseline fetches only what holds data.
Disks over 2040 GiB have no VHD export; the backup says so and copies
all.
"""
# store-kinds: dir s3
import base64
import hashlib
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
REGION = 2 * MiB
# XAPI exports VHD only up to 2040 GiB, the largest VHD SM makes.
DISK = 2040 * GiB


def regions(writes):
    """The 2 MiB regions the writes (offset, length) touch."""
    return {r for off, n in writes for r in range(off // REGION,
                                                  (off + n - 1) // REGION + 1)}


class Case:
    def __init__(self, s, env):
        self.s = s
        self.env = env
        self.store = env.store()
        info = s.info
        self.srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
                    "--password-file", env.password_file()]
        self.n = 0

    def disk(self, size, writes):
        """A VM with one disk of SIZE holding random data at WRITES;
        returns (vm name, vdi uuid, {offset: bytes})."""
        self.n += 1
        name = "vm%d" % self.n
        vm = self.s.control("create_vm", name=name,
                            disks=[{"name": "root", "size": size}])
        vdi = vm["disks"][0]["vdi"]
        data = {}
        for off, n in writes:
            data[off] = os.urandom(n)
            self.write(vdi, off, data[off])
        return name, vdi, data

    def write(self, vdi, off, data):
        for i in range(0, len(data), 4 * MiB):
            self.s.control("write", vdi=vdi, offset=off + i,
                           data_b64=base64.b64encode(data[i:i + 4 * MiB]).decode())

    def backup(self, name, *extra):
        self.s.control("reset_stats")
        _, _, err = self.env.cbtfs("backup", self.store, "--vm", name, "-v",
                                   *self.srv, *extra)
        check("OpaqueRef" not in err, "a ref in the output: %s" % err)
        return err

    def fell_back(self, name, knob, value, back, says):
        """Back up NAME with the stand-in's KNOB at VALUE (BACK after):
        the one warning of a whole copy, which must name SAYS."""
        self.s.control("set", **{knob: value})
        err = self.backup(name)
        self.s.control("set", **{knob: back})
        lines = [x for x in err.splitlines() if "copying every block" in x]
        check(len(lines) == 1 and says in lines[0],
              "%s: wanted one warning naming %r: %s" % (value, says, err))
        return lines[0]

    def via_slave(self, name, vdi, what):
        """Back up NAME (disk VDI, one region written) while only the
        slave sees the SR: the redirect must be followed and only that
        region read.  The stand-in's export counters afterwards."""
        self.s.control("set", vhd_host="slave")
        err = self.backup(name)
        got = self.s.control("stats")["http"]["export_raw_vdi"]
        self.s.control("set", vhd_host="master")
        check("copying every block" not in err, "%s: fell back: %s" % (what, err))
        read = self.nbd_bytes(self.point(vdi)["snapshot"])
        check(read == REGION, "%s: %d bytes copied" % (what, read))
        return got

    def point(self, vdi):
        d = [d for d in self.env.ls_json(self.store)["disks"]
             if d["uuid"] == vdi][0]
        return d["points"][-1]

    def nbd_bytes(self, snap):
        got = self.s.control("stats")["nbd"]["by_vdi"].get(snap)
        return got["bytes"] if got else 0

    def nbd_blocks(self, snap):
        got = self.s.control("stats")["nbd"]["by_vdi"].get(snap)
        return set(got["blocks"]) if got else set()


def image_path(mnt, vdi, snap):
    return os.path.join(mnt, "by-uuid", vdi, snap + ".img")


def huge_disk(c):
    """2040 GiB, a few MiB written: the baseline reads only those regions."""
    writes = [(0, MiB), (TiB + 3 * MiB - 64 * KiB, 5 * MiB),
              (DISK - 64 * KiB, 64 * KiB)]
    name, vdi, data = c.disk(DISK, writes)
    err = c.backup(name)
    check("copying every block" not in err, "fell back: %s" % err)
    p = c.point(vdi)
    check(p["complete"], "baseline not complete: %s" % p)
    want = regions(writes)
    read = c.nbd_bytes(p["snapshot"])
    check(0 < read <= len(want) * REGION,
          "read %d bytes over NBD for %d regions of data" % (read, len(want)))
    blocks = c.nbd_blocks(p["snapshot"])
    check(all(b * 64 * KiB // REGION in want for b in blocks),
          "fetched blocks outside the regions with data")
    check(c.s.control("stats")["http"]["export_raw_vdi"]["bytes"] < 64 * MiB,
          "cbtfs read the whole VHD stream, not its head")

    # A delta on top, then both points read right.
    more = os.urandom(MiB)
    c.write(vdi, 512 * GiB, more)
    c.backup(name)
    p2 = c.point(vdi)
    check(p2["complete"] and p2["snapshot"] != p["snapshot"], "no delta")
    mnt = c.env.mount(c.store, c.env.path("m-huge"))
    for snap, extra in ((p["snapshot"], False), (p2["snapshot"], True)):
        img = image_path(mnt, vdi, snap)
        check(os.stat(img).st_size == DISK, "wrong size")
        for off, d in data.items():
            check(cb.pread(img, off, len(d)) == d, "data at %d reads wrong" % off)
        check(cb.pread(img, 512 * GiB, MiB) == (more if extra else bytes(MiB)),
              "512 GiB reads wrong in %s" % snap)
        for off in (4 * MiB, 700 * GiB, DISK - 4 * MiB):
            check(cb.pread(img, off, MiB) == bytes(MiB), "%d not zero" % off)
    cb.unmount(mnt)


def ext4_disk(c):
    """A real filesystem comes back byte for byte, from fewer bytes."""
    size = 256 * MiB
    name, vdi, _ = c.disk(size, [])
    guest = c.env.path("guest.img")
    cb.make_ext4(guest, size, {"a.bin": os.urandom(3 * MiB),
                               "note.txt": b"sparse baseline\n"})
    c.s.control("write_file", vdi=vdi, path=guest)
    c.backup(name)
    p = c.point(vdi)
    read = c.nbd_bytes(p["snapshot"])
    check(read < size // 2, "read %d of %d bytes" % (read, size))
    mnt = c.env.mount(c.store, c.env.path("m-ext4"))
    img = image_path(mnt, vdi, p["snapshot"])
    check(cb.sha256(img) == cb.sha256(guest), "the image differs")
    lm = c.env.loop_mount(img, c.env.path("loop"))
    with open(os.path.join(lm, "note.txt"), "rb") as f:
        check(f.read() == b"sparse baseline\n", "note.txt reads wrong")
    cb.subprocess.run(["umount", lm], check=True)
    cb.unmount(mnt)


def fallbacks(c):
    """Every way the export can fail ends in a full, correct copy."""
    size = 16 * MiB
    for fault, says in (("missing", "HTTP 404"),
                        ("http500_body", "an HTTP error in the body"),
                        ("truncate", "ends inside its head"),
                        ("bad_checksum", "footer checksum")):
        name, vdi, data = c.disk(size, [(5 * MiB, MiB)])
        c.fell_back(name, "vhd_fault", fault, "none", says)
        p = c.point(vdi)
        check(p["complete"], "%s: not complete" % fault)
        check(c.nbd_bytes(p["snapshot"]) == size,
              "%s: %d bytes copied, not all" % (fault, c.nbd_bytes(p["snapshot"])))
        mnt = c.env.mount(c.store, c.env.path("m-" + fault))
        img = image_path(mnt, vdi, p["snapshot"])
        check(cb.pread(img, 5 * MiB, MiB) == data[5 * MiB], "%s: data" % fault)
        check(cb.pread(img, 0, MiB) == bytes(MiB), "%s: zeros" % fault)
        cb.unmount(mnt)

    # A raw SR lists every region: all copied, nothing to warn about.
    name, vdi, _ = c.disk(size, [(0, 64 * KiB)])
    c.s.control("set", vhd_source="raw")
    err = c.backup(name)
    c.s.control("set", vhd_source="hybrid")
    check("copying every block" not in err, "raw SR warned: %s" % err)
    check(c.nbd_bytes(c.point(vdi)["snapshot"]) == size, "raw SR: not all read")


def redirects(c):
    """XAPI answers 302 when another host sees the SR: followed over
    https with the same session; never down to http, never forever."""
    size = 16 * MiB
    name, vdi, _ = c.disk(size, [(5 * MiB, MiB)])
    got = c.via_slave(name, vdi, "slave")
    check(got["redirects"] == 1 and got["slave_served"] == 1,
          "slave: the export did not come from the slave: %s" % got)

    # Down to http: the session id is in the query.  Whoever listens
    # there must never hear from us.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(4)
        trap.setblocking(False)
        for host, says in (("http://127.0.0.1:%d" % trap.getsockname()[1],
                            "refused its redirect to http://127.0.0.1:%d"
                            % trap.getsockname()[1]),
                           ("loop", "more than 3 redirects")):
            name, vdi, _ = c.disk(size, [(5 * MiB, MiB)])
            line = c.fell_back(name, "vhd_host", host, "master", says)
            check("session_id" not in line,
                  "%s: the warning shows the session: %s" % (host, line))
            p = c.point(vdi)
            check(p["complete"] and c.nbd_bytes(p["snapshot"]) == size,
                  "%s: not copied whole" % host)
        try:
            conn, _ = trap.accept()
            conn.close()
            check(False, "followed a redirect from https to http")
        except BlockingIOError:
            pass


def pool_certificates():
    """Each host of a pool has a certificate of its own: a redirect to a
    host the CA file does not vouch for ends in one line naming that
    host, and a whole copy; with both in the file it is followed."""
    size = 16 * MiB
    with sim.Sim("--slave-own-cert") as s, cb.Env() as env:
        c = Case(s, env)
        name, vdi, _ = c.disk(size, [(5 * MiB, MiB)])
        c.fell_back(name, "vhd_host", "slave", "master",
                    "TLS certificate of %s not trusted" % s.info["slave_url"])
        check(c.nbd_bytes(c.point(vdi)["snapshot"]) == size,
              "untrusted slave: not copied whole")

        both = env.path("pool.pem")
        with open(both, "w") as out:
            for f in (s.info["ca_file"], s.info["slave_ca_file"]):
                with open(f) as pem:
                    out.write(pem.read())
        c.srv[c.srv.index("--ca-file") + 1] = both
        name, vdi, _ = c.disk(size, [(5 * MiB, MiB)])
        c.via_slave(name, vdi, "trusted slave")


def lazy(c):
    """--no-copy: the mount fetches only blocks of regions with data."""
    size = 64 * MiB
    writes = [(REGION + 64 * KiB, 64 * KiB), (40 * MiB, 3 * MiB)]
    name, vdi, data = c.disk(size, writes)
    c.backup(name, "--no-copy")
    p = c.point(vdi)
    m = c.env.mount_fg(c.store, c.env.path("m-lazy"), *c.srv)
    c.s.control("reset_stats")
    img = image_path(m.mnt, vdi, p["snapshot"])
    whole = bytearray(size)
    for off, d in data.items():
        whole[off:off + len(d)] = d
    h = hashlib.sha256()
    with open(img, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    check(h.hexdigest() == hashlib.sha256(whole).hexdigest(), "lazy image differs")
    blocks = c.nbd_blocks(p["snapshot"])
    want = regions(writes)
    check(blocks and all(b * 64 * KiB // REGION in want for b in blocks),
          "lazy read fetched blocks outside the regions with data: %s" % blocks)
    check(m.unmount() == 0, "mount exited non-zero: %s" % m.log())

    # Larger than any VHD: no export to ask, one line saying so.
    name, vdi, _ = c.disk(2 * TiB, [(0, 64 * KiB)])
    err = c.backup(name, "--no-copy")
    check("copying every block: the disk is larger than XAPI's VHD export "
          "(2040 GiB)" in err, "2 TiB: %s" % err)
    check(c.s.control("stats")["http"]["export_raw_vdi"]["requests"] == 0,
          "asked for the VHD export of a 2 TiB disk")
    check(c.point(vdi)["kind"] == "baseline", "2 TiB: no baseline")


def main():
    if os.geteuid() != 0:
        cb.skip("needs root for FUSE and loop mounts")
    with sim.Sim() as s, cb.Env() as env:
        c = Case(s, env)
        huge_disk(c)
        ext4_disk(c)
        fallbacks(c)
        redirects(c)
        lazy(c)
    pool_certificates()
    print("ok")


if __name__ == "__main__":
    main()
