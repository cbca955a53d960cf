#!/usr/bin/env python3
"""End to end: cbtfs prune drops points, and every kept point reads the same.

A store made by real backups from the stand-in, nine nights whose
snapshots claim chosen times (snapshot_claims): VM "web" with a dense
disk "root" (8 MiB of random data) and a sparse one "data" (64 MiB, 4
MiB of data, grown to 72 MiB on night 6), and VM "db" with a dense disk
"sys" (4 MiB).  The nights change each disk differently:

    N1  Mon 2021-03-01 02:00  baseline
    N2  Tue 2021-03-02 02:00  one block
    N3  Wed 2021-03-03 01:00  a big change (MiBs, not over N2's block)
    N4  Wed 2021-03-03 23:00  a few blocks (the same day as N3)
    N5  Fri 2021-03-05 02:00  zeros over a MiB of data (ZERO records)
    N6  Mon 2021-03-08 02:00  web's data disk grows, written past its old end
    N7  Tue 2021-03-09 02:00  a MiB or two; db's with --no-copy
    N8  Wed 2021-03-10 02:00  a MiB or two
    N9  Thu 2021-03-11 02:00  a few blocks

The guests' disks are hashed every night, so each point's bytes are
known; a mount of the untouched store reads them.  db's N7 (and so its
N8 and N9) then reads only with the host.  Each case below starts from
a copy of that store ("unfetched") or of a copy where cbtfs fetch
completed N7 ("pristine"):

- cannot go (unfetched): --keep-last 2 --keep-weekly 2
  --include-incomplete drops db's N7, whose blocks only the host holds
  though N8 reads them: prune exits 1, one stderr line says that N7
  stays and why, the other points still go (db keeps N6, its newest
  point that reads from the store alone).  Then a mount with --server
  reads db's N7 to N9 from the host, and cbtfs fetch completes N7.
- daily (pristine, its marker rewritten to format 1 as older cbtfs made
  it): --keep-daily 7 drops N1, the baseline, under N2 (one block) and
  N3, a big delta, into N4 (a few blocks): the blocks written are at
  most the small sides' stored blocks, never a disk; the store is now
  format 2 with the same id.
- grown (pristine): --keep-daily 4 folds N1 to N5 up into N6, across
  the night web's data disk grew; N6 is then the chain's baseline, its
  set the union of theirs.
- damaged (pristine, one stored block of web's data disk's N2 spoilt):
  --keep-monthly 2 --keep-daily 6 folds N2 into N3, which reads N2's
  block: that N2 stays (exit 1, one stderr line: the block fails its
  checksum), unchanged and not pending, while the others go; a second
  prune says the same, no more; verify names just the points that read
  that block, and the others read right.
- main (pristine): --keep-last 2 --keep-weekly 2 under a mount that was
  up before, which threads read from while the prune runs (every read
  gives the right block, or EIO or ENOENT for a point that goes); then
  a backup night N10 continues each chain from N9, and the same prune
  again drops just what its plan says (N8).

After each prune: the points kept are the policy's (by --json, whose
actions say keep, dropped or stayed), under the same names in the tree,
`latest` names the newest; every kept point reads its night's bytes
through a fresh mount and through storefmt (an independent reader of
FORMAT.md); the dropped ones are gone from the tree and from ls; verify
passes; tmp/ is empty and no disk keeps a prune note; and the store
shrank, to exactly the blocks the kept points read (each stored once,
and no data file allocates space outside its stored blocks).  The mount
that was up follows the store: the dropped points leave its tree, and
each kept point, opened again, reads as before.

On an object store, storefmt reads the bucket's objects (FORMAT.md,
Object stores); the store's copies are server-side copies, and each
case's mounts read with an empty cache (the copies share the store's
id, and a pack of one may take a name a pack of another had).  What
only a directory store has stays its own: format 1, and data files
allocating nothing outside their stored blocks (a bucket's equivalent
is weaker: no pack stays that no index names, and each layer's DATA
blocks are where its index says; a merge's first index object names
its base's places, also of blocks the merged layer holds otherwise,
and the test says how many).

PRUNE_SEED repeats a run's random choices (the data stays random).
"""
# store-kinds: dir s3
import errno
import json
import os
import random
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
import storefmt as sf  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
BLOCK = cb.BLOCK

# (vm, disk): size, dense
DISKS = {("web", "root"): (8 * MiB, True),
         ("web", "data"): (64 * MiB, False),
         ("db", "sys"): (4 * MiB, True)}
GROWN = 72 * MiB                # web's data disk from N6 on

# label, time (UTC), what the guest does, --no-copy
NIGHTS = [
    ("N1", "2021-03-01 02:00:00", "baseline", False),
    ("N2", "2021-03-02 02:00:00", "one", False),
    ("N3", "2021-03-03 01:00:00", "big", False),
    ("N4", "2021-03-03 23:00:00", "few", False),
    ("N5", "2021-03-05 02:00:00", "zeros", False),
    ("N6", "2021-03-08 02:00:00", "grow", False),
    ("N7", "2021-03-09 02:00:00", "medium", True),     # db: --no-copy
    ("N8", "2021-03-10 02:00:00", "medium", False),
    ("N9", "2021-03-11 02:00:00", "few", False),
]
N10 = ("N10", "2021-03-12 02:00:00", "few", False)

ALL = [n[0] for n in NIGHTS]
WEEKLY = ["--keep-last", "2", "--keep-weekly", "2"]
# What each policy keeps, worked out from the rules (ISO week 2021-W09
# is 1-7 March, W10 8-14 March): --keep-last 2 keeps N9 and N8,
# --keep-weekly 2 the newest of each week, N9 and N5.  --keep-daily 7:
# the newest of each of the 7 newest days (N3 shares a day with N4, and
# N1's day is the eighth).
KEEP_MAIN = {"N5", "N8", "N9"}
KEEP_DAILY = {"N2", "N4", "N5", "N6", "N7", "N8", "N9"}
KEEP_GROWN = {"N6", "N7", "N8", "N9"}      # --keep-daily 4


def utc(s):
    import calendar
    return calendar.timegm(time.strptime(s, "%Y-%m-%d %H:%M:%S"))


class World:
    """The stand-in, the guests' disks, and what the store should hold."""

    def __init__(self, s, env, rng):
        self.s, self.env, self.rng = s, env, rng
        self.vdi, self.guest, self.size = {}, {}, {}
        self.regions = {}       # (vm, disk) -> 64K-aligned MiB offsets with data
        self.one = {}           # (vm, disk) -> the block N2 changed
        self.medium = {}        # (vm, disk) -> the first block N7 changed
        self.srv = None
        for vm in ("web", "db"):
            keys = [k for k in DISKS if k[0] == vm]
            rec = s.control("create_vm", name=vm, disks=[
                {"name": k[1], "size": DISKS[k][0]} for k in keys])
            for k, d in zip(keys, rec["disks"]):
                size, dense = DISKS[k]
                self.vdi[k], self.size[k] = d["vdi"], size
                self.guest[k] = env.path("%s-%s.img" % k)
                with open(self.guest[k], "wb") as f:
                    if dense:
                        f.write(os.urandom(size))
                        self.regions[k] = list(range(0, size, MiB))
                    else:
                        f.truncate(size)
                        # A MiB from up to 15 blocks into its MiB: never
                        # the last MiB, whose data would pass the end.
                        offs = sorted(rng.sample(range(0, size // MiB - 1), 4))
                        self.regions[k] = [o * MiB + rng.randrange(16) * BLOCK
                                           for o in offs]
                        for o in self.regions[k]:
                            f.seek(o)
                            f.write(os.urandom(MiB))
                s.control("write_file", vdi=d["vdi"], path=self.guest[k])
        self.pw = env.password_file()
        self.srv = ["--server", s.info["xapi_url"], "--ca-file",
                    s.info["ca_file"], "--password-file", self.pw]
        self.points = {}        # snapshot -> dict: key, label, name, sha
        self.snap = {}          # (key, label) -> snapshot

    def write(self, k, off, data):
        cb.write_at(self.guest[k], off, data)

    def off_beside(self, size, n, block):
        """Where N bytes (4 KiB-aligned) of a disk of SIZE go, chosen at
        random among the places that leave BLOCK alone."""
        lo, hi = block * BLOCK, (block + 1) * BLOCK
        spans = [(a, b) for a, b in ((0, lo - n), (hi, size - n)) if a <= b]
        a, b = self.rng.choice(spans)
        return a + self.rng.randrange((b - a) // 4096 + 1) * 4096

    def guest_night(self, what):
        rng = self.rng
        for k in DISKS:
            size = self.size[k]
            if what == "one":
                off = rng.randrange(size // 4096) * 4096
                self.one[k] = off // BLOCK
                self.write(k, off, os.urandom(4096))
            elif what == "few":
                # Not over N2's block either: once N3 is folded into N4,
                # N2 into N4 must still read it (the damaged case).
                for _ in range(3):
                    n = rng.choice([512, 4096, BLOCK])
                    self.write(k, self.off_beside(size, n, self.one[k]),
                               os.urandom(n))
            elif what in ("big", "medium"):
                n = (5 if what == "big" and DISKS[k][1] else
                     3 if what == "big" else rng.choice([1, 2])) * MiB
                n = min(n, size // 2)
                if what == "big":
                    # Not over N2's block: N2 into N3 reads it.
                    off = self.off_beside(size, n, self.one[k])
                elif k in self.medium:
                    # Not over the first block of N7's: db's N7 cannot
                    # go while N8 reads a block only the host has.
                    off = self.off_beside(size, n, self.medium[k])
                else:
                    off = rng.randrange((size - n) // 4096 + 1) * 4096
                    self.medium[k] = off // BLOCK
                self.write(k, off, os.urandom(n))
            elif what == "zeros":
                # Zeros over a MiB that holds data: ZERO records.
                o = rng.choice(self.regions[k])
                self.write(k, o, bytes(MiB))
                self.regions[k].remove(o)
                self.write(k, rng.randrange(size // 4096) * 4096, os.urandom(4096))
            elif what == "grow":
                if k == ("web", "data"):
                    self.s.control("resize", vdi=self.vdi[k], size=GROWN)
                    with open(self.guest[k], "r+b") as f:
                        f.truncate(GROWN)
                    self.size[k] = GROWN
                    self.write(k, size + 2 * MiB, os.urandom(MiB))
                    self.write(k, GROWN - BLOCK, os.urandom(BLOCK))
                else:
                    self.write(k, rng.randrange(size // 4096) * 4096,
                               os.urandom(4096))
            if what != "baseline":
                self.s.control("write_file", vdi=self.vdi[k], path=self.guest[k])

    def night(self, store, night):
        """The guests change, then one backup of every VM."""
        label, when, what, no_copy = night
        self.guest_night(what)
        for k in DISKS:
            self.s.control("set", snapshot_claims={"vdi": self.vdi[k],
                                                   "snapshot_time": utc(when)})
        if no_copy:             # db's points only: web's are copied
            self.env.cbtfs("backup", store, *self.srv, "-q", "--vm", "db",
                           "--no-copy")
            self.env.cbtfs("backup", store, *self.srv, "-q", "--vm", "web")
        else:
            self.env.cbtfs("backup", store, *self.srv, "-q")
        by_uuid = {d["uuid"]: d for d in self.env.ls_json(store)["disks"]}
        for k in DISKS:
            new = [p for p in by_uuid[self.vdi[k]]["points"]
                   if p["snapshot"] not in self.points]
            check(len(new) == 1, "%s %s: %d new points" % (label, k, len(new)))
            p = new[0]
            check(p["time"] == utc(when) and p["size"] == self.size[k],
                  "%s %s: time %d size %d" % (label, k, p["time"], p["size"]))
            self.points[p["snapshot"]] = {"key": k, "label": label,
                                          "name": p["name"],
                                          "sha": cb.sha256(self.guest[k])}
            self.snap[k, label] = p["snapshot"]

    def image(self, mnt, snap, by="vm"):
        pt = self.points[snap]
        if by == "uuid":
            return os.path.join(mnt, "by-uuid", self.vdi[pt["key"]], snap + ".img")
        return os.path.join(mnt, "by-vm", pt["key"][0], pt["key"][1],
                            pt["name"] + ".img")


def stored_data(st):
    """How many DATA blocks storefmt finds present, over all layers."""
    return sum(1 for layers in st.disks.values() for lay in layers.values()
               for r in lay.present.values() if r["kind"] == sf.DATA)


def needed(st, snaps):
    """The distinct (layer, block) DATA blocks the points SNAPS read."""
    out = set()
    for snap in snaps:
        lay = st.layer(snap)
        path = st.path_of(lay)
        for b in range(lay.n):
            for src in path:
                if b in src.set:
                    r = src.present.get(b)
                    if r is not None and r["kind"] == sf.DATA:
                        out.add((src.meta["snapshot"], b))
                    break
    return out


def stray_data(st):
    """The (layer, block)s whose 64 KiB of a `data` file hold allocated
    bytes although the layer's index has no DATA record for them (a
    block the fold should have punched out).  A stored block may be
    partly a hole (zeros are not always written).  Of an object store:
    the blocks whose place in a pack a layer's index names although it
    has no DATA record for them."""
    out = []
    for layers in st.disks.values():
        for snap, lay in layers.items():
            if hasattr(lay, "places"):
                out += [(snap, b) for b in lay.places
                        if lay.present.get(b, {}).get("kind") != sf.DATA]
                continue
            fd = os.open(os.path.join(lay.folder, "data"), os.O_RDONLY)
            try:
                end, off = os.fstat(fd).st_size, 0
                while off < end:
                    try:
                        d = os.lseek(fd, off, os.SEEK_DATA)
                    except OSError as e:
                        if e.errno == errno.ENXIO:
                            break
                        raise
                    h = os.lseek(fd, d, os.SEEK_HOLE)
                    for b in range(d // BLOCK, (h - 1) // BLOCK + 1):
                        r = lay.present.get(b)
                        if r is None or r["kind"] != sf.DATA:
                            out.append((snap, b))
                    off = h
            finally:
                os.close(fd)
    return out


def stored_bytes(ls):
    return sum(p["stored_bytes"] for d in ls["disks"] for p in d["points"])


def no_bytes(ls):
    """ls --json without stored_bytes (a copy of a store may allocate
    otherwise)."""
    return [[{k: v for k, v in p.items() if k != "stored_bytes"}
             for p in d["points"]] for d in ls["disks"]]


def sha_blocks(blocks):
    import hashlib
    h = hashlib.sha256()
    for b in blocks:
        h.update(b)
    return h.hexdigest()


def read_sha(path):
    """sha256 of PATH read from the mount, not from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return cb.sha256(path)


class Readers:
    """Threads reading random blocks of every point of W through the
    mount MNT (each through a descriptor of its own, the page cache
    dropped first), until stop(): a read must give the block of the
    guest's disk that night, or, for a point of GONE, fail with EIO."""

    def __init__(self, w, mnt, gone, n=3):
        import threading
        self.w, self.mnt, self.gone = w, mnt, gone
        self.blocks = {x: block_hashes(w.image(mnt, x)) for x in w.points}
        self.bad, self.reads, self.eio = [], 0, 0
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,))
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, seed):
        import hashlib
        rng = random.Random(seed)
        snaps = sorted(self.blocks)
        while not self.done.is_set():
            x = rng.choice(snaps)
            pt = self.w.points[x]
            b = rng.randrange(len(self.blocks[x]))
            try:
                fd = os.open(self.w.image(self.mnt, x), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    got = os.pread(fd, BLOCK, b * BLOCK)
                finally:
                    os.close(fd)
            except OSError as e:
                with self.lock:
                    self.reads += 1
                    # Once the mount shows the drop, the path is gone.
                    if x in self.gone and e.errno in (errno.EIO,
                                                      errno.ENOENT):
                        self.eio += 1
                    else:
                        self.bad.append("%s %s block %d: %s" % (
                            pt["label"], pt["key"], b, e))
                continue
            with self.lock:
                self.reads += 1
                if hashlib.sha256(got).digest() != self.blocks[x][b]:
                    self.bad.append("%s %s block %d: other bytes"
                                    % (pt["label"], pt["key"], b))

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join()


def block_hashes(path):
    import hashlib
    with open(path, "rb") as f:
        return [hashlib.sha256(b).digest()
                for b in iter(lambda: f.read(BLOCK), b"")]


def no_leftovers(env, store, what):
    left = env.rubbish(store)
    check(left == [], "%s: left behind: %r" % (what, left[:10]))
    notes = env.prune_notes(store)
    check(notes == [], "%s: disks %r keep a prune note" % (what, notes))


def check_store(w, store, kept, dropped, sid, what, readable=None):
    """Everything about STORE after a prune: KEPT snapshots are its
    points (each disk's in order, under their names), DROPPED are gone,
    and every kept point READABLE (default: all of KEPT) reads its
    night's bytes through a fresh mount and through storefmt."""
    env = w.env
    readable = set(kept if readable is None else readable)
    ls = env.ls_json(store)
    listed = {p["snapshot"]: (d["uuid"], p) for d in ls["disks"]
              for p in d["points"]}
    for d in ls["disks"]:
        got = [p["snapshot"] for p in d["points"]]
        want = sorted((x for x in kept if w.vdi[w.points[x]["key"]] == d["uuid"]),
                      key=lambda x: int(w.points[x]["label"][1:]))
        check(got == want, "%s: ls lists %s of disk %s, not %s" % (
            what, [w.points[x]["label"] for x in got], d["name"],
            [w.points[x]["label"] for x in want]))
    check(set(listed) == set(kept), "%s: ls lists %s, not the kept points %s"
          % (what, sorted(listed), sorted(kept)))
    for snap, (disk, p) in listed.items():
        pt = w.points[snap]
        check(disk == w.vdi[pt["key"]] and p["name"] == pt["name"],
              "%s: %s %s is now %r" % (what, pt["label"], pt["key"], p["name"]))
        check(p["readable"] == (snap in readable), "%s: %s %s readable %s"
              % (what, pt["label"], pt["key"], p["readable"]))
    rc, _, err = env.cbtfs("verify", store, ok=False)
    check(rc == 0, "%s: verify exited %d: %s" % (what, rc, err))
    no_leftovers(env, store, what)

    mnt = env.mount(store, env.path("check-%d" % time.monotonic_ns()))
    for k in DISKS:
        mine = [x for x in kept if w.points[x]["key"] == k]
        newest = max(mine, key=lambda x: int(w.points[x]["label"][1:]))
        folder = os.path.join(mnt, "by-vm", k[0], k[1])
        check(os.readlink(os.path.join(folder, "latest"))
              == w.points[newest]["name"] + ".img",
              "%s: %s latest -> %s" % (what, k, os.readlink(
                  os.path.join(folder, "latest"))))
    for snap in kept:
        if snap not in readable:
            continue
        pt = w.points[snap]
        for by in ("vm", "uuid"):
            check(cb.sha256(w.image(mnt, snap, by)) == pt["sha"],
                  "%s: %s %s reads other bytes (by-%s)"
                  % (what, pt["label"], pt["key"], by))
    for snap in dropped:
        for by in ("vm", "uuid"):
            check(not os.path.lexists(w.image(mnt, snap, by)),
                  "%s: the dropped %s %s is in the tree" % (
                      what, w.points[snap]["label"], w.points[snap]["key"]))
    cb.unmount(mnt)

    st = env.read_store(store)
    check(st.format == 2 and st.id == sid, "%s: marker %r" % (what, st.marker))
    # The disks' manifests notes: every good copy that names a layer
    # there is that layer's manifest (never the one a fold replaced).
    for disk, layers in st.disks.items():
        if True:
            for piece in sf.split_manifests(env.note_bytes(
                    store, disk, "manifests") or b""):
                try:
                    m = sf.parse_manifest(piece)
                except sf.FormatError:
                    continue
                if m["disk"] == disk and m["snapshot"] in layers:
                    check(piece == layers[m["snapshot"]].manifest_bytes,
                          "%s: disk %s's manifests holds another copy of %s"
                          % (what, disk, m["snapshot"]))
    for snap in readable:
        pt = w.points[snap]
        lay = st.layer(snap)
        check(sha_blocks(st.point_blocks(lay)) == pt["sha"],
              "%s: storefmt reads %s %s otherwise" % (what, pt["label"], pt["key"]))
    return st, ls


def prune(env, store, args, status=0):
    rc, out, err = env.cbtfs("prune", store, *args, "--json", ok=False)
    check(rc == status, "prune %s exited %d, not %d: %s"
          % (" ".join(args), rc, status, err))
    return json.loads(out), err


def json_actions(doc):
    """{snapshot: action} of a prune's --json."""
    return {p["snapshot"]: p["action"] for d in doc["disks"]
            for p in d["points"]}


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    seed = int(os.environ.get("PRUNE_SEED", str(int.from_bytes(os.urandom(4),
                                                                 "little"))))
    print("seed %d (PRUNE_SEED)" % seed)
    rng = random.Random(seed)
    t0 = time.monotonic()
    with sim.Sim() as s, cb.Env() as env:
        w = World(s, env, rng)
        unfetched = env.store("unfetched")
        for n in NIGHTS:
            w.night(unfetched, n)
        print("built %d points in %.1fs" % (len(w.points), time.monotonic() - t0))
        DB = ("db", "sys")

        def of(labels, keys=tuple(DISKS)):
            """The snapshots of LABELS on the disks KEYS."""
            return [w.snap[k, lab] for k in keys for lab in ALL + ["N10"]
                    if lab in labels and (k, lab) in w.snap]

        # The store is what the nights made: one chain per disk, ZERO
        # records on N5, a grown disk on N6, db's N7 only on the host.
        st_u = env.read_store(unfetched)
        sid = st_u.id
        for k in DISKS:
            lays = [st_u.layer(w.snap[k, lab]) for lab in ALL]
            check([l.meta["parent"] for l in lays] ==
                  ["-"] + [w.snap[k, lab] for lab in ALL[:-1]],
                  "%s: not one chain" % (k,))
            check(any(r["kind"] == sf.ZERO
                      for r in lays[ALL.index("N5")].present.values()),
                  "%s: N5 has no ZERO records" % (k,))
            n7 = lays[ALL.index("N7")]
            check(bool(n7.missing()) == (k == DB), "%s: N7 is missing %d blocks"
                  % (k, len(n7.missing())))
        check(st_u.layer(w.snap[("web", "data"), "N5"]).size == 64 * MiB
              and st_u.layer(w.snap[("web", "data"), "N6"]).size == GROWN,
              "web's data disk did not grow")
        # db's N7, N8 and N9 read only with the host.
        host_only = of({"N7", "N8", "N9"}, [DB])
        mnt = env.mount(unfetched, env.path("m0"))
        for x in w.points:
            if x not in host_only:
                check(cb.sha256(w.image(mnt, x)) == w.points[x]["sha"],
                      "the untouched store reads %s %s otherwise"
                      % (w.points[x]["label"], w.points[x]["key"]))
        cb.unmount(mnt)

        # The store the other cases start from: db's N7 fetched (the
        # host keeps its data, for the case above).
        pristine = env.store("pristine")
        env.copy_store(unfetched, pristine)
        env.cbtfs("fetch", pristine, *w.srv, "--keep-data", "-q")
        st0 = env.read_store(pristine)
        for st, where in ((st_u, unfetched), (st0, pristine)):
            check(stored_data(st) == len(needed(st, w.points)),
                  "%s holds DATA blocks no point reads" % where)
            check(not stray_data(st), "%s: data allocated outside the stored "
                  "blocks: %r" % (where, stray_data(st)[:5]))
        for x in host_only:
            check(sha_blocks(st0.point_blocks(st0.layer(x)))
                  == w.points[x]["sha"], "fetched, %s %s reads otherwise"
                  % (w.points[x]["label"], w.points[x]["key"]))
        ls0 = env.ls_json(pristine)

        def copy(src, name):
            dst = env.store(name)
            env.copy_store(src, dst)
            # A bucket's copies share its id: a mount's cache of one
            # copy's packs is not another's.
            shutil.rmtree(env.path("s3-cache"), ignore_errors=True)
            return dst

        def sizes(store):
            return env.store_bytes(store), stored_bytes(env.ls_json(store))

        def shrank(store, kept, what, ref, was, moved=False):
            """The store holds exactly the DATA blocks that the KEPT points
            read in REF (a storefmt.Store), and its data files allocate
            nothing else; smaller than WAS (sizes() before the prune).
            MOVED: the points dropped hold blocks the kept ones mostly
            still read, which the folds move rather than free: then no
            more DATA blocks than before (their files' allocation may
            even grow by a few pages, the file system's own)."""
            st = env.read_store(store)
            want = needed(ref, kept)
            check(stored_data(st) == len(want), "%s: %d DATA blocks stored, the "
                  "kept points read %d" % (what, stored_data(st), len(want)))
            if cb.is_dir_store(store):
                check(not stray_data(st), "%s: data allocated outside the "
                      "stored blocks: %r" % (what, stray_data(st)[:5]))
            else:
                # A merge's first index object names its base's places,
                # also of blocks the merged layer takes from the other
                # side or holds as ZERO: their packs stay while named
                # (no_leftovers: no pack stays that no index names).
                print("%s: %d places in packs named for blocks no layer "
                      "stores there" % (what, len(stray_data(st))))
            (a0, b0), (a, b) = was, sizes(store)
            if moved:
                check(stored_data(st) <= stored_data(ref), "%s: %d DATA "
                      "blocks stored, %d before" % (what, stored_data(st),
                                                    stored_data(ref)))
            else:
                check(a < a0 and b < b0, "%s: the store did not shrink: %d "
                      "-> %d bytes allocated, %d -> %d stored"
                      % (what, a0, a, b0, b))
            return a0, a

        def dropped_are(doc, gone, what):
            acts = json_actions(doc)
            check({x for x, a in acts.items() if a == "dropped"} == set(gone)
                  and all(a in ("keep", "stayed") for x, a in acts.items()
                          if x not in gone), "%s: actions %r" % (what, sorted(
                              (w.points[x]["label"], w.points[x]["key"], a)
                              for x, a in acts.items())))
            check(doc["dry_run"] is False and doc["dropped"] == len(gone)
                  and doc["merged"] == len(gone), "%s: --json %r" % (
                      what, {k: doc[k] for k in ("dropped", "stayed", "merged")}))
            return acts

        # -- a point that cannot go ---------------------------------------
        # --include-incomplete: db's N7 may go, but N8 reads its blocks
        # and only the host has them.  db keeps N6 too, its newest point
        # that reads from the store alone.
        t = time.monotonic()
        store = copy(unfetched, "cannot")
        was = sizes(store)
        doc, err = prune(env, store, WEEKLY + ["--include-incomplete"], status=1)
        web = [k for k in DISKS if k != DB]
        gone = of(set(ALL) - KEEP_MAIN, web) + of({"N1", "N2", "N3", "N4"}, [DB])
        kept = [x for x in w.points if x not in gone]
        stuck = w.snap[DB, "N7"]
        acts = dropped_are(doc, gone, "cannot go")
        check(acts[stuck] == "stayed" and doc["stayed"] == 1
              and acts[w.snap[DB, "N6"]] == "keep", "cannot go: db's N7 %s, "
              "N6 %s" % (acts[stuck], acts[w.snap[DB, "N6"]]))
        lines = err.strip().splitlines()
        check(len(lines) == 1 and stuck in lines[0]
              and "by-vm/db/sys/%s.img" % w.points[stuck]["name"] in lines[0]
              and "stays" in lines[0] and "not in the store" in lines[0],
              "cannot go: stderr %r does not say in one line that db's N7 "
              "stays, and why" % err)
        print("cannot go: " + lines[0])
        check_store(w, store, kept, gone, sid, "cannot go",
                    readable=[x for x in kept if x not in host_only])
        shrank(store, kept, "cannot go", st_u, was)
        # A mount with --server reads db's N7 to N9 from the host, and
        # cbtfs fetch completes N7.
        lazy = env.mount_fg(store, env.path("lazy"), *w.srv)
        for x in host_only:
            check(cb.sha256(w.image(lazy.mnt, x)) == w.points[x]["sha"],
                  "cannot go: a mount with --server reads %s %s otherwise"
                  % (w.points[x]["label"], w.points[x]["key"]))
        check(lazy.unmount() == 0, "the mount with --server failed: %s"
              % lazy.log())
        env.cbtfs("fetch", store, *w.srv, "-q")
        st, _ = check_store(w, store, kept, gone, sid, "cannot go, fetched")
        check(stored_data(st) == len(needed(st, kept))
              and not (cb.is_dir_store(store) and stray_data(st)),
              "cannot go, fetched: blocks stored that no point reads")
        env.remove_store(store)
        print("cannot go: %.1fs" % (time.monotonic() - t))

        # -- format 1; the baseline under a small delta ---------------------
        t = time.monotonic()
        store = copy(pristine, "daily")
        if cb.is_dir_store(store):      # object stores began at format 2
            marker = os.path.join(store, "cbtfs-store")
            with open(marker, "wb") as f:
                f.write(("cbtfs-store 1\nid %s\n" % sid).encode())
            check(sf.Store(store).format == 1, "the marker does not say "
                  "format 1")
            check(no_bytes(env.ls_json(store)) == no_bytes(ls0),
                  "ls reads the format-1 store otherwise")
        was = sizes(store)
        doc, _ = prune(env, store, ["--keep-daily", "7"])
        m = env.store_file(store, "cbtfs-store")
        check(m == sf.format_marker(sid, 2), "the marker is now %r" % m)
        if cb.is_dir_store(store):
            mode = os.stat(marker).st_mode & 0o777
            check(mode == 0o600, "the marker's mode is %o" % mode)
        gone = of(set(ALL) - KEEP_DAILY)
        dropped_are(doc, gone, "daily")
        # The fold starts from the bigger side: what it writes is at most
        # the smaller side's stored blocks (N2's one block, N4's few),
        # never a disk.
        by_snap = {p["snapshot"]: p for d in ls0["disks"] for p in d["points"]}
        bound = sum(min(by_snap[w.snap[k, a]]["stored_blocks"],
                        by_snap[w.snap[k, b]]["stored_blocks"])
                    for k in DISKS for a, b in (("N1", "N2"), ("N3", "N4")))
        baselines = sum(by_snap[w.snap[k, "N1"]]["stored_blocks"] for k in DISKS)
        check(0 < doc["blocks_written"] <= bound < baselines // 4,
              "daily: %d blocks written; the small sides store %d, the "
              "baselines %d" % (doc["blocks_written"], bound, baselines))
        check(doc["bytes_freed"] > 0, "daily: bytes_freed %r" % doc["bytes_freed"])
        check_store(w, store, of(KEEP_DAILY), gone, sid, "daily")
        # N1 and N3 go: the baseline and a big delta, whose blocks N2
        # and N4 mostly still read (seed 3297330239: all of them).
        a0, a = shrank(store, of(KEEP_DAILY), "daily", st0, was, moved=True)
        print("daily: %d blocks written (the small sides store %d), %d -> %d "
              "bytes, %.1fs" % (doc["blocks_written"], bound, a0, a,
                               time.monotonic() - t))
        env.remove_store(store)

        def children_store(gone):
            """What the points after the points GONE store: each fold
            writes at most the smaller side, so at most that."""
            return sum(by_snap[w.snap[w.points[x]["key"], ALL[ALL.index(
                w.points[x]["label"]) + 1]]]["stored_blocks"] for x in gone)

        # -- the grown disk: N5 (64 MiB) into N6 (72 MiB) ------------------
        # --keep-daily 4 keeps N6 to N9: N1 to N5 are folded, one into the
        # next, up to N6, whose disk is larger.
        t = time.monotonic()
        store = copy(pristine, "grown")
        was = sizes(store)
        doc, _ = prune(env, store, ["--keep-daily", "4"])
        kept, gone = of(KEEP_GROWN), of(set(ALL) - KEEP_GROWN)
        dropped_are(doc, gone, "grown")
        bound = children_store(gone)
        check(0 < doc["blocks_written"] <= bound, "grown: %d blocks written, "
              "the points after the dropped ones store %d"
              % (doc["blocks_written"], bound))
        check_store(w, store, kept, gone, sid, "grown")
        # N6 is the baseline now, its set the union of N1's to N6's, and
        # it keeps the chain's name (N1's snapshot).
        st = env.read_store(store)
        for k in DISKS:
            n6 = st.layer(w.snap[k, "N6"])
            union = set().union(*(st0.layer(w.snap[k, lab]).set
                                  for lab in ALL[:6]))
            check(n6.meta["parent"] == "-" and n6.meta["chain"] == w.snap[
                k, "N1"] and n6.size == st0.layer(
                w.snap[k, "N6"]).size and n6.set == union
                and (n6.meta["blocks"] == "all") == (len(union) == n6.n),
                "grown: %s N6 is not the baseline of N1 to N6: parent %s, "
                "chain %s, %d blocks, not %d" % (
                    k, n6.meta["parent"], n6.meta["chain"], len(n6.set),
                    len(union)))
        shrank(store, kept, "grown", st0, was)
        env.remove_store(store)
        print("grown: %d blocks written, %.1fs" % (doc["blocks_written"],
                                                  time.monotonic() - t))

        # -- a damaged block in a point that goes --------------------------
        # --keep-monthly 2 --keep-daily 6 drops N2 and N3.  N2 goes into
        # N3, which stores more, so N2's blocks are read, and web's data
        # disk's one block fails its checksum: N2 stays there (not
        # pending: nothing it reads changed), N3 and the others go, and
        # the next prune says the same, doing what it can.
        t = time.monotonic()
        store = copy(pristine, "damaged")
        D = ("web", "data")
        bad = w.snap[D, "N2"]
        env.flip_block_byte(store, w.vdi[D], bad, w.one[D] * BLOCK + 100)

        def layer_state():
            """N2's layer as stored: its folder's files, its objects."""
            if cb.is_dir_store(store):
                return cb.tree_files(os.path.join(store, "disks", w.vdi[D],
                                                  bad))
            return {k: v for k, v in env.store_state(store).items()
                    if bad in k}
        layer_before = layer_state()
        policy = ["--keep-monthly", "2", "--keep-daily", "6"]
        gone = [x for x in of({"N2", "N3"}) if x != bad]
        kept = [x for x in w.points if x not in gone]
        for n in (1, 2):
            doc, err = prune(env, store, policy, status=1)
            what = "damaged, prune %d" % n
            acts = dropped_are(doc, gone if n == 1 else [], what)
            lines = err.strip().splitlines()
            check(acts[bad] == "stayed" and doc["stayed"] == 1
                  and len(lines) == 1 and bad in lines[0]
                  and "by-vm/web/data/%s.img stays" % w.points[bad]["name"]
                  in lines[0] and "fails its checksum" in lines[0],
                  "%s: N2 %s, stderr %r" % (what, acts[bad], err))
            no_leftovers(env, store, what)
            check(layer_state() == layer_before, "%s: the layer that "
                  "stayed changed" % what)
        # The points that read the spoilt block (N2's own, and those after
        # it that did not change that block), and only they, are damaged.
        spoilt = set()
        for x in kept:
            srcs = [l for l in st0.path_of(st0.layer(x)) if w.one[D] in l.set]
            if srcs and srcs[0].meta["snapshot"] == bad:
                spoilt.add(x)
        rc, out, err = env.cbtfs("verify", store, ok=False)
        damaged = re.findall(r"damaged: (\S+) ", out + err)
        check(rc == 1 and sorted(damaged) == sorted(
            "by-vm/web/data/%s.img" % w.points[x]["name"] for x in spoilt),
            "damaged: verify exited %d, not naming %s: %s" % (
                rc, sorted(w.points[x]["label"] for x in spoilt), out + err))
        st = env.read_store(store)
        for x in kept:
            if x not in spoilt:
                check(sha_blocks(st.point_blocks(st.layer(x)))
                      == w.points[x]["sha"], "damaged: %s %s reads otherwise"
                      % (w.points[x]["label"], w.points[x]["key"]))
        env.remove_store(store)
        print("damaged: %.1fs" % (time.monotonic() - t))

        # -- main: a mount up before; a new night; prune again --------------
        t = time.monotonic()
        store = copy(pristine, "main")
        old = env.mount(store, env.path("old"))
        before = {x: read_sha(w.image(old, x)) for x in w.points}
        for x in w.points:
            check(before[x] == w.points[x]["sha"], "the old mount reads %s %s "
                  "otherwise" % (w.points[x]["label"], w.points[x]["key"]))
        kept, gone = of(KEEP_MAIN), of(set(ALL) - KEEP_MAIN)
        was = sizes(store)
        # While the prune runs, readers of that mount read blocks of every
        # point: each read gives the block's bytes, or EIO for a point
        # that goes.
        readers = Readers(w, old, set(gone))
        doc, _ = prune(env, store, WEEKLY)
        readers.stop()
        check(not readers.bad, "main: reads during the prune went wrong: %s"
              % readers.bad[:5])
        check(readers.reads > 0, "main: nothing was read during the prune")
        print("main: %d reads of a mount during the prune (%d EIO, all of "
              "dropped points)" % (readers.reads, readers.eio))
        dropped_are(doc, gone, "main")
        check(doc["stayed"] == 0 and doc["bytes_freed"] > 0,
              "main: --json %r" % doc)
        bound = children_store(gone)
        check(0 < doc["blocks_written"] <= bound, "main: %d blocks written, the "
              "points after the dropped ones store %d"
              % (doc["blocks_written"], bound))
        check_store(w, store, kept, gone, sid, "main")
        a0, a = shrank(store, kept, "main", st0, was)
        print("main: %d blocks written, %d -> %d bytes"
              % (doc["blocks_written"], a0, a))
        # The mount that was up follows the store: the dropped points
        # go from its tree, the kept ones read as before (opened again,
        # through the layers that replaced theirs).
        check(cb.wait_for(lambda: not any(os.path.exists(w.image(old, x))
                                          for x in gone), 60),
              "the old mount still shows dropped points")
        for x in w.points:
            pt = w.points[x]
            if x in gone:
                continue
            check(read_sha(w.image(old, x)) == before[x], "the old mount "
                  "reads %s %s otherwise after the prune"
                  % (pt["label"], pt["key"]))
        print("main: the old mount no longer shows the %d dropped points, "
              "and reads the kept ones as before" % len(gone))

        # Another night continues the chain from the kept newest point.
        w.night(store, N10)
        st = env.read_store(store)
        for k in DISKS:
            new = st.layer(w.snap[k, "N10"])
            check(new.meta["parent"] == w.snap[k, "N9"], "N10 %s: parent %s, "
                  "not N9's" % (k, new.meta["parent"]))
        kept += of({"N10"})
        check_store(w, store, kept, gone, sid, "main, N10")
        # The same policy again: N10 is the newest of its week and of the
        # last two, so N8 goes now.
        _, out, _ = env.cbtfs("prune", store, *WEEKLY, "--dry-run", "--json")
        planned = {x for x, a in json_actions(json.loads(out)).items()
                   if a == "drop"}
        check(planned == set(of({"N8"})), "main: the second plan drops %r"
              % sorted((w.points[x]["label"], w.points[x]["key"])
                       for x in planned))
        doc, _ = prune(env, store, WEEKLY)
        dropped_are(doc, planned, "main, again")
        kept = [x for x in kept if x not in planned]
        check_store(w, store, kept, gone + list(planned), sid, "main, again")
        cb.unmount(old)
        print("main: %.1fs" % (time.monotonic() - t))
    print("ok (%.1fs)" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
