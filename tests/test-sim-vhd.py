#!/usr/bin/env python3
"""Prove the stand-in's GET /export_raw_vdi faithful (docs/vhd-export.md)
with clients nobody here wrote: curl downloads, qemu-img (driver vpc)
reads the VHD back, and the result must equal the VDI byte for byte.

Also checks the stream's structure to the byte (footer and header fields,
checksums, CHS geometry, BAT entries, bitmaps, trailing footer, length
2560 + B + K*2097664), which blocks are included under vhd_source
hybrid and raw (an allocated all-zero block too; a disk whose size is
not a multiple of 2 MiB), a 2040 GiB sparse disk exported in time
proportional to its data, the 2 TiB one refused inside the body, the
slave's 302, 401/404/500 replies, every vhd_fault, and a client that
hangs up after the BAT.

Exit 0 when everything holds, 1 on the first failure, 77 when curl or
qemu-img is missing.
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import sim  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
BLOCK = 2 * MiB
WIRE_BLOCK = 512 + BLOCK
UNUSED = 0xFFFFFFFF
MAX_VHD = 2040 * GiB
SIZE0 = 40 * MiB                  # 20 blocks
SIZE1 = 5 * MiB + 64 * 1024       # 3 blocks, the last one partial
# (offset, bytes) guest writes on disk 0: blocks 0, 2, 6+7 (straddles),
# and 15 written with zeros (allocated, all zero).
WRITES0 = [(0, b"boot" * 128), (5 * MiB + 100, b"middle" * 200),
           (7 * BLOCK - 1000, bytes(range(256)) * 16),
           (15 * BLOCK + 4096, bytes(64 * 1024))]
BLOCKS0 = [0, 2, 6, 7, 15]


class Fail(Exception):
    pass


def check(cond, what, *detail):
    if not cond:
        raise Fail(what + (": " + " ".join(repr(d)[:300] for d in detail)
                           if detail else ""))


# ---- the VHD, read independently of tests/sim/vhd.py -------------------------

def vhd_checksum(data, at):
    return ~(sum(data) - sum(data[at:at + 4])) & 0xFFFFFFFF


def chs(size):
    """ocaml-vhd Geometry.of_sectors, as docs/vhd-export.md gives it."""
    s = min(size // 512, 65535 * 16 * 255)
    if s > 65535 * 16 * 63:
        spt, h, cth = 255, 16, s // 255
    else:
        spt, cth = 17, s // 17
        h = max((cth + 1023) // 1024, 4)
        if cth >= h * 1024 or h > 16:
            spt, h, cth = 31, 16, s // 31
        if cth >= h * 1024:
            spt, h, cth = 63, 16, s // 63
    return cth // h, h, spt


def parse_vhd(data, current_size, checksum_delta=0):
    """Check DATA against docs/vhd-export.md ("The stream", "The fields
    cbtfs reads and checks"); return (N, B, included block list)."""
    check(len(data) >= 2560, "stream too short", len(data))
    f = data[:512]
    (cookie, features, version, data_offset, ts, app, app_ver, host_os,
     orig, cur, cyl, heads, spt, dtype, csum, uid, saved) = struct.unpack(
        ">8sIIQI4sIIQQHBBII16sB", f[:85])
    check((cookie, features, version, data_offset, ts, app, app_ver, host_os)
          == (b"conectix", 2, 0x10000, 512, 0, b"caml", 1, 0),
          "footer fixed fields", cookie, features, version, data_offset, ts,
          app, app_ver, host_os)
    check(orig == cur == current_size, "footer sizes", orig, cur, current_size)
    check((cyl, heads, spt) == chs(current_size), "footer CHS",
          (cyl, heads, spt), chs(current_size))
    check(dtype == 3 and saved == 0 and f[85:] == bytes(427),
          "disk type 3, saved_state 0, reserved zero", dtype, saved)
    check(csum == (vhd_checksum(f, 64) + checksum_delta) & 0xFFFFFFFF,
          "footer checksum", csum, vhd_checksum(f, 64))
    check(uid != bytes(16) and (uid[6] >> 4) == 4, "footer uid is a v4 uuid",
          uid.hex())
    h = data[512:1536]
    (hcookie, hdo, table, hver, n, bsize, hcsum, puid, pts) = struct.unpack(
        ">8sQQIIII16sI", h[:60])
    check((hcookie, hdo, table, hver, bsize)
          == (b"cxsparse", 0xFFFFFFFFFFFFFFFF, 2048, 0x10000, BLOCK),
          "header fixed fields", hcookie, hdo, table, hver, bsize)
    check(n == (current_size + BLOCK - 1) // BLOCK, "max_table_entries", n)
    check(puid == bytes(16) and pts == 0 and h[60:] == bytes(964),
          "no parent, zero locators and reserved")
    check(hcsum == vhd_checksum(h, 36), "header checksum", hcsum)
    check(data[1536:2048] == bytes(512), "zero sector before the BAT")
    b = (4 * n + 511) // 512 * 512
    bat = struct.unpack(">%dI" % (b // 4), data[2048:2048 + b])
    check(all(e == UNUSED for e in bat[n:]), "BAT padding is 0xFFFFFFFF")
    included = [i for i in range(n) if bat[i] != UNUSED]
    k = len(included)
    check(len(data) == 2560 + b + k * WIRE_BLOCK, "stream length",
          len(data), 2560 + b + k * WIRE_BLOCK)
    first = (2048 + b) // 512
    for j, i in enumerate(included):
        check(bat[i] == first + j * 4097, "BAT entry of block %d" % i, bat[i])
        at = bat[i] * 512
        check(data[at:at + 512] == b"\xff" * 512, "bitmap of block %d" % i)
    check(data[-512:] == data[:512], "trailing footer == leading footer")
    return n, b, included


def redirected(env, url, to, what):
    """URL answers xapi's 302 to TO (a base URL) with the same query,
    and curl -L then gets a 200: the body it got."""
    rc, replies, body, _ = env.curl(url)
    want = "%s/export_raw_vdi?%s" % (to, urllib.parse.urlsplit(url).query)
    check(replies[0][2].decode() == "HTTP/1.1 302 Found\r\nConnection: close\r\n"
          "Cache-Control: no-cache, no-store\r\nLocation: %s\r\n\r\n" % want
          and body == b"", what + ": the 302", replies[0][2])
    rc, replies, body, _ = env.curl(url, "-L")
    check(rc == 0 and [r[0] for r in replies] == ["HTTP/1.1 302 Found",
                                                   "HTTP/1.1 200 OK"],
          what + ": curl -L: 302 then 200", rc, [r[0] for r in replies])
    return body


def same_but_uid(a, b):
    """Equal streams but for the footers' checksum and uid (@64..84)."""
    def strip(x):
        return x[:64] + x[84:-512] + x[-512:-448] + x[-428:]
    return len(a) == len(b) and strip(a) == strip(b)


def block_data(data, n, b, included, i):
    """The 2 MiB of block I from the stream."""
    at = (2048 + b) + included.index(i) * WIRE_BLOCK + 512
    return data[at:at + BLOCK]


# ---- clients ------------------------------------------------------------------

class Env:
    def __init__(self, s, tmp):
        self.s = s
        self.tmp = tmp
        self.px = s.server_proxy()
        r = self.px.session.login_with_password("root", "secret", "1.0",
                                                "test-sim-vhd")
        check(r["Status"] == "Success", "login", r)
        self.session = r["Value"]
        self.n = 0

    def url(self, vdi, fmt="vhd", at=None, session=True, **extra):
        q = {}
        if session:
            q["session_id"] = self.session if session is True else session
        if vdi is not None:
            q["vdi"] = vdi
        if fmt is not None:
            q["format"] = fmt
        q.update(extra)
        return "%s/export_raw_vdi?%s" % (at or self.s.info["xapi_url"],
                                          urllib.parse.urlencode(q))

    def curl(self, url, *args):
        """(curl rc, [(status line, {header: value})...], body bytes)."""
        self.n += 1
        out = os.path.join(self.tmp, "out%d" % self.n)
        hdr = out + ".headers"
        r = subprocess.run(["curl", "-sS", "--cacert", self.s.info["ca_file"],
                            "-D", hdr, "-o", out] + list(args) + [url],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        with open(hdr, "rb") as f:
            replies = parse_headers(f.read())
        body = b""
        if os.path.exists(out):
            with open(out, "rb") as f:
                body = f.read()
            os.unlink(out)
        return r.returncode, replies, body, out

    def stats(self):
        return self.s.control("stats")["http"]["export_raw_vdi"]

    def set(self, **knobs):
        self.s.control("set", **knobs)


def parse_headers(raw):
    """curl -D output: one (status line, [(name, value)], raw) per reply."""
    replies = []
    for block in raw.split(b"\r\n\r\n"):
        if not block.strip():
            continue
        lines = block.decode("latin-1").split("\r\n")
        hdrs = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:]]
        replies.append((lines[0], hdrs, block + b"\r\n\r\n"))
    return replies


def header(reply, name):
    vals = [v for k, v in reply[1] if k.lower() == name.lower()]
    return vals[0] if vals else None


def qemu(vhd_path, *args):
    r = subprocess.run(["qemu-img"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    check(r.returncode == 0, "qemu-img %s" % " ".join(args),
          r.stderr.decode())
    return r.stdout


def qemu_opts(path):
    return "driver=vpc,force_size_calc=current_size,file.filename=" + path


def read_file(path, size=None):
    with open(path, "rb") as f:
        data = f.read()
    return data if size is None else data.ljust(size, b"\0")


def vhd_to_raw(env, data, current_size):
    """qemu-img's view of the VHD DATA: (raw bytes, virtual size, CHS size)."""
    path = os.path.join(env.tmp, "q.vhd")
    with open(path, "wb") as f:
        f.write(data)
    raw = os.path.join(env.tmp, "q.raw")
    qemu(path, "convert", "-O", "raw", "--image-opts", qemu_opts(path), raw)
    info = json.loads(qemu(path, "info", "--output=json", "--image-opts",
                           qemu_opts(path)))
    # Without force_size_calc qemu takes the size from CHS: the geometry
    # fields sit where qemu expects them.
    chs_info = json.loads(qemu(path, "info", "--output=json", path))
    out = read_file(raw)
    os.unlink(raw)
    os.unlink(path)
    return out, info["virtual-size"], chs_info["virtual-size"]


# ---- the checks ---------------------------------------------------------------

def export_ok(env, vdi, fmt="vhd", **kw):
    rc, replies, body, _ = env.curl(env.url(vdi, fmt, **kw))
    check(rc == 0, "curl rc for a good export", rc)
    check(len(replies) == 1 and replies[0][0] == "HTTP/1.1 200 OK",
          "one 200 reply", [r[0] for r in replies])
    return replies[0], body


def check_200_headers(reply, uuid, fmt):
    ctype = {"vhd": "application/vhd", "raw": "application/octet-stream"}[fmt]
    want = ("HTTP/1.1 200 OK\r\nConnection: close\r\n"
            "Cache-Control: no-cache, no-store\r\ntask-id:OpaqueRef:")
    raw = reply[2].decode("latin-1")
    check(raw.startswith(want), "200 headers start", raw)
    tail = raw[len(want):].split("\r\n", 1)[1]
    check(tail == "content-type:%s\r\ncontent-disposition: attachment; "
          'filename="%s.%s"\r\n\r\n' % (ctype, uuid, fmt),
          "200 headers end", tail)


def test_small(env, d0, d1):
    s = env.s
    for off, data in WRITES0:
        s.control("write", vdi=d0["vdi"], offset=off,
                  data_b64=base64.b64encode(data).decode())
    # Disk 1: data only in its last, partial block.
    s.control("write", vdi=d1["vdi"], offset=SIZE1 - 4096,
              data_b64=base64.b64encode(b"tail" * 1024).decode())
    content0 = read_file(d0["path"])
    content1 = read_file(d1["path"])
    check(content0[15 * BLOCK:16 * BLOCK] == bytes(BLOCK), "block 15 is zeros")

    # -- hybrid: only blocks with allocated data --------------------------------
    st0 = env.stats()
    reply, body = export_ok(env, d0["vdi"])
    check_200_headers(reply, d0["vdi"], "vhd")
    n, b, inc = parse_vhd(body, SIZE0)
    check(n == 20 and b == 512, "N and B of 40 MiB", n, b)
    check(inc == BLOCKS0, "hybrid: blocks with data (zero block too)", inc)
    check(block_data(body, n, b, inc, 15) == bytes(BLOCK),
          "the allocated zero block is sent as zeros")
    raw, vsize, chs_size = vhd_to_raw(env, body, SIZE0)
    check(vsize == SIZE0, "qemu-img virtual size", vsize)
    check(raw == content0, "qemu-img's content == the VDI's")
    c, h, spt = chs(SIZE0)
    check((c, h, spt) == (963, 5, 17) and chs_size == c * h * spt * 512,
          "qemu reads our CHS", chs_size)
    st1 = env.stats()
    check(st1["requests"] == st0["requests"] + 1
          and st1["bytes"] == st0["bytes"] + len(body),
          "stats count the request and the body bytes", st0, st1, len(body))

    # vdi given as a ref, format in capitals, session as a cookie only.
    rc, replies, body_ref, _ = env.curl(
        env.url(d0["vdi_ref"], "VHD", session=False),
        "-b", "session_id=" + env.session)
    check(rc == 0 and replies[0][0] == "HTTP/1.1 200 OK",
          "ref + VHD + cookie session", rc, replies)
    check(parse_vhd(body_ref, SIZE0)[2] == BLOCKS0, "same blocks by ref")
    check(same_but_uid(body_ref, body), "same stream but the uid and checksum")
    check(body_ref[68:84] != body[68:84], "a fresh uid per export")

    # -- the partial last block: padded to 2 MiB, footer says the size -------
    _, body1 = export_ok(env, d1["vdi"])
    n1, b1, inc1 = parse_vhd(body1, SIZE1)
    check(n1 == 3 and inc1 == [2], "odd disk: only its partial block", inc1)
    last = block_data(body1, n1, b1, inc1, 2)
    check(last == content1[2 * BLOCK:].ljust(BLOCK, b"\0"),
          "partial block padded with zeros")
    raw1, vsize1, _ = vhd_to_raw(env, body1, SIZE1)
    check(vsize1 == SIZE1 and raw1 == content1, "qemu: odd disk content",
          vsize1)

    # -- raw source: every block, size rounded up to whole blocks ------------
    env.set(vhd_source="raw")
    _, body = export_ok(env, d0["vdi"])
    n, b, inc = parse_vhd(body, SIZE0)
    check(inc == list(range(20)), "raw source: all N blocks", inc)
    raw, vsize, _ = vhd_to_raw(env, body, SIZE0)
    check(raw == content0 and vsize == SIZE0, "qemu: raw-source content")
    _, body1 = export_ok(env, d1["vdi"])
    n1, b1, inc1 = parse_vhd(body1, 3 * BLOCK)
    check(inc1 == [0, 1, 2], "raw source, odd disk: 3 blocks", inc1)
    raw1, vsize1, _ = vhd_to_raw(env, body1, 3 * BLOCK)
    check(vsize1 == 3 * BLOCK and raw1 == content1.ljust(3 * BLOCK, b"\0"),
          "qemu: raw-source odd disk, rounded up", vsize1)
    env.set(vhd_source="hybrid")

    # -- format=raw -------------------------------------------------------------
    reply, body = export_ok(env, d1["vdi"], "raw")
    check_200_headers(reply, d1["vdi"], "raw")
    check(body == content1, "format=raw is the content", len(body))
    reply, body = export_ok(env, d0["vdi"], None)
    check_200_headers(reply, d0["vdi"], "raw")
    check(body == content0, "no format means raw")


def test_big(env):
    s = env.s
    vm = s.control("create_vm", name="big", disks=[
        {"name": "max", "size": MAX_VHD}, {"name": "2T", "size": 2 << 40}])
    big, huge = vm["disks"]
    writes = [(0, 1 * MiB), (700 * GiB + 3 * MiB, 2 * MiB),
              (MAX_VHD - 1 * MiB, 1 * MiB)]
    for off, length in writes:
        s.control("write", vdi=big["vdi"], offset=off,
                  data_b64=base64.b64encode(os.urandom(length)).decode())
    want = sorted({i for off, length in writes
                   for i in range(off // BLOCK, (off + length - 1) // BLOCK + 1)})
    t0 = time.monotonic()
    _, body = export_ok(env, big["vdi"])
    secs = time.monotonic() - t0
    n, b, inc = parse_vhd(body, MAX_VHD)
    check(n == MAX_VHD // BLOCK and inc == want, "2040 GiB: blocks", n, inc,
          want)
    check(secs < 10, "2040 GiB sparse export is quick", secs)
    for off, length in writes:
        first, last = off // BLOCK, (off + length - 1) // BLOCK
        got = b"".join(block_data(body, n, b, inc, i)
                       for i in range(first, last + 1))
        got = got[off - first * BLOCK:][:length]
        with open(big["path"], "rb") as f:
            f.seek(off)
            check(got == f.read(length), "2040 GiB: data at %d" % off)
    # qemu finds data exactly in the included blocks.
    path = os.path.join(env.tmp, "big.vhd")
    with open(path, "wb") as f:
        f.write(body)
    m = json.loads(qemu(path, "map", "--output=json", "--image-opts",
                        qemu_opts(path)))
    data_blocks = sorted({i for e in m if e["data"]
                          for i in range(e["start"] // BLOCK,
                                         (e["start"] + e["length"]) // BLOCK)})
    check(data_blocks == want, "qemu-img map: data blocks", data_blocks)
    os.unlink(path)

    # Over max_vhd_size: 200, then xapi's 500 reply inside the body.
    rc, replies, body, _ = env.curl(env.url(huge["vdi"]))
    check(replies[0][0] == "HTTP/1.1 200 OK", "2 TiB: 200 first", replies)
    check(body.startswith(b"HTTP/1.1 500 Internal Error\r\n")
          and b"VDI_TOO_LARGE: [ %s; %d ]" % (huge["vdi_ref"].encode(), MAX_VHD)
          in body, "2 TiB: VDI_TOO_LARGE inside the body", body[:400])


def test_errors(env, d0, d1):
    s = env.s
    # Bad, missing session: 401 with xapi's headers.
    for url, what in ((env.url(d0["vdi"], session="OpaqueRef:nope"), "bad"),
                      (env.url(d0["vdi"], session=False), "no")):
        rc, replies, body, _ = env.curl(url)
        r = replies[0]
        check(r[0] == "HTTP/1.1 401 Unauthorised", what + " session: 401", r[0])
        check(header(r, "WWW-Authenticate") == 'Basic realm="VDI.export_raw"'
              and header(r, "connection") == "close"
              and int(header(r, "content-length")) == len(body)
              and body.startswith(b"<html><body><h1>HTTP 401"),
              what + " session: 401 headers and body", r, body)
    # Unknown VDI: 500.
    rc, replies, body, _ = env.curl(env.url("no-such-vdi"))
    check(replies[0][0] == "HTTP/1.1 500 Internal Error"
          and b"UUID_INVALID: [ VDI; no-such-vdi ]" in body,
          "unknown VDI: 500", replies[0][0], body)
    # tar, qcow2, nonsense, base=: HTTP/1.0 404 with no body.
    for url in (env.url(d0["vdi"], "tar"), env.url(d0["vdi"], "qcow2"),
                env.url(d0["vdi"], "zip"),
                env.url(d0["vdi"], "vhd", base=d0["vdi"])):
        rc, replies, body, _ = env.curl(url)
        check(replies[0][2] == b"HTTP/1.0 404 Not Found\r\nConnection: close"
              b"\r\nCache-Control: no-cache, no-store\r\n\r\n" and body == b"",
              "404 for " + url, replies, body)

    # The slave: 302 to the master with the same query; curl -L follows.
    body = redirected(env, env.url(d0["vdi"], at=s.info["slave_url"]),
                      s.info["xapi_url"], "slave to the master")
    _, direct = export_ok(env, d0["vdi"])
    check(parse_vhd(body, SIZE0)[2] == BLOCKS0 and same_but_uid(body, direct),
          "curl -L gets the master's stream")
    rc, replies, _, _ = env.curl(env.url("no-such-vdi",
                                         at=s.info["slave_url"]))
    check(replies[0][0].startswith("HTTP/1.1 500"), "slave: unknown VDI 500")

    # vhd_host=slave: the SR is the slave's, so the master sends the
    # client there, and the slave serves it.
    s.control("set", vhd_host="slave")
    before = env.stats()
    body = redirected(env, env.url(d0["vdi"]), s.info["slave_url"],
                      "master to the slave")
    got = env.stats()
    s.control("set", vhd_host="master")
    check(same_but_uid(body, direct), "curl -L gets the slave's stream")
    check(got["redirects"] - before["redirects"] == 2
          and got["slave_served"] - before["slave_served"] == 1,
          "stats count the redirects and the slave's export", got)

    # A VDI whose data is gone: 200, then xapi's 500 reply in the body.
    r = env.px.VDI.enable_cbt(env.session, d1["vdi_ref"])
    check(r["Status"] == "Success", "enable_cbt", r)
    r = env.px.VDI.snapshot(env.session, d1["vdi_ref"])
    check(r["Status"] == "Success", "snapshot", r)
    snap = r["Value"]
    r = env.px.VDI.data_destroy(env.session, snap)
    check(r["Status"] == "Success", "data_destroy", r)
    rc, replies, body, _ = env.curl(env.url(snap))
    check(replies[0][0] == "HTTP/1.1 200 OK"
          and body.startswith(b"HTTP/1.1 500 Internal Error\r\n")
          and b"VDI_INCOMPATIBLE_TYPE" in body,
          "cbt_metadata: 500 inside the 200 body", replies, body[:300])


def test_faults(env, d0):
    env.set(vhd_fault="missing")
    rc, replies, body, _ = env.curl(env.url(d0["vdi"]))
    check(replies[0][0] == "HTTP/1.0 404 Not Found" and body == b"",
          "fault missing: 404", replies)
    _, body = export_ok(env, d0["vdi"], "raw")
    check(len(body) == SIZE0, "fault missing: raw still works")

    env.set(vhd_fault="http500_body")
    for _ in range(2):            # every export, until reset
        rc, replies, body, _ = env.curl(env.url(d0["vdi"]))
        check(replies[0][0] == "HTTP/1.1 200 OK"
              and body.startswith(b"HTTP/1.1 500 Internal Error\r\n")
              and b"SR_BACKEND_FAILURE_46" in body,
              "fault http500_body", replies, body[:200])

    env.set(vhd_fault="truncate")
    rc, replies, body, _ = env.curl(env.url(d0["vdi"]))
    check(replies[0][0] == "HTTP/1.1 200 OK" and len(body) == 1536
          and body[:8] == b"conectix" and body[512:520] == b"cxsparse",
          "fault truncate: footer + header only", len(body), body[:8])

    env.set(vhd_fault="bad_checksum")
    rc, replies, body, _ = env.curl(env.url(d0["vdi"]))
    check(rc == 0, "bad_checksum: curl ok", rc)
    parse_vhd(body, SIZE0, checksum_delta=1)
    try:
        parse_vhd(body, SIZE0)
    except Fail:
        pass
    else:
        raise Fail("bad_checksum: the checksum is right")

    env.set(vhd_fault="none")
    _, body = export_ok(env, d0["vdi"])
    check(parse_vhd(body, SIZE0)[2] == BLOCKS0, "fault reset: good again")
    try:
        env.set(vhd_fault="sometimes")
    except sim.ControlError:
        pass
    else:
        raise Fail("a bad vhd_fault value was accepted")


def test_early_close(env):
    """A client that reads the head of a 1 GiB stream and hangs up."""
    s = env.s
    vm = s.control("create_vm", name="early", disks=[{"size": 1 * GiB}])
    d = vm["disks"][0]
    env.set(vhd_source="raw")     # every block: the full stream is ~1 GiB
    full = 2560 + 2048 + 512 * WIRE_BLOCK
    before = env.stats()["bytes"]
    u = urllib.parse.urlsplit(s.info["xapi_url"])
    target = urllib.parse.urlsplit(env.url(d["vdi"]))
    sock = s.ssl_context().wrap_socket(
        socket.create_connection((u.hostname, u.port), timeout=60),
        server_hostname=u.hostname)
    sock.sendall(("GET %s?%s HTTP/1.1\r\nHost: %s\r\n\r\n"
                  % (target.path, target.query, u.netloc)).encode())
    got = b""
    while b"\r\n\r\n" not in got or \
            len(got.split(b"\r\n\r\n", 1)[1]) < 4096:
        piece = sock.recv(65536)
        check(piece, "early: the stream ended", got[:200])
        got += piece
    head, body = got.split(b"\r\n\r\n", 1)
    check(head.startswith(b"HTTP/1.1 200 OK\r\n")
          and b"content-length" not in head.lower(), "early: 200, no length",
          head)
    check(body[:8] == b"conectix", "early: a VHD", body[:8])
    # Hang up with unread data: the kernel resets the connection.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()
    deadline = time.monotonic() + 30
    while "client went away" not in s.log_tail(5):
        check(time.monotonic() < deadline, "the export never noticed",
              s.log_tail())
        time.sleep(0.02)
    r = env.px.session.get_uuid(env.session, env.session)
    check(r["Status"] == "Success", "XML-RPC still works after", r)
    sent = env.stats()["bytes"] - before
    check(4096 <= sent < full // 8, "early: bytes sent far below the stream",
          sent, full)
    env.set(vhd_source="hybrid")


def run(s, tmp):
    env = Env(s, tmp)
    vm = s.control("create_vm", name="vhd-test", disks=[
        {"name": "even", "size": SIZE0}, {"name": "odd", "size": SIZE1}])
    d0, d1 = vm["disks"]
    test_small(env, d0, d1)
    test_errors(env, d0, d1)
    test_faults(env, d0)
    test_big(env)
    test_early_close(env)
    st = s.control("stats")["http"]["export_raw_vdi"]
    s.control("reset_stats")
    check(st["requests"] > 20 and
          s.control("stats")["http"]["export_raw_vdi"] == {
              "requests": 0, "bytes": 0, "redirects": 0, "slave_served": 0},
          "reset_stats zeroes the export counters", st)
    with open(s.log_path) as f:
        log = f.read()
    check(env.session not in log, "the session ref is never logged")
    check("Traceback" not in log, "no traceback in the stand-in's log")


def main():
    for tool in ("curl", "qemu-img"):
        if shutil.which(tool) is None:
            print("SKIP test-sim-vhd: %s missing (scripts/install-deps.sh)"
                  % tool)
            return 77
    tmp = tempfile.mkdtemp(prefix="cbtfs-vhd-")
    try:
        return sim.run_checks("test-sim-vhd", lambda s: run(s, tmp),
                              (Fail, subprocess.TimeoutExpired))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
