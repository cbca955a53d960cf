#!/usr/bin/env python3
"""End to end: an object store encrypted with --encrypt-key-file.

Against the run's Ceph RGW (or one of the test's own):

  - two backups of a disk into a new store given a key make an
    encrypted store: its marker says so and nothing else; no other
    object holds any 64-byte run of the disk's data or of the
    manifests' and notes' text (read as they are in the bucket), and
    each is a sealed object or a pack of sealed blocks;
  - a mount given the key reads every point as the disk was, verify
    passes, `cbtfs ls` counts what the bucket holds, prune merges;
  - the key from the option, the configuration file's
    encrypt-key-file or CBTFS_ENCRYPT_KEY_FILE (option > environment >
    file); no key, a wrong key, a key others may read or of the wrong size, a
    key for a store that is not encrypted or for a directory store: exit
    2, one line naming the problem, nothing on stdout;
  - one byte flipped in a pack: reading the image (with an empty cache)
    fails with EIO on that block alone, every other block reads right,
    verify fails (exit 1), naming the pack with -v; two packs' contents swapped:
    every block they hold fails, none reads as other data; put back,
    verify passes again;
  - the store lock's lease is sealed in the bucket while a slowed
    backup holds it (4 s leases, renewed as they are), and a second
    backup is refused naming the holder, read with the key;
  - cbtfs copy takes the store out into a plain directory store (the
    same images; it warns) and into another encrypted store under another key
    (--dst-encrypt-key-file), which reads the same with its own key and
    refuses the first.

Exit 0 when everything holds, 1 on failure, 77 without Ceph or root.
"""
import errno
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
BLOCK = 65536
RECORD = 16 + BLOCK + 16        # FORMAT.md: salt, sealed block, tag
RUN = 32                        # bytes: every 64-byte run holds an aligned one


def key_file(env, name, n=32, mode=0o600):
    p = env.path(name)
    with open(p, "wb") as f:
        f.write(os.urandom(n))
    os.chmod(p, mode)
    return p


def images(env, store, tag, *extra):
    """{tree path: sha256} of every point's image of STORE."""
    m = env.mount(store, env.path("m-" + tag), *extra)
    out = {}
    for root, _, files in os.walk(os.path.join(m, "by-vm")):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                out[os.path.relpath(p, m)] = cb.sha256(p)
    cb.unmount(m)
    return out


def read_blocks(env, store, tag, guests, *extra):
    """Read each point's image of STORE block by block (a fresh cache,
    so that every block comes from the bucket): ({path: [indexes of
    blocks that failed]}, [paths of blocks that read other data])."""
    m = env.mount(store, env.path("m-" + tag), "--cache",
                  env.path("cache-" + tag), *extra)
    failed, wrong = {}, []
    for root, _, files in os.walk(os.path.join(m, "by-vm")):
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p):
                continue
            with open(guests[os.path.relpath(p, m)], "rb") as g:
                want = g.read()
            bad = failed.setdefault(os.path.relpath(p, m), [])
            fd = os.open(p, os.O_RDONLY)
            try:
                for i in range(len(want) // BLOCK):
                    try:
                        got = os.pread(fd, BLOCK, i * BLOCK)
                    except OSError as e:
                        check(e.errno == errno.EIO, "block %d of %s: %s"
                              % (i, p, e))
                        bad.append(i)
                        continue
                    if got != want[i * BLOCK:(i + 1) * BLOCK]:
                        wrong.append("%s block %d" % (p, i))
            finally:
                os.close(fd)
    cb.unmount(m)
    return failed, wrong


def leaks(objects, secrets):
    """The keys of OBJECTS ({key: bytes}) holding a RUN-byte piece of
    SECRETS (a set of RUN-byte strings)."""
    out = []
    for key, data in objects.items():
        for i in range(len(data) - RUN + 1):
            if data[i:i + RUN] in secrets:
                out.append("%s at %d" % (key, i))
                break
    return out


def pieces(data):
    """The RUN-byte pieces of DATA at multiples of RUN, but for runs of
    a few byte values (zeros, padding) that any format may hold."""
    return {data[i:i + RUN] for i in range(0, len(data) - RUN + 1, RUN)
            if len(set(data[i:i + RUN])) >= 8}


def refused(env, args, want):
    rc, out, err = env.cbtfs(*args, ok=False)
    check(rc == 2 and want in err and out == "", "%s: exit %d, %r, stdout %r"
          % (" ".join(args), rc, err, out[:200]))
    check(len(err.strip().splitlines()) == 1, "more than one line: %r" % err)


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    os.environ["CBTFS_TEST_STORE_KIND"] = "s3"
    os.environ.pop("CBTFS_ENCRYPT_KEY_FILE", None)
    with rgw.shared() as r, sim.Sim() as s, cb.Env() as env:
        if not isinstance(r, rgw.Shared):
            r.curl("PUT", rgw.TEST_BUCKET, check=True)
            os.environ["CBTFS_TEST_RGW"] = env.path("rgw.json")
            with open(env.path("rgw.json"), "w") as f:
                json.dump({k: getattr(r, k) for k in rgw.SHARED_FIELDS}, f)
        store = env.store()
        key = key_file(env, "key")
        K = ["--encrypt-key-file", key]
        _, vdi, guest, srv = cb.random_disk(s, env, "vm", "d", 6 * MiB)
        env.cbtfs(*K, "backup", store, *srv)
        first = env.path("first.img")
        cb.copy_sparse(guest, first)
        cb.write_at(guest, 2 * MiB, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        env.cbtfs("backup", store, *srv, *K)

        # What the bucket's owner sees.
        objects = {k: env.s3_object(store, k) for k in env.store_objects(store)}
        marker = objects.pop("cbtfs-store")
        lines = marker.decode().splitlines()
        check(len(lines) == 3 and lines[0] == "cbtfs-store 2"
              and lines[1].startswith("id ")
              and lines[2].startswith("encrypted aes-256-gcm "),
              "the marker: %r" % marker)
        packs = {k: v for k, v in objects.items() if k.startswith("packs/")}
        check(len(packs) == 2, "packs: %r" % list(packs))
        for k, v in objects.items():
            check(k in packs and len(v) % RECORD == 0
                  or v.startswith(b"CBE1"), "%s is not sealed: %r"
                  % (k, v[:40]))
        plain = env.path("plain")
        _, _, err = env.cbtfs(*K, "copy", store, plain)
        check("can be read without the key" in err, "no warning for a copy "
              "out of encryption: %r" % err)
        text = b""
        for root, _, files in os.walk(os.path.join(plain, "disks")):
            for f in files:
                if f not in ("data", "index"):
                    with open(os.path.join(root, f), "rb") as fh:
                        text += fh.read()
        check(b"cbtfs-manifest" in text or len(text) > 1000,
              "no manifest text in the copy: %d bytes" % len(text))
        secrets = pieces(text)
        for img in (first, guest):
            with open(img, "rb") as f:
                secrets |= pieces(f.read())
        found = leaks(objects, secrets)
        check(not found, "plain text in the bucket: %s" % found[:5])

        # ls: what each layer's objects and packs take in the bucket.
        sizes = env.store_objects(store)
        _, out, _ = env.cbtfs("ls", store, "--json", *K)
        check(json.loads(out)["store"] == {"id": lines[1][3:], "format": 2,
                                           "kind": "s3"},
              "ls --json says the store is %r" % json.loads(out)["store"])
        listed = [p for d in json.loads(out)["disks"] for p in d["points"]]
        check(len(listed) == 2, "ls: %r" % listed)
        for p in listed:
            held = sum(n for k, n in sizes.items()
                       if k.startswith("layers/%s/%s/" % (vdi, p["snapshot"]))
                       or k.startswith("packs/%s/%s." % (vdi, p["snapshot"])))
            check(p["stored_bytes"] == held, "ls says %s takes %d bytes, the "
                  "bucket holds %d" % (p["name"], p["stored_bytes"], held))

        # Read back and verified.  (Two backups in one second are named
        # T.img and T.2.img: the baseline is the first.)
        order = ["by-vm/vm/d/%s.img" % p["name"] for p in
                 sorted(listed, key=lambda p: p["kind"] != "baseline")]
        guests = {order[0]: first, order[1]: guest}
        want = images(env, store, "want", *K)
        check(sorted(want) == sorted(order), "points: %r" % list(want))
        for rel in order:
            check(want[rel] == cb.sha256(guests[rel]), "%s reads wrong"
                  % rel)
        env.cbtfs("verify", store, *K)

        # Keys that do not fit.
        refused(env, ["ls", store], "is encrypted: give --encrypt-key-file")
        other_key = key_file(env, "other")
        refused(env, ["ls", store, "--encrypt-key-file", other_key],
                "is not this store's key")
        # The configuration file's key; the environment beats it, the
        # command line the environment.
        cfg = env.path("enc.conf")
        with open(cfg, "w") as f:
            f.write("[cbtfs]\nencrypt-key-file = %s\n" % key)
        env.cbtfs("ls", store, "--config", cfg)
        wrong = dict(os.environ, CBTFS_ENCRYPT_KEY_FILE=other_key)
        rc, _, err = env.cbtfs("ls", store, "--config", cfg, environ=wrong,
                               ok=False)
        check(rc == 2 and "is not this store's key" in err,
              "the file's key beat the environment's: %d %r" % (rc, err))
        env.cbtfs("ls", store, *K, environ=wrong)
        refused(env, ["ls", store, "--encrypt-key-file",
                      key_file(env, "open", mode=0o644)], "lets other users read it")
        refused(env, ["ls", store, "--encrypt-key-file",
                      key_file(env, "short", n=31)], "this file has 31")
        refused(env, ["ls", plain, *K], "directory store")
        refused(env, ["verify", plain, *K], "directory store")
        plain_s3 = env.store("plain-s3")
        env.cbtfs("copy", plain, plain_s3)
        refused(env, ["ls", plain_s3, *K], "is not encrypted")

        # A flipped byte: that block fails, nothing else.
        pk = max(packs, key=lambda k: len(packs[k]))
        bad = bytearray(packs[pk])
        bad[5 * RECORD + 16 + 1000] ^= 0x20
        env.s3_object(store, pk, "PUT", bytes(bad))
        failed, wrong = read_blocks(env, store, "flip", guests, *K)
        check(not wrong, "damaged blocks read as other data: %s" % wrong)
        nfail = sorted(len(v) for v in failed.values())
        check(nfail[-1] >= 1 and all(n <= 2 for n in nfail),
              "a flipped byte failed blocks %r" % failed)
        rc, out, err = env.cbtfs("verify", "-v", store, *K, ok=False)
        check(rc == 1 and "fails authentication" in out + err
              and pk.split("/")[-1] in out + err,
              "verify of a damaged pack: %d %r %r" % (rc, out, err))

        # Two packs' contents swapped: nothing of them reads.
        a, b = sorted(packs)
        env.s3_object(store, a, "PUT", packs[b])
        env.s3_object(store, b, "PUT", packs[a])
        failed, wrong = read_blocks(env, store, "swap", guests, *K)
        check(not wrong, "swapped packs read as other data: %s" % wrong)
        check(len(failed[order[1]]) >= 16, "the newest point failed only "
              "%d blocks with its packs swapped" % len(failed[order[1]]))
        rc, _, _ = env.cbtfs("verify", store, *K, ok=False)
        check(rc == 1, "verify passes with two packs swapped")
        for k in (a, b):
            env.s3_object(store, k, "PUT", packs[k])
        env.cbtfs("verify", store, *K)

        # Out into a directory, and into a bucket under another key.
        check(images(env, plain, "plain") == want, "the plain copy differs")
        key2 = key_file(env, "key2")
        other = env.store("other")
        env.cbtfs("copy", plain, other, "--dst-encrypt-key-file", key2)
        check(images(env, other, "other", "--encrypt-key-file", key2)
              == want, "the copy under another key differs")
        refused(env, ["ls", other, *K], "is not this store's key")
        env.cbtfs("verify", other, "--encrypt-key-file", key2)

        # Prune merges the two points into one.
        env.cbtfs("prune", store, "--keep-last", "1", *K)
        after = images(env, store, "pruned", *K)
        check(list(after.values()) == [want[order[1]]],
              "after the prune: %r" % after)
        env.cbtfs("verify", store, *K)

        # A lease: sealed in the bucket while held, renewed as it is
        # (a 4 s lease renewed through an 8 s backup: a renewal that
        # failed would lose it, and the backup with it), and named to a
        # host that must wait, which reads the record with the key.
        cb.write_at(guest, 0, os.urandom(MiB))
        s.control("write_file", vdi=vdi, path=guest)
        short = dict(os.environ, CBTFS_S3_LEASE_SECONDS="4")
        p = subprocess.Popen([cb.cbtfs_binary(), "backup", store, *srv, *K,
                              "-q", "--limit-rate", "131072"],
                             env=short, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            held = "disklocks/" + vdi
            while held not in env.store_objects(store):
                check(p.poll() is None and time.monotonic() < deadline,
                      "the slowed backup never held its disk")
                time.sleep(0.05)
            lock = env.s3_object(store, held)
            check(lock is not None and lock.startswith(b"CBE1")
                  and socket.gethostname().encode() not in lock
                  and b"backup" not in lock, "the lease is not sealed: %r"
                  % lock[:60])
            rc, _, err = env.cbtfs("backup", store, *srv, *K,
                                   "--lock-wait", "0", ok=False,
                                   environ=short)
            check(rc == 1 and "in use by cbtfs backup" in err,
                  "a second backup beside the first: %d %r" % (rc, err))
        finally:
            rc = p.wait(timeout=300)
        check(rc == 0, "the backup holding a renewed sealed lease exited "
              "%d" % rc)
        left = [k for k in env.store_objects(store)
                if k == "lock" or k.startswith(("shares/", "disklocks/"))]
        check(left == [], "leases stayed: %s" % left)
    print("ok")


if __name__ == "__main__":
    main()
