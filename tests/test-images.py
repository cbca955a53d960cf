#!/usr/bin/env python3
"""End to end: images that tools see as they are.

SEEK_DATA/SEEK_HOLE on a mounted image find exactly the 64 KiB blocks
the guest wrote (a block the backup stored as zeros is a hole, also
where an older point had data), st_blocks and du count those blocks,
qemu-img map sees them too, and `cp --sparse=auto` of a 2040 GiB
image with a few MiB written reads only those MiB and makes a sparse
copy with the same content.
A lazy point (backup --no-copy) never shows a hole where the host may
have data: every block of its set counts as data until it is fetched.

Each image carries extended attributes (getfattr -d): its snapshot, the
live disk, the VM and its name, the UTC time, and whether it reads
wholly from the store (which turns 1 when cbtfs fetch beside the mount
completes it); unknown names are ENODATA, and setting one is refused
(a read-only filesystem).

Each disk folder in by-vm holds MD5SUMS: the host's VDI.checksum of
every point a check compared (backup --verify, verify --server), as
`md5sum -c MD5SUMS` reads it there; a point never compared is not
listed, and one the host disagrees about is listed with the host's
word, so md5sum -c fails on it.
"""
# store-kinds: dir s3
import base64
import errno
import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
BLOCK = 64 * KiB
REGION = 2 * MiB
DISK = 2040 * GiB


class Case:
    def __init__(self, s, env):
        self.s = s
        self.env = env
        self.store = env.store()
        info = s.info
        self.srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
                    "--password-file", env.password_file()]

    def vm(self, name, size):
        vm = self.s.control("create_vm", name=name,
                            disks=[{"name": "root", "size": size}])
        return vm["disks"][0]["vdi"]

    def write(self, vdi, off, data):
        for i in range(0, len(data), 4 * MiB):
            self.s.control("write", vdi=vdi, offset=off + i,
                           data_b64=base64.b64encode(data[i:i + 4 * MiB]).decode())

    def backup(self, name, *extra):
        self.env.cbtfs("backup", self.store, "--vm", name, *self.srv, *extra)

    def points(self, vdi):
        return [d for d in self.env.ls_json(self.store)["disks"]
                if d["uuid"] == vdi][0]["points"]


def image(mnt, vdi, snap):
    return os.path.join(mnt, "by-uuid", vdi, snap + ".img")


def extents(path):
    """The data extents of PATH, as (start, end) byte offsets, found
    with SEEK_DATA and SEEK_HOLE (of a file nothing fills meanwhile: a
    block a mount is fetching may turn from data into a hole between
    the two)."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while True:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                check(e.errno == errno.ENXIO, "SEEK_DATA: %s" % e)
                return out
            h = os.lseek(fd, d, os.SEEK_HOLE)
            check(h > d, "SEEK_HOLE at data %d gave %d" % (d, h))
            out.append((d, h))
            off = h
    finally:
        os.close(fd)


def runs(blocks):
    """Extents (byte offsets) of runs of adjacent blocks."""
    out = []
    for b in sorted(blocks):
        if out and out[-1][1] == b * BLOCK:
            out[-1] = (out[-1][0], (b + 1) * BLOCK)
        else:
            out.append((b * BLOCK, (b + 1) * BLOCK))
    return out


def content_digest(path):
    """sha256 of PATH's size and its non-zero blocks with their offsets,
    reading only its data extents: equal for two files exactly when
    their bytes are, without reading terabytes of holes."""
    h = hashlib.sha256(b"%d" % os.stat(path).st_size)
    with open(path, "rb") as f:
        for start, end in extents(path):
            f.seek(start)
            for off in range(start, end, BLOCK):
                blk = f.read(min(BLOCK, end - off))
                if blk.strip(b"\0"):
                    h.update(b"%d:" % off + blk.ljust(BLOCK, b"\0"))
    return h.hexdigest()


def expected_digest(size, blocks):
    h = hashlib.sha256(b"%d" % size)
    for b in sorted(blocks):
        if blocks[b].strip(b"\0"):
            h.update(b"%d:" % (b * BLOCK) + blocks[b])
    return h.hexdigest()


def cp_sparse(src, dst):
    """cp --sparse=auto SRC DST; the bytes cp read (its rchar, read
    from /proc before it is reaped)."""
    p = subprocess.Popen(["cp", "--sparse=auto", src, dst])
    try:
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        with open("/proc/%d/io" % p.pid) as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
    finally:
        rc = p.wait()
    check(rc == 0, "cp exited %d" % rc)
    return int(io["rchar"])


def check_seeks(img, blocks, what):
    """SEEK_DATA/SEEK_HOLE, st_blocks and du of IMG match BLOCKS, the
    numbers of its blocks that hold data."""
    size = os.stat(img).st_size
    got = extents(img)
    check(got == runs(blocks), "%s: extents %s, want %s"
          % (what, got, runs(blocks)))
    fd = os.open(img, os.O_RDONLY)
    try:
        first = min(blocks)
        # Inside a data block, SEEK_DATA stays; inside a hole, SEEK_HOLE.
        check(os.lseek(fd, first * BLOCK + 100, os.SEEK_DATA)
              == first * BLOCK + 100, "%s: SEEK_DATA moved inside data" % what)
        hole = next(b for b in range(len(blocks) + 1) if b not in blocks)
        check(os.lseek(fd, hole * BLOCK + 7, os.SEEK_HOLE) == hole * BLOCK + 7,
              "%s: SEEK_HOLE moved inside a hole" % what)
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            try:
                os.lseek(fd, size, whence)
                check(False, "%s: seek at the end did not fail" % what)
            except OSError as e:
                check(e.errno == errno.ENXIO, "%s: at the end: %s" % (what, e))
    finally:
        os.close(fd)
    st = os.stat(img)
    check(st.st_blocks * 512 == len(blocks) * BLOCK,
          "%s: st_blocks %d, want %d" % (what, st.st_blocks,
                                         len(blocks) * BLOCK // 512))
    du = subprocess.run(["du", "-B1", img], capture_output=True, text=True,
                        check=True).stdout.split()[0]
    check(int(du) == len(blocks) * BLOCK, "%s: du says %s" % (what, du))


def huge(c):
    """2040 GiB, a few blocks written (the baseline stores the 2 MiB
    regions around them, the rest of each region as zeros); a delta
    writes one block and zeros over another."""
    vdi = c.vm("huge", DISK)
    t = TiB // BLOCK
    last = DISK // BLOCK - 1
    data = {}
    for b, n in ((0, 1), (16, 3), (t + 5, 1), (last, 1)):
        d = os.urandom(n * BLOCK)
        c.write(vdi, b * BLOCK, d)
        for i in range(n):
            data[b + i] = d[i * BLOCK:(i + 1) * BLOCK]
    c.backup("huge")
    first = dict(data)
    d = os.urandom(BLOCK)
    c.write(vdi, 700 * GiB, d)
    data[700 * GiB // BLOCK] = d
    c.write(vdi, 17 * BLOCK, bytes(BLOCK))
    del data[17]
    c.backup("huge")
    p1, p2 = c.points(vdi)

    mnt = c.env.mount(c.store, c.env.path("m-huge"))
    for p, want, what in ((p1, first, "baseline"), (p2, data, "delta")):
        img = image(mnt, vdi, p["snapshot"])
        check_seeks(img, set(want), what)
    # Block 17 holds data in the baseline, zeros in the delta: a hole.
    img = image(mnt, vdi, p2["snapshot"])
    check(cb.pread(img, 17 * BLOCK, BLOCK) == bytes(BLOCK), "block 17")

    # qemu-img sees the same extents (its raw driver asks SEEK_DATA).
    qmap = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw",
                           img], capture_output=True, text=True, check=True)
    got = [(e["start"], e["start"] + e["length"])
           for e in json.loads(qmap.stdout) if e["data"]]
    check(got == runs(data), "qemu-img map: %s, want %s" % (got, runs(data)))

    out = c.env.path("restored.raw")
    read = cp_sparse(img, out)
    check(read <= len(data) * BLOCK + 4 * MiB,
          "cp read %d bytes of a point holding %d" % (read, len(data) * BLOCK))
    st = os.stat(out)
    check(st.st_size == DISK, "the copy is %d bytes" % st.st_size)
    check(st.st_blocks * 512 <= len(data) * BLOCK + MiB,
          "the copy is not sparse: %d bytes allocated" % (st.st_blocks * 512))
    check(content_digest(out) == expected_digest(DISK, data),
          "the copy's content differs")
    check(content_digest(img) == expected_digest(DISK, data),
          "the image's content differs")
    os.unlink(out)
    cb.unmount(mnt)


def lazy(c):
    """--no-copy: blocks the host has are data until fetched; once the
    mount has read them, its zeros are holes."""
    size = 64 * MiB
    vdi = c.vm("lazy", size)
    data = {}
    for b in (40, 41, 300):
        d = os.urandom(BLOCK)
        c.write(vdi, b * BLOCK, d)
        data[b] = d
    c.backup("lazy", "--no-copy")
    p = c.points(vdi)[0]
    m = c.env.mount_fg(c.store, c.env.path("m-lazy"), *c.srv)
    img = image(m.mnt, vdi, p["snapshot"])
    # The baseline's set is the 2 MiB regions of the blocks written,
    # none of them fetched yet: all data, never a hole there.
    regions = {r for b in data for r in [b * BLOCK // REGION]}
    want = {b for r in regions
            for b in range(r * REGION // BLOCK, (r + 1) * REGION // BLOCK)}
    check(extents(img) == runs(want), "lazy: extents %s, want %s"
          % (extents(img), runs(want)))
    with open(img, "rb") as f:
        for start, end in extents(img):
            f.seek(start)
            f.read(end - start)
    # The mount keeps what it fetched after answering the reads; once
    # it has exited, all of it is in the store.
    check(m.unmount() == 0, "mount exited non-zero: %s" % m.log())
    mnt = c.env.mount(c.store, c.env.path("m-lazy-2"))
    img = image(mnt, vdi, p["snapshot"])
    check(extents(img) == runs(data), "lazy, fetched: extents %s, want %s"
          % (extents(img), runs(data)))
    check(content_digest(img) == expected_digest(size, data),
          "lazy, fetched: content differs")
    cb.unmount(mnt)


XATTRS = ["user.cbtfs.snapshot", "user.cbtfs.vdi", "user.cbtfs.vm",
          "user.cbtfs.vm-name", "user.cbtfs.time", "user.cbtfs.complete"]


def getfattr(path):
    """getfattr -d PATH, parsed: {name: value}."""
    out = subprocess.run(["getfattr", "-d", "--absolute-names", path],
                         capture_output=True, text=True, check=True).stdout
    got = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            check(v.startswith('"') and v.endswith('"'), "getfattr: %s" % line)
            got[k] = v[1:-1]
    return got


def xattrs(c):
    vdi = c.vm("web server", 8 * MiB)
    c.write(vdi, 0, os.urandom(MiB))
    c.backup("web server")
    c.write(vdi, MiB, os.urandom(MiB))
    c.backup("web server", "--no-copy")
    disk = [d for d in c.env.ls_json(c.store)["disks"] if d["uuid"] == vdi][0]
    p1, p2 = disk["points"]
    mnt = c.env.mount(c.store, c.env.path("m-xattr"))
    folder = os.path.join(mnt, "by-vm", "web server", "root")
    for p, complete in ((p1, "1"), (p2, "0")):
        want = {
            "user.cbtfs.snapshot": p["snapshot"],
            "user.cbtfs.vdi": vdi,
            "user.cbtfs.vm": disk["vm_uuid"],
            "user.cbtfs.vm-name": "web server",
            "user.cbtfs.time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                             time.gmtime(p["time"])),
            "user.cbtfs.complete": complete,
        }
        for img in (image(mnt, vdi, p["snapshot"]),
                    os.path.join(folder, p["name"] + ".img")):
            got = getfattr(img)
            check(got == want, "getfattr -d %s: %s, want %s" % (img, got, want))
            check(sorted(os.listxattr(img)) == sorted(XATTRS),
                  "listxattr: %s" % os.listxattr(img))
    img = image(mnt, vdi, p2["snapshot"])
    for name in ("user.cbtfs.nope", "user.other", "trusted.cbtfs.vm"):
        try:
            os.getxattr(img, name)
            check(False, "getxattr %s answered" % name)
        except OSError as e:
            check(e.errno == errno.ENODATA, "getxattr %s: %s" % (name, e))
    try:
        os.setxattr(img, "user.cbtfs.vm", b"x")
        check(False, "setxattr succeeded")
    except OSError as e:
        check(e.errno == errno.EROFS, "setxattr: %s" % e)
    check(os.listxattr(folder) == [], "a folder has attributes")
    check(not os.path.exists(os.path.join(folder, "MD5SUMS")),
          "MD5SUMS in a folder of points never compared")
    # cbtfs fetch beside the mount completes the lazy point.
    c.env.cbtfs("fetch", c.store, *c.srv)
    check(os.getxattr(img, "user.cbtfs.complete") == b"1",
          "still incomplete after cbtfs fetch")
    cb.unmount(mnt)


def md5sums(c):
    size = 16 * MiB
    vdi = c.vm("db", size)
    disk = bytearray(size)

    def write(off, n):
        d = os.urandom(n)
        c.write(vdi, off, d)
        disk[off:off + n] = d
        return hashlib.md5(disk).hexdigest()

    write(0, MiB)
    c.backup("db")                             # never compared
    want2 = write(4 * MiB, MiB)
    c.backup("db", "--verify")                 # compared while backed up
    want3 = write(8 * MiB, MiB)
    c.backup("db", "--no-copy")                # compared by verify --server
    before = int(time.time())
    c.env.cbtfs("verify", c.store, *c.srv)
    after = int(time.time()) + 1
    p1, p2, p3 = c.points(vdi)
    check(p2["verdict"] == "match" and p3["verdict"] == "match",
          "not verified: %s %s" % (p2, p3))

    mnt = c.env.mount(c.store, c.env.path("m-md5"), *c.srv)
    folder = os.path.join(mnt, "by-vm", "db", "root")
    path = os.path.join(folder, "MD5SUMS")
    with open(path) as f:
        text = f.read()
    want = "%s  %s.img\n%s  %s.img\n" % (want2, p2["name"], want3, p3["name"])
    check(text == want, "MD5SUMS:\n%s\nwant:\n%s" % (text, want))
    check(p1["name"] + ".img" not in [x.split("  ")[1] for x in text.splitlines()],
          "a point never compared is listed")
    st = os.stat(path)
    check(st.st_size == len(text.encode()), "MD5SUMS size %d" % st.st_size)
    check(before <= st.st_mtime <= after,
          "MD5SUMS time %d, the check ran in [%d, %d]"
          % (st.st_mtime, before, after))
    p = subprocess.run(["md5sum", "-c", "MD5SUMS"], cwd=folder,
                       capture_output=True, text=True)
    check(p.returncode == 0 and p.stdout.count(": OK") == 2,
          "md5sum -c: %d %s %s" % (p.returncode, p.stdout, p.stderr))
    cb.unmount(mnt)

    # The host now says otherwise about the lazy point: the check fails,
    # and MD5SUMS shows what the host said.
    c.s.control("set", return_next={"method": "VDI.checksum",
                                    "value": "0" * 32})
    rc, _, _ = c.env.cbtfs("verify", c.store, *c.srv, ok=False)
    check(rc == 1, "verify passed against a lying host")
    mnt = c.env.mount(c.store, c.env.path("m-md5-2"), *c.srv)
    folder = os.path.join(mnt, "by-vm", "db", "root")
    p = subprocess.run(["md5sum", "-c", "MD5SUMS"], cwd=folder,
                       capture_output=True, text=True)
    check(p.returncode == 1 and "%s.img: OK" % p2["name"] in p.stdout
          and "%s.img: FAILED" % p3["name"] in p.stdout,
          "md5sum -c after the host disagreed: %s" % p.stdout)
    cb.unmount(mnt)


def main():
    if os.geteuid() != 0:
        cb.skip("needs root for FUSE")
    with sim.Sim() as s, cb.Env() as env:
        c = Case(s, env)
        md5sums(c)
        xattrs(c)
        huge(c)
        lazy(c)
    print("ok")


if __name__ == "__main__":
    main()
