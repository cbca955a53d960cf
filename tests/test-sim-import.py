#!/usr/bin/env python3
"""Prove the stand-in's VDI.create, tasks and PUT /import_raw_vdi
(tests/sim/vdi_import.py) with clients nobody here wrote: XenServer's
Python SDK (XenAPI.py) for the calls, curl -T for the uploads, and
qemu-img for a VHD file to upload.

Covers: VDI.create's record and its 2 MiB rounding, its refusal of
cbt_metadata; a raw upload (Content-Length) landing byte for byte with
the task marked success and the VDI's ref as its result; HTTP chunked
refused with HTTP/1.0 404 and the task failed; xapi's own `chunked`
protocol (raw); a VHD (qemu-img's vpc) writing only the blocks it holds;
no session -> 401; an unknown VDI -> 400; a VDI on the slave's SR -> 302
to the slave, which serves; a VDI attached RW to a running VM -> 200, then
the task fails and the disk is untouched; a write past the end -> task
failure VDI_IO_ERROR; CBT marks every block an import writes.

Exit 0 when everything holds, 1 with a message on the first failure.
"""

import base64
import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "xenapi"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import sim  # noqa: E402

try:
    import XenAPI  # noqa: E402
except ImportError:
    sys.exit("test-sim-import: build/xenapi/XenAPI.py missing; run "
             "scripts/install-deps.sh")

MiB = 1 << 20
BLOCK = 65536


class Fail(Exception):
    pass


def check(cond, what, *detail):
    if not cond:
        raise Fail(what + (": " + " ".join(repr(d) for d in detail)
                           if detail else ""))


def curl(s, url_path, data_file, *extra, url=None):
    """PUT DATA_FILE with curl; (status line, headers text)."""
    out = subprocess.run(
        ["curl", "-sS", "--cacert", s.info["ca_file"], "-o", "/dev/null",
         "-D", "-", "-T", data_file, *extra,
         (url or s.info["xapi_url"]) + url_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    head = out.stdout.decode(errors="replace")
    return head.split("\r\n", 1)[0], head, out.returncode


def task(x, label):
    return x.xenapi.task.create(label, "test")


def vdi_bytes(s, uuid, n=None):
    path = s.control("vdi", uuid=uuid)["path"]
    with open(path, "rb") as f:
        return f.read() if n is None else f.read(n)


def bits(bitmap):
    return [i for i in range(len(bitmap) * 8)
            if (bitmap[i >> 3] >> (7 - (i & 7))) & 1]


def run(s):
    info = s.info
    tmp = tempfile.mkdtemp(prefix="sim-import-", dir=s.tmp)
    x = XenAPI.Session(info["xapi_url"], transport=s.transport())
    x.xenapi.login_with_password("root", "secret", "1.0", "cbtfs-test")
    sess = x.handle
    srs = x.xenapi.SR.get_all_records()
    check(len(srs) == 2, "two SRs", list(srs))
    main_sr = [r for r, v in srs.items() if v["name_label"] == "Local storage"]
    slave_sr = [r for r, v in srs.items() if v["name_label"] != "Local storage"]
    check(len(main_sr) == 1 and len(slave_sr) == 1, "SR names", srs)
    main_sr, slave_sr = main_sr[0], slave_sr[0]

    # -- VDI.create ---------------------------------------------------------
    rec = {"name_label": "restored", "name_description": "d", "SR": main_sr,
           "virtual_size": str(3 * MiB + 512), "type": "user",
           "sharable": False, "read_only": False, "other_config": {},
           "xenstore_data": {}, "sm_config": {}, "tags": []}
    ref = x.xenapi.VDI.create(rec)
    r = x.xenapi.VDI.get_record(ref)
    check(r["virtual_size"] == str(4 * MiB), "VDI.create rounds to 2 MiB",
          r["virtual_size"])
    check(r["SR"] == main_sr and r["name_label"] == "restored"
          and r["VBDs"] == [] and not r["cbt_enabled"]
          and not r["is_a_snapshot"], "VDI.create record", r)
    check(ref in x.xenapi.SR.get_VDIs(main_sr), "SR lists the new VDI")
    uuid = r["uuid"]
    check(vdi_bytes(s, uuid) == bytes(4 * MiB), "a new VDI reads as zeros")
    try:
        x.xenapi.VDI.create(dict(rec, type="cbt_metadata"))
        raise Fail("VDI.create of cbt_metadata accepted")
    except XenAPI.Failure as e:
        check(e.details == ["VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata"],
              "cbt_metadata refused", e.details)

    # -- raw upload with a Content-Length ------------------------------------
    data = os.urandom(MiB) + bytes(2 * MiB) + os.urandom(MiB)
    raw = os.path.join(tmp, "raw")
    with open(raw, "wb") as f:
        f.write(data)
    t = task(x, "import raw")
    line, head, rc = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&format=raw"
                          "&task_id=%s" % (sess, uuid, t), raw)
    check(line == "HTTP/1.1 200 OK" and rc == 0, "raw import: 200", line, rc)
    check(("task-id:%s" % t) in head, "raw import: task-id header", head)
    check(vdi_bytes(s, uuid) == data, "raw import landed byte for byte")
    tr = x.xenapi.task.get_record(t)
    check(tr["status"] == "success" and ref in tr["result"],
          "task success with the VDI as its result", tr)
    check(x.xenapi.VDI.checksum(ref) == hashlib.md5(data).hexdigest(),
          "VDI.checksum after the import")
    x.xenapi.task.destroy(t)

    # -- HTTP chunked: refused -------------------------------------------------
    t = task(x, "import chunked")
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
                      % (sess, uuid, t), raw, "-H",
                      "Transfer-Encoding: chunked")
    check(line == "HTTP/1.0 404 Not Found", "HTTP chunked -> 404", line)
    tr = x.xenapi.task.get_record(t)
    check(tr["status"] == "failure" and
          tr["error_info"] == ["INTERNAL_ERROR",
                               "Cannot handle encoding: chunked"],
          "HTTP chunked: the task says why", tr)

    # -- xapi's chunked protocol (raw): only the chunks sent are written ---
    chunked = os.path.join(tmp, "chunked")
    with open(chunked, "wb") as f:
        f.write(struct.pack("<QI", 3 * MiB, 5) + b"hello")
        f.write(struct.pack("<QI", 0, 0))
    t = task(x, "import xapi-chunked")
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&chunked=true"
                      "&task_id=%s" % (sess, uuid, t), chunked)
    check(line == "HTTP/1.1 200 OK", "chunked protocol: 200", line)
    want = bytearray(data)
    want[3 * MiB:3 * MiB + 5] = b"hello"
    check(vdi_bytes(s, uuid) == bytes(want), "chunked protocol wrote one chunk")
    check(x.xenapi.task.get_status(t) == "success", "chunked: task success")
    t = task(x, "chunked vhd")
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&chunked=true"
                      "&format=vhd&task_id=%s" % (sess, uuid, t), chunked)
    check(line == "HTTP/1.0 404 Not Found", "chunked vhd -> 404", line)

    # -- VHD (qemu-img's dynamic VHD): only its blocks are written ---------
    ref2 = x.xenapi.VDI.create(dict(rec, virtual_size=str(8 * MiB)))
    uuid2 = x.xenapi.VDI.get_uuid(ref2)
    src = os.path.join(tmp, "src")
    img = bytearray(8 * MiB)
    img[2 * MiB:2 * MiB + 4096] = os.urandom(4096)
    img[7 * MiB:7 * MiB + 512] = os.urandom(512)
    with open(src, "wb") as f:
        f.write(img)
    vhdf = os.path.join(tmp, "src.vhd")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                    "subformat=dynamic,force_size=on", src, vhdf], check=True)
    # Old data in a block the VHD does not hold stays (vhd-tool serve
    # --prezeroed writes only the blocks in the stream).
    s.control("write", vdi=uuid2, offset=5 * MiB,
              data_b64=base64.b64encode(b"old!").decode())
    t = task(x, "import vhd")
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&format=vhd"
                      "&task_id=%s" % (sess, uuid2, t), vhdf)
    check(line == "HTTP/1.1 200 OK", "vhd import: 200", line)
    check(x.xenapi.task.get_status(t) == "success", "vhd: task success",
          x.xenapi.task.get_record(t))
    got = vdi_bytes(s, uuid2)
    want = bytearray(img)
    want[5 * MiB:5 * MiB + 4] = b"old!"
    check(got == bytes(want), "vhd import wrote its blocks, kept the rest")

    # -- refusals --------------------------------------------------------------
    line, _, _ = curl(s, "/import_raw_vdi?vdi=%s" % uuid, raw)
    check(line == "HTTP/1.1 401 Unauthorised", "no session -> 401", line)
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=nope" % sess, raw)
    check(line == "HTTP/1.1 400 Bad Request", "unknown VDI -> 400", line)
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&format=tar"
                      % (sess, uuid), raw)
    check(line == "HTTP/1.0 404 Not Found", "format tar -> 404", line)

    # -- past the end: VDI_IO_ERROR after 200 ----------------------------------
    big = os.path.join(tmp, "big")
    with open(big, "wb") as f:
        f.write(os.urandom(5 * MiB))
    t = task(x, "too big")
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
                      % (sess, uuid, t), big)
    check(line == "HTTP/1.1 200 OK", "too big: 200 first", line)
    tr = x.xenapi.task.get_record(t)
    check(tr["status"] == "failure" and tr["error_info"][0] == "VDI_IO_ERROR",
          "too big: VDI_IO_ERROR", tr)

    # -- the slave's SR: 302 there, served there -------------------------------
    ref3 = x.xenapi.VDI.create(dict(rec, SR=slave_sr,
                                    virtual_size=str(4 * MiB)))
    uuid3 = x.xenapi.VDI.get_uuid(ref3)
    line, head, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s"
                         % (sess, uuid3), raw)
    check(line == "HTTP/1.1 302 Found", "slave's SR: 302", line)
    loc = re.search(r"Location: (\S+)", head)
    check(loc and loc.group(1).startswith(info["slave_url"] +
                                          "/import_raw_vdi?"),
          "302 to the slave, same query", head)
    st0 = s.control("stats")["http"]["import_raw_vdi"]
    line, _, _ = curl(s, "", raw, "-L", url=loc.group(1))
    check(line == "HTTP/1.1 200 OK", "the slave serves", line)
    check(vdi_bytes(s, uuid3) == data, "the slave's import landed")
    st = s.control("stats")["http"]["import_raw_vdi"]
    check(st["slave_served"] == st0["slave_served"] + 1, "slave_served", st)

    # -- a running VM's disk: 200, then the task fails; nothing written --------
    vm = s.control("create_vm", name="web", disks=[{"name": "root",
                                                    "size": 4 * MiB}])
    live = vm["disks"][0]["vdi"]
    live_ref = vm["disks"][0]["vdi_ref"]
    x.xenapi.VDI.enable_cbt(live_ref)
    before = vdi_bytes(s, live)
    t = task(x, "busy")
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
                      % (sess, live, t), raw)
    tr = x.xenapi.task.get_record(t)
    check(tr["status"] == "failure"
          and tr["error_info"][0] == "SR_BACKEND_FAILURE_46"
          and "not detached cleanly" in tr["error_info"][2],
          "attached RW: the task fails as SM refuses the attach", tr)
    check(vdi_bytes(s, live) == before, "attached RW: nothing written")

    # -- CBT: an import into a halted VM's disk marks what it writes -----------
    s.control("set_power_state", vm=vm["vm"], state="Halted")
    snap = x.xenapi.VDI.snapshot(live_ref, {})
    small = os.path.join(tmp, "small")
    with open(small, "wb") as f:
        f.write(bytes(3 * BLOCK))               # zeros are writes too
    line, _, _ = curl(s, "/import_raw_vdi?session_id=%s&vdi=%s"
                      % (sess, live), small)
    check(line == "HTTP/1.1 200 OK", "CBT import: 200", line)
    snap2 = x.xenapi.VDI.snapshot(live_ref, {})
    changed = bits(base64.b64decode(
        x.xenapi.VDI.list_changed_blocks(snap, snap2)))
    check(changed == [0, 1, 2], "CBT marks the blocks the import wrote",
          changed)

    # -- the corrupt_import knob ------------------------------------------------
    s.control("set", corrupt_import=True)
    curl(s, "/import_raw_vdi?session_id=%s&vdi=%s" % (sess, uuid), raw)
    check(x.xenapi.VDI.checksum(ref) != hashlib.md5(data).hexdigest(),
          "corrupt_import changes what lands")
    x.xenapi.session.logout()


def main():
    return sim.run_checks("test-sim-import (python %s)"
                          % sys.version.split()[0], run,
                          (Fail, XenAPI.Failure, subprocess.SubprocessError))


if __name__ == "__main__":
    sys.exit(main())
