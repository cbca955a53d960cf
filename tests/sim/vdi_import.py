"""XAPI's PUT /import_raw_vdi handler (xen-api import_raw_vdi.ml, with
vhd-tool's `serve` doing the writing: ocaml/vhd-tool/src/impl.ml).

Why it exists: `cbtfs restore` uploads a point in time into a VDI
through it.  The checks run in import_raw_vdi.ml's order, and the first
that fails answers:

  1. session (xapi_http.ml assert_credentials_ok): 401, as export's;
  2. the VDI (importexport.ml vdi_of_req: a ref, else a uuid): an unknown
     one fails the request's task and answers HTTP 400 (import's
     fail_task_in_request); no vdi and no sr_id/sr_uuid: the same 400;
  3. the SR must be seen by this host, else 302 to one that sees it
     (return_302_redirect, as export does);
  4. format (raw, vhd; tar and qcow2 are xapi's too but not modelled):
     unknown: HTTP/1.0 404; vhd with the `chunked` query parameter:
     HTTP/1.0 404; any Transfer-Encoding header (HTTP chunked): HTTP/1.0
     404 ("Chunked encoding not yet implemented in the import code");
  5. no vdi but an SR: format raw with a Content-Length creates a VDI of
     that size ("Imported VDI"); otherwise HTTP/1.0 400;
  6. the 200 headers (before the body is read or the disk attached);
  7. the dom0 attach (VBD.plug, RW): SM refuses a VDI that is attached
     RW elsewhere (sm blktap2.py _add_tag: "VDI ... not detached
     cleanly"), so the task fails, nothing is written and the connection
     is closed;
  8. vhd-tool serve: raw reads Content-Length bytes (else the VDI's
     size) and writes them from offset 0; vhd parses the stream and
     writes the sectors its blocks hold; the query parameter `chunked`
     (raw only) is vhd-tool's chunked protocol: {u64 offset, u32 len}
     little-endian headers each followed by len bytes, until {0, 0}.
     A write past the VDI's end, or a stream that ends early, fails the
     task with VDI_IO_ERROR ["Device I/O errors"] after what was
     written stays written;
  9. the task succeeds with the VDI's ref as its result; the connection
     closes.

Writes go through the dom0 tapdisk, which logs them in the VDI's CBT
log when CBT is on (sm VDI.py activate returns the cbtlog; blktap2.py
passes it to tapdisk with -C): every 64 KiB block written is marked,
zeros too.

Thread model: runs in the HTTPS connection's thread (xapi.XapiHandler).
Model.lock is taken to look things up, to finish the task, to mark CBT
blocks and to count stats; the body is read and written without it.
"""

import html
import os
import struct
import urllib.parse

import vhd
from export import (HTML_401, error_document, internal_error, _headers,
                    _params)
from model import BLOCK, XapiError

PATH = "/import_raw_vdi"
REALM = "VDI.import"
_CHUNK = 1 << 20
_CHUNK_HDR = struct.Struct("<QI")


class _IOError(Exception):
    """vhd-tool failed: xapi turns that into VDI_IO_ERROR."""


def _stats(m):
    return m.stats["http"]["import_raw_vdi"]


class Import:
    """One PUT /import_raw_vdi request."""

    def __init__(self, h):
        self.h = h
        self.srv = h.server
        self.m = h.server.api.m
        self.log = h.server.log
        self.version = "1.0" if h.request_version == "HTTP/1.0" else "1.1"
        self.task = None
        self.consumed = 0         # body bytes read

    def reply(self, data, what):
        self.log("import_raw_vdi%s: %s" % (" (slave)" if self.srv.slave
                                           else "", what))
        try:
            self.h.wfile.write(data)
        except OSError:
            pass

    def fail_task(self, error):
        with self.m.lock:
            self.m.finish_task(self.task, error=error)

    def run(self):
        m, h = self.m, self.h
        h.close_connection = True
        with m.lock:
            _stats(m)["requests"] += 1
        path, raw_query, query, cookies = _params(h)
        allp = dict(cookies, **query)     # xapi looks in both
        session = cookies.get("session_id", query.get("session_id"))
        if session is None or not self.srv.api.session_ok(session):
            self.reply(error_document(
                self.version, "401", "Unauthorised", HTML_401,
                ['WWW-Authenticate: Basic realm="%s"' % REALM]),
                "no valid session -> 401")
            return
        with m.lock:
            tid = allp.get("task_id")
            self.task = m.objs["task"].get(tid) if tid else None
            if self.task is None:
                self.task = m.create_task("VDI.import")
            want = allp.get("vdi")
            vdi = sr = None
            if want is not None:
                vdi = m.objs["VDI"].get(want) or m.uuids["VDI"].get(want)
                if vdi is not None:
                    sr = m.objs["SR"].get(vdi.rec["SR"])
            elif "sr_id" in allp:
                sr = m.objs["SR"].get(allp["sr_id"])
            elif "sr_uuid" in allp:
                sr = m.uuids["SR"].get(allp["sr_uuid"])
            host = m.knobs["vhd_host"]
        if want is not None and vdi is None:
            self.fail_task(["UUID_INVALID", "VDI", want])
            self.reply(_headers(["HTTP/%s 400 Bad Request" % self.version,
                                 "Connection: close",
                                 "Cache-Control: no-cache, no-store"]),
                       "unknown VDI -> 400")
            return
        if sr is None:
            self.fail_task(["VDI_MISSING"])
            self.reply(_headers(["HTTP/%s 400 Bad Request" % self.version,
                                 "Connection: close",
                                 "Cache-Control: no-cache, no-store"]),
                       "no VDI or SR -> 400")
            return
        there = self._elsewhere(sr, host)
        if there is not None:
            with m.lock:
                _stats(m)["redirects"] += 1
            self.reply(_headers(["HTTP/1.1 302 Found", "Connection: close",
                                 "Cache-Control: no-cache, no-store",
                                 "Location: %s%s?%s" % (there, path,
                                                        raw_query)]),
                       "-> 302 to %s" % there)
            return
        self.local(vdi, sr, allp)

    def _elsewhere(self, sr, host):
        """The base URL of a host that sees SR, or None when this one does.
        The stand-in's main SR is seen by the host vhd_host names (as for
        export); the second SR by the slave alone."""
        port = self.srv.server_address[1]
        master = "https://%s:%d" % (self.m.xapi_address, port)
        slave = "https://%s:%d" % (self.m.slave_address, port)
        if sr is self.m.slave_sr:
            return None if self.srv.slave else slave
        if self.srv.slave:
            return None if host == "slave" else master
        if host in ("slave", "loop"):
            return slave
        if host.startswith("http://"):
            return host.rstrip("/")
        return None

    def _404(self, what, error):
        self.fail_task(["INTERNAL_ERROR", error])
        self.reply(_headers(["HTTP/1.0 404 Not Found", "Connection: close",
                             "Cache-Control: no-cache, no-store"]),
                   "%s -> 404" % what)

    def local(self, vdi, sr, allp):
        m, h = self.m, self.h
        fmt = allp.get("format", "raw").lower()
        chunked = "chunked" in allp
        if fmt not in ("raw", "vhd"):
            return self._404("format %r" % fmt, "Unknown format " + fmt)
        if fmt != "raw" and chunked:
            return self._404("chunked vhd", "Cannot handle chunked VHD")
        te = h.headers.get("Transfer-Encoding")
        if te is not None:
            return self._404("Transfer-Encoding " + te,
                             "Cannot handle encoding: " + te)
        length = h.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() \
            else None
        if vdi is None:
            if fmt != "raw" or length is None:
                self.fail_task(["INTERNAL_ERROR",
                                "Not enough info supplied to import"
                                if fmt == "raw" else "Importing a VHD "
                                "directly into an SR not yet supported"])
                self.reply(_headers(["HTTP/1.0 400 Bad Request",
                                     "Connection: close",
                                     "Cache-Control: no-cache, no-store"]),
                           "no VDI -> 400")
                return
            with m.lock:
                vdi = m.vdi_create({"name_label": "Imported VDI",
                                    "SR": sr.ref, "virtual_size": length,
                                    "type": "user"})
        with m.lock:
            if self.srv.slave:
                _stats(m)["slave_served"] += 1
            task_ref = self.task.ref
            uuid, ref, size = vdi.rec["uuid"], vdi.ref, vdi.rec["virtual_size"]
            busy = any(v.rec["mode"] == "RW" for v in m.active_vbds(vdi))
            fd = None
            if not busy and vdi.path is not None:
                fd = os.open(vdi.path, os.O_RDWR)
        what = "%s format=%s%s" % (uuid, fmt, " chunked" if chunked else "")
        try:
            h.wfile.write(_headers([
                "HTTP/1.1 200 OK", "Connection: close",
                "Cache-Control: no-cache, no-store",
                "task-id:" + task_ref,
                "content-type: application/octet-stream"]))
            h.wfile.flush()
        except OSError:
            pass
        if fd is None:
            err = (["SR_BACKEND_FAILURE_46", "",
                    "The VDI is not available [opterr=VDI %s not detached "
                    "cleanly]" % uuid, ""] if busy else
                   ["VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata"])
            self.fail_task(err)
            self.log("import_raw_vdi: %s: 200, then %s" % (what, err[0]))
            return
        try:
            n = self._receive(fd, vdi, size, fmt, chunked, length)
        except _IOError as e:
            self.fail_task(["VDI_IO_ERROR", "Device I/O errors"])
            self.log("import_raw_vdi: %s: VDI_IO_ERROR (%s)" % (what, e))
            return
        finally:
            os.close(fd)
        with m.lock:
            m.finish_task(self.task, result="<value>%s</value>" % ref)
        self.log("import_raw_vdi: %s: wrote %d bytes" % (what, n))

    # ---- vhd-tool serve ---------------------------------------------------

    def _read(self, n):
        """Exactly N bytes of the body, or _IOError."""
        data = self.h.rfile.read(n)
        if data is None or len(data) != n:
            raise _IOError("the stream ended early")
        self.consumed += n
        with self.m.lock:
            _stats(self.m)["bytes"] += n
        return data

    def _write(self, fd, vdi, size, data, offset):
        """A write through the dom0 device: past its end is an I/O error.
        The model's corrupt_import knob flips one byte of the first write
        (a disk that does not keep what it was given)."""
        if offset + len(data) > size:
            raise _IOError("write past the end of the device")
        m = self.m
        with m.lock:
            if m.knobs["corrupt_import"] and data:
                m.knobs["corrupt_import"] = False
                data = bytes([data[0] ^ 0xFF]) + data[1:]
        os.pwrite(fd, data, offset)
        with m.lock:
            m._mark(vdi, offset, len(data))

    def _receive(self, fd, vdi, size, fmt, chunked, length):
        if fmt == "raw" and chunked:
            return self._chunked(fd, vdi, size)
        if fmt == "raw":
            total = length if length is not None else size
            pos = 0
            while pos < total:
                n = min(_CHUNK, total - pos)
                self._write(fd, vdi, size, self._read(n), pos)
                pos += n
            os.fsync(fd)
            return total
        return self._vhd(fd, vdi, size, length)

    def _chunked(self, fd, vdi, size):
        n = 0
        while True:
            off, ln = _CHUNK_HDR.unpack(self._read(_CHUNK_HDR.size))
            if off == 0 and ln == 0:
                os.fsync(fd)
                return n
            while ln > 0:
                k = min(ln, 2 << 20)
                self._write(fd, vdi, size, self._read(k), off)
                off, ln, n = off + k, ln - k, n + k

    def _vhd(self, fd, vdi, size, length):
        """A dynamic VHD as ocaml-vhd's stream parser takes it: footer,
        header, BAT at table_offset, then blocks in file order; each
        block's sector bitmap says which of its sectors are written."""
        head = self._read(vhd.SECTOR)
        if head[:8] != b"conectix":
            raise _IOError("not a VHD footer")
        pos = vhd.SECTOR
        hdr = self._read(1024)
        pos += 1024
        if hdr[:8] != b"cxsparse":
            raise _IOError("not a VHD dynamic header")
        table, entries, bsize = struct.unpack(">QII", hdr[16:24] + hdr[28:36])
        if bsize != vhd.BLOCK:
            raise _IOError("block size %d" % bsize)
        if table < pos:
            raise _IOError("BAT before the header's end")
        self._read(table - pos)
        pos = table
        nbat = (4 * entries + vhd.SECTOR - 1) // vhd.SECTOR * vhd.SECTOR
        bat = struct.unpack(">%dI" % entries, self._read(nbat)[:4 * entries])
        pos += nbat
        blocks = sorted((e * vhd.SECTOR, i) for i, e in enumerate(bat)
                        if e != vhd.UNUSED)
        written = 0
        for at, i in blocks:
            if at < pos:
                raise _IOError("block %d overlaps what came before" % i)
            self._read(at - pos)
            bitmap = self._read(vhd.SECTOR)
            data = self._read(vhd.BLOCK)
            pos = at + vhd.SECTOR + vhd.BLOCK
            base = i * vhd.BLOCK
            s = 0
            while s < vhd.BLOCK // vhd.SECTOR:
                if not bitmap[s // 8] & (0x80 >> (s % 8)):
                    s += 1
                    continue
                e = s
                while e < vhd.BLOCK // vhd.SECTOR and \
                        bitmap[e // 8] & (0x80 >> (e % 8)):
                    e += 1
                piece = data[s * vhd.SECTOR:e * vhd.SECTOR]
                self._write(fd, vdi, size, piece, base + s * vhd.SECTOR)
                written += len(piece)
                s = e
        # The trailing footer (and anything after it) is read, not used.
        while length is not None and self.consumed < length:
            self._read(min(_CHUNK, length - self.consumed))
        os.fsync(fd)
        return written


def handler(h, _query):
    """XapiServer.put_handlers entry (master and slave)."""
    Import(h).run()
