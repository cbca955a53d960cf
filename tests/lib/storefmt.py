"""An independent reader and writer of the cbtfs store, format 2.

Written from FORMAT.md ("The cbtfs store, format 2") alone, not from the
C code, so that a test can hold the two against each other: read what
cbtfs wrote and check every byte against the document, or write a store
from the document and see cbtfs read it.  Each function names the
FORMAT.md section it follows.  Strict: anything FORMAT.md calls damaged,
malformed or invalid raises FormatError (or is reported, where FORMAT.md
says readers skip it), rather than being tolerated.

Standard library only (any python3 >= 3.9); the hashes come from the
system's libxxhash through ctypes.
"""
import ctypes
import ctypes.util
import os
import re
import struct

BLOCK = 65536                                   # FORMAT.md, introduction
REC = 40                                        # `index`: 40-byte records
INDEX_MAGIC = b"CBTFSIX1"
DATA, ZERO = 1, 2                               # `index`: kinds
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# `layer (manifest)`: the keys, in the order they are written.
KEYS = ("snapshot", "disk", "chain", "parent", "vm", "seq", "time", "size",
        "blocks", "fill", "userdevice", "vm-name", "disk-name")
VERDICTS = ("match", "differs", "damaged", "sound", "accepted")
FILE_MODE, DIR_MODE = 0o600, 0o700              # FORMAT.md, introduction


class FormatError(Exception):
    """Bytes that FORMAT.md says are not what they should be."""


class Missing(Exception):
    """A block of a layer's set that is not present (FORMAT.md, `index`:
    "missing")."""


# -- hashes ------------------------------------------------------------

class _H128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


def _load_xxhash():
    for name in ("libxxhash.so.0", ctypes.util.find_library("xxhash")):
        if name:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
    else:
        raise OSError("libxxhash not found (Debian: libxxhash0)")
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.XXH3_128bits.restype = _H128
    return lib


_xxh = _load_xxhash()


def xxh3_64(data):
    """XXH3-64 (seed 0) of DATA, an int."""
    data = bytes(data)
    return _xxh.XXH3_64bits(data, len(data))


def xxh3_128_canonical(data):
    """XXH3-128 of DATA in the 16 bytes an index record holds
    (FORMAT.md `index`, bytes 16-31: "canonical, big-endian", i.e.
    xxhash's XXH128_canonicalFromHash: high64 big-endian, then low64
    big-endian)."""
    data = bytes(data)
    h = _xxh.XXH3_128bits(data, len(data))
    return struct.pack(">QQ", h.high64, h.low64)


def hex16(v):
    """A check value as written: 16 hex digits (lower case, as cbtfs
    writes them; FORMAT.md does not name a case)."""
    return "%016x" % v


def nblocks(size):
    """How many 64 KiB blocks a disk of SIZE bytes has (the last may be
    partial)."""
    return (size + BLOCK - 1) // BLOCK


def is_uuid(s):
    return bool(UUID_RE.match(s))


# -- cbtfs-store -------------------------------------------------------

def format_marker(store_id, fmt=2):
    """The marker file (FORMAT.md layout: "cbtfs-store 2\\nid <uuid>\\n";
    "Formats 1 and 2": a format-1 store has 1 there)."""
    return ("cbtfs-store %d\nid %s\n" % (fmt, store_id)).encode()


def parse_marker(b):
    """(format, id or None) of a marker; a store made before ids has
    only its first line."""
    m = re.match(rb"^cbtfs-store (\d+)\n(?:id ([0-9a-fA-F-]{36})\n)?$", b)
    if not m:
        raise FormatError("cbtfs-store: %r is not a store marker" % b)
    sid = m.group(2).decode() if m.group(2) else None
    if sid is not None and not is_uuid(sid):
        raise FormatError("cbtfs-store: id %r is not a uuid" % sid)
    return int(m.group(1)), sid


# -- layer (manifest) --------------------------------------------------

def pct_encode(name):
    """Names are percent-encoded: bytes 0x00-0x20, 0x7F and % as %XX,
    all others as they are (FORMAT.md `layer`).  NAME: str or bytes."""
    if isinstance(name, str):
        name = name.encode()
    return "".join("%%%02X" % c if c <= 0x20 or c == 0x7F or c == 0x25
                   else chr(c) for c in name).encode("latin-1")


def pct_decode(b):
    """The bytes a percent-encoded name stands for; %00, a bad escape or
    a byte that should have been escaped is malformed."""
    out = bytearray()
    i = 0
    while i < len(b):
        c = b[i]
        if c == 0x25:
            h = b[i + 1:i + 3]
            if len(h) != 2 or not re.match(rb"^[0-9a-fA-F]{2}$", h) \
                    or int(h, 16) == 0:
                raise FormatError("bad escape in name %r" % b)
            out.append(int(h, 16))
            i += 3
        elif c <= 0x20 or c == 0x7F:
            raise FormatError("unescaped byte 0x%02x in name %r" % (c, b))
        else:
            out.append(c)
            i += 1
    return bytes(out)


def format_manifest(m):
    """The bytes of a `layer` file for M (a dict: every key of KEYS;
    vm-name and disk-name unencoded str/bytes, numbers as ints, "-" for
    no parent/vm/userdevice), keys in the written order, then the check
    line: XXH3-64 of every byte before it, 16 hex digits."""
    lines = [b"cbtfs-layer 1\n"]
    for k in KEYS:
        v = m[k]
        if k in ("vm-name", "disk-name"):
            v = pct_encode(v)
        else:
            v = str(v).encode()
        lines.append(k.encode() + b" " + v + b"\n")
    body = b"".join(lines)
    return body + ("check %s\n" % hex16(xxh3_64(body))).encode()


def parse_manifest(b):
    """A `layer` manifest's values, checked as FORMAT.md says: the first
    line, every key exactly once (any order), the check line last and
    matching, every value well-formed.  Returns a dict (seq, time, size
    as ints; names as bytes; "check" the 16 digits)."""
    if not b.startswith(b"cbtfs-layer 1\n"):
        raise FormatError("manifest does not start with 'cbtfs-layer 1'")
    if not b.endswith(b"\n"):
        raise FormatError("manifest does not end with a newline")
    lines = b[len(b"cbtfs-layer 1\n"):-1].split(b"\n")
    last = lines[-1]
    if not last.startswith(b"check "):
        raise FormatError("manifest's last line is not its check: %r" % last)
    digits = last[6:].decode("ascii", "replace")
    if not re.match(r"^[0-9a-fA-F]{16}$", digits):
        raise FormatError("check %r is not 16 hex digits" % digits)
    body = b[:len(b) - len(last) - 1]
    if int(digits, 16) != xxh3_64(body):
        raise FormatError("manifest check %s does not match (XXH3-64 of the "
                          "%d bytes before it is %s)"
                          % (digits, len(body), hex16(xxh3_64(body))))
    m = {"check": digits, "_order": []}
    for line in lines[:-1]:
        k, sep, v = line.partition(b" ")
        k = k.decode("utf-8", "replace")
        if not sep or k not in KEYS:
            raise FormatError("unknown key or bad line %r" % line)
        if k in m:
            raise FormatError("key %s repeated" % k)
        m["_order"].append(k)
        m[k] = v
    for k in KEYS:
        if k not in m:
            raise FormatError("key %s missing" % k)
    for k in ("snapshot", "disk", "chain"):
        m[k] = _uuid(m[k], k)
    for k in ("parent", "vm"):
        m[k] = "-" if m[k] == b"-" else _uuid(m[k], k)
    for k in ("seq", "time", "size"):
        if not re.match(rb"^[0-9]+$", m[k]):
            raise FormatError("%s %r is not a number" % (k, m[k]))
        m[k] = int(m[k])
    if m["seq"] < 1:
        raise FormatError("seq counts from 1")
    if m["size"] % 512:
        raise FormatError("size %d is not a multiple of 512" % m["size"])
    for k, ok in (("blocks", (b"all", b"changed")), ("fill", (b"eager", b"lazy"))):
        if m[k] not in ok:
            raise FormatError("%s %r" % (k, m[k]))
        m[k] = m[k].decode()
    if m["userdevice"] != b"-" and not re.match(rb"^[0-9]+$", m["userdevice"]):
        raise FormatError("userdevice %r" % m["userdevice"])
    m["userdevice"] = m["userdevice"].decode()
    m["vm-name"] = pct_decode(m["vm-name"])
    m["disk-name"] = pct_decode(m["disk-name"])
    return m


def _uuid(v, k):
    s = v.decode("ascii", "replace")
    if not is_uuid(s):
        raise FormatError("%s %r is not a uuid" % (k, v))
    return s


# -- changed -----------------------------------------------------------

def format_changed(blocks, n):
    """A `changed` file for the set BLOCKS of a disk of N blocks:
    ceil(N/8) bytes, block i set when (byte[i/8] >> (7 - i%8)) & 1."""
    out = bytearray((n + 7) // 8)
    for i in blocks:
        if not 0 <= i < n:
            raise ValueError("block %d outside 0..%d" % (i, n))
        out[i // 8] |= 1 << (7 - i % 8)
    return bytes(out)


def parse_changed(b, n):
    """The set a `changed` file holds, for a disk of N blocks; a wrong
    length or a padding bit set is a FormatError."""
    if len(b) != (n + 7) // 8:
        raise FormatError("changed is %d bytes, not ceil(%d/8) = %d"
                          % (len(b), n, (n + 7) // 8))
    s = {i for i in range(len(b) * 8) if (b[i // 8] >> (7 - i % 8)) & 1}
    pad = [i for i in s if i >= n]
    if pad:
        raise FormatError("changed has padding bits set: %s" % pad)
    return s


# -- index -------------------------------------------------------------

def index_header():
    """The first record: CBTFSIX1, 24 zero bytes, XXH3-64 of bytes 0-31."""
    h = INDEX_MAGIC + bytes(24)
    return h + struct.pack("<Q", xxh3_64(h))


def encode_record(block, count, kind, sum16=None):
    """One 40-byte record: first block, count, kind, the XXH3-128 of the
    block for DATA (16 zero bytes for ZERO), XXH3-64 of bytes 0-31."""
    if sum16 is None:
        sum16 = bytes(16)
    if len(sum16) != 16:
        raise ValueError("a checksum is 16 bytes")
    head = struct.pack("<QII", block, count, kind) + sum16
    return head + struct.pack("<Q", xxh3_64(head))


def data_record(block, content):
    """A DATA record for block BLOCK holding CONTENT (65536 bytes)."""
    if len(content) != BLOCK:
        raise ValueError("a stored block is always 65536 bytes")
    return encode_record(block, 1, DATA, xxh3_128_canonical(content))


def zero_record(block, count=1):
    return encode_record(block, count, ZERO)


class Index:
    """What an `index` file says, read as FORMAT.md's readers do.

    records   good records in order: dicts block, count, kind, sum, at
              (the record number, 1 = the first after the header)
    damaged   record numbers whose check failed with a good record after
              them (skipped; damage)
    torn      bytes after the last good record that are not good records
              (the torn tail of an interrupted append)
    senseless good records that make no sense (past the end, unknown
              kind, DATA with n != 1): any makes the layer damaged
    odd       good ZERO records whose bytes 16-31 are not 0 (FORMAT.md
              says they are 0, but does not call a record damaged for it)
    """

    def __init__(self, b, n):
        if len(b) < REC or b[:REC] != index_header():
            raise FormatError("index header is %r, not %r"
                              % (b[:REC], index_header()))
        self.records, self.damaged, self.senseless, self.odd = [], [], [], []
        bad = []
        end = REC
        for at in range(1, len(b) // REC):
            r = b[at * REC:(at + 1) * REC]
            if struct.unpack("<Q", r[32:])[0] != xxh3_64(r[:32]):
                bad.append(at)
                continue
            block, count, kind = struct.unpack("<QII", r[:16])
            rec = {"block": block, "count": count, "kind": kind,
                   "sum": r[16:32], "at": at}
            if count == 0 or block >= n or count > n - block \
                    or kind not in (DATA, ZERO) \
                    or (kind == DATA and count != 1):
                self.senseless.append(rec)
            elif kind == ZERO and r[16:32] != bytes(16):
                self.odd.append(rec)
            self.records.append(rec)
            self.damaged += bad
            bad = []
            end = (at + 1) * REC
        self.torn = len(b) - end

    def present(self):
        """{block: record} of the blocks present: the newest good record
        naming a block (FORMAT.md: blocks [b, b+n) are present)."""
        out = {}
        for r in self.records:
            for blk in range(r["block"], r["block"] + r["count"]):
                out[blk] = r
        return out


# -- verified ----------------------------------------------------------

def format_verified(snapshot, when, verdict):
    """One `verified` line: <snapshot> <unix-time> <verdict> <check>,
    check the XXH3-64 of the bytes before its space."""
    body = ("%s %d %s" % (snapshot, when, verdict)).encode()
    return body + (" %s\n" % hex16(xxh3_64(body))).encode()


def _verified_lines(b):
    """(good, ignored): the good lines of a `verified` note as
    (snapshot, time, word), and the raw lines ignored."""
    good, ignored = [], []
    lines = b.split(b"\n")
    tail = lines.pop()                  # "" when the file ends with \n
    if tail:
        ignored.append(tail)
    for line in lines:
        m = re.match(rb"^([0-9a-fA-F-]{36}) ([0-9]+) ([a-z0-9:]+) ([0-9a-fA-F]{16})$",
                     line)
        w = m.group(3).decode() if m else ""
        if not m or int(m.group(4), 16) != xxh3_64(line[:-17]) \
                or not is_uuid(m.group(1).decode()) \
                or not (w in VERDICTS or re.match(r"^md5:[0-9a-f]{32}$", w)):
            ignored.append(line)
            continue
        good.append((m.group(1).decode(), int(m.group(2)), w))
    return good, ignored


def parse_verified(b):
    """(good, ignored): the verdict lines whose check matches, as
    (snapshot, time, verdict) in order, and the raw lines ignored (a
    check that fails, or a last line without its newline).  Lines
    recording the host's checksum are neither: see parse_md5s."""
    good, ignored = _verified_lines(b)
    return [g for g in good if g[2] in VERDICTS], ignored


def parse_md5s(b):
    """{snapshot: (md5, time)}: the newest good `md5:` line about each
    (the host's VDI.checksum a check compared the image with)."""
    return {snap: (w[4:], t) for snap, t, w in _verified_lines(b)[0]
            if w.startswith("md5:")}


def verdicts(b):
    """{snapshot: verdict}: the newest good line about each."""
    return {snap: v for snap, _, v in parse_verified(b)[0]}


# -- manifests ---------------------------------------------------------

def split_manifests(b):
    """The copies in a `manifests` file: split at every `cbtfs-layer `
    that starts a line (FORMAT.md `manifests`).  Each copy is appended
    as a newline and then the manifest, so the newline before the next
    copy is not part of a piece."""
    starts = [m.start() for m in re.finditer(rb"(?:^|(?<=\n))cbtfs-layer ", b)]
    pieces = []
    for i, s in enumerate(starts):
        e = starts[i + 1] - 1 if i + 1 < len(starts) else len(b)
        pieces.append(b[s:e])
    return pieces


def manifests_append_bytes(manifest):
    """What is appended to `manifests` for a new layer."""
    return b"\n" + manifest


# -- object stores -----------------------------------------------------

def parse_index_object(b, disk):
    """An object store's index object (FORMAT.md, Object stores,
    "Blocks": "CBTFS-I2", the packs it names and which block is at each
    of their places, the core's index records, an XXH3-64 of all that):
    (the records' bytes, [(pack key under the prefix, blocks)])."""
    if b[:8] != b"CBTFS-I2" or len(b) < 28:
        raise FormatError("an index object begins %r" % b[:8])
    if struct.unpack_from("<Q", b, len(b) - 8)[0] != xxh3_64(b[:-8]):
        raise FormatError("an index object fails its check")
    npacks, = struct.unpack_from("<I", b, 8)
    q, named = 12, []
    for _ in range(npacks):
        owner = b[q:q + 36].decode()
        version, seq, n = struct.unpack_from("<III", b, q + 36)
        q += 48
        named.append(("packs/%s/%s.%010d.%010d" % (disk, owner, version, seq),
                      struct.unpack_from("<%dQ" % n, b, q)))
        q += 8 * n
    length, = struct.unpack_from("<Q", b, q)
    recs = b[q + 8:q + 8 + length]
    if q + 8 + length + 8 != len(b):
        raise FormatError("an index object of %d bytes says %d of records"
                          % (len(b), length))
    return recs, named


# -- whole store -------------------------------------------------------

class Layer:
    """One layer, read whole and checked (FORMAT.md `layer`, `changed`,
    `index`, `data`): a directory store's layer FOLDER, or, given PARTS,
    an object store's (FORMAT.md, Object stores): (manifest bytes, the
    `set` object's bytes or None, the index's bytes, a function giving
    the 65536 bytes stored for a present DATA block).  damaged: why
    FORMAT.md would call the layer damaged, or None."""

    def __init__(self, folder, parts=None):
        self.folder = folder
        self.damaged = None
        if parts is None:
            with open(os.path.join(folder, "layer"), "rb") as f:
                self.manifest_bytes = f.read()
            cpath = os.path.join(folder, "changed")
            changed = None
            if os.path.exists(cpath):
                with open(cpath, "rb") as f:
                    changed = f.read()
            with open(os.path.join(folder, "index"), "rb") as f:
                index = f.read()
            self._read = self._read_data
        else:
            self.manifest_bytes, changed, index, self._read = parts
        self.meta = parse_manifest(self.manifest_bytes)
        self.size = self.meta["size"]
        self.n = nblocks(self.size)
        if self.meta["blocks"] == "all":
            if changed is not None:
                raise FormatError("%s: a changed set with blocks all" % folder)
            self.set = set(range(self.n))
        else:
            if changed is None:
                raise FormatError("%s: no changed set" % folder)
            self.set = parse_changed(changed, self.n)
        self.index = Index(index, self.n)
        if self.index.senseless:
            self.damaged = "senseless index records %s" % self.index.senseless
        self.present = self.index.present()

    def _read_data(self, b):
        fd = os.open(os.path.join(self.folder, "data"), os.O_RDONLY)
        try:
            return os.pread(fd, BLOCK, b * BLOCK)
        finally:
            os.close(fd)

    def missing(self):
        return sorted(self.set - set(self.present))

    def read_stored(self, b):
        """The 65536 bytes of present block B, checked against its
        record's XXH3-128 (FORMAT.md invariant 3); FormatError if not."""
        r = self.present[b]
        if r["kind"] == ZERO:
            return bytes(BLOCK)
        got = self._read(b)
        if len(got) != BLOCK:
            raise FormatError("%s/data: block %d is %d bytes, not 65536"
                              % (self.folder, b, len(got)))
        if xxh3_128_canonical(got) != r["sum"]:
            raise FormatError("%s/data: block %d fails its checksum"
                              % (self.folder, b))
        return got


class Store:
    """A whole store read with this module alone: the directory PATH, or,
    given OBJECTS, an object store at PATH (s3://…) whose objects are
    OBJECTS: (their keys under its prefix, a function giving an
    object's bytes)."""

    def __init__(self, path, objects=None):
        self.path = path
        self.disks = {}                 # disk uuid -> {snapshot: Layer}
        if objects is not None:
            self._read_objects(*objects)
            return
        with open(os.path.join(path, "cbtfs-store"), "rb") as f:
            self.marker = f.read()
        self.format, self.id = parse_marker(self.marker)
        if self.format not in (1, 2):
            raise FormatError("store format %d" % self.format)
        ddir = os.path.join(path, "disks")
        for d in sorted(os.listdir(ddir)) if os.path.isdir(ddir) else ():
            if not is_uuid(d) or not os.path.isdir(os.path.join(ddir, d)):
                continue                # only uuid names are read
            layers = {}
            for s in sorted(os.listdir(os.path.join(ddir, d))):
                p = os.path.join(ddir, d, s)
                if is_uuid(s) and os.path.isdir(p):
                    layers[s] = Layer(p)
            self.disks[d] = layers

    def _read_objects(self, keys, get):
        # FORMAT.md, Object stores: the marker is a directory store's;
        # a layer is its root "cbtfs-root 1 V" and manifest, version V's
        # set and index objects, and the packs those name.
        self.marker = get("cbtfs-store")
        self.format, self.id = parse_marker(self.marker)
        if self.format != 2:
            raise FormatError("store format %d" % self.format)
        keys = set(keys)
        packs = {}

        def block_of(place):
            key, slot = place
            if key not in packs:
                packs[key] = get(key)
                if packs[key] is None:
                    raise FormatError("%s: no such pack" % key)
            return packs[key][slot * BLOCK:(slot + 1) * BLOCK]

        for k in sorted(keys):
            part = k.split("/")
            if part[0] != "roots" or len(part) != 3 \
                    or not (is_uuid(part[1]) and is_uuid(part[2])):
                continue
            head, _, manifest = get(k).partition(b"\n")
            m = re.match(rb"^cbtfs-root 1 ([0-9]{10})$", head)
            if not m:
                raise FormatError("%s begins %r" % (k, head))
            ver = "layers/%s/%s/%s/" % (part[1], part[2], m.group(1).decode())
            index = get(ver + "i/0000000000")
            if index is None:
                raise FormatError("%s: no index object 0" % ver)
            where = {}
            seq = 1
            while ver + "i/%010d" % seq in keys:
                recs, named = parse_index_object(get(ver + "i/%010d" % seq),
                                                 part[1])
                index += recs
                for key, blocks in named:
                    for slot, b in enumerate(blocks):
                        if b != (1 << 64) - 1:
                            where[b] = (key, slot)
                seq += 1
            changed = get(ver + "set") if ver + "set" in keys else None
            lay = Layer(k, (manifest, changed, index,
                            lambda b, w=where: block_of(w[b]) if b in w
                            else b""))
            lay.places = where
            self.disks.setdefault(part[1], {})[part[2]] = lay

    def layer(self, snapshot):
        for layers in self.disks.values():
            if snapshot in layers:
                return layers[snapshot]
        raise KeyError(snapshot)

    def path_of(self, layer):
        """The layers a point reads: L, parent(L), ... (FORMAT.md
        "Layers and points in time")."""
        out = [layer]
        layers = self.disks[layer.meta["disk"]]
        while out[-1].meta["parent"] != "-":
            p = out[-1].meta["parent"]
            if p not in layers:
                break                   # past the end of the path: zeros
            out.append(layers[p])
        return out

    def point_block(self, layer, b):
        """Block B of LAYER's point in time (65536 bytes; the image ends at
        the layer's size): the newest layer on its path whose set holds B
        gives it; none: zeros.  Raises Missing or FormatError."""
        for lay in self.path_of(layer):
            if b in lay.set:
                if lay.damaged:
                    raise FormatError("layer %s is damaged: %s"
                                      % (lay.meta["snapshot"], lay.damaged))
                if b not in lay.present:
                    raise Missing("block %d of %s" % (b, lay.meta["snapshot"]))
                return lay.read_stored(b)
        return bytes(BLOCK)

    def point_blocks(self, layer):
        """Every block of LAYER's point image, in order, the last cut to
        the layer's size."""
        for b in range(layer.n):
            blk = self.point_block(layer, b)
            yield blk[:min(BLOCK, layer.size - b * BLOCK)]


# -- writing -----------------------------------------------------------

def write_file(path, data, mode=FILE_MODE):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def append_file(path, data, mode=FILE_MODE):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def make_dir(path):
    os.mkdir(path, DIR_MODE)
    os.chmod(path, DIR_MODE)


def create_store(path, store_id):
    """A new empty store (FORMAT.md layout): the folder, its marker, the
    lock file, tmp/ and disks/."""
    make_dir(path)
    write_file(os.path.join(path, "cbtfs-store"), format_marker(store_id))
    write_file(os.path.join(path, "lock"), b"")
    make_dir(os.path.join(path, "tmp"))
    make_dir(os.path.join(path, "disks"))


def write_layer(store, meta, changed, blocks, records):
    """Create one layer as FORMAT.md says (invariant 1: built in tmp/,
    renamed into disks/<disk>/) and append its manifest's copy to the
    disk's `manifests`.  META: as format_manifest; CHANGED: a set of
    blocks (None for blocks all); BLOCKS: {block: 65536 bytes} written to
    `data`; RECORDS: the 40-byte records after the header.  Returns the
    manifest's bytes."""
    n = nblocks(meta["size"])
    manifest = format_manifest(meta)
    tmp = os.path.join(store, "tmp", "%s.%d" % (meta["snapshot"], os.getpid()))
    make_dir(tmp)
    write_file(os.path.join(tmp, "layer"), manifest)
    if changed is not None:
        write_file(os.path.join(tmp, "changed"), format_changed(changed, n))
    write_file(os.path.join(tmp, "index"), index_header() + b"".join(records))
    fd = os.open(os.path.join(tmp, "data"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                 FILE_MODE)
    try:
        for b, content in sorted(blocks.items()):
            if len(content) != BLOCK:
                raise ValueError("a stored block is 65536 bytes")
            os.pwrite(fd, content, b * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)
    ddir = os.path.join(store, "disks", meta["disk"])
    if not os.path.isdir(ddir):
        make_dir(ddir)
    os.rename(tmp, os.path.join(ddir, meta["snapshot"]))
    append_file(os.path.join(ddir, "manifests"), manifests_append_bytes(manifest))
    return manifest
