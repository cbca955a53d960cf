#!/usr/bin/env python3
"""End to end: cbtfs serve, points in time over NBD (nbdkit).

A disk with data in a few places (one block written as zeros, a last
block shorter than 64 KiB) is backed up twice with changes.  Served
over a Unix socket and over TCP, each point reads as its image in a
cbtfs mount (qemu-img compare), nbdinfo --map shows holes exactly
where the point holds zeros, and the export allows multi-conn.  Several
POINTs (by path or uuid) are exports named by snapshot uuid with no
default; no POINT serves every point.  A lazy point (backup --no-copy)
reads right with --server, which keeps what it fetched.  A non-loopback
address without TLS is refused (exit 2, one line, nothing listens), as
are unknown points (exit 1), bad addresses (2) and a wrong password (3:
the server refused us); with --tls-certificates a client
trusting the server's CA reads, and a plain client and one trusting
another CA are refused.  A block that fails its checksum is an error
for the NBD client, never data.
"""
# store-kinds: dir s3
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
BLOCK = cb.BLOCK
# Not a whole number of blocks: the last one is 32 KiB.
SIZE = 40 * MiB + 32 * KiB


class Server:
    """A `cbtfs serve` process, ready once its pidfile exists."""

    def __init__(self, env, args):
        self.n = getattr(env, "_serves", 0) + 1
        env._serves = self.n
        self.pidfile = env.path("serve-%d.pid" % self.n)
        self.log_path = env.path("serve-%d.log" % self.n)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [cb.cbtfs_binary(), "serve"] + [str(a) for a in args]
                + ["--pidfile", self.pidfile],
                stdin=subprocess.DEVNULL, stderr=log)
        env.on_close(self.stop)
        try:
            cb.wait_for_file(self.pidfile, self.proc)
        except cb.TestFailure as e:
            raise cb.TestFailure("%s: %s" % (e, self.log())) from None

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM, as systemd stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def run(cmd, ok=True):
    p = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=600)
    if ok:
        check(p.returncode == 0, "%s exited %d: %s" % (" ".join(map(str, cmd)),
                                                       p.returncode, p.stderr))
    return p


def unix_uri(sock, export=""):
    return "nbd+unix:///%s?socket=%s" % (export, sock)


def compare(uri, image, server=None):
    """qemu-img compare: the export reads as IMAGE, byte for byte."""
    p = run(["qemu-img", "compare", "-f", "raw", "-F", "raw", uri, image],
            ok=False)
    check(p.returncode == 0, "qemu-img compare %s %s: %d %s%s%s"
          % (uri, image, p.returncode, p.stdout, p.stderr,
             server.log() if server else ""))


def nbd_sha256(uri, extra=()):
    """The sha256 of what nbdcopy reads from URI."""
    p = subprocess.run(["nbdcopy"] + list(extra) + [uri, "-"],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=600)
    check(p.returncode == 0, "nbdcopy %s: %s" % (uri, p.stderr.decode()))
    return hashlib.sha256(p.stdout).hexdigest()


def zero_runs(image, size):
    """[(offset, length, zero?)] by 64 KiB block of IMAGE (merged)."""
    runs = []
    with open(image, "rb") as f:
        for off in range(0, size, BLOCK):
            n = min(BLOCK, size - off)
            z = f.read(n) == bytes(n)
            if runs and runs[-1][2] == z:
                runs[-1][1] += n
            else:
                runs.append([off, n, z])
    return [tuple(r) for r in runs]


def nbd_map(uri):
    """nbdinfo --map as [(offset, length, hole-and-zero?)] (merged)."""
    p = run(["nbdinfo", "--map", "--json", uri])
    runs = []
    for e in json.loads(p.stdout):
        z = e["type"] == 3          # NBD_STATE_HOLE | NBD_STATE_ZERO
        check(e["type"] in (0, 3), "unexpected extent type %r" % e)
        if runs and runs[-1][2] == z and runs[-1][0] + runs[-1][1] == e["offset"]:
            runs[-1][1] += e["length"]
        else:
            runs.append([e["offset"], e["length"], z])
    return [tuple(r) for r in runs]


def exports(uri):
    p = run(["nbdinfo", "--list", "--json", uri])
    return {e["export-name"]: e.get("description") for e in
            json.loads(p.stdout)["exports"]}


def refused(cmd, what):
    p = run(cmd, ok=False)
    check(p.returncode != 0, "%s was not refused: %s" % (what, p.stdout))
    return p


def main():
    if os.geteuid() != 0:
        cb.skip("needs root for FUSE mounts")
    for tool in ("nbdkit", "nbdinfo", "nbdcopy", "qemu-img"):
        if shutil.which(tool) is None:
            cb.skip("%s is not installed" % tool)
    with sim.Sim() as s, cb.Env("cbtfs-serve") as env:
        info = s.info
        srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
               "--password-file", env.password_file()]
        store = env.store()

        # A sparse guest: data in a few places, one block written as
        # zeros (stored as a zero block), and the short last block.
        rec = s.control("create_vm", name="web",
                        disks=[{"name": "root", "size": SIZE}])
        vdi = rec["disks"][0]["vdi"]
        guest = env.path("root.img")
        with open(guest, "wb") as f:
            f.truncate(SIZE)
        cb.write_at(guest, 0, os.urandom(MiB))
        cb.write_at(guest, MiB, bytes(BLOCK))
        cb.write_at(guest, 5 * MiB + BLOCK, os.urandom(BLOCK))
        cb.write_at(guest, 20 * MiB, os.urandom(3 * BLOCK + 100))
        cb.write_at(guest, SIZE - 4 * KiB, os.urandom(4 * KiB))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, *srv)
        g1 = env.path("root-1.img")
        shutil.copyfile(guest, g1)
        # The second point: new data, and data overwritten with zeros.
        cb.write_at(guest, 30 * MiB, os.urandom(2 * BLOCK))
        cb.write_at(guest, 0, bytes(BLOCK))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, *srv)
        p1, p2 = env.ls_json(store)["disks"][0]["points"]
        mnt = env.mount(store, env.path("mnt"))
        img1 = os.path.join(mnt, "by-uuid", vdi, p1["snapshot"] + ".img")
        img2 = os.path.join(mnt, "by-uuid", vdi, p2["snapshot"] + ".img")
        check(cb.sha256(img2) == cb.sha256(guest)
              and cb.sha256(img1) == cb.sha256(g1), "the mount reads wrong")

        # One point by its path in the tree, on a Unix socket: the
        # default export, named by its uuid.
        sock = env.path("s1.sock")
        sv = Server(env, [store, "by-vm/web/root/latest", "--unix", sock])
        # Connecting to a Unix socket needs write permission on it.
        check(os.stat(sock).st_mode & 0o022 == 0,
              "others may connect: %o" % os.stat(sock).st_mode)
        compare(unix_uri(sock), img2)
        compare(unix_uri(sock, p2["snapshot"]), img2)
        want = zero_runs(guest, SIZE)
        got = nbd_map(unix_uri(sock))
        check(got == want, "nbdinfo --map %r, expected %r" % (got, want))
        check(any(z for _, _, z in want) and any(not z for _, _, z in want),
              "the test disk has no holes or no data")
        check(run(["nbdinfo", "--can", "multi-conn", unix_uri(sock)],
                  ok=False).returncode == 0, "no multi-conn")
        check(run(["nbdinfo", "--is", "read-only", unix_uri(sock)],
                  ok=False).returncode == 0, "not read-only")
        ex = exports(unix_uri(sock))
        check(ex == {p2["snapshot"]: "by-vm/web/root/%s.img" % p2["name"]},
              "exports: %r" % ex)
        rc = sv.stop()
        check(rc == 0, "serve exited %d: %s" % (rc, sv.log()))

        # The first point by uuid, over TCP on loopback.
        port = free_port()
        sv = Server(env, [store, p1["snapshot"], "--listen",
                          "127.0.0.1:%d" % port])
        tcp = "nbd://127.0.0.1:%d" % port
        compare(tcp, img1)
        got = nbd_map(tcp)
        check(got == zero_runs(g1, SIZE), "map of point 1: %r" % got)
        rc = sv.stop()
        check(rc == 0, "serve exited %d: %s" % (rc, sv.log()))

        # Several points: exports named by uuid, no default export.
        sock = env.path("s2.sock")
        sv = Server(env, [store, p1["snapshot"], "by-vm/web/root/latest",
                          "--unix", sock])
        ex = exports(unix_uri(sock))
        check(set(ex) == {p1["snapshot"], p2["snapshot"]}, "exports %r" % ex)
        compare(unix_uri(sock, p1["snapshot"]), img1)
        compare(unix_uri(sock, p2["snapshot"]), img2)
        refused(["nbdinfo", unix_uri(sock)], "the default export of two")
        refused(["nbdinfo", unix_uri(sock, "by-vm")], "an unknown export")
        sv.stop()

        # A lazy point of another VM: fetched through --server and kept.
        rec = s.control("create_vm", name="lazy",
                        disks=[{"name": "d", "size": 8 * MiB}])
        lvdi = rec["disks"][0]["vdi"]
        lguest = env.path("lazy.img")
        with open(lguest, "wb") as f:
            f.write(os.urandom(8 * MiB))
        s.control("write_file", vdi=lvdi, path=lguest)
        env.cbtfs("backup", store, "--no-copy", "--vm", "lazy", *srv)
        lp = [d for d in env.ls_json(store)["disks"]
              if d["uuid"] == lvdi][0]["points"][0]
        check(lp["present_blocks"] == 0, "--no-copy copied")
        # The host's NBD server showing another key is refused before
        # the export name (the session) is sent: the read fails.
        s.control("set", nbd_impostor=True)
        before = s.control("stats")["nbd"]
        sock = env.path("s3i.sock")
        sv = Server(env, [store, "by-vm/lazy/d/latest", "--unix", sock] + srv)
        refused(["nbdcopy", unix_uri(sock), "-"], "a read from an impostor")
        sv.stop()
        after = s.control("stats")["nbd"]
        check(after["impostor_handshakes"] > before["impostor_handshakes"],
              "serve never reached the impostor")
        check(after["export_names"] == before["export_names"],
              "the impostor got an export name")
        check("certificate" in sv.log(), "no line naming the certificate: %r"
              % sv.log())
        s.control("set", nbd_impostor=False)
        # nbdkit loading the plugin itself (not preloaded by cbtfs serve)
        # cannot pin the certificate: it refuses to fetch at all.
        plugin = os.path.join(os.path.dirname(cb.cbtfs_binary()),
                              "nbdkit-cbtfs-plugin.so")
        sock = env.path("s3p.sock")
        pid = env.path("s3p.pid")
        proc = subprocess.Popen(
            ["nbdkit", "-f", "-r", "-U", sock, "-P", pid, plugin,
             "store=" + store, "point=by-vm/lazy/d/latest",
             "server=" + info["xapi_url"], "ca-file=" + info["ca_file"],
             "password-file=" + srv[-1]],
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        env.on_close(lambda: proc.poll() is None and proc.terminate())
        cb.wait_for_file(pid, proc)
        refused(["nbdcopy", unix_uri(sock), "-"], "an unpinned fetch")
        proc.terminate()
        err = proc.communicate(timeout=60)[1]
        check("cannot check the server's certificate" in err,
              "nbdkit without the preload: %r" % err)
        check(s.control("stats")["nbd"]["export_names"] == before["export_names"],
              "an unpinned connection sent an export name")

        sock = env.path("s3.sock")
        sv = Server(env, [store, "by-vm/lazy/d/latest", "--unix", sock] + srv)
        compare(unix_uri(sock), lguest, sv)
        rc = sv.stop()
        check(rc == 0, "serve exited %d: %s" % (rc, sv.log()))
        lp = [d for d in env.ls_json(store)["disks"]
              if d["uuid"] == lvdi][0]["points"][0]
        check(lp["present_blocks"] == 8 * MiB // BLOCK,
              "serve kept %d blocks of %d" % (lp["present_blocks"],
                                              8 * MiB // BLOCK))

        # No POINT: every point of the store.
        sock = env.path("s4.sock")
        sv = Server(env, [store, "--unix", sock])
        ex = exports(unix_uri(sock))
        check(set(ex) == {p1["snapshot"], p2["snapshot"], lp["snapshot"]},
              "exports of the whole store: %r" % ex)
        sv.stop()

        # Refusals, each one line, before anything listens.
        port = free_port()
        rc, _, err = env.cbtfs("serve", store, "--listen", "0.0.0.0:%d" % port,
                               ok=False)
        check(rc == 2 and len(err.strip().splitlines()) == 1
              and "TLS" in err, "0.0.0.0 without TLS: %d %r" % (rc, err))
        with socket.socket() as so:
            check(so.connect_ex(("127.0.0.1", port)) != 0,
                  "something listens after a refusal")
        rc, _, err = env.cbtfs("serve", store, "--listen", "[::]:%d" % port,
                               ok=False)
        check(rc == 2 and "TLS" in err, "[::] without TLS: %d %r" % (rc, err))
        for bad in ("localhost:10809", "127.0.0.1", "127.0.0.1:0",
                    "::1:10809"):
            rc, _, err = env.cbtfs("serve", store, "--listen", bad, ok=False)
            check(rc == 2 and len(err.strip().splitlines()) == 1,
                  "--listen %s: %d %r" % (bad, rc, err))
        sock = env.path("s-bad.sock")
        rc, _, err = env.cbtfs("serve", store, "--unix", sock, *srv[:-1],
                               env.password_file("wrong", name="bad"),
                               ok=False)
        check(rc == 3 and len(err.strip().splitlines()) == 1
              and not os.path.exists(sock),
              "a wrong password: %d %r" % (rc, err))
        rc, _, err = env.cbtfs("serve", store, "by-vm/web/root/nope.img",
                               ok=False)
        check(rc == 1 and "no point by-vm/web/root/nope.img" in err,
              "an unknown point: %d %r" % (rc, err))

        # TLS, on every address: the right CA reads; a plain client and
        # one that trusts another CA are refused.
        good, other = env.mkdir("ca-good"), env.mkdir("ca-other")
        shutil.copy(os.path.join(info["tls_dir"], "ca-cert.pem"), good)
        shutil.copy(os.path.join(info["impostor_tls_dir"], "ca-cert.pem"),
                    other)
        port = free_port()
        sv = Server(env, [store, "by-vm/web/root/latest", "--listen",
                          "0.0.0.0:%d" % port,
                          "--tls-certificates", info["tls_dir"]])
        tls = "nbds://127.0.0.1:%d/?tls-certificates=%s" % (port, good)
        check(nbd_sha256(tls) == cb.sha256(guest), "TLS reads wrong")
        refused(["nbdinfo", "nbd://127.0.0.1:%d" % port], "a plain client")
        refused(["nbdinfo", "nbds://127.0.0.1:%d/?tls-certificates=%s"
                 % (port, other)], "a client trusting another CA")
        rc = sv.stop()
        check(rc == 0, "serve exited %d: %s" % (rc, sv.log()))

        # A block that fails its checksum is an error, never data.  (An
        # object store's mounts kept good copies in their local cache:
        # this serve starts with an empty one, so that it reads the
        # bucket.)
        cb.unmount(mnt)
        if not cb.is_dir_store(store):
            os.environ["CBTFS_S3_CACHE"] = env.path("empty-cache")
        off = 20 * MiB + 100
        was = env.flip_block_byte(store, vdi, p1["snapshot"], off)
        sock = env.path("s5.sock")
        sv = Server(env, [store, p1["snapshot"], "--unix", sock])
        p = subprocess.run(["nbdcopy", unix_uri(sock), "-"],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=600)
        check(p.returncode != 0, "a damaged block was served as data")
        check(len(p.stdout) <= off or p.stdout[off] == was,
              "the damaged byte was served")
        sv.stop()
        check("checksum" in sv.log() or "damaged" in sv.log(),
              "no log line about the damage: %r" % sv.log())


if __name__ == "__main__":
    main()
    print("PASS")
