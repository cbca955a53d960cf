#!/usr/bin/env python3
"""Prove the XenServer stand-in's XAPI faithful with a client nobody here
wrote: XenServer's own Python SDK, XenAPI.py (from Debian's
python3-os-xenapi, unpacked into build/xenapi by scripts/install-deps.sh).

Covers login (and a wrong password), the calls XenAPI.py makes right after
login, VM discovery with the filters a backup client needs (templates,
snapshots, dom0, CD drives), CBT (enable, VM snapshots, guest writes,
list_changed_blocks with MSB-first bits and the right length, "same" and
"unrelated" errors, VDI_IN_USE, the live VDI as `to`, a grown disk, the
destruction of a middle metadata snapshot (the diff across the gap is
the OR of the two), of the oldest and of the newest, a CBT reset), get_nbd_info, checksum,
data_destroy (refused while the VM snapshot holds a VBD, accepted after
VM.destroy), VDI.destroy of a VM snapshot's disk (not refused: its VBD
is not attached), session expiry with XenAPI.py's automatic re-login, the
slave's HOST_IS_SLAVE, unknown methods and parameter counts -- and the raw
bytes of a few responses, so the wire-format claims of tests/sim/wire.py
are checked too.

Exit 0 when everything holds, 1 with a message on the first failure.
"""

import base64
import hashlib
import http.client
import os
import re
import sys
import urllib.parse
import xmlrpc.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "xenapi"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import sim  # noqa: E402

try:
    import XenAPI  # noqa: E402
except ImportError:
    sys.exit("test-sim-xenapi: build/xenapi/XenAPI.py missing; run "
             "scripts/install-deps.sh")

BLOCK = 65536
# 19 whole blocks plus 4 KiB: 20 blocks, a partial last one, and a bitmap of
# 3 bytes with 4 padding bits.
SIZE0 = 19 * BLOCK + 4096
SIZE1 = 1 << 20
WRITTEN = [0, 9, 17, 19]      # 19 is the last (partial) block


class Fail(Exception):
    pass


def check(cond, what, *detail):
    if not cond:
        raise Fail(what + (": " + " ".join(repr(d) for d in detail)
                           if detail else ""))


def expect_failure(fn, want, what):
    """FN() must raise XenAPI.Failure whose details equal (or start with) WANT."""
    try:
        got = fn()
    except XenAPI.Failure as e:
        d = list(e.details)
        check(d[:len(want)] == list(want), what + ": wrong error", d, want)
        return d
    raise Fail(what + ": expected failure %r, got %r" % (want, got))


def bits(bitmap):
    """Block indexes set in an MSB-first bitmap (docs/xapi.md, "The CBT
    bitmap")."""
    return [i for i in range(len(bitmap) * 8)
            if (bitmap[i >> 3] >> (7 - (i & 7))) & 1]


def lcb(x, vfrom, vto):
    """VDI.list_changed_blocks, decoded."""
    return base64.b64decode(x.xenapi.VDI.list_changed_blocks(vfrom, vto),
                            validate=True)


def bitmap_or(a, b, n):
    """A | B as N bytes, the shorter zero-extended (a grown disk)."""
    a, b = a.ljust(n, b"\0"), b.ljust(n, b"\0")
    return bytes(x | y for x, y in zip(a, b))


def raw_post(s, body, path="/"):
    """POST BODY with plain http.client; (status, content-type, body bytes)."""
    u = urllib.parse.urlsplit(s.info["xapi_url"])
    conn = http.client.HTTPSConnection(u.hostname, u.port,
                                       context=s.ssl_context(), timeout=30)
    conn.request("POST", path, body, {"Content-Type": "text/xml"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("content-type"), data


def raw_call(s, method, *params, path="/"):
    return raw_post(s, xmlrpc.client.dumps(tuple(params), method).encode(),
                    path)


ENVELOPE_OK = (b'<?xml version="1.0"?><methodResponse><params><param><value>'
               b'<struct><member><name>Status</name><value>Success</value>'
               b'</member><member><name>Value</name>')
ENVELOPE_END = b'</member></struct></value></param></params></methodResponse>'


def raw_value(s, method, *params):
    """The exact bytes of the Value of a successful call."""
    status, ctype, body = raw_call(s, method, *params)
    check(status == 200, "%s: HTTP status" % method, status)
    check(ctype == "text/xml", "%s: content-type" % method, ctype)
    check(body.startswith(ENVELOPE_OK) and body.endswith(ENVELOPE_END),
          "%s: success envelope not byte-exact" % method, body[:300])
    return body[len(ENVELOPE_OK):-len(ENVELOPE_END)]


def vdis_of(x, vm_ref):
    """{userdevice: VDI ref} of VM's disk VBDs; CD/empty VBDs are skipped
    (and counted)."""
    disks, cds = {}, 0
    for vbd in x.xenapi.VM.get_VBDs(vm_ref):
        r = x.xenapi.VBD.get_record(vbd)
        if r["type"] == "CD" or r["empty"] or r["VDI"] == "OpaqueRef:NULL":
            cds += 1
            continue
        disks[r["userdevice"]] = r["VDI"]
    return disks, cds


def run(s):
    info = s.info
    vm = s.control("create_vm", name="cbt-test-vm",
                   disks=[{"name": "system disk", "size": SIZE0},
                          {"name": "data disk", "size": SIZE1}])
    d0, d1 = vm["disks"]

    # -- login ------------------------------------------------------------
    x = XenAPI.Session(info["xapi_url"], transport=s.transport())
    expect_failure(lambda: x.xenapi.login_with_password("root", "wrong"),
                   ["SESSION_AUTHENTICATION_FAILED", "root"], "wrong password")
    check(x.handle is None, "no session after a failed login")
    x.xenapi.login_with_password("root", "secret", "1.0", "cbtfs-test")
    check(isinstance(x.handle, str) and x.handle.startswith("OpaqueRef:"),
          "session ref", x.handle)
    # XenAPI.py learnt the API version from pool/host calls right after login.
    check(x.API_version == "2.21", "API version via XenAPI.py", x.API_version)
    st = s.control("stats")
    for call in ("pool.get_all", "pool.get_master",
                 "host.get_API_version_major", "host.get_API_version_minor"):
        check(st["xapi"]["calls"].get(call) == 1, "XenAPI.py called " + call,
              st["xapi"]["calls"])
    check(st["sessions"] == {"active": 1, "logins": 1, "logouts": 0},
          "session counters", st["sessions"])

    # -- VM discovery ---------------------------------------------------------
    recs = x.xenapi.VM.get_all_records()
    check(any(r["is_a_template"] for r in recs.values()), "a template exists")
    check(any(r["is_control_domain"] for r in recs.values()), "dom0 exists")
    guests = {ref: r for ref, r in recs.items()
              if not r["is_a_template"] and not r["is_a_snapshot"]
              and not r["is_control_domain"]}
    check(list(guests) == [vm["vm_ref"]], "exactly our VM after filtering",
          [r["name_label"] for r in guests.values()])
    g = guests[vm["vm_ref"]]
    check(g["name_label"] == "cbt-test-vm" and g["uuid"] == vm["vm"],
          "VM name/uuid", g["name_label"], g["uuid"])
    check(g["power_state"] == "Running", "VM running", g["power_state"])
    check(x.xenapi.VM.get_by_uuid(vm["vm"]) == vm["vm_ref"], "VM.get_by_uuid")
    check(x.xenapi.VM.get_by_name_label("cbt-test-vm") == [vm["vm_ref"]],
          "VM.get_by_name_label")
    disks, cds = vdis_of(x, vm["vm_ref"])
    check(cds == 1, "one empty CD drive to skip", cds)
    check(disks == {"0": d0["vdi_ref"], "1": d1["vdi_ref"]}, "disk VBDs", disks)
    vdi0, vdi1 = d0["vdi_ref"], d1["vdi_ref"]
    r0 = x.xenapi.VDI.get_record(vdi0)
    # XAPI's int64 is bare decimal text: XML-RPC clients see a string.
    check(r0["virtual_size"] == str(SIZE0), "virtual_size (as text)",
          r0["virtual_size"])
    check(r0["type"] == "user" and r0["is_a_snapshot"] is False
          and r0["cbt_enabled"] is False, "live VDI record", r0)
    check(r0["snapshot_of"] == "OpaqueRef:NULL", "snapshot_of NULL")
    check(x.xenapi.VDI.get_name_label(vdi0) == "system disk", "VDI name")

    # -- CBT ----------------------------------------------------------------
    x.xenapi.VDI.enable_cbt(vdi0)
    x.xenapi.VDI.enable_cbt(vdi0)                 # idempotent
    check(x.xenapi.VDI.get_cbt_enabled(vdi0) is True, "cbt_enabled true")
    check(x.xenapi.VDI.get_cbt_enabled(vdi1) is False, "cbt off on disk 1")

    snap1 = x.xenapi.VM.snapshot(vm["vm_ref"], "backup base")
    s1 = x.xenapi.VM.get_record(snap1)
    check(s1["is_a_snapshot"] and s1["is_a_template"], "VM snapshot flags", s1)
    check(s1["snapshot_of"] == vm["vm_ref"], "snapshot_of the VM")
    check(snap1 in x.xenapi.VM.get_snapshots(vm["vm_ref"]), "VM.snapshots")
    sd1, cds = vdis_of(x, snap1)
    check(cds == 1 and set(sd1) == {"0", "1"}, "snapshot VBDs", sd1, cds)
    base0, base1 = sd1["0"], sd1["1"]
    b0 = x.xenapi.VDI.get_record(base0)
    check(b0["is_a_snapshot"] and b0["snapshot_of"] == vdi0, "base snapshot VDI",
          b0["is_a_snapshot"], b0["snapshot_of"])
    check(b0["cbt_enabled"] is True and b0["virtual_size"] == str(SIZE0),
          "base inherits cbt/size", b0["cbt_enabled"], b0["virtual_size"])
    check(isinstance(b0["snapshot_time"], xmlrpc.client.DateTime)
          and re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", b0["snapshot_time"].value),
          "snapshot_time is a compact dateTime", b0["snapshot_time"])
    check(x.xenapi.VDI.get_snapshot_time(base1).value == b0["snapshot_time"].value,
          "one snapshot_time for the whole VM snapshot")
    check(base0 in x.xenapi.VDI.get_snapshots(vdi0), "VDI.snapshots")
    expect_failure(lambda: x.xenapi.VDI.enable_cbt(base0),
                   ["OPERATION_NOT_ALLOWED", "VDI is a snapshot: " + base0],
                   "enable_cbt on a snapshot")

    # Guest writes: known blocks, one of them twice, data known to the test.
    image = bytearray(SIZE0)
    for n, blk in enumerate(WRITTEN):
        off = blk * BLOCK + 512 * n
        data = bytes([(blk * 7 + i) % 251 + 1 for i in range(1024)])
        s.control("write", vdi=d0["vdi"], offset=off,
                  data_b64=base64.b64encode(data).decode())
        image[off:off + len(data)] = data
    s.control("write", vdi=d0["vdi"], offset=9 * BLOCK + 4096,
              data_b64=base64.b64encode(b"again").decode())
    image[9 * BLOCK + 4096:9 * BLOCK + 4101] = b"again"

    snap2 = x.xenapi.VM.snapshot(vm["vm_ref"], "backup 1")
    sd2, _ = vdis_of(x, snap2)
    inc0, inc1 = sd2["0"], sd2["1"]

    b64 = x.xenapi.VDI.list_changed_blocks(base0, inc0)
    check(isinstance(b64, str), "bitmap comes as a plain string", type(b64))
    bm = base64.b64decode(b64, validate=True)
    nblocks = (SIZE0 + BLOCK - 1) // BLOCK
    check(len(bm) == (nblocks + 7) // 8 == 3, "bitmap length", len(bm))
    check(bits(bm) == WRITTEN, "changed blocks, MSB-first", bits(bm), bm.hex())
    check(bm == bytes([0x80, 0x40, 0x50]), "bitmap bytes", bm.hex())

    same = ["SR_BACKEND_FAILURE_460", "",
            "Failed to calculate changed blocks for given VDIs. "
            "[opterr=Source and target VDI are same]", ""]
    unrelated = ["SR_BACKEND_FAILURE_460", "",
                 "Failed to calculate changed blocks for given VDIs. "
                 "[opterr=Source and target VDI are unrelated]", ""]
    d = expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(inc0, inc0),
                       same, "same VDI")
    check(len(d) == 4, "same: 4 strings", d)
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(inc0, base0),
                   unrelated, "reversed arguments")
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(base1, inc1),
                   unrelated, "disk without CBT")
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(base0, inc1),
                   unrelated, "different disks")
    # The live disk is attached to the running VM: in use.
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(inc0, vdi0),
                   ["VDI_IN_USE", vdi0, "list_changed_blocks"], "live, attached")

    # -- NBD info and checksum ------------------------------------------------
    ni = x.xenapi.VDI.get_nbd_info(inc0)
    check(isinstance(ni, list) and len(ni) == 1, "one nbd_info record", ni)
    ni = ni[0]
    inc0_uuid = x.xenapi.VDI.get_uuid(inc0)
    check(set(ni) == {"exportname", "address", "port", "cert", "subject"},
          "nbd_info fields", sorted(ni))
    check(ni["exportname"] == "/%s?session_id=%s" % (inc0_uuid, x.handle),
          "exportname embeds the caller's session")
    check(ni["address"] == info["nbd_address"], "nbd address", ni["address"])
    check(int(ni["port"]) == info["nbd_port"], "nbd port", ni["port"])
    with open(info["ca_file"]) as f:
        check(ni["cert"] == f.read(), "cert is the server certificate")
    check(ni["subject"] == "xs-sim.example" == info["subject"], "subject",
          ni["subject"])
    check(x.xenapi.VDI.checksum(inc0) == hashlib.md5(image).hexdigest(),
          "VDI.checksum is md5 of the snapshot content")
    check(x.xenapi.VDI.checksum(base0) == hashlib.md5(bytes(SIZE0)).hexdigest(),
          "base snapshot is all zeros")

    # -- data_destroy ---------------------------------------------------------
    s.control("set", data_destroy_wait=0.2)
    expect_failure(lambda: x.xenapi.VDI.data_destroy(vdi0),
                   ["OPERATION_NOT_ALLOWED", "VDI is not a snapshot: " + vdi0],
                   "data_destroy of a live VDI")
    expect_failure(lambda: x.xenapi.VDI.data_destroy(inc1),
                   ["VDI_NO_CBT_METADATA", inc1], "data_destroy without CBT")
    expect_failure(lambda: x.xenapi.VDI.data_destroy(inc0),
                   ["VDI_IN_USE", inc0, "data_destroy"],
                   "data_destroy while the VM snapshot exists")
    check(x.xenapi.VDI.get_type(inc0) == "user", "type restored after failure")
    x.xenapi.VM.destroy(snap2)
    check(snap2 not in x.xenapi.VM.get_all(), "VM snapshot gone")
    check(inc0 in x.xenapi.VDI.get_all(), "VM.destroy keeps the VDIs")
    check(x.xenapi.VDI.get_VBDs(inc0) == [], "no VBDs left on the snapshot")
    x.xenapi.VDI.data_destroy(inc0)
    check(x.xenapi.VDI.get_type(inc0) == "cbt_metadata", "type cbt_metadata")
    x.xenapi.VDI.data_destroy(inc0)                # idempotent
    check(s.control("vdi", uuid=inc0_uuid)["path"] is None, "data deleted")
    expect_failure(lambda: x.xenapi.VDI.get_nbd_info(inc0),
                   ["VDI_INCOMPATIBLE_TYPE", inc0, "cbt_metadata"],
                   "get_nbd_info on cbt_metadata")
    expect_failure(lambda: x.xenapi.VDI.snapshot(inc0, {}),
                   ["VDI_INCOMPATIBLE_TYPE", inc0, "cbt_metadata"],
                   "snapshot of cbt_metadata")
    # The metadata still answers list_changed_blocks.
    bm2 = base64.b64decode(x.xenapi.VDI.list_changed_blocks(base0, inc0))
    check(bm2 == bm, "bitmap after data_destroy", bm2.hex())

    # A VM snapshot's VBDs are not attached: they do not keep its disks
    # from VDI.destroy (xapi_vdi.ml refuses only for attached VBDs), so
    # a backup tool must know which snapshots are its own.
    snap3 = x.xenapi.VM.snapshot(vm["vm_ref"], "someone else's")
    vbd3 = [v for v in x.xenapi.VM.get_VBDs(snap3)
            if x.xenapi.VBD.get_type(v) == "Disk"][0]
    disk3 = x.xenapi.VBD.get_VDI(vbd3)
    check(not x.xenapi.VBD.get_currently_attached(vbd3), "snapshot VBD attached")
    x.xenapi.VDI.destroy(disk3)
    check(disk3 not in x.xenapi.VDI.get_all(), "VDI.destroy refused a "
          "snapshot's disk")
    check(vbd3 not in x.xenapi.VM.get_VBDs(snap3), "its VBD stayed")
    x.xenapi.VM.destroy(snap3)

    # -- the live VDI as `to`, a grown disk, chain surgery, a crash -----------
    s.control("set_power_state", vm=vm["vm"], state="Halted")
    check(x.xenapi.VM.get_power_state(vm["vm_ref"]) == "Halted", "VM halted")
    s.control("write", vdi=d0["vdi"], offset=3 * BLOCK,
              data_b64=base64.b64encode(b"live").decode())
    bm = base64.b64decode(x.xenapi.VDI.list_changed_blocks(inc0, vdi0))
    check(bits(bm) == [3] and len(bm) == 3, "live VDI's current log", bm.hex())
    grown = 32 * BLOCK
    s.control("resize", vdi=d0["vdi"], size=grown)
    check(x.xenapi.VDI.get_virtual_size(vdi0) == str(grown), "resized")
    bm = base64.b64decode(x.xenapi.VDI.list_changed_blocks(base0, vdi0))
    check(len(bm) == 4, "bitmap sized for the grown disk", len(bm))
    check(bits(bm) == [0, 3, 9, 17, 19], "older logs zero-extended", bits(bm))
    snap3 = x.xenapi.VDI.snapshot(vdi0, {})
    check(x.xenapi.VDI.get_snapshot_of(snap3) == vdi0, "VDI.snapshot")
    check(bits(base64.b64decode(x.xenapi.VDI.list_changed_blocks(inc0, snap3)))
          == [3], "after VDI.snapshot")
    # A middle link, reduced to CBT metadata as a backup leaves it:
    # destroying it folds its log into the next one (docs/xapi.md,
    # "Snapshots on the host"), so the diff across the gap is the OR of
    # the two it replaces.
    check(x.xenapi.VDI.get_type(inc0) == "cbt_metadata", "inc0 is metadata")
    left = lcb(x, base0, inc0)
    right = lcb(x, inc0, snap3)
    check(bits(left) == WRITTEN and bits(right) == [3], "the two diffs",
          left.hex(), right.hex())
    x.xenapi.VDI.destroy(inc0)
    check(inc0 not in x.xenapi.VDI.get_all(), "VDI.destroy")
    check(inc0 not in x.xenapi.VDI.get_snapshots(vdi0),
          "destroyed snapshot still in VDI.snapshots")
    bm = lcb(x, base0, snap3)
    check(bm == bitmap_or(left, right, 4) and len(bm) == 4,
          "across the gap: the OR of the two diffs", bm.hex())
    s.control("reset_cbt", vdi=d0["vdi"])          # host crash
    check(x.xenapi.VDI.get_cbt_enabled(vdi0) is False, "CBT off after crash")
    x.xenapi.VDI.enable_cbt(vdi0)
    s.control("write", vdi=d0["vdi"], offset=30 * BLOCK,
              data_b64=base64.b64encode(b"new set").decode())
    snap4 = x.xenapi.VDI.snapshot(vdi0, {})
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(snap3, snap4),
                   unrelated, "across a CBT reset")
    bm = base64.b64decode(x.xenapi.VDI.list_changed_blocks(base0, snap3))
    check(bits(bm) == [0, 3, 9, 17, 19], "the old set still answers")
    # The oldest link (a backup's older metadata snapshot) and the
    # newest (whose next node is the live VDI) can go too.
    def write_block(blk):
        s.control("write", vdi=d0["vdi"], offset=blk * BLOCK,
                  data_b64=base64.b64encode(b"block %d" % blk).decode())
    write_block(31)
    snap5 = x.xenapi.VDI.snapshot(vdi0, {})
    write_block(5)
    snap6 = x.xenapi.VDI.snapshot(vdi0, {})
    x.xenapi.VDI.data_destroy(snap4)
    x.xenapi.VDI.destroy(snap4)
    check(bits(lcb(x, snap5, snap6)) == [5], "after destroying the oldest")
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(snap3, snap5),
                   unrelated, "the old set is still another set")
    write_block(7)
    x.xenapi.VDI.destroy(snap6)
    check(bits(lcb(x, snap5, vdi0)) == [5, 7],
          "the newest's log folds into the live VDI's")

    # -- errors of the dispatcher ---------------------------------------------
    expect_failure(lambda: x.xenapi.VDI.frobnicate(vdi0),
                   ["MESSAGE_METHOD_UNKNOWN", "VDI.frobnicate"], "unknown method")
    expect_failure(lambda: x.xenapi.VDI.list_changed_blocks(base0),
                   ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                    "VDI.list_changed_blocks", "2", "1"], "parameter count")
    expect_failure(lambda: x.xenapi.VDI.get_record("OpaqueRef:bogus"),
                   ["HANDLE_INVALID", "VDI", "OpaqueRef:bogus"], "bad ref")
    expect_failure(lambda: x.xenapi.VDI.get_by_uuid("no-such-uuid"),
                   ["UUID_INVALID", "VDI", "no-such-uuid"], "bad uuid")

    # -- session expiry: XenAPI.py logs in again by itself ---------------------
    old = x.handle
    s.control("reset_stats")
    s.control("expire_sessions")
    px = s.server_proxy()
    r = px.VDI.get_cbt_enabled(old, vdi0)
    check(r.get("ErrorDescription") == ["SESSION_INVALID", old],
          "old session invalid", r)
    check(x.xenapi.VDI.get_cbt_enabled(vdi0) is True, "call after expiry")
    check(x.handle != old, "XenAPI.py holds a new session")
    st = s.control("stats")
    check(st["sessions"]["logins"] == 1, "one re-login", st["sessions"])
    check(st["xapi"]["calls"].get("VDI.get_cbt_enabled") == 3,
          "failed call retried (raw + refused + retried)", st["xapi"]["calls"])

    # -- the slave --------------------------------------------------------------
    check(urllib.parse.urlsplit(info["slave_url"]).port
          == urllib.parse.urlsplit(info["xapi_url"]).port, "slave: same port")
    xs = XenAPI.Session(info["slave_url"], transport=s.transport())
    master_ip = urllib.parse.urlsplit(info["xapi_url"]).hostname
    expect_failure(lambda: xs.xenapi.login_with_password("root", "secret"),
                   ["HOST_IS_SLAVE", master_ip], "login on the slave")

    # -- bytes on the wire ------------------------------------------------------
    sess = x.handle
    v = raw_value(s, "VDI.get_virtual_size", sess, vdi0)
    check(v == b"<value>%d</value>" % grown, "int64 as bare digits", v)
    v = raw_value(s, "VDI.get_name_label", sess, vdi0)
    check(v == b"<value>system disk</value>", "string untyped", v)
    v = raw_value(s, "VDI.get_name_description", sess, vdi0)
    check(v == b"<value></value>", "empty string", v)
    v = raw_value(s, "VDI.get_cbt_enabled", sess, vdi0)
    check(v == b"<value><boolean>1</boolean></value>", "boolean", v)
    v = raw_value(s, "VDI.get_snapshot_time", sess, base0)
    check(re.fullmatch(rb"<value><dateTime.iso8601>\d{8}T\d\d:\d\d:\d\dZ"
                       rb"</dateTime.iso8601></value>", v), "dateTime", v)
    v = raw_value(s, "VDI.get_snapshot_time", sess, vdi0)
    check(v == b"<value><dateTime.iso8601>19700101T00:00:00Z"
               b"</dateTime.iso8601></value>", "epoch dateTime", v)
    v = raw_value(s, "VM.get_VBDs", sess, snap1)
    check(v.startswith(b"<value><array><data><value>OpaqueRef:")
          and v.endswith(b"</value></data></array></value>")
          and b"<string>" not in v, "set of refs", v)
    v = raw_value(s, "VDI.get_sm_config", sess, vdi0)
    check(v == b"<value><struct></struct></value>", "empty map", v)
    s.control("rename_vdi", vdi=d1["vdi"], name='a&b<c>"d\x01e\tf\u00e9')
    v = raw_value(s, "VDI.get_name_label", sess, vdi1)
    check(v == '<value>a&amp;b&lt;c&gt;&quot;de\tf\u00e9</value>'.encode(),
          "escaping drops control characters", v)
    check(x.xenapi.VDI.get_name_label(vdi1) == 'a&b<c>"de\tf\u00e9',
          "escaped name decodes back")
    status, ctype, body = raw_call(s, "VDI.get_record", sess, "OpaqueRef:x",
                                   path="/RPC2")
    check(status == 200 and body == (
        b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
        b'<member><name>Status</name><value>Failure</value></member>'
        b'<member><name>ErrorDescription</name><value><array><data>'
        b'<value>HANDLE_INVALID</value><value>VDI</value>'
        b'<value>OpaqueRef:x</value></data></array></value></member>'
        b'</struct></value></param></params></methodResponse>'),
        "failure envelope byte-exact (POST /RPC2)", body)
    # Untyped request values are strings too.
    status, _, body = raw_post(s, (
        '<?xml version="1.0"?><methodCall><methodName>VDI.get_uuid'
        '</methodName><params><param><value>%s</value></param><param>'
        '<value>%s</value></param></params></methodCall>' % (sess, vdi0)
    ).encode())
    check(status == 200 and body == ENVELOPE_OK + b"<value>" + d0["vdi"].encode()
          + b"</value>" + ENVELOPE_END, "untyped request params", body)
    status, ctype, body = raw_post(s, b"<methodCall><methodName>oops")
    check(status == 500 and ctype.startswith("text/html")
          and body.lstrip().lower().startswith(b"<html"),
          "malformed request -> HTTP 500 HTML", status, ctype, body[:80])

    # -- logout -----------------------------------------------------------------
    x.xenapi.session.logout()
    st = s.control("stats")
    check(st["sessions"]["logouts"] == 1 and st["sessions"]["active"] == 0,
          "logout", st["sessions"])
    r = px.VDI.get_cbt_enabled(sess, vdi0)
    check(r.get("ErrorDescription") == ["SESSION_INVALID", sess],
          "session invalid after logout", r)


def main():
    return sim.run_checks("test-sim-xenapi (python %s)"
                          % sys.version.split()[0], run,
                          (Fail, XenAPI.Failure, xmlrpc.client.Fault))


if __name__ == "__main__":
    sys.exit(main())
