"""xapi-nbd stand-in (docs/xapi-nbd.md), byte for byte where it matters.

What it copies from xapi-nbd (xen-api ocaml/nbd/src/main.ml) and the
xapi-project/nbd library (lib/server.ml at b71e1be):
  - fixed newstyle, FORCEDTLS, global flags 0x0001 (no NO_ZEROES);
  - before TLS: STARTTLS -> ACK + TLS 1.2 handshake; EXPORT_NAME or ABORT
    -> disconnect; anything else -> ERR_TLS_REQD;
  - after TLS: EXPORT_NAME ends negotiation; ABORT -> ACK, close; LIST ->
    ERR_POLICY; STARTTLS -> ERR_INVALID; anything else (INFO, GO,
    STRUCTURED_REPLY, META_CONTEXT ...) -> ERR_UNSUP;
  - export name "/<vdi uuid>?session_id=<ref>"; a bad session or VDI closes
    the connection right after EXPORT_NAME with no reply;
  - simple replies only, one request at a time; READ data after the OK
    header in 512 KiB pieces;
  - after *any* error reply (EINVAL for unaligned reads, EPERM for WRITE,
    EINVAL for other commands or flags) the server's loop ends and the
    connection is closed: lib/server.ml does not loop after `error`;
  - a READ that runs past the end of the disk is not checked up front: the
    OK header goes out, then the piece that crosses the end fails and the
    connection is dropped (a Block.read error after the header);
  - at most 16 connections, counted at accept time; the 17th is closed
    before NBDMAGIC.

Not xapi-nbd: with the knob nbd_impostor, a new connection's TLS shows
the impostor certificate (the same names, another key), as someone on
the path to the NBD network could; stats count completed handshakes
(and those of the impostor) and every EXPORT_NAME received, so a test
can tell that a client refused the impostor before sending its session.

Thread model: one accept thread and one thread per connection; requests on
a connection are served in order by its thread.  Counters, the registry of
open connections and the dom0 VBD that marks the VDI in use live in the
model and are touched only under Model.lock; socket I/O and file reads
happen without it.  drop_all() shuts sockets down from another thread
(under the lock, so a descriptor is never reused meanwhile); the owning
thread then sees EOF and cleans up.
"""

import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse

import disk

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
REP_ACK = 1
REP_ERR_UNSUP = 0x80000001
REP_ERR_POLICY = 0x80000002
REP_ERR_INVALID = 0x80000003
REP_ERR_TLS_REQD = 0x80000005

CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2
EPERM, EINVAL = 1, 22

CONNECTION_LIMIT = 16
READ_PIECE = 512 * 1024          # 128 pages, as xapi-nbd copies
SECTOR = 512
MAX_OPTION_LEN = 1 << 20


class _Hangup(Exception):
    """End this connection now (the server decided to disconnect)."""


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Hangup("peer closed")
        buf += chunk
    return bytes(buf)


def parse_export_name(name):
    """(vdi uuid, session ref or None) from "/<uuid>?session_id=<ref>"."""
    u = urllib.parse.urlsplit(name)
    path = urllib.parse.unquote(u.path)
    uuid = path[1:] if path else path     # xapi-nbd drops the leading char
    session = urllib.parse.parse_qs(u.query).get("session_id", [None])[0]
    return uuid, session


class _Conn:
    def __init__(self, sock, drop_after):
        self.sock = sock
        self.sockfd = sock.fileno()
        self.drop_after = drop_after
        self.sent = 0
        self.vdi_uuid = None
        self.serving = False         # counted in Model.nbd_open_vdis
        self.vbd = None
        self.fd = None


class NbdServer:
    def __init__(self, model, address, ssl_ctx, log, impostor_ctx=None):
        self.m = model
        self.ctx = ssl_ctx
        self.impostor_ctx = impostor_ctx
        self.log = log
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((address, 0))
        self.lsock.listen(64)
        self.address = address
        self.port = self.lsock.getsockname()[1]
        self.conns = set()           # open _Conn, under Model.lock
        self.stopping = False

    def start(self):
        threading.Thread(target=self._accept_loop, name="nbd-accept",
                         daemon=True).start()

    def stop(self):
        self.stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)   # wakes accept()
        except OSError:
            pass
        self.lsock.close()
        self.drop_all()

    def drop_all(self):
        """Close every open connection abruptly; returns how many."""
        with self.m.lock:
            conns = list(self.conns)
            for c in conns:
                self._kill(c)
        if conns:
            self.log("nbd: dropped %d connection(s)" % len(conns))
        return len(conns)

    @staticmethod
    def _kill(conn):
        # shutdown() through a duplicate descriptor: works whether or not the
        # socket has been wrapped in TLS, and wakes the thread blocked in recv.
        try:
            s = socket.socket(fileno=os.dup(conn.sockfd))
        except OSError:
            return
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    # ---- connections -------------------------------------------------------

    def _accept_loop(self):
        m = self.m
        while not self.stopping:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                if self.stopping:
                    return
                continue
            with m.lock:
                refuse = m.nbd_open >= CONNECTION_LIMIT
                if refuse:
                    m.stats["nbd"]["refused"] += 1
                else:
                    m.nbd_opened()
                    conn = _Conn(sock, int(m.knobs["nbd_drop_after_bytes"]))
                    self.conns.add(conn)
            if refuse:
                self.log("nbd: connection limit (%d) reached, closing new "
                         "connection" % CONNECTION_LIMIT)
                sock.close()
                continue
            # Reply header and data are separate writes: avoid Nagle delays.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), name="nbd-conn",
                             daemon=True).start()

    def _serve(self, conn):
        m = self.m
        try:
            self._negotiate_and_serve(conn)
        except (_Hangup, OSError, ssl.SSLError, EOFError) as e:
            if isinstance(e, _Hangup) and str(e) != "peer closed":
                self.log("nbd: disconnect: %s" % e)
        except Exception as e:        # a bug: say so, keep serving others
            self.log("nbd: internal error: %r" % (e,))
        finally:
            with m.lock:
                self.conns.discard(conn)
                m.nbd_open -= 1
                if conn.serving:
                    m.nbd_serving(conn.vdi_uuid, -1)
                if conn.vbd is not None:
                    m.nbd_detach(conn.vbd)     # notifies Model.cond
            try:
                conn.sock.close()
            except OSError:
                pass
            if conn.fd is not None:
                os.close(conn.fd)

    def _read_option(self, sock):
        magic, opt, length = struct.unpack(">QII", _recv_exact(sock, 16))
        if magic != IHAVEOPT:
            raise _Hangup("bad option magic")
        if length > MAX_OPTION_LEN:
            raise _Hangup("option too long")
        return opt, _recv_exact(sock, length) if length else b""

    @staticmethod
    def _reply(sock, opt, typ):
        sock.sendall(struct.pack(">QIII", OPT_REPLY_MAGIC, opt, typ, 0))

    def _negotiate_and_serve(self, conn):
        m = self.m
        sock = conn.sock
        sock.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 0x0001))
        (cflags,) = struct.unpack(">I", _recv_exact(sock, 4))
        if not cflags & 1:
            raise _Hangup("client does not report FIXED_NEWSTYLE (FORCEDTLS)")

        # Before TLS.
        while True:
            opt, _ = self._read_option(sock)
            if opt == OPT_EXPORT_NAME:
                with m.lock:
                    m.stats["nbd"]["export_names"] += 1
                raise _Hangup("EXPORT_NAME in clear text")
            if opt == OPT_ABORT:
                raise _Hangup("ABORT before TLS")
            if opt == OPT_STARTTLS:
                self._reply(sock, opt, REP_ACK)
                with m.lock:
                    impostor = bool(m.knobs["nbd_impostor"])
                ctx = self.impostor_ctx if impostor else self.ctx
                sock = ctx.wrap_socket(sock, server_side=True)
                conn.sock = sock
                with m.lock:
                    m.stats["nbd"]["handshakes"] += 1
                    m.stats["nbd"]["impostor_handshakes"] += impostor
                break
            self._reply(sock, opt, REP_ERR_TLS_REQD)

        # After TLS.
        while True:
            opt, data = self._read_option(sock)
            if opt == OPT_EXPORT_NAME:
                with m.lock:
                    m.stats["nbd"]["export_names"] += 1
                name = data.decode("utf-8", "replace")
                break
            if opt == OPT_ABORT:
                self._reply(sock, opt, REP_ACK)
                raise _Hangup("peer closed")
            if opt == OPT_LIST:
                self._reply(sock, opt, REP_ERR_POLICY)
            elif opt == OPT_STARTTLS:
                self._reply(sock, opt, REP_ERR_INVALID)
            else:
                self._reply(sock, opt, REP_ERR_UNSUP)

        vdi_uuid, session = parse_export_name(name)
        with m.lock:
            att = m.nbd_attach(vdi_uuid, session) if session else None
            if att is not None:
                vdi, conn.vbd, conn.fd = att
                size = vdi.rec["virtual_size"] // SECTOR * SECTOR
                conn.vdi_uuid = vdi_uuid
                conn.serving = True
                m.nbd_serving(vdi_uuid, +1)
        if att is None:
            # xapi-nbd: session.get_uuid / VDI.get_by_uuid / VBD.plug failed.
            raise _Hangup("export refused (bad session or VDI)")
        conn.vdi_uuid = vdi_uuid
        self.log("nbd: serving VDI %s" % vdi_uuid)
        sock.sendall(struct.pack(">QH", size, 0x0003) + bytes(124))

        # Transmission: one request at a time, simple replies.
        while True:
            magic, cmd, handle, offset, length = struct.unpack(
                ">IIQQI", _recv_exact(sock, 28))
            if magic != REQUEST_MAGIC:
                raise _Hangup("bad request magic")
            # cmd is flags<<16|type read as one u32: any flag is "unknown".
            if cmd == CMD_READ:
                if offset % SECTOR or length % SECTOR:
                    self._error(sock, handle, EINVAL)
                    raise _Hangup("unaligned READ: EINVAL, closing")
                self._read(conn, sock, handle, offset, length, size)
            elif cmd == CMD_WRITE:
                self._error(sock, handle, EPERM)
                raise _Hangup("WRITE on a read-only export: EPERM, closing")
            elif cmd == CMD_DISC:
                raise _Hangup("peer closed")
            else:
                self._error(sock, handle, EINVAL)
                raise _Hangup("command 0x%x: EINVAL, closing" % cmd)

    @staticmethod
    def _error(sock, handle, errno_):
        sock.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, errno_, handle))

    def _read(self, conn, sock, handle, offset, length, size):
        m = self.m
        with m.lock:
            delay = float(m.knobs["nbd_read_delay_ms"])
        if delay > 0:
            time.sleep(delay / 1000.0)       # a slow host, on purpose
        sock.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle))
        with m.lock:
            m.count_read(conn.vdi_uuid, offset, length, 0)
        pos, end = offset, offset + length
        while pos < end:
            n = min(READ_PIECE, end - pos)
            if pos + n > size:
                raise _Hangup("READ past the end of the disk: dropping "
                              "connection after the OK header")
            data = disk.pread_full(conn.fd, n, pos)
            if conn.drop_after and conn.sent + n > conn.drop_after:
                k = conn.drop_after - conn.sent
                if k > 0:
                    sock.sendall(data[:k])
                    with m.lock:
                        m.count_read(conn.vdi_uuid, None, 0, k)
                conn.sent += max(k, 0)
                with m.lock:
                    self._kill(conn)
                raise _Hangup("nbd_drop_after_bytes reached: dropped")
            sock.sendall(data)
            conn.sent += n
            with m.lock:
                m.count_read(conn.vdi_uuid, None, 0, n)
            pos += n
