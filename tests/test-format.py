#!/usr/bin/env python3
"""End to end: the store's bytes are what FORMAT.md says, both ways.

tests/lib/storefmt.py is a reader and writer of format 2 written from
FORMAT.md alone.  Reading: a VM with two disks is backed up through the
stand-in four times (a baseline of every block, a delta that zeroes a
block, rewrites a partial last block and writes into space the disk
grew by, a --no-copy run after a CBT reset (a sparse baseline and a
delta) filled by cbtfs fetch, and an empty delta with --verify); then
storefmt alone parses the whole store (marker, modes, every manifest
and its check, `changed` and its bit order, every index record and its
check, every stored block against its XXH3-128 and against the disk's
content at that snapshot, holes for blocks not stored, the `manifests`
copies, the `verified` lines) and rebuilds every point's image, which
must equal both the disk at that snapshot and what a mount serves.
Writing: storefmt makes a store from scratch (a baseline with DATA and
ZERO records, a multi-block ZERO run and a missing block, a grown delta,
`manifests`, `verified` with a bad and a torn line); cbtfs ls shows it,
a mount serves exactly the images computed here (EIO for the missing
block), verify finds no damage, only points not wholly in the store,
a torn index tail changes nothing, and one flipped byte in a stored
block makes that block EIO through the mount and verify report and
record the damage.
"""
import calendar
import errno
import hashlib
import os
import shutil
import stat
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
import storefmt as sf  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
BLOCK = sf.BLOCK
ROOT = 8 * MiB                  # 4 regions of 2 MiB; the last never written
DATA0 = 3 * MiB + 4608          # a partial last block (block 48)
DATA1 = 5 * MiB + 512           # grown: blocks 49..80, the last partial
VM_NAME = "fmt vm 100%"         # a space and a % to percent-encode
HOLES = True                    # whether the scratch filesystem tells holes


def blocks_of(path, size):
    """{block: its 65536 bytes, padded with zeros} of the first SIZE
    bytes of PATH."""
    with open(path, "rb") as f:
        data = f.read(size).ljust(size, b"\0")
    return {b: data[b * BLOCK:(b + 1) * BLOCK].ljust(BLOCK, b"\0")
            for b in range(sf.nblocks(size))}


def sha_of_blocks(blocks):
    h = hashlib.sha256()
    for blk in blocks:
        h.update(blk)
    return h.hexdigest()


def sha_prefix(path, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(size).ljust(size, b"\0"))
    return h.hexdigest()


def check_modes(store):
    """FORMAT.md: everything in the store is created 0700 (directories)
    or 0600 (files); the store itself is made 0700."""
    st = os.lstat(store)
    check(stat.S_IMODE(st.st_mode) == 0o700, "store mode %o" % st.st_mode)
    for d, dirs, files in os.walk(store):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            check(stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode),
                  "%s is neither a file nor a directory" % p)
            check(stat.S_IMODE(st.st_mode) == want,
                  "%s has mode %o, not %o" % (p, stat.S_IMODE(st.st_mode), want))


def reports_holes(d):
    """Whether the filesystem of directory D tells holes (SEEK_DATA)."""
    p = os.path.join(d, "hole-probe")
    with open(p, "wb") as f:
        f.truncate(4 * BLOCK)
        f.seek(3 * BLOCK)
        f.write(b"x")
    try:
        return is_hole(p, 0)
    finally:
        os.unlink(p)


def is_hole(path, b):
    """Whether block B of PATH holds no data extent (or lies past EOF)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            nxt = os.lseek(fd, b * BLOCK, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return True
            raise
        return nxt >= (b + 1) * BLOCK
    finally:
        os.close(fd)


def read_eio(path, off, n=4096):
    """True when reading N bytes at OFF of PATH fails with EIO; data
    instead fails the test (with what the data was)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.pread(fd, n, off)
    except OSError as e:
        check(e.errno == errno.EIO, "read at %d of %s: %s" % (off, path, e))
        return True
    finally:
        os.close(fd)
    check(False, "read at %d of %s returned %d bytes of data, not EIO"
          % (off, path, len(got)))


# ---------------------------------------------------------------------
# Reader direction: cbtfs writes what FORMAT.md says.

def reader_direction(s, env):
    info = s.info
    rec = s.control("create_vm", name=VM_NAME,
                    disks=[{"name": "root", "size": ROOT},
                           {"name": "data\ntwo", "size": DATA0}])
    vm_uuid = rec["vm"]
    vdis = {"root": rec["disks"][0]["vdi"], "data": rec["disks"][1]["vdi"]}
    udev = {"root": "0", "data": "1"}
    dname = {"root": b"root", "data": b"data\ntwo"}
    size = {"root": ROOT, "data": DATA0}
    guest = {k: env.path(k + ".img") for k in vdis}
    for k in vdis:
        with open(guest[k], "wb") as f:
            f.truncate(size[k])
    # root: data in regions 0 and 2, region 1 zeros (read as ZERO
    # records), region 3 never written.
    cb.write_at(guest["root"], 0, os.urandom(2 * MiB))
    cb.write_at(guest["root"], 4 * MiB, os.urandom(2 * MiB))
    cb.write_at(guest["data"], 0, os.urandom(DATA0))
    store = env.path("store")
    srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
           "--password-file", env.password_file()]
    snaps = {k: [] for k in vdis}      # per disk, in backup order
    image = {}                         # snapshot -> (copy of the disk, size)
    expect = {}                        # snapshot -> what its layer must say
    started = int(time.time())

    def write(k, off, data):
        cb.write_at(guest[k], off, data)

    def backup(n, *extra, sets, kinds, fill="eager"):
        """Push the guests to the stand-in, back up, and note what each
        new layer must hold."""
        for k in vdis:
            s.control("write_file", vdi=vdis[k], path=guest[k])
        _, _, err = env.cbtfs("backup", store, *extra, *srv)
        pts = {d["uuid"]: d["points"] for d in env.ls_json(store)["disks"]}
        for k in vdis:
            p = pts[vdis[k]][-1]
            check(p["snapshot"] not in image, "backup %d made no new point "
                  "of %s" % (n, k))
            copy = env.path("%s-%d.img" % (k, n))
            shutil.copyfile(guest[k], copy)
            image[p["snapshot"]] = (copy, size[k])
            parent = "-" if kinds[k] in ("all", "sparse") else snaps[k][-1]
            chain = p["snapshot"] if parent == "-" else \
                expect[snaps[k][-1]]["chain"]
            expect[p["snapshot"]] = {
                "disk": vdis[k], "k": k, "parent": parent, "chain": chain,
                "seq": len(snaps[k]) + 1, "size": size[k], "fill": fill,
                "blocks": "all" if kinds[k] == "all" else "changed",
                "set": sets[k], "n": n,
                # Read now: the next backup removes the snapshot from the
                # host once it holds only CBT metadata.
                "snapshot_time": s.control("vdi", uuid=p["snapshot"])[
                    "snapshot_time"]}
            snaps[k].append(p["snapshot"])
        return err

    # 1. Baselines of every block (the VHD export fails: no block table).
    s.control("set", vhd_fault="missing")
    err = backup(1, sets={"root": None, "data": None},
                 kinds={"root": "all", "data": "all"})
    s.control("set", vhd_fault="none")
    check("copying every block" in err, "the export did not fail: %r" % err)

    # 2. Deltas: a block rewritten, a block made all zeros, blocks
    #    written in the zero region; the partial last block rewritten,
    #    the disk grown and written past its old end.
    write("root", 3 * BLOCK, os.urandom(BLOCK))
    write("root", 10 * BLOCK, bytes(BLOCK))
    write("root", 40 * BLOCK, os.urandom(2 * BLOCK))
    write("data", 0, os.urandom(BLOCK))
    write("data", 48 * BLOCK, os.urandom(4608))
    s.control("resize", vdi=vdis["data"], size=DATA1)
    size["data"] = DATA1
    with open(guest["data"], "r+b") as f:
        f.truncate(DATA1)
    write("data", 64 * BLOCK, os.urandom(2 * BLOCK))
    write("data", 80 * BLOCK, os.urandom(512))
    backup(2, sets={"root": {3, 10, 40, 41}, "data": {0, 48, 64, 65, 80}},
           kinds={"root": "delta", "data": "delta"})

    # 3. --no-copy after a host crash reset CBT on root: a sparse
    #    baseline (the regions holding data: not region 3) and a delta,
    #    both lazy; then cbtfs fetch fills them.
    s.control("reset_cbt", vdi=vdis["root"])
    write("root", 20 * BLOCK, os.urandom(BLOCK))
    write("data", 70 * BLOCK, os.urandom(BLOCK))
    write("data", 1 * BLOCK, bytes(BLOCK))
    backup(3, "--no-copy", sets={"root": set(range(96)), "data": {1, 70}},
           kinds={"root": "sparse", "data": "delta"}, fill="lazy")
    for k in vdis:
        p = [x for x in env.ls_json(store)["disks"]
             if x["uuid"] == vdis[k]][0]["points"][-1]
        check(p["present_blocks"] == 0, "--no-copy stored blocks: %s" % p)
    env.cbtfs("fetch", store, *srv)

    # 4. Nothing changed, with --verify: empty sets, `verified` lines.
    backup(4, "--verify", sets={"root": set(), "data": set()},
           kinds={"root": "delta", "data": "delta"})
    finished = int(time.time())

    # Everything below reads the store with storefmt alone.
    check_modes(store)
    st = sf.Store(store)
    check(st.format == 2 and st.id is not None, "marker %r" % st.marker)
    check(st.marker == b"cbtfs-store 2\nid %s\n" % st.id.encode(),
          "marker bytes %r" % st.marker)
    check(os.path.isfile(os.path.join(store, "lock")), "no lock file")
    check(os.listdir(os.path.join(store, "tmp")) == [],
          "tmp/ not emptied: %s" % os.listdir(os.path.join(store, "tmp")))
    check(sorted(os.listdir(store)) == ["cbtfs-store", "disks", "filling",
                                        "generation", "lock", "tmp"],
          "store holds %s" % sorted(os.listdir(store)))
    # Every backup was done filling its layer: no mark is left.
    check(os.listdir(os.path.join(store, "filling")) == [],
          "filling/ holds %s" % os.listdir(os.path.join(store, "filling")))
    # One "+" for every layer made (and every check recorded).
    with open(os.path.join(store, "generation"), "rb") as f:
        gen = f.read()
    disks = os.path.join(store, "disks")
    layers = sum(os.path.isdir(os.path.join(disks, d, x))
                 for d in os.listdir(disks)
                 for x in os.listdir(os.path.join(disks, d)))
    check(gen == b"+" * len(gen) and len(gen) >= layers,
          "generation holds %r for %d layers" % (gen[:40], layers))
    check(sorted(os.listdir(os.path.join(store, "disks"))) == sorted(vdis.values()),
          "disks/ holds %s" % os.listdir(os.path.join(store, "disks")))
    doc = env.ls_json(store)
    check(doc["store"] == {"id": st.id, "format": 2, "kind": "directory"},
          "ls --json says the store is %r" % doc["store"])
    ls = {d["uuid"]: d for d in doc["disks"]}
    host_md5 = {}

    for k, vdi in vdis.items():
        folder = os.path.join(store, "disks", vdi)
        layers = st.disks[vdi]
        check(sorted(layers) == sorted(snaps[k]), "%s: layers %s, backed up "
              "%s" % (k, sorted(layers), snaps[k]))
        check(sorted(os.listdir(folder)) == sorted(snaps[k] + ["manifests", "verified"]),
              "%s holds %s" % (folder, os.listdir(folder)))
        for i, snap in enumerate(snaps[k]):
            check_layer(s, st, layers[snap], expect[snap], vm_uuid, udev[k],
                        dname[k], image[snap], ls[vdi]["points"][i])
        # `manifests`: a newline and a copy of each layer's manifest,
        # appended as each layer was created; nothing else.
        with open(os.path.join(folder, "manifests"), "rb") as f:
            mf = f.read()
        copies = [layers[x].manifest_bytes for x in snaps[k]]
        check(sf.split_manifests(mf) == copies, "%s/manifests: copies %r, "
              "layers %r" % (k, sf.split_manifests(mf), copies))
        check(mf == b"".join(sf.manifests_append_bytes(c) for c in copies),
              "%s/manifests is not newline + copy per layer: %r" % (k, mf))
        # `verified`: backup --verify recorded a match for point 4.
        with open(os.path.join(folder, "verified"), "rb") as f:
            vb = f.read()
        good, ignored = sf.parse_verified(vb)
        check(not ignored and vb.endswith(b"\n"),
              "%s/verified: lines ignored %r" % (k, ignored))
        check([(g[0], g[2]) for g in good] == [(snaps[k][3], "match")],
              "%s/verified: %r" % (k, good))
        check(started <= good[0][1] <= finished, "verified time %d not in "
              "[%d, %d]" % (good[0][1], started, finished))
        # ... and the host's checksum it compared with (below: it is the
        # md5 of the disk at that point).
        md5s = sf.parse_md5s(vb)
        check(list(md5s) == [snaps[k][3]], "%s/verified: md5 lines %r"
              % (k, md5s))
        host_md5.update(md5s)
        check(ls[vdi]["points"][3]["verdict"] == "match", "ls: %s"
              % ls[vdi]["points"][3])

    # Every point's image, rebuilt from the layers by storefmt, equals
    # the disk at its snapshot and what a mount serves.
    mnt = env.mount(store, env.path("mnt"))
    for k, vdi in vdis.items():
        for snap in snaps[k]:
            lay = st.layer(snap)
            copy, sz = image[snap]
            mine = sha_of_blocks(st.point_blocks(lay))
            served = os.path.join(mnt, "by-uuid", vdi, snap + ".img")
            check(os.path.getsize(served) == sz == lay.size,
                  "%s: served %d bytes, size %d" % (snap, os.path.getsize(served), sz))
            check(mine == sha_prefix(copy, sz), "%s (%s, backup %d): the image "
                  "rebuilt from the layers differs from the disk"
                  % (snap, k, expect[snap]["n"]))
            if snap in host_md5:
                with open(copy, "rb") as f:
                    md5 = hashlib.md5(f.read(sz).ljust(sz, b"\0")).hexdigest()
                check(host_md5[snap][0] == md5, "%s: the recorded md5 is not "
                      "the disk's" % snap)
            check(cb.sha256(served) == mine, "%s: the mount serves another "
                  "image than the layers make" % snap)
    cb.unmount(mnt)
    _, _, err = env.cbtfs("verify", store, "-v")
    n_layers = sum(len(x) for x in st.disks.values())
    check("%d points in time: 0 damaged, 0 not wholly in the store" % n_layers
          in err and "warning" not in err, "verify: %r" % err)
    print("reader: %d layers of 2 disks match FORMAT.md and the disks"
          % n_layers)


def check_layer(s, st, lay, want, vm_uuid, udev, dname, img, lsp):
    """One layer cbtfs wrote, against FORMAT.md and the disk."""
    snap = os.path.basename(lay.folder)
    m = lay.meta
    where = "%s (backup %d of %s)" % (snap, want["n"], want["k"])
    # What ls says the layer takes is what its files occupy.
    held = sum(os.stat(os.path.join(lay.folder, f)).st_blocks * 512
               for f in os.listdir(lay.folder))
    check(lsp["stored_bytes"] == held, "%s: ls says %r bytes stored, the "
          "folder's files take %d" % (where, lsp["stored_bytes"], held))
    check(m["_order"] == list(sf.KEYS), "%s: keys in order %s" % (where, m["_order"]))
    check(sf.format_manifest(m) == lay.manifest_bytes, "%s: the manifest is "
          "not written as FORMAT.md says: %r" % (where, lay.manifest_bytes))
    snap_time = calendar.timegm(time.strptime(want["snapshot_time"],
                                              "%Y%m%dT%H:%M:%SZ"))
    got = {"snapshot": m["snapshot"], "disk": m["disk"], "chain": m["chain"],
           "parent": m["parent"], "vm": m["vm"], "seq": m["seq"],
           "time": m["time"], "size": m["size"], "blocks": m["blocks"],
           "fill": m["fill"], "userdevice": m["userdevice"],
           "vm-name": m["vm-name"], "disk-name": m["disk-name"]}
    exp = {"snapshot": snap, "disk": want["disk"], "chain": want["chain"],
           "parent": want["parent"], "vm": vm_uuid, "seq": want["seq"],
           "time": snap_time, "size": want["size"], "blocks": want["blocks"],
           "fill": want["fill"], "userdevice": udev,
           "vm-name": VM_NAME.encode(), "disk-name": dname}
    check(got == exp, "%s: manifest %r, want %r" % (where, got, exp))
    check(b"vm-name fmt%20vm%20100%25\n" in lay.manifest_bytes and
          (want["k"] != "data" or b"disk-name data%0Atwo\n" in lay.manifest_bytes),
          "%s: names not percent-encoded: %r" % (where, lay.manifest_bytes))

    names = sorted(os.listdir(lay.folder))
    want_names = ["data", "index", "layer"] + ([] if m["blocks"] == "all"
                                               else ["changed"])
    check(names == sorted(want_names), "%s holds %s" % (where, names))
    n = lay.n
    if want["set"] is None:
        check(lay.set == set(range(n)), "%s: blocks all" % where)
    else:
        check(lay.set == want["set"], "%s: changed holds %s, the disk changed "
              "%s (bit order?)" % (where, sorted(lay.set), sorted(want["set"])))
        with open(os.path.join(lay.folder, "changed"), "rb") as f:
            check(len(f.read()) == (n + 7) // 8, "%s: changed length" % where)

    # index: the header, every record good and sensible, the layer
    # complete, no block twice, nothing past the disk.
    with open(os.path.join(lay.folder, "index"), "rb") as f:
        ib = f.read()
    check(ib[:40] == b"CBTFSIX1" + bytes(24) + sf.xxh3_64(
        b"CBTFSIX1" + bytes(24)).to_bytes(8, "little"), "%s: header" % where)
    check(len(ib) % 40 == 0, "%s: index is %d bytes" % (where, len(ib)))
    ix = lay.index
    check(not ix.damaged and not ix.torn and not ix.senseless and not ix.odd,
          "%s: index damaged %s torn %d senseless %s odd %s"
          % (where, ix.damaged, ix.torn, ix.senseless, ix.odd))
    covered = [b for r in ix.records for b in range(r["block"], r["block"] + r["count"])]
    check(len(covered) == len(set(covered)), "%s: a block recorded twice" % where)
    check(set(covered) == lay.set, "%s: present %s, set %s" % (where,
          sorted(set(covered)), sorted(lay.set)))
    check(all(b < n for b in covered), "%s: a record past the disk" % where)
    # Each record against the disk at the snapshot: DATA blocks hold
    # its bytes (padded) and their XXH3-128; all-zero blocks are ZERO
    # and never written to `data`; nothing else is written either.
    disk = blocks_of(img[0], img[1])
    datafile = os.path.join(lay.folder, "data")
    ndata = 0
    for r in ix.records:
        if r["kind"] == sf.DATA:
            ndata += 1
            b = r["block"]
            check(disk[b] != bytes(BLOCK), "%s: block %d is all zeros but "
                  "stored as DATA" % (where, b))
            got = cb.pread(datafile, b * BLOCK, BLOCK)
            check(got == disk[b], "%s: data block %d is not the disk's "
                  "(padded)" % (where, b))
            check(sf.xxh3_128_canonical(got) == r["sum"], "%s: block %d: "
                  "record sum %s, XXH3-128 (canonical) %s" % (where, b,
                  r["sum"].hex(), sf.xxh3_128_canonical(got).hex()))
        else:
            for b in range(r["block"], r["block"] + r["count"]):
                check(disk[b] == bytes(BLOCK), "%s: block %d recorded ZERO "
                      "but the disk holds data" % (where, b))
    for b in range(n) if HOLES else ():
        if b not in lay.present or lay.present[b]["kind"] != sf.DATA:
            check(is_hole(datafile, b), "%s: data has block %d written, "
                  "which is not stored" % (where, b))
    # What cbtfs ls says agrees.
    check((lsp["snapshot"], lsp["size"], lsp["time"], lsp["chain"],
           lsp["changed_blocks"], lsp["present_blocks"], lsp["stored_blocks"],
           lsp["complete"]) ==
          (snap, m["size"], m["time"], m["chain"], len(lay.set), len(lay.present),
           ndata, True), "%s: ls says %s" % (where, lsp))


# ---------------------------------------------------------------------
# Writer direction: cbtfs reads what FORMAT.md says.

def writer_direction(env):
    store = env.path("made")
    sid, disk, vm = (str(uuid.uuid4()) for _ in range(3))
    s1, s2 = str(uuid.uuid4()), str(uuid.uuid4())
    t1 = 1764095684
    t2 = t1 + 86400 + 3661
    size1 = 16 * BLOCK + 1536           # 17 blocks, the last partial
    size2 = 24 * BLOCK + 512            # grown to 25 blocks
    n1, n2 = sf.nblocks(size1), sf.nblocks(size2)
    vm_name, disk_name = "made vm", "disk 100%\x7f"
    sf.create_store(store, sid)
    # Names under disks/ that are not uuids are ignored.
    os.mkdir(os.path.join(store, "disks", "lost+found"), 0o700)

    def rnd(n=BLOCK):
        return os.urandom(n).ljust(BLOCK, b"\0")

    # The baseline: every block; 6..9 a ZERO run, 12 ZERO, 5 missing,
    # 16 partial (padded with zeros).  Records out of order.
    MISSING = 5
    c1 = {b: rnd() for b in range(n1)}
    for b in (6, 7, 8, 9, 12):
        c1[b] = bytes(BLOCK)
    c1[16] = rnd(1536)
    stored1 = {b: c1[b] for b in range(n1) if b != MISSING and any(c1[b])}
    recs1 = ([sf.data_record(b, c1[b]) for b in (16, 0, 1, 2)]
             + [sf.zero_record(6, 4)]
             + [sf.data_record(b, c1[b]) for b in (3, 4, 10, 11)]
             + [sf.zero_record(12)]
             + [sf.data_record(b, c1[b]) for b in (13, 14, 15)])
    meta1 = {"snapshot": s1, "disk": disk, "chain": s1, "parent": "-",
             "vm": vm, "seq": 1, "time": t1, "size": size1, "blocks": "all",
             "fill": "eager", "userdevice": "2", "vm-name": vm_name,
             "disk-name": disk_name}
    sf.write_layer(store, meta1, None, stored1, recs1)

    # The delta: the disk grew; new data over the missing block and over
    # the ZERO run, 13 now zeros, 16 now whole, a ZERO run of two and
    # data in the grown space, the new partial last block.
    set2 = {1, 5, 7, 12, 13, 16, 18, 19, 20, 24}
    c2 = {b: rnd() for b in set2}
    c2[13] = c2[18] = c2[19] = bytes(BLOCK)
    c2[24] = rnd(512)
    stored2 = {b: c2[b] for b in set2 if any(c2[b])}
    recs2 = ([sf.data_record(b, c2[b]) for b in sorted(stored2)]
             + [sf.zero_record(13), sf.zero_record(18, 2)])
    meta2 = dict(meta1, snapshot=s2, parent=s1, seq=2, time=t2, size=size2,
                 blocks="changed")
    sf.write_layer(store, meta2, set2, stored2, recs2)
    folder = os.path.join(store, "disks", disk)

    # `verified`: a match for s1; a line about s2 whose check fails and a
    # torn last line about it: both ignored.
    bad = bytearray(sf.format_verified(s2, t2 + 5, "differs"))
    bad[-2] = ord("0") if bad[-2] != ord("0") else ord("1")
    sf.append_file(os.path.join(folder, "verified"),
                   sf.format_verified(s1, t1 + 10, "match") + bytes(bad)
                   + sf.format_verified(s2, t2 + 6, "damaged")[:-6])
    check_modes(store)

    # What each point must read: None for the missing block.
    img1 = [None if b == MISSING else c1[b] for b in range(n1)]
    img2 = [c2[b] if b in set2 else (c1[b] if b < n1 else bytes(BLOCK))
            for b in range(n2)]
    check(all(x is not None for x in img2), "test bug")
    # storefmt's own reading agrees (a check of this module).
    st = sf.Store(store)
    check(st.id == sid and sorted(st.disks) == [disk], "storefmt reads back")
    for snap, img in ((s1, img1), (s2, img2)):
        lay = st.layer(snap)
        for b, want in enumerate(img):
            if want is None:
                try:
                    st.point_block(lay, b)
                    check(False, "storefmt served a missing block")
                except sf.Missing:
                    pass
            else:
                check(st.point_block(lay, b) == want, "storefmt reads %s "
                      "block %d wrong" % (snap, b))

    # cbtfs ls.
    j = env.ls_json(store)
    check(j["skipped_layers"] == 0 and len(j["disks"]) == 1,
          "ls: %s" % j)
    d = j["disks"][0]
    check((d["uuid"], d["vm_uuid"], d["vm_name_label"], d["name_label"])
          == (disk, vm, vm_name, disk_name), "ls disk: %s" % d)
    pts = d["points"]
    tname = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (t1, t2)]
    want = [{"snapshot": s1, "name": tname[0], "time": t1, "size": size1,
             "kind": "baseline", "chain": s1, "changed_blocks": n1,
             "present_blocks": n1 - 1, "stored_blocks": len(stored1),
             "complete": False, "readable": False, "verdict": "match",
             "held": False},
            {"snapshot": s2, "name": tname[1], "time": t2, "size": size2,
             "kind": "delta", "chain": s1, "changed_blocks": len(set2),
             "present_blocks": len(set2), "stored_blocks": len(stored2),
             "complete": True, "readable": False, "verdict": None,
             "held": False}]
    # What each layer's files take on disk, as the file system says.
    for w in want:
        lf = os.path.join(store, "disks", disk, w["snapshot"])
        w["stored_bytes"] = sum(os.stat(os.path.join(lf, f)).st_blocks * 512
                                for f in os.listdir(lf))
    check(pts == want, "ls points:\n %s\nwant\n %s" % (pts, want))

    # cbtfs verify: every stored block is good; the missing block is no
    # damage, only both points not wholly in the store.  It records
    # nothing (no verdict changes) or only lines that parse.
    vpath = os.path.join(folder, "verified")
    rc, _, err = env.cbtfs("verify", store, "-v", ok=False)
    check(rc == 0 and "checked %d stored blocks of 2 points in time: 0 damaged, "
          "2 not wholly in the store" % (len(stored1) + len(stored2)) in err
          and "fail" not in err and "warning" not in err,
          "verify of a sound store with a missing block: exit %d: %r" % (rc, err))
    with open(vpath, "rb") as f:
        v = sf.verdicts(f.read())
    check(v.get(s1) in ("match", "sound") and v.get(s2) in (None, "sound"),
          "verified after verify: %r" % v)

    # The mount serves exactly the computed images; the missing block
    # is EIO, never data.
    mnt = env.mount(store, env.path("m-made"))
    by_uuid = {x: os.path.join(mnt, "by-uuid", disk, x + ".img") for x in (s1, s2)}
    vm_dir = os.path.join(mnt, "by-vm", vm_name)
    check(len(os.listdir(vm_dir)) == 1, "by-vm/%s: %s" % (vm_name, os.listdir(vm_dir)))
    vm_dir = os.path.join(vm_dir, os.listdir(vm_dir)[0])
    check(sorted(os.listdir(vm_dir)) == sorted([t + ".img" for t in tname] + ["latest"]),
          "by-vm: %s" % os.listdir(vm_dir))
    check(os.readlink(os.path.join(vm_dir, "latest")) == tname[1] + ".img",
          "latest -> %s" % os.readlink(os.path.join(vm_dir, "latest")))
    check(os.path.getsize(by_uuid[s1]) == size1 and
          os.path.getsize(by_uuid[s2]) == size2, "image sizes")
    whole2 = b"".join(img2)[:size2]
    check(cb.sha256(by_uuid[s2]) == hashlib.sha256(whole2).hexdigest(),
          "the delta's image is not what the layers make")
    check(cb.sha256(os.path.join(vm_dir, tname[1] + ".img"))
          == hashlib.sha256(whole2).hexdigest(), "by-vm differs from by-uuid")
    for b, want in enumerate(img1):
        n = min(BLOCK, size1 - b * BLOCK)
        if want is None:
            read_eio(by_uuid[s1], b * BLOCK, n)
            read_eio(by_uuid[s1], b * BLOCK + 8192, 512)
        else:
            check(cb.pread(by_uuid[s1], b * BLOCK, n) == want[:n],
                  "baseline block %d reads wrong" % b)
    cb.unmount(mnt)

    # A torn tail on the delta's index (an interrupted append): ignored.
    ipath2 = os.path.join(folder, s2, "index")
    with open(ipath2, "ab") as f:
        f.write(sf.zero_record(21)[:23])
    pts2 = env.ls_json(store)["disks"][0]["points"]
    check(pts2 == pts, "a torn index tail changed what ls says: %s" % pts2)
    rc, _, err = env.cbtfs("verify", store, ok=False)
    check(rc == 0, "verify after a torn tail: exit %d: %r" % (rc, err))

    # One flipped byte in a stored block of the baseline that the delta
    # shows through too: EIO through both points, verify names both.
    FLIP = 2
    with open(os.path.join(folder, s1, "data"), "r+b") as f:
        f.seek(FLIP * BLOCK + 777)
        x = f.read(1)
        f.seek(FLIP * BLOCK + 777)
        f.write(bytes([x[0] ^ 0x01]))
    mnt = env.mount(store, env.path("m-made2"))
    for snap in (s1, s2):
        img = os.path.join(mnt, "by-uuid", disk, snap + ".img")
        read_eio(img, FLIP * BLOCK, BLOCK)
        read_eio(img, FLIP * BLOCK + 60000, 512)
        check(cb.pread(img, 3 * BLOCK, BLOCK) == c1[3], "an undamaged block "
              "of %s reads wrong" % snap)
    check(cb.pread(os.path.join(mnt, "by-uuid", disk, s2 + ".img"), BLOCK, BLOCK)
          == c2[1], "the delta's own block reads wrong")
    cb.unmount(mnt)
    rc, _, err = env.cbtfs("verify", store, ok=False)
    check(rc == 1, "verify passed a flipped byte: %r" % err)
    for snap in (s1, s2):
        check("%s): 1 blocks fail" % snap in err, "verify did not name %s: %r"
              % (snap, err))
    with open(vpath, "rb") as f:
        vb = f.read()
    good, ignored = sf.parse_verified(vb)
    check(sf.verdicts(vb).get(s1) == "damaged", "verified: %r" % good)
    check(vb.endswith(b"\n"), "verified does not end with a newline")
    # The torn line cbtfs found stays ignored; cbtfs's lines are whole.
    torn = sf.format_verified(s2, t2 + 6, "damaged")[:-6]
    check(torn + b"\n" in vb and vb.index(torn + b"\n") > 0
          and torn in ignored, "the torn verified line was not ended: %r" % vb)
    check(all(line == bytes(bad)[:-1] or line == torn for line in ignored),
          "cbtfs wrote verified lines that do not parse: %r" % ignored)
    print("writer: a store made from FORMAT.md reads as it should")


def main():
    with sim.Sim() as s, cb.Env("cbtfs-format") as env:
        t0 = time.monotonic()
        global HOLES
        HOLES = reports_holes(env.dir)
        if not HOLES:
            print("the scratch filesystem does not report holes: not "
                  "checking that unstored blocks are never written")
        writer_direction(env)
        reader_direction(s, env)
        print("%.1f s" % (time.monotonic() - t0))
    print("ok")


if __name__ == "__main__":
    main()
