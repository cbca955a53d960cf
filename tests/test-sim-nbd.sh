#!/bin/bash
# Prove the XenServer stand-in's NBD server faithful with libnbd's own tools
# (nbdinfo, nbdcopy, nbdsh), none of them written here.
#
# Part A runs a stand-in whose NBD address is 127.0.0.1: libnbd's URI tools
# check the URI host against the certificate, which names the XAPI address
# but, by design (like XenServer's dedicated NBD network), not the NBD one.
# Part B runs one on the default 127.0.0.2 and drives it with nbdsh over a
# socket we connect ourselves (certificate pinned, no host name check), the
# way cbtfs connects.
#
# The stand-ins read stdin from a FIFO we hold open: closing it (or dying)
# makes them exit.  We synchronise on their ready line, never on sleeps.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
xsim="$root/tests/sim/xsim.py"
simpy="$root/tests/lib/sim.py"
PY=${PYTHON:-python3}

tmp=$(mktemp -d /tmp/cbtfs-test-sim-nbd.XXXXXX)
pids=()
in_fds=()

cleanup() {
    local rc=$?
    local fd pid
    for fd in "${in_fds[@]}"; do exec {fd}>&- || true; done
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ]; then
        for f in "$tmp"/*.log; do
            [ -f "$f" ] && { echo "--- $(basename "$f") (tail) ---"; tail -n 25 "$f"; } >&2
        done
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
# Turn fatal signals into an exit so the EXIT trap still cleans up.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

fail() { echo "FAIL test-sim-nbd: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# nbdsh runs "python3 -m nbd"; the nbd module is Debian's python3-libnbd, so
# Debian's interpreter must be the python3 it finds.
nbdsh_() { PATH="/usr/bin:$PATH" nbdsh "$@"; }

# start_sim NAME [xsim options...]: start a stand-in, wait for its ready line
# (saved as $tmp/NAME.json).
start_sim() {
    local name=$1; shift
    local in_fd out_fd line
    mkfifo "$tmp/$name.in" "$tmp/$name.out"
    "$PY" "$xsim" --state "$tmp/$name" "$@" \
        <"$tmp/$name.in" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    pids+=("$!")
    exec {in_fd}>"$tmp/$name.in"       # the stand-in lives while this is open
    in_fds+=("$in_fd")
    exec {out_fd}<"$tmp/$name.out"
    IFS= read -r line <&"$out_fd" || fail "stand-in $name died before ready"
    exec {out_fd}<&-
    printf '%s\n' "$line" >"$tmp/$name.json"
}

get() { "$PY" "$simpy" get "$@"; }                       # get FILE KEY
ctl() { "$PY" "$simpy" ctl "$(get "$tmp/$1.json" control_url)" "$2" "${3:-{\}}"; }
xapi() { local n=$1; shift; "$PY" "$simpy" xapi "$tmp/$n.json" "$@"; }
jget() { "$PY" -c 'import json,sys
v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" "$2"; }
pct() { "$PY" -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

BLOCK=65536
SIZE=$((35 * BLOCK + 4096))     # 36 blocks, the last one partial
LAST=35

# Test data: three random 64 KiB blocks and a 512-byte guest write.
head -c $((3 * BLOCK)) /dev/urandom >"$tmp/rand"
head -c 512 /dev/urandom >"$tmp/w512"

# The image the disk should hold (built with dd, independently of the sim).
make_image() {
    rm -f "$1"; truncate -s "$SIZE" "$1"
    dd if="$tmp/rand" of="$1" bs=$BLOCK count=1 seek=0 conv=notrunc status=none
    dd if="$tmp/rand" of="$1" bs=$BLOCK count=1 skip=1 seek=5 conv=notrunc status=none
    dd if="$tmp/rand" of="$1" bs=4096 count=1 skip=32 seek=$((LAST * 16)) conv=notrunc status=none
}

############################################################################
# Part A: nbdinfo and nbdcopy, NBD on 127.0.0.1 (named in the certificate)
############################################################################
start_sim a --nbd-address 127.0.0.1
[ "$(get "$tmp/a.json" nbd_address)" = 127.0.0.1 ] || fail "a: nbd_address"

vm=$(ctl a create_vm "{\"name\": \"vm-a\", \"disks\": [{\"name\": \"d0\", \"size\": $SIZE}]}")
vdi=$(jget "$vm" disks.0.vdi)
vdi_ref=$(jget "$vm" disks.0.vdi_ref)

make_image "$tmp/image"
r=$(ctl a write_file "{\"vdi\": \"$vdi\", \"path\": \"$tmp/image\"}")
[ "$(jget "$r" changed_blocks)" = 3 ] || fail "write_file changed $(jget "$r" changed_blocks) blocks, want 3"
r=$(ctl a write_file "{\"vdi\": \"$vdi\", \"path\": \"$tmp/image\"}")
[ "$(jget "$r" changed_blocks)" = 0 ] || fail "write_file of the same image changed blocks"
# A guest write through the control API, mirrored into the expected image.
ctl a write "{\"vdi\": \"$vdi\", \"offset\": $((20 * BLOCK)), \"data_b64\": \"$(base64 -w0 "$tmp/w512")\"}" >/dev/null
dd if="$tmp/w512" of="$tmp/image" bs=512 seek=$((20 * 128)) conv=notrunc status=none
ok "guest writes (write_file writes only differing blocks)"

snap=$(xapi a VDI.snapshot "$vdi_ref")
case "$snap" in OpaqueRef:*) ;; *) fail "VDI.snapshot returned '$snap'" ;; esac
# Writes after the snapshot must not show in it.
ctl a write "{\"vdi\": \"$vdi\", \"offset\": 0, \"data_b64\": \"$(base64 -w0 "$tmp/w512")\"}" >/dev/null

info=$(xapi a VDI.get_nbd_info "$snap")
export_name=$(jget "$info" 0.exportname)
port=$(jget "$info" 0.port)
[ "$(jget "$info" 0.address)" = 127.0.0.1 ] || fail "nbd_info address"
[ "$port" = "$(get "$tmp/a.json" nbd_port)" ] || fail "nbd_info port"
mkdir "$tmp/tls-a"
jget "$info" 0.cert >"$tmp/tls-a/ca-cert.pem"
cmp -s "$tmp/tls-a/ca-cert.pem" "$(get "$tmp/a.json" ca_file)" || fail "nbd_info cert"
snap_uuid=$(xapi a VDI.get_uuid "$snap")
case "$export_name" in "/$snap_uuid?session_id=OpaqueRef:"*) ;; *) fail "export name form" ;; esac

# libnbd strips one "/" from the URI path and percent-decodes the rest, so the
# export name (itself starting with "/") is sent whole as "/%2F<uuid>%3F...".
uri_for() { echo "nbds://127.0.0.1:$port/$(pct "$1")?tls-certificates=$tmp/tls-a"; }
uri=$(uri_for "$export_name")

nbdinfo --json "$uri" >"$tmp/nbdinfo.json" || fail "nbdinfo failed"
"$PY" - "$tmp/nbdinfo.json" "$SIZE" "$export_name" <<'EOF' || fail "nbdinfo --json fields"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["exports"][0]
want = {"protocol": "newstyle-fixed", "TLS": True, "structured": False}
bad = {k: j.get(k) for k in want if j.get(k) != want[k]}
ewant = {"export-size": int(sys.argv[2]), "is_read_only": True,
         "can_multi_conn": False, "can_flush": False, "can_trim": False,
         "can_zero": False, "can_cache": False, "export-name": sys.argv[3]}
bad.update({k: e.get(k) for k in ewant if e.get(k) != ewant[k]})
if bad:
    sys.exit("unexpected: %r" % bad)
EOF
ok "nbdinfo: size $SIZE, read-only, TLS, fixed newstyle, no structured replies"

nbdcopy "$uri" "$tmp/copy.img" || fail "nbdcopy failed"
cmp "$tmp/copy.img" "$tmp/image" || fail "nbdcopy: snapshot content differs from what was written"
ok "nbdcopy of the snapshot equals the written data"

stats=$(ctl a stats)
"$PY" - "$stats" "$snap_uuid" "$SIZE" <<'EOF' || fail "stats after nbdcopy"
import json, sys
st = json.loads(sys.argv[1])["nbd"]
v = st["by_vdi"][sys.argv[2]]
size = int(sys.argv[3])
nblocks = (size + 65535) // 65536
assert v["bytes"] >= size and v["requests"] >= 1, v
assert v["blocks"] == list(range(nblocks)), v["blocks"]
assert st["refused"] == 0, st
EOF
ok "stats count the reads"

# Export names that xapi-nbd refuses (connection closed after EXPORT_NAME).
for bad in "/$snap_uuid" \
           "/$snap_uuid?session_id=OpaqueRef:00000000-0000-0000-0000-000000000000" \
           "/00000000-0000-0000-0000-000000000000?session_id=${export_name#*session_id=}" \
           "$snap_uuid?session_id=${export_name#*session_id=}"; do
    if nbdinfo "$(uri_for "$bad")" >/dev/null 2>&1; then
        fail "nbdinfo accepted export name '$bad'"
    fi
done
ok "wrong export names are refused"

# The certificate does not name the default NBD address: URI tools refuse it.
start_sim b
b_port=$(get "$tmp/b.json" nbd_port)
[ "$(get "$tmp/b.json" nbd_address)" = 127.0.0.2 ] || fail "b: default nbd_address"
if nbdinfo "nbds://127.0.0.2:$b_port/x?tls-certificates=$tmp/tls-a" >/dev/null 2>&1; then
    fail "nbdinfo accepted a certificate that does not name 127.0.0.2"
fi
ok "certificate does not name the NBD address"

############################################################################
# Part B: nbdsh over our own socket to 127.0.0.2 (certificate pinned)
############################################################################
vm=$(ctl b create_vm "{\"name\": \"vm-b\", \"disks\": [{\"name\": \"d0\", \"size\": $SIZE}]}")
vdi=$(jget "$vm" disks.0.vdi)
vdi_ref=$(jget "$vm" disks.0.vdi_ref)
make_image "$tmp/image-b"
xapi b VDI.enable_cbt "$vdi_ref" >/dev/null
base=$(xapi b VDI.snapshot "$vdi_ref")
ctl b write_file "{\"vdi\": \"$vdi\", \"path\": \"$tmp/image-b\"}" >/dev/null
snap=$(xapi b VDI.snapshot "$vdi_ref")
info=$(xapi b VDI.get_nbd_info "$snap")
mkdir "$tmp/tls-b"
jget "$info" 0.cert >"$tmp/tls-b/ca-cert.pem"

export T_ADDR T_PORT T_EXPORT T_TLSDIR T_SIZE T_IMAGE T_CTL T_XAPI T_CA T_BASE T_SNAP
T_XAPI=$(get "$tmp/b.json" xapi_url)
T_CA=$(get "$tmp/b.json" ca_file)
T_BASE=$base
T_SNAP=$snap
T_ADDR=$(jget "$info" 0.address)
T_PORT=$(jget "$info" 0.port)
T_EXPORT=$(jget "$info" 0.exportname)
T_TLSDIR=$tmp/tls-b
T_SIZE=$SIZE
T_IMAGE=$tmp/image-b
T_CTL=$(get "$tmp/b.json" control_url)
[ "$T_ADDR" = 127.0.0.2 ] || fail "b: nbd_info address $T_ADDR"

nbdsh_ -n -c - <<'EOF' || fail "nbdsh checks (see above)"
import errno, json, os, socket, time, urllib.request

E = os.environ
ADDR, PORT, EXPORT = E["T_ADDR"], int(E["T_PORT"]), E["T_EXPORT"]
SIZE = int(E["T_SIZE"])
IMAGE = open(E["T_IMAGE"], "rb").read()
BLOCK = 65536

def ctl(op, **body):
    req = urllib.request.Request(E["T_CTL"] + "/" + op,
                                 data=json.dumps(body).encode())
    return json.loads(urllib.request.urlopen(req, timeout=30).read())

def connect(export=EXPORT, tls=nbd.TLS_REQUIRE):
    h = nbd.NBD()
    h.set_tls(tls)
    h.set_tls_certificates(E["T_TLSDIR"])
    h.set_export_name(export)
    sock = socket.create_connection((ADDR, PORT))
    h.connect_socket(sock.detach())      # libnbd owns the descriptor now
    return h

def fails(fn, want_errno=None, what=""):
    try:
        fn()
    except nbd.Error as e:
        got = e.errno if isinstance(e.errno, int) else getattr(errno, str(e.errno), None)
        if want_errno is not None and got != want_errno:
            raise AssertionError("%s: errno %s, want %s (%s)"
                                 % (what, e.errno, want_errno, e))
        return e
    raise AssertionError(what + ": did not fail")

def wait_open(n):
    deadline = time.monotonic() + 20
    while ctl("stats")["nbd"]["open"] != n:
        assert time.monotonic() < deadline, "open connections never reached %d" % n

def ok(msg):
    print("ok - " + msg, flush=True)

h = connect()
assert h.get_size() == SIZE, h.get_size()
assert h.is_read_only() and not h.can_multi_conn()
assert h.get_protocol() == "newstyle-fixed"
assert h.get_tls_negotiated()
assert not h.get_structured_replies_negotiated()
assert h.pread(BLOCK, 0) == IMAGE[:BLOCK]
off = SIZE // BLOCK * BLOCK
assert h.pread(SIZE - off, off) == IMAGE[off:], "last partial block"
assert h.pread(SIZE, 0) == IMAGE, "whole disk (several 512 KiB pieces)"
ok("nbdsh: pinned-certificate TLS, size, read-only, data")

# While a connection is open, xapi-nbd's dom0 VBD makes the VDI "in use".
import ssl, xmlrpc.client
px = xmlrpc.client.ServerProxy(E["T_XAPI"], transport=xmlrpc.client.SafeTransport(
    context=ssl.create_default_context(cafile=E["T_CA"])))
sess = px.session.login_with_password("root", "secret")["Value"]
BASE, SNAP = E["T_BASE"], E["T_SNAP"]
vbds = px.VDI.get_VBDs(sess, SNAP)["Value"]
assert len(vbds) == 1, vbds
vbd = px.VBD.get_record(sess, vbds[0])["Value"]
assert vbd["mode"] == "RO" and vbd["currently_attached"], vbd
assert px.VM.get_is_control_domain(sess, vbd["VM"])["Value"] is True
r = px.VDI.list_changed_blocks(sess, BASE, SNAP)
assert r.get("ErrorDescription") == ["VDI_IN_USE", SNAP, "list_changed_blocks"], r
ctl("set", data_destroy_wait=0.3)
r = px.VDI.data_destroy(sess, SNAP)
assert r.get("ErrorDescription") == ["VDI_IN_USE", SNAP, "data_destroy"], r
assert px.VDI.get_type(sess, SNAP)["Value"] == "user"
h.shutdown()
wait_open(0)
assert px.VDI.get_VBDs(sess, SNAP)["Value"] == []
import base64
bm = base64.b64decode(px.VDI.list_changed_blocks(sess, BASE, SNAP)["Value"])
got = [i for i in range(len(bm) * 8) if bm[i >> 3] >> (7 - (i & 7)) & 1]
assert got == [0, 5, SIZE // BLOCK] and len(bm) == 5, (got, bm.hex())
ok("an open NBD connection holds the VDI (list_changed_blocks, data_destroy)")
h = connect()

e = fails(lambda: h.pread(100, 1), errno.EINVAL, "unaligned pread")
# xapi-nbd ends the connection after any error reply.
fails(lambda: h.pread(512, 0), None, "read after an error reply")
ok("unaligned pread -> EINVAL, then the server hangs up")

wait_open(0)
h = connect()
h.set_strict_mode(0)                     # let libnbd send what it would refuse
fails(lambda: h.pwrite(b"\0" * 512, 0), errno.EPERM, "pwrite")
h = connect()
h.set_strict_mode(0)
fails(lambda: h.flush(), errno.EINVAL, "flush")
h = connect()
h.set_strict_mode(0)
fails(lambda: h.pread(1024, SIZE - 512), None, "read past the end")
h = None
ok("WRITE -> EPERM, FLUSH -> EINVAL, read past the end drops the connection")

fails(lambda: connect(tls=nbd.TLS_DISABLE), None, "connect without TLS")
ok("FORCEDTLS: a client without TLS is refused")

wait_open(0)
ctl("reset_stats")
hs = [connect() for _ in range(16)]
assert ctl("stats")["nbd"]["open"] == 16
fails(lambda: connect(), None, "17th connection")
st = ctl("stats")["nbd"]
assert st["refused"] == 1 and st["connections"] == 16, st
for x in hs:
    assert x.pread(512, 0) == IMAGE[:512]
ok("16 connections served, the 17th refused before the handshake")

hs.pop().shutdown()
wait_open(15)
hs.append(connect())
assert hs[-1].pread(512, 0) == IMAGE[:512]
ok("a slot freed by a disconnect is usable again")

# Sessions expire: open connections go on, new handshakes are refused.
ctl("expire_sessions")
assert hs[0].pread(512, BLOCK * 5) == IMAGE[BLOCK * 5:BLOCK * 5 + 512]
r = ctl("drop_nbd")
assert r["dropped"] == 16, r
for x in hs:
    fails(lambda: x.pread(512, 0), None, "read after drop_nbd")
hs = None
wait_open(0)
fails(lambda: connect(), None, "handshake with an expired session")
ok("expire_sessions keeps open connections; drop_nbd closes them all")
EOF

# Fresh session (the old one expired) for the remaining knob.
info=$(xapi b VDI.get_nbd_info "$snap")
export T_EXPORT
T_EXPORT=$(jget "$info" 0.exportname)
ctl b set "{\"nbd_drop_after_bytes\": $((2 * BLOCK + 512))}" >/dev/null
nbdsh_ -n -c - <<'EOF' || fail "nbdsh: nbd_drop_after_bytes"
import os, socket
E = os.environ
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(E["T_TLSDIR"])
h.set_export_name(E["T_EXPORT"])
h.connect_socket(socket.create_connection((E["T_ADDR"], int(E["T_PORT"]))).detach())
image = open(E["T_IMAGE"], "rb").read()
assert h.pread(65536, 0) == image[:65536]
assert h.pread(65536, 65536) == image[65536:131072]
try:
    h.pread(65536, 0)
except nbd.Error:
    print("ok - nbd_drop_after_bytes drops the connection mid-read")
else:
    raise AssertionError("third read should have been cut")
EOF
st=$(ctl b stats)
[ "$(jget "$st" nbd.bytes)" -ge $((2 * BLOCK + 512)) ] || fail "bytes counted"
ctl b set '{"nbd_drop_after_bytes": 0}' >/dev/null

# libnbd maps every option error to ENOTSUP, so the exact option replies and
# the byte layout are checked with a few raw sockets (standard library only).
"$PY" - <<'EOF' || fail "raw protocol checks"
import os, socket, ssl, struct

E = os.environ
ADDR, PORT = E["T_ADDR"], int(E["T_PORT"])
IHAVEOPT, NBDMAGIC = 0x49484156454F5054, 0x4E42444D41474943
ACK, UNSUP, POLICY, INVALID, TLS_REQD = 1, 0x80000001, 0x80000002, 0x80000003, 0x80000005

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("EOF after %d of %d bytes" % (len(b), n))
        b += c
    return b

def at_eof(s):
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True

def hello(flags=1):
    s = socket.create_connection((ADDR, PORT))
    assert recvn(s, 18) == struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 1), "greeting"
    s.sendall(struct.pack(">I", flags))
    return s

def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)

def reply(s):
    magic, o, t, n = struct.unpack(">QIII", recvn(s, 20))
    assert magic == 0x3E889045565A9, hex(magic)
    return o, t, recvn(s, n) if n else b""

def starttls(s):
    opt(s, 5)
    assert reply(s) == (5, ACK, b""), "STARTTLS ack"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(E["T_TLSDIR"], "ca-cert.pem"))
    ctx.check_hostname = False           # pinned certificate, as cbtfs does
    t = ctx.wrap_socket(s)
    assert t.version() == "TLSv1.2", t.version()
    return t

s = hello()
for o in (3, 6, 7, 8):                   # LIST, INFO, GO, STRUCTURED_REPLY
    opt(s, o, b"" if o in (3, 8) else struct.pack(">IH", 0, 0))
    assert reply(s) == (o, TLS_REQD, b""), "option %d before TLS" % o
t = starttls(s)
opt(t, 3); assert reply(t) == (3, POLICY, b""), "LIST"
opt(t, 5); assert reply(t) == (5, INVALID, b""), "STARTTLS twice"
for o in (6, 7):
    opt(t, o, struct.pack(">IH", 0, 0))
    assert reply(t) == (o, UNSUP, b""), "option %d" % o
for o in (8, 9, 10, 99):                 # STRUCTURED_REPLY, META_CONTEXT ...
    opt(t, o)
    assert reply(t) == (o, UNSUP, b""), "option %d" % o
opt(t, 1, E["T_EXPORT"].encode())
size, flags = struct.unpack(">QH", recvn(t, 10))
assert size == int(E["T_SIZE"]) and flags == 3, (size, flags)
assert recvn(t, 124) == bytes(124), "124 zero bytes"
t.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 0xABCDEF, 65536, 4096))
assert recvn(t, 16) == struct.pack(">IIQ", 0x67446698, 0, 0xABCDEF), "READ reply"
image = open(E["T_IMAGE"], "rb").read()
assert recvn(t, 4096) == image[65536:65536 + 4096], "READ data"
t.sendall(struct.pack(">IHHQQI", 0x25609513, 1, 0, 7, 0, 512))    # FUA flag
assert recvn(t, 16) == struct.pack(">IIQ", 0x67446698, 22, 7), "flagged READ"
assert at_eof(t), "connection closed after the error reply"
print("ok - raw: option replies, export reply, simple READ reply")

s = hello()
opt(s, 1, E["T_EXPORT"].encode())        # EXPORT_NAME in clear text
assert at_eof(s), "EXPORT_NAME before TLS must disconnect"
s = hello(flags=0)                       # no FIXED_NEWSTYLE
assert at_eof(s), "client without FIXED_NEWSTYLE must be dropped"
t = starttls(hello())
opt(t, 2)
assert reply(t) == (2, ACK, b""), "ABORT after TLS is acknowledged"
assert at_eof(t)
t = starttls(hello())
opt(t, 1, b"/no-such-vdi?session_id=OpaqueRef:nope")
assert at_eof(t), "bad export name: no reply, just close"

# Counted at accept, before any handshake: 16 silent sockets fill the table.
held = [hello() for _ in range(16)]
s = socket.create_connection((ADDR, PORT))
assert s.recv(18) == b"", "17th connection must be closed before NBDMAGIC"
print("ok - raw: clear-text EXPORT_NAME, old clients, ABORT, bad names, limit")
EOF

echo "PASS test-sim-nbd"
