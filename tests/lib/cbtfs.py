"""Helpers for cbtfs end-to-end tests: run the binary, mount, loop-mount,
make guest disk images, and clean up whatever happens.

Works with any python3 >= 3.9 using only the standard library.  Every
resource a test takes (temporary directories, FUSE mounts, loop mounts,
processes) is registered with an Env and released in reverse order when
the Env closes, also when the test fails.
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# Tests say everything on the command line: no configuration file of
# the machine's (/etc/cbtfs/cbtfs.conf) and no systemd credentials of
# the caller's reach the cbtfs they run.  test-config sets its own.
os.environ["CBTFS_CONFIG"] = os.devnull
os.environ.pop("CREDENTIALS_DIRECTORY", None)

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BLOCK = 65536


def cbtfs_binary():
    return os.environ.get("CBTFS") or os.path.join(TOP, "cbtfs")


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    """Fail the test with MSG unless COND."""
    if not cond:
        raise TestFailure(msg)


def make(*args):
    """Run make in the tree with ARGS (install, DESTDIR=…), on the build
    the binary under test came from; a failure fails the test."""
    build = os.path.dirname(cbtfs_binary())
    if os.path.basename(build) != "build":     # ./cbtfs: the default BUILD
        build = os.path.join(TOP, "build")
    p = subprocess.run(["make", "-C", TOP, "BUILD=" + build, *args],
                       capture_output=True, text=True)
    check(p.returncode == 0, "make %s: %s%s" % (" ".join(args), p.stdout,
                                               p.stderr))


def store_kind():
    """The kind of store this run of the test uses: "dir" or "s3"
    (tests/run sets CBTFS_TEST_STORE_KIND for tests that declare
    "# store-kinds: dir s3")."""
    return os.environ.get("CBTFS_TEST_STORE_KIND") or "dir"


def is_dir_store(store):
    """Whether STORE is a directory (whose files a test may look at)."""
    return not str(store).startswith("s3://")


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(77)


class Env:
    """Owns a scratch directory and a stack of cleanups."""

    def __init__(self, name="cbtfs-test"):
        self.dir = tempfile.mkdtemp(prefix=name + "-")
        self._cleanups = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def on_close(self, fn, *args):
        self._cleanups.append((fn, args))

    def close(self):
        while self._cleanups:
            fn, args = self._cleanups.pop()
            try:
                fn(*args)
            except Exception as e:  # keep cleaning up
                print("cleanup: %s" % e, file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def store(self, name="store"):
        """Where a test keeps a store: a directory in the scratch
        directory, or, when tests/run runs the test for object stores
        (CBTFS_TEST_STORE_KIND=s3), a fresh prefix in the run's RGW
        bucket, with the environment every cbtfs the test runs reads
        to reach it.  Skips the test when there is no RGW."""
        if store_kind() == "dir":
            return self.path(name)
        import rgw  # noqa: E402 (only object store runs need it)
        path = os.environ.get("CBTFS_TEST_RGW")
        if not path or not os.path.exists(path):
            skip("no Ceph RGW for object store runs (tests/run starts one "
                 "when Ceph is installed)")
        r = rgw.Shared(path)
        # The local cache in the scratch directory, not the machine's
        # (/var/cache/cbtfs is a mount's default).
        os.environ.update(AWS_ENDPOINT_URL=r.http_url, AWS_REGION=r.region,
                          AWS_ACCESS_KEY_ID=r.access_key,
                          AWS_SECRET_ACCESS_KEY=r.secret_key,
                          CBTFS_S3_PATH_STYLE="yes",
                          CBTFS_S3_ALLOW_HTTP="yes",
                          CBTFS_S3_CACHE=self.path("s3-cache"))
        return "s3://%s/%s/%s" % (rgw.TEST_BUCKET,
                                  os.path.basename(self.dir), name)

    def mkdir(self, *parts):
        p = self.path(*parts)
        os.makedirs(p, exist_ok=True)
        return p

    def password_file(self, text="secret", name="pw"):
        """A 0600 file holding the password TEXT (the stand-in's default)."""
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text + "\n")
        os.chmod(p, 0o600)
        return p

    # -- running cbtfs --------------------------------------------------

    def cbtfs(self, *args, ok=True, timeout=600, environ=None):
        """Run cbtfs; return (exit status, stdout, stderr).  With OK, a
        non-zero exit fails the test (showing stderr).  ENVIRON: the
        variables it runs with, if not ours."""
        cmd = [cbtfs_binary()] + [str(a) for a in args]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout, env=environ)
        sys.stderr.write(p.stderr)
        if ok and p.returncode != 0:
            raise TestFailure("%s exited %d: %s" % (" ".join(cmd), p.returncode,
                                                   p.stderr.strip()))
        return p.returncode, p.stdout, p.stderr

    def store_exists(self, store):
        """Whether STORE is a store (of either kind)."""
        if is_dir_store(store):
            return os.path.exists(store)
        rc, _, _ = self.cbtfs("ls", store, ok=False)
        return rc == 0

    def store_objects(self, store, etags=False):
        """An object store's objects: key (under STORE's prefix) -> size
        in bytes, or (size, ETag) with ETAGS, listed from the run's RGW
        (what a directory test would learn from os.walk)."""
        import rgw  # noqa: E402 (only object store runs need it)
        import urllib.parse
        import xml.etree.ElementTree as ET
        bucket, _, prefix = store[len("s3://"):].partition("/")
        prefix = prefix.rstrip("/") + "/"
        r = rgw.Shared(os.environ["CBTFS_TEST_RGW"])
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        out, token = {}, None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            res = r.curl("GET", bucket + "?" + urllib.parse.urlencode(q),
                         check=True)
            root = ET.fromstring(res.stdout)
            check(root.tag == ns + "ListBucketResult", "listing %s: %s"
                  % (store, res.stdout[:300]))
            for c in root.iter(ns + "Contents"):
                size = int(c.find(ns + "Size").text)
                out[c.find(ns + "Key").text[len(prefix):]] = (
                    (size, c.findtext(ns + "ETag")) if etags else size)
            token = root.findtext(ns + "NextContinuationToken")
            if root.findtext(ns + "IsTruncated") != "true" or not token:
                return out

    def s3_object(self, store, key, method="GET", data=None):
        """An object store's request METHOD on KEY under STORE's prefix
        (DATA: a PUT's body); returns the body, or None when there is
        no such object."""
        import rgw  # noqa: E402 (only object store runs need it)
        r = rgw.Shared(os.environ["CBTFS_TEST_RGW"])
        path = store[len("s3://"):].rstrip("/") + "/" + key
        args = ["-w", "\n%{http_code}"] + (["-I"] if method == "HEAD" else [])
        body = None
        if data is not None:
            body = self.path("s3-body-%d" % id(data))
            with open(body, "wb") as f:
                f.write(data)
            args += ["--data-binary", "@" + body]
        try:
            res = r.curl(method, path, *args, check=True)
        finally:
            if body:
                os.unlink(body)
        out, _, code = res.stdout.rpartition(b"\n")
        if code == b"404":
            return None
        check(code.startswith(b"2"), "%s %s: HTTP %s %s"
              % (method, path, code.decode(), out[:300]))
        return out

    def writer_free(self, store, disk, snapshot):
        """Whether no process is the writer of layer DISK/SNAPSHOT: no
        flock on a directory store's index, no writer lease object in
        an object store."""
        if is_dir_store(store):
            return unlocked(os.path.join(store, "disks", disk, snapshot,
                                         "index"))
        return self.s3_object(store, "layers/%s/%s/writer"
                              % (disk, snapshot), "HEAD") is None

    def hold_writer(self, store, disk, snapshot):
        """Be the writer of layer DISK/SNAPSHOT as another cbtfs process
        would (flock on a directory store's index; an object store's
        writer lease naming this live process) until the returned
        object's release()."""
        return Hold(self, store, os.path.join("disks", disk, snapshot,
                                              "index"),
                    "layers/%s/%s/writer" % (disk, snapshot),
                    "pid %d\ncommand test\nsince %d\n"
                    % (os.getpid(), int(time.time())))

    def hold_store_lock(self, store, record):
        """Hold STORE's lock as another cbtfs process would, with the
        holder's RECORD (text, holder.h) in it: flock on a directory
        store's lock file, an object store's lock lease, until the
        returned object's release()."""
        return Hold(self, store, "lock", "lock", record)

    def store_state(self, store, disk=None, mtime=False):
        """What STORE holds, to compare before and after: a directory's
        tree_files (with MTIME, its files' mtimes too), an object store's
        objects (key -> size, ETag), of DISK only (its folder; its
        objects) if given."""
        if is_dir_store(store):
            return tree_files(os.path.join(store, "disks", disk) if disk
                              else store, mtime)
        return {k: v for k, v in self.store_objects(store, etags=True).items()
                if disk is None or disk in k.split("/")}

    def stored_layers(self, store, disk):
        """The names in DISK's folder of a directory STORE (its layers'
        folders and its notes), the snapshots an object store has
        layers/ or roots/ objects of."""
        if is_dir_store(store):
            return sorted(os.listdir(os.path.join(store, "disks", disk)))
        return sorted({k.split("/")[2] for k in self.store_objects(store)
                       if k.split("/")[0] in ("layers", "roots")
                       and k.split("/")[1] == disk and k.count("/") >= 2})

    def durable_layers(self, store, disk):
        """The snapshots of DISK in STORE whose index holds a committed
        batch past its header (some blocks are durable): a directory
        store's index file longer than the header, an object store's
        index object 1 or later."""
        if is_dir_store(store):
            d = os.path.join(store, "disks", disk)
            idx = [os.path.join(d, x, "index") for x in os.listdir(d)]
            return sorted(os.path.basename(os.path.dirname(i)) for i in idx
                          if os.path.exists(i) and os.path.getsize(i) > 40)
        return sorted({k.split("/")[2] for k in self.store_objects(store)
                       if k.startswith("layers/%s/" % disk)
                       and k.split("/")[4:5] == ["i"]
                       and not k.endswith("/0000000000")})

    def store_file(self, store, rel):
        """The bytes of REL in STORE (a path in a directory store, a key
        under an object store's prefix: cbtfs-store, generation), or
        None when there is none."""
        if is_dir_store(store):
            try:
                with open(os.path.join(store, rel), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        return self.s3_object(store, rel)

    def bare_layer(self, store, disk, snapshot):
        """Leave a layer DISK/SNAPSHOT that has nothing in it, as a cbtfs
        killed right after it began one once did: an empty folder in a
        directory store, an empty root object in an object store."""
        if is_dir_store(store):
            os.makedirs(os.path.join(store, "disks", disk, snapshot))
        else:
            self.s3_object(store, "roots/%s/%s" % (disk, snapshot), "PUT",
                           b"")

    def drop_manifest_copies(self, store, disk):
        """Remove DISK's copies of its layers' manifests (a directory
        store's manifests file, an object store's manifests note), as a
        store from before they were kept lacks them."""
        if is_dir_store(store):
            os.unlink(os.path.join(store, "disks", disk, "manifests"))
            return
        for k in self.store_objects(store):
            if k.startswith("notes/%s/manifests/" % disk):
                self.s3_object(store, k, "DELETE")

    def flip_block_byte(self, store, disk, snapshot, off):
        """Flip a bit of the byte at OFF of the disk as layer
        DISK/SNAPSHOT stores it (a block it holds): damage, where a
        directory store keeps it in the layer's data file, an object
        store in one of the layer's packs.  Returns the byte it was."""
        if is_dir_store(store):
            return flip_byte(os.path.join(store, "disks", disk, snapshot,
                                          "data"), off)
        key, slot = self._pack_slot(store, disk, snapshot, off // BLOCK)
        data = bytearray(self.s3_object(store, key))
        at = slot * BLOCK + off % BLOCK
        was = data[at]
        data[at] ^= 0x20
        self.s3_object(store, key, "PUT", bytes(data))
        return was

    def _version(self, store, disk, snapshot):
        """The version layer DISK/SNAPSHOT's root names (FORMAT.md,
        Object stores: "cbtfs-root 1 V")."""
        root = self.s3_object(store, "roots/%s/%s" % (disk, snapshot))
        check(root and root.startswith(b"cbtfs-root 1 "), "no root of %s"
              % snapshot)
        return root.split(b"\n", 1)[0].split()[2].decode()

    def _index_objects(self, store, disk, snapshot, objs):
        """What the index objects of layer DISK/SNAPSHOT's current
        version say, oldest first: per object, a list of (pack key,
        the blocks at its places) (FORMAT.md, Object stores: the
        objects i/SEQ of version V name packs (owner, V, SEQ) and which
        block is at each place; 2^64-1 marks a place no block uses).
        OBJS: the store's objects (store_objects), for their keys."""
        import struct
        layer = "layers/%s/%s/%s/" % (disk, snapshot,
                                      self._version(store, disk, snapshot))
        out = []
        for key in sorted(k for k in objs if k.startswith(layer + "i/")):
            if key.endswith("/0000000000"):
                continue            # the header alone
            obj = self.s3_object(store, key)
            npacks, = struct.unpack_from("<I", obj, 8)
            q, named = 12, []
            for _ in range(npacks):
                owner = obj[q:q + 36].decode()
                version, seq, n = struct.unpack_from("<III", obj, q + 36)
                q += 48
                named.append(("packs/%s/%s.%010d.%010d" % (disk, owner,
                                                           version, seq),
                              struct.unpack_from("<%dQ" % n, obj, q)))
                q += 8 * n
            out.append(named)
        return out

    def _pack_slot(self, store, disk, snapshot, block):
        # The newest index object naming BLOCK says where it is.
        where = None
        for named in self._index_objects(store, disk, snapshot,
                                         self.store_objects(store)):
            for key, blocks in named:
                if block in blocks:
                    where = (key, blocks.index(block))
        check(where is not None, "layer %s/%s holds no block %d"
              % (disk, snapshot, block))
        return where

    def block_places(self, store, objs=None):
        """The packs an index object of a layer's current version names
        (which the sweep keeps): pack key -> the places in it where a
        layer reads a block (each layer's block where the newest of its
        index objects naming it says; a merge's first object names its
        base's places, some of which later objects name anew, and a pack
        may be named with no place read).  OBJS: store_objects(STORE),
        if already listed."""
        objs = self.store_objects(store) if objs is None else objs
        out = {}
        for k in objs:
            part = k.split("/")
            if part[0] != "roots" or len(part) != 3:
                continue
            where = {}
            for named in self._index_objects(store, part[1], part[2], objs):
                for key, blocks in named:
                    out.setdefault(key, set())
                    for slot, b in enumerate(blocks):
                        if b != (1 << 64) - 1:
                            where[b] = (key, slot)
            for key, slot in where.values():
                out.setdefault(key, set()).add(slot)
        return out

    def block_bytes(self, store):
        """The bytes STORE holds for its points' blocks: what a directory
        store's data files allocate, an object store's packs' sizes."""
        if is_dir_store(store):
            disks = os.path.join(store, "disks")
            return sum(os.lstat(os.path.join(disks, d, x, "data")).st_blocks
                       * 512 for d in os.listdir(disks)
                       for x in os.listdir(os.path.join(disks, d))
                       if os.path.exists(os.path.join(disks, d, x, "data")))
        return sum(n for k, n in self.store_objects(store).items()
                   if k.startswith("packs/"))

    def rubbish(self, store, places=None):
        """What STORE holds that no point needs and that a finished run
        leaves nothing of: a directory store's tmp/ entries; an object
        store's trash and sweep marks, a live holder's writer lease,
        share of the store lock or disk lease,
        objects of a layer version no root names (a merge's stage, a
        removed layer's remains; but not the first objects of a layer a
        killed backup began) and packs no current version's index names.
        PLACES: block_places(STORE), if already read."""
        if is_dir_store(store):
            return ["tmp/" + x for x in os.listdir(os.path.join(store,
                                                                "tmp"))]
        objs = self.store_objects(store)
        current = {}
        for k in objs:
            part = k.split("/")
            if part[0] == "roots" and len(part) == 3:
                current[part[1], part[2]] = self._version(store, part[1],
                                                          part[2])
        named = self.block_places(store, objs) if places is None else places
        # A backup killed after it put a new layer's version 1 `set` and
        # index object 0, before its root, leaves them: FORMAT.md, Object
        # stores, says so (a layer made again under that name writes over
        # them; a killed backup's snapshot is not backed up again).
        begun = {}
        for k in objs:
            part = k.split("/")
            if part[0] == "layers" and (part[1], part[2]) not in current:
                begun.setdefault((part[1], part[2]), set()).add(
                    "/".join(part[3:]))
        unrooted = {x for x, v in begun.items()
                    if v <= {"0000000001/set", "0000000001/i/0000000000"}}
        out = []
        for k in sorted(objs):
            part = k.split("/")
            if part[0] in ("trash", "sweep"):
                out.append(k)
            elif part[0] == "layers" and (part[1], part[2]) in unrooted:
                pass
            elif part[0] in ("shares", "disklocks"):
                # A backup's share of the store lock and its disks'
                # leases: a killed one's stay until the next taker.
                if not self._dead_holder(self.s3_object(store, k)):
                    out.append(k)
            elif part[0] == "layers" and part[3:] == ["writer"]:
                # A writer killed after its last commit leaves its lease
                # until the layer is merged or removed: harmless, as the
                # next taker takes over a dead holder's lease, but only
                # while its holder is gone.
                if not self._dead_holder(self.s3_object(store, k)):
                    out.append(k)
            elif part[0] == "layers" and (
                    len(part) < 5 or current.get((part[1], part[2]))
                    != part[3]):
                out.append(k)
            elif part[0] == "packs" and k not in named:
                out.append(k)
        return out

    @staticmethod
    def _dead_holder(record):
        """Whether the lease RECORD (holder.h: pid, host, ...) names a
        process of this host that no longer runs."""
        rec = dict(x.split(" ", 1) for x in (record or b"").decode(
            errors="replace").splitlines() if " " in x)
        return (rec.get("host") == socket.gethostname()
                and rec.get("pid", "").isdigit()
                and not os.path.exists("/proc/" + rec["pid"]))

    def prune_notes(self, store):
        """The disks of STORE that keep a prune note (FORMAT.md,
        "Dropping a point": a drop not yet finished, or a note not yet
        removed): a directory store's disks/D/prune, an object store's
        notes/D/prune/ records that hold a byte."""
        if is_dir_store(store):
            disks = os.path.join(store, "disks")
            return sorted(d for d in os.listdir(disks)
                          if os.path.exists(os.path.join(disks, d, "prune")))
        # From the last base on (FORMAT.md, Object stores, "Notes"): a
        # note removed is an empty base, and a note with no bytes is none.
        recs = {}
        for k, size in self.store_objects(store).items():
            part = k.split("/")
            if part[0] == "notes" and part[2:3] == ["prune"]:
                recs.setdefault(part[1], []).append((part[3], size))
        out = []
        for disk, v in recs.items():
            v.sort()
            bases = [i for i, (name, _) in enumerate(v)
                     if name.endswith(".base")]
            if sum(size for _, size in v[bases[-1] if bases else 0:]):
                out.append(disk)
        return sorted(out)

    def read_store(self, store):
        """STORE as storefmt (tests/lib/storefmt.py, written from
        FORMAT.md alone) reads it: a directory, or a bucket's objects."""
        import storefmt as sf  # noqa: E402
        if is_dir_store(store):
            return sf.Store(store)
        return sf.Store(store, (list(self.store_objects(store)),
                                self.s3_objects(store)))

    def s3_objects(self, store):
        """A function giving an object store's object KEY (under STORE's
        prefix) as bytes (None when missing); every object there is read
        at the first call, in one go."""
        import rgw  # noqa: E402 (only object store runs need it)
        base = store[len("s3://"):].rstrip("/") + "/"
        got = {}

        def get(key):
            if not got:
                r = rgw.Shared(os.environ["CBTFS_TEST_RGW"])
                many = r.get_many([base + k for k in self.store_objects(store)],
                                  self.mkdir("s3-get-%d" % id(got)))
                got.update({p[len(base):]: b for p, b in many.items()})
                got.setdefault("", None)        # read once, even if empty
            return got[key] if key in got else self.s3_object(store, key)
        return get

    def store_disks(self, store):
        """The disks STORE has (a directory store's disks/ folders, an
        object store's disks/ objects)."""
        if is_dir_store(store):
            return sorted(os.listdir(os.path.join(store, "disks")))
        return sorted(k.split("/")[1] for k in self.store_objects(store)
                      if k.startswith("disks/") and k.count("/") == 1)

    def listed_layers(self, store, disk):
        """The snapshots whose layer of DISK exists in STORE: a
        directory store's layer folders (a removal renames one into
        tmp/ first), an object store's roots."""
        if is_dir_store(store):
            d = os.path.join(store, "disks", disk)
            return sorted(x for x in os.listdir(d) if len(x) == 36
                          and os.path.isdir(os.path.join(d, x)))
        return sorted(k.split("/")[2] for k in self.store_objects(store)
                      if k.startswith("roots/%s/" % disk))

    def rebuilding(self, store, disk, snapshot):
        """Whether a merge's rebuild of layer DISK/SNAPSHOT is under way
        (FORMAT.md, "Dropping a point", step 2): a directory store's
        tmp/SNAPSHOT.*, an object store's objects of a version newer
        than the one the root names (a stage)."""
        if is_dir_store(store):
            return any(t.startswith(snapshot + ".")
                       for t in os.listdir(os.path.join(store, "tmp")))
        v = self._version(store, disk, snapshot)
        pre = "layers/%s/%s/" % (disk, snapshot)
        return any(k.startswith(pre) and k.split("/")[3] > v
                   for k in self.store_objects(store))

    def note_bytes(self, store, disk, note):
        """NOTE of DISK in STORE as a reader gets it (a directory
        store's file; an object store's records from the last base on,
        each followed by a newline if it lacks one), or None when there
        is none or it holds no byte."""
        if is_dir_store(store):
            try:
                with open(os.path.join(store, "disks", disk, note), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None
            return data or None
        pre = "notes/%s/%s/" % (disk, note)
        keys = sorted(k[len(pre):] for k in self.store_objects(store)
                      if k.startswith(pre))
        bases = [i for i, k in enumerate(keys) if k.endswith(".base")]
        data = b""
        for k in keys[bases[-1] if bases else 0:]:
            rec = self.s3_object(store, pre + k) or b""
            data += rec if not rec or rec.endswith(b"\n") else rec + b"\n"
        return data or None

    def append_note(self, store, disk, note, data):
        """Append DATA to NOTE of DISK in STORE as a writer would: to a
        directory store's file; as an object store's next record."""
        if is_dir_store(store):
            with open(os.path.join(store, "disks", disk, note), "ab") as f:
                f.write(data)
            return
        pre = "notes/%s/%s/" % (disk, note)
        seqs = [int(k[len(pre):].split(".")[0])
                for k in self.store_objects(store) if k.startswith(pre)]
        self.s3_object(store, pre + "%010d" % (max(seqs, default=0) + 1),
                       "PUT", data)

    def copy_store(self, src, dst):
        """Make DST a copy of STORE SRC, byte for byte, as a backup of
        the store would be restored: cp -a (hard links kept) of a
        directory, a server-side copy of each object of a bucket's."""
        if is_dir_store(src):
            subprocess.run(["cp", "-a", src, dst], check=True)
            return
        import rgw  # noqa: E402 (only object store runs need it)
        r = rgw.Shared(os.environ["CBTFS_TEST_RGW"])
        for k in self.store_objects(src):
            r.curl("PUT", dst[len("s3://"):].rstrip("/") + "/" + k,
                   "-H", "x-amz-copy-source: /%s/%s" % (
                       src[len("s3://"):].rstrip("/"), k),
                   "-o", os.devnull, "-f", check=True)

    def remove_store(self, store):
        """Remove STORE: a directory, every object of a bucket's."""
        if is_dir_store(store):
            shutil.rmtree(store, ignore_errors=True)
            return
        for k in self.store_objects(store):
            self.s3_object(store, k, "DELETE")

    def lock_holder(self, store):
        """The pid the record of STORE's lock names (a directory store's
        lock file, an object store's lock lease), or None.  A process
        killed while it held the lock is still named (until the next
        taker replaces the record)."""
        rec = self.store_file(store, "lock")
        for line in (rec or b"").decode(errors="replace").splitlines():
            if line.startswith("pid ") and line[4:].isdigit():
                return int(line[4:])
        return None

    def flip_manifest_byte(self, store, disk, snapshot, off):
        """Flip a bit of byte OFF of layer DISK/SNAPSHOT's manifest (a
        directory store's layer file, an object store's root object)."""
        data = bytearray(self.manifest_bytes(store, disk, snapshot))
        data[off] ^= 0x01
        self.manifest_bytes(store, disk, snapshot, bytes(data))

    def manifest_bytes(self, store, disk, snapshot, data=None):
        """Layer DISK/SNAPSHOT's manifest as stored (a directory store's
        layer file, an object store's root object), or, given DATA,
        replace it with DATA (damage: cbtfs never rewrites one)."""
        if is_dir_store(store):
            p = os.path.join(store, "disks", disk, snapshot, "layer")
            with open(p, "rb" if data is None else "r+b") as f:
                if data is None:
                    return f.read()
                f.write(data)
                f.truncate()
                return data
        # An object store's root is "cbtfs-root 1 V" and the manifest.
        key = "roots/%s/%s" % (disk, snapshot)
        head, _, manifest = self.s3_object(store, key).partition(b"\n")
        if data is None:
            return manifest
        self.s3_object(store, key, "PUT", head + b"\n" + data)
        return data

    def store_bytes(self, store):
        """The space STORE takes: a directory's allocated bytes (like
        du), an object store's objects' sizes."""
        if is_dir_store(store):
            return allocated_bytes(store)
        return sum(self.store_objects(store).values())

    def ls_json(self, store):
        _, out, _ = self.cbtfs("ls", store, "--json")
        return json.loads(out)

    def mount(self, store, mnt, *extra):
        """cbtfs mount (returns once the mount is ready); unmounted at close."""
        os.makedirs(mnt, exist_ok=True)
        self.cbtfs("mount", store, mnt, *extra)
        check(os.path.ismount(mnt), "cbtfs mount returned but %s is not a "
              "mount point" % mnt)
        self.on_close(unmount, mnt)
        return mnt

    def mount_fg(self, store, mnt, *extra):
        """cbtfs mount -f in the background of the test: a Foreground
        whose unmount() also waits for the process to finish (and so for
        fetched blocks to be made durable)."""
        os.makedirs(mnt, exist_ok=True)
        m = Foreground(self, store, mnt, extra)
        self.on_close(m.close)
        return m

    def nbdkit(self, image, address, tls_dir=None, filters=(), debug_log=None):
        """nbdkit serving IMAGE read-only on ADDRESS (a free port), with
        TLS required (--tls=require, certificates from TLS_DIR) unless
        TLS_DIR is None, and FILTERS: (name, param=value…) tuples; with
        DEBUG_LOG, its -v messages go to that file (they say when a TLS
        handshake completed and which export a client asked for).
        Returns (process, port); stopped at close."""
        with socket.socket() as so:
            so.bind((address, 0))
            port = so.getsockname()[1]
        pidfile = self.path("nbdkit-%d.pid" % port)
        cmd = ["nbdkit", "-f", "--exit-with-parent", "-r", "-P", pidfile,
               "-i", address, "-p", str(port)]
        if tls_dir:
            cmd += ["--tls=require", "--tls-certificates=" + tls_dir]
        if debug_log:
            cmd.append("-v")
        cmd += ["--filter=" + f[0] for f in filters]
        cmd += ["file", image] + [a for f in filters for a in f[1:]]
        log = open(debug_log, "w") if debug_log else None
        try:
            proc = subprocess.Popen(cmd, stderr=log)
        finally:
            if log:
                log.close()
        self.on_close(lambda: proc.poll() is None and proc.terminate())
        wait_for_file(pidfile, proc)
        return proc, port

    def loop_mount(self, image, mnt):
        """Read-only loop mount of an ext4 image (no journal replay)."""
        os.makedirs(mnt, exist_ok=True)
        subprocess.run(["mount", "-o", "loop,ro,noload", image, mnt],
                       check=True)
        self.on_close(lambda: os.path.ismount(mnt)
                      and subprocess.run(["umount", mnt]))
        return mnt


class Hold:
    """A lock held as another cbtfs process holds it (Env.hold_writer,
    Env.hold_store_lock): flock on the file REL of a directory store,
    holding RECORD if it is the store's lock file (a layer's index holds
    none); the lease object KEY, RECORD, of an object store.  A context
    manager too."""

    def __init__(self, env, store, rel, key, record):
        self.env, self.store = env, store
        self.file = self.key = None
        self.record = rel == "lock"
        if is_dir_store(store):
            import fcntl
            self.file = open(os.path.join(store, rel),
                             "r+" if self.record else "rb")
            fcntl.flock(self.file, fcntl.LOCK_EX
                        | (fcntl.LOCK_NB if self.record else 0))
            if self.record:
                self.file.write(record)
                self.file.flush()
        else:
            self.key = key
            env.s3_object(store, key, "PUT", record.encode())

    def release(self):
        if self.file:
            if self.record:
                self.file.truncate(0)
            self.file.close()           # and the flock with it
            self.file = None
        elif self.key:
            self.env.s3_object(self.store, self.key, "DELETE")
            self.key = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Foreground:
    """A `cbtfs mount -f` process; its stderr goes to a log file."""

    def __init__(self, env, store, mnt, extra):
        self.mnt = mnt
        self.log_path = env.path("mount-%d.log" % id(self))
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [cbtfs_binary(), "mount", "-f", store, mnt] + list(extra),
                stdin=subprocess.DEVNULL, stderr=log)
        # No ready signal in the foreground: poll for the mount, bounded.
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            check(self.proc.poll() is None, "cbtfs mount -f exited: %s"
                  % self.log())
            check(time.monotonic() < deadline, "the mount never appeared")
            time.sleep(0.02)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def unmount(self):
        """fusermount3 -u, then the process's exit status."""
        subprocess.run(["fusermount3", "-u", self.mnt], check=True)
        return self.proc.wait(timeout=120)

    def close(self):
        # Also when the process is gone (a test killed it, or it died):
        # its mount stays until someone unmounts it.
        unmount(self.mnt)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_for_file(path, proc, seconds=60):
    """Wait until PATH exists (a server's pidfile: it is ready), failing
    if PROC dies first or it takes longer than SECONDS."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        check(proc.poll() is None, "%s exited before it was ready" % proc.args[0])
        check(time.monotonic() < deadline, "%s never appeared" % path)
        time.sleep(0.02)


def wait_for(cond, seconds):
    """Poll COND until it holds (True) or SECONDS pass (False)."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)        # polling a condition, not a stand-in for it
    return True


def unlocked(path):
    """Whether no process holds the writer lock (flock) on PATH."""
    import fcntl
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


def random_disk(s, env, vm, disk, size, password="secret"):
    """A VM named VM on the stand-in S with one disk DISK of SIZE random
    bytes, and its arguments for cbtfs: (VM record, disk VDI uuid, the
    guest image file, ["--server", …, "--password-file", …] with a file
    holding PASSWORD)."""
    rec = s.control("create_vm", name=vm, disks=[{"name": disk, "size": size}])
    vdi = rec["disks"][0]["vdi"]
    guest = env.path(disk + ".img")
    with open(guest, "wb") as f:
        f.write(os.urandom(size))
    s.control("write_file", vdi=vdi, path=guest)
    srv = ["--server", s.info["xapi_url"], "--ca-file", s.info["ca_file"],
           "--password-file", env.password_file(password)]
    return rec, vdi, guest, srv


def mounted(mnt):
    """True if MNT is a mount point, also one whose FUSE process is gone
    (os.path.ismount says False then: stat fails with ENOTCONN)."""
    want = os.path.join(os.path.realpath(os.path.dirname(mnt)),
                        os.path.basename(mnt))
    with open("/proc/self/mounts") as f:
        return any(line.split()[1].replace("\\040", " ") == want
                   for line in f)


def unmount(mnt):
    if mounted(mnt):
        r = subprocess.run(["fusermount3", "-u", mnt])
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", mnt])


def tree_files(root, mtime=False):
    """Every file and folder under ROOT: path -> (mode, size, sha256 of
    a file's bytes), and its mtime in ns too when MTIME."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            h = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (
                (st.st_mode, st.st_size, st.st_mtime_ns, h) if mtime
                else (st.st_mode, st.st_size, h))
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def pread(path, off, n):
    """N bytes of PATH at OFF, from a descriptor of its own."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)

def block_diff(a, b):
    """The 64 KiB block numbers where files A and B differ (a missing
    tail reads as zeros)."""
    out = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        i = 0
        while True:
            x, y = fa.read(BLOCK), fb.read(BLOCK)
            if not x and not y:
                return out
            if x.ljust(BLOCK, b"\0") != y.ljust(BLOCK, b"\0"):
                out.append(i)
            i += 1


def nonzero_blocks(path):
    """How many 64 KiB blocks of PATH hold a non-zero byte (skipping
    holes quickly)."""
    n = 0
    zero = bytes(BLOCK)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            blk = data // BLOCK
            f.seek(blk * BLOCK)
            b = f.read(BLOCK)
            if b.ljust(BLOCK, b"\0") != zero:
                n += 1
            off = (blk + 1) * BLOCK
    return n


def allocated_bytes(root):
    """Bytes actually allocated by every file under ROOT (like du)."""
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            total += os.lstat(os.path.join(d, f)).st_blocks * 512
    return total


def make_ext4(image, size, files, lazy=False):
    """Create IMAGE (SIZE bytes) holding an ext4 filesystem with FILES
    ({path: bytes}), without mounting anything.  LAZY leaves inode
    tables unwritten (quick and sparse for big images)."""
    src = tempfile.mkdtemp(prefix="cbtfs-ext4-")
    try:
        for rel, data in files.items():
            p = os.path.join(src, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        with open(image, "wb") as f:
            f.truncate(size)
        init = "1" if lazy else "0"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-E",
                        "lazy_itable_init=%s,lazy_journal_init=%s" % (init, init),
                        "-d", src, image], check=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def ext4_write(image, path, data):
    """Replace file PATH inside the ext4 IMAGE with DATA, as a guest
    would, using debugfs (no mount)."""
    with tempfile.NamedTemporaryFile() as t:
        t.write(data)
        t.flush()
        cmds = "rm %s\nwrite %s %s\n" % (path, t.name, path)
        subprocess.run(["debugfs", "-w", "-f", "-", image], input=cmds,
                       text=True, capture_output=True, check=True)


def flip_byte(path, off, bit=0x20):
    """Flip BIT of the byte at OFF of the file PATH; returns the byte
    it was."""
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ bit]))
    return b[0]


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def copy_sparse(src, dst):
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
