#!/usr/bin/env python3
"""End to end: cbtfs reads NBD only from a server that holds the
certificate VDI.get_nbd_info gave, wherever that server is reached.

Someone on the path to the NBD network could answer in the host's
place with a certificate of the same names (CN and SAN) and another
key: the stand-in's own NBD server with its knob nbd_impostor, and
nbdkit with the stand-in's impostor_tls_dir.  Against either:
- backup, for a first baseline and for a delta, exits 1 with one line
  per disk naming the server and its certificate, commits no layer,
  and the snapshots it took are removed from the host;
- fetch of a --no-copy point refuses; nothing is stored and the
  snapshot keeps its data;
- a read through a mount with --server fails with EIO, and the mount's
  log names the certificate;
- verify --server refuses;
- no export name (which carries a session) reaches the impostor: the
  stand-in counts none, nbdkit logs no connection that got past TLS,
  though each command completed a handshake with it;
- neither the password nor a session appears in any output.
Positive controls, so the test cannot pass by refusing everything: the
real stand-in serves backups, and the same nbdkit with the right
certificate serves a mount's read and a fetch (and then logs the
export name it was asked for).  The snapshots refused backups took and
removed lose nothing: the next backup has the changes they held.
"""
import errno
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 4 * MiB
CHANGED = 1 * MiB               # the lazy point changes [1 MiB, 2 MiB)
LATER = 2 * MiB                 # and then [2 MiB, 3 MiB) changes
PASSWORD = "pin-Pa55word"


def tree(root):
    """What the store holds: every file with its content's digest.  (Not
    folders: backup makes a new disk's, empty, before it snapshots.)"""
    out = {}
    for d, _, files in os.walk(root):
        for x in files:
            p = os.path.join(d, x)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


class Pin:
    def __init__(self, s, env):
        self.s = s
        self.env = env
        self.info = s.info
        self.said = []
        self.pw = env.password_file(PASSWORD)
        self.store = env.path("store")
        self.srv = ["--server", self.info["xapi_url"], "--ca-file",
                    self.info["ca_file"], "--password-file", self.pw]
        self.n = 0
        self.fresh = []               # disks never backed up

    def cbtfs(self, *args, ok=True):
        r = self.env.cbtfs(*args, ok=ok)
        self.said.append(r[1] + r[2])
        return r

    def points(self, vdi):
        """Disk VDI's points in time in the store."""
        disks = self.env.ls_json(self.store)["disks"]
        return [p for d in disks if d["uuid"] == vdi for p in d["points"]]

    def snapshots(self, vdi):
        """The host's snapshots of VDI (uuids)."""
        ref = self.s.control("vdi", uuid=vdi)["ref"]
        return sorted(v["vdi"] for v in self.s.control("vdis")["vdis"]
                      if v["snapshot_of"] == ref)

    def refused(self, what, rc, err, server, disks=1):
        """Exit 1, and one line of ERR per disk names SERVER and its
        certificate; no retry."""
        lines = [ln for ln in err.splitlines() if "certificate" in ln]
        check(rc == 1, "%s against an impostor exited %d: %r" % (what, rc, err))
        check(len(lines) == disks and all(server in ln for ln in lines),
              "%s: want %d line(s) naming %s and the certificate: %r"
              % (what, disks, server, err))
        check("retrying" not in err, "%s: a refused certificate was retried: "
              "%r" % (what, err))

    def against(self, server, vdi, snap, nbd_stats):
        """Every command, against the impostor reached at SERVER
        ("address:port"), for disk VDI whose lazy point is SNAP.
        NBD_STATS() counts the impostor's handshakes."""
        store = self.store
        before = tree(store)
        snaps = self.snapshots(vdi)

        # A delta backup of VDI, and the first (a baseline) of a new disk
        # (and of those earlier calls made).
        self.n += 1
        new = self.s.control("create_vm", name="new%d" % self.n, disks=[
            {"name": "d", "size": SIZE}])["disks"][0]["vdi"]
        self.s.control("write", vdi=new, offset=0, data_b64="AAECAw==")
        self.fresh.append(new)
        h = nbd_stats()
        rc, _, err = self.cbtfs("backup", store, *self.srv, ok=False)
        self.refused("backup", rc, err, server, disks=1 + len(self.fresh))
        check(nbd_stats() > h, "backup never reached the impostor")
        after = tree(store)
        check(after == before, "backup changed the store: %s" % sorted(
            set(after.items()) ^ set(before.items())))
        check(self.snapshots(vdi) == snaps
              and all(self.snapshots(x) == [] for x in self.fresh),
              "backup left a snapshot no layer describes")

        # Fetch of the lazy point.
        h = nbd_stats()
        rc, _, err = self.cbtfs("fetch", store, snap, *self.srv, ok=False)
        self.refused("fetch", rc, err, server)
        check(nbd_stats() > h, "fetch never reached the impostor")
        check(tree(store) == before, "fetch changed the store")
        rec = self.s.control("vdi", uuid=snap)
        check(rec["type"] == "user" and rec["path"], "the snapshot lost its data")

        # A read through a mount.
        h = nbd_stats()
        self.n += 1
        m = self.env.mount_fg(store, self.env.path("m%d" % self.n), *self.srv)
        img = os.path.join(m.mnt, "by-uuid", vdi, snap + ".img")
        try:
            cb.pread(img, CHANGED, 65536)
            check(False, "a mount read from the impostor")
        except OSError as e:
            check(e.errno == errno.EIO, "mount read: %s" % e)
        check(m.unmount() == 0, "mount failed")
        log = m.log()
        self.said.append(log)
        check("certificate" in log and server in log,
              "the mount's log does not name the certificate: %r" % log)
        check(nbd_stats() > h, "the mount never reached the impostor")
        check(tree(store) == before, "the mount changed the store")

        # verify --server.
        h = nbd_stats()
        rc, _, err = self.cbtfs("verify", store, *self.srv, ok=False)
        check(rc == 1 and "certificate" in err and server in err,
              "verify against an impostor: %d %r" % (rc, err))
        check(nbd_stats() > h, "verify never reached the impostor")
        check(tree(store) == before, "verify changed the store")


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with sim.Sim("--password", PASSWORD) as s, cb.Env() as env:
        info = s.info
        t = Pin(s, env)
        vm, vdi, guest, _ = cb.random_disk(s, env, "web", "root", SIZE,
                                           password=PASSWORD)
        store = t.store
        stand_in = "%s:%d" % (info["nbd_address"], info["nbd_port"])

        def stats():
            return s.control("stats")["nbd"]

        def impostor_handshakes():
            return stats()["impostor_handshakes"]

        # (a) The stand-in's own NBD server shows the impostor's certificate.
        s.control("set", nbd_impostor=True)
        rc, _, err = t.cbtfs("backup", store, *t.srv, ok=False)
        t.refused("first backup", rc, err, stand_in)
        check(t.points(vdi) == [], "a layer was committed: %s" % t.points(vdi))
        check(t.snapshots(vdi) == [], "the refused baseline's snapshot stayed")
        st = stats()
        check(st["impostor_handshakes"] > 0, "the impostor saw no handshake")
        check(st["export_names"] == 0, "the impostor got an export name")

        # Positive control: the real server serves.
        s.control("set", nbd_impostor=False)
        t.cbtfs("backup", store, *t.srv)
        check(stats()["export_names"] > 0, "the stand-in counts no export names")
        pts = t.points(vdi)
        check(len(pts) == 1 and pts[0]["complete"], "baseline: %s" % pts)

        # A lazy point, recorded without NBD.
        cb.write_at(guest, CHANGED, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        t.cbtfs("backup", store, "--no-copy", *t.srv)
        snap = t.points(vdi)[-1]["snapshot"]

        # A change only the refused backups' snapshots hold.
        cb.write_at(guest, LATER, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        s.control("set", nbd_impostor=True)
        names = stats()["export_names"]
        t.against(stand_in, vdi, snap, impostor_handshakes)
        check(stats()["export_names"] == names,
              "the impostor got %d export name(s)" % (stats()["export_names"] - names))
        s.control("set", nbd_impostor=False)

        # (b) nbdkit with the impostor's certificate, at another address
        # (the certificate names neither).
        flat = s.control("vdi", uuid=snap)["path"]
        fake_log, fake_dbg = env.path("fake.log"), env.path("fake.debug")
        _, port = env.nbdkit(flat, "127.0.0.4", info["impostor_tls_dir"],
                             [("log", "logfile=" + fake_log)], debug_log=fake_dbg)
        s.control("nbd_override", vdi="*", address="127.0.0.4", port=port)

        def fake_handshakes():
            return open(fake_dbg).read().count("TLS handshake completed")

        t.against("127.0.0.4:%d" % port, vdi, snap, fake_handshakes)
        log, dbg = open(fake_log).read(), open(fake_dbg).read()
        check("Preconnect" in log, "nbdkit's log saw no connection")
        check("Connect export" not in log, "a connection got past TLS: %s" % log)
        check("requested export" not in dbg and "session_id" not in dbg,
              "the impostor nbdkit was asked for an export")

        # Positive control: the same nbdkit with the right certificate.
        good_log = env.path("good.log")
        _, port = env.nbdkit(flat, "127.0.0.4", info["tls_dir"],
                             [("log", "logfile=" + good_log)])
        s.control("nbd_override", vdi="*", address="127.0.0.4", port=port)
        m = env.mount_fg(store, env.path("good-mnt"), *t.srv)
        img = os.path.join(m.mnt, "by-uuid", vdi, snap + ".img")
        check(cb.pread(img, CHANGED, MiB) == cb.pread(guest, CHANGED, MiB),
              "the right server's data read wrong")
        check(m.unmount() == 0, "mount failed")
        t.said.append(m.log())
        t.cbtfs("fetch", store, snap, *t.srv)
        pts = t.points(vdi)
        check(pts[-1]["complete"] and pts[-1]["present_blocks"] > 0,
              "fetch from the right server: %s" % pts[-1])
        check("Connect export" in open(good_log).read(),
              "nbdkit's log does not show connections that got past TLS")

        # Destroying the refused backups' snapshots folded their changed
        # blocks into the next snapshot's (docs/xapi.md): the next
        # backup, from the host itself, has the change they held.
        s.control("nbd_override", vdi="*")
        t.cbtfs("backup", store, *t.srv)
        m = env.mount_fg(store, env.path("last-mnt"))
        latest = os.path.join(m.mnt, "by-uuid", vdi, t.points(vdi)[-1]["snapshot"]
                              + ".img")
        check(cb.sha256(latest) == cb.sha256(guest), "the backup after the "
              "refused ones lacks a change")
        check(m.unmount() == 0, "mount failed")

        for text in t.said:
            for secret in (PASSWORD, "OpaqueRef:", "session_id"):
                check(secret not in text, "%r appeared in: %r" % (secret, text))
    print("ok")


if __name__ == "__main__":
    main()
