#!/usr/bin/env python3
"""End to end: cbtfs copy SRC DST replicates a store, incrementally.

A directory store with four points of a disk (and a second VM) is
copied into DST (a directory, or a bucket in the object store run):
every point there reads as in SRC; copying again moves nothing; after a
prune at SRC the next copy drops the same points at DST (folding them
as prune does), and the kept points still read as in SRC; --keep-extra
keeps DST's points SRC no longer has.  Copying DST back into a new
directory gives the same images, verify passes on both.  A block
damaged in SRC is never copied: that point fails (exit 1) and DST's
image of it reads EIO there, never other data, while the rest is
copied.  Copying a store into itself is refused (exit 2).
"""
# store-kinds: dir s3
import errno
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20


def images(env, store, tag):
    """{tree path: sha256} of every image of STORE, or the errno."""
    m = env.mount(store, env.path("m-" + tag))
    out = {}
    for root, _, files in os.walk(os.path.join(m, "by-vm")):
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p):
                continue
            try:
                out[os.path.relpath(p, m)] = cb.sha256(p)
            except OSError as e:
                out[os.path.relpath(p, m)] = e.errno
    cb.unmount(m)
    return out


def copy(env, src, dst, *extra, ok=True):
    rc, out, err = env.cbtfs("copy", src, dst, "--json", *extra, ok=ok)
    return rc, json.loads(out.strip().splitlines()[-1]), err


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    with sim.Sim() as s, cb.Env() as env:
        _, vdi, guest, srv = cb.random_disk(s, env, "web", "root", 64 * MiB)
        _, vdi2, guest2, srv2 = cb.random_disk(s, env, "db", "data", 8 * MiB)
        src, dst = env.path("src"), env.store("dst")
        env.cbtfs("backup", src, "--vm", "db", *srv2)
        for i in range(4):
            cb.write_at(guest, (i * 13 % 60) * MiB, os.urandom(2 * MiB))
            s.control("write_file", vdi=vdi, path=guest)
            env.cbtfs("backup", src, "--vm", "web", *srv)

        rc, r, _ = copy(env, src, dst)
        check(rc == 0 and r["status"] == 0 and r["made"] == 5
              and r["failed"] == 0, "first copy: %r" % r)
        want = images(env, src, "src1")
        check(images(env, dst, "dst1") == want, "DST does not read as SRC")
        rc, r, _ = copy(env, src, dst)
        check(r["made"] == 0 and r["blocks"] == 0 and r["same"] == 5,
              "a second copy moved something: %r" % r)

        # A prune at SRC is followed at DST; --keep-extra keeps them.
        env.cbtfs("prune", src, "--keep-last", "2")
        keep = env.store("keep")
        copy(env, dst, keep)
        rc, r, _ = copy(env, src, keep, "--keep-extra")
        check(r["dropped"] == 0, "--keep-extra dropped: %r" % r)
        check(len(images(env, keep, "keep")) == 5, "--keep-extra lost points")
        rc, r, _ = copy(env, src, dst)
        check(rc == 0 and r["dropped"] == 2 and r["made"] == 0,
              "copy after a prune: %r" % r)
        want = images(env, src, "src2")
        check(len(want) == 3 and images(env, dst, "dst2") == want,
              "after the prune DST does not read as SRC")

        # And back, into a directory.
        back = env.path("back")
        rc, r, _ = copy(env, dst, back)
        check(rc == 0 and images(env, back, "back") == want,
              "the copy back does not read as SRC: %r" % r)
        for st in (dst, back):
            env.cbtfs("verify", st)

        # A damaged block at SRC is not copied.
        # The new point's own layer (a delta of the first MiB) is damaged.
        folder = os.path.join(src, "disks", vdi2)
        before = set(os.listdir(folder))
        cb.write_at(guest2, 0, os.urandom(MiB))
        s.control("write_file", vdi=vdi2, path=guest2)
        env.cbtfs("backup", src, "--vm", "db", *srv2)
        new = [d for d in set(os.listdir(folder)) - before if len(d) == 36]
        check(len(new) == 1, "the backup made layers %r" % new)
        damaged = new[0]
        data = os.path.join(folder, damaged, "data")
        check(os.path.getsize(data) >= 65536, "the new layer holds no block")
        with open(data, "r+b") as f:
            f.seek(100)
            f.write(b"bit rot in the source")
        fresh = env.store("fresh")
        rc, r, err = copy(env, src, fresh, ok=False)
        check(rc == 1 and r["failed"] == 1 and r["status"] == 1,
              "a damaged block was copied: rc %d %r" % (rc, r))
        check(damaged in err and "checksum" in err, "no line names the "
              "damaged point: %r" % err)
        got = images(env, fresh, "fresh")
        bad = [p for p, v in got.items() if "db/data" in p]
        check(any(got[p] == errno.EIO for p in bad), "the damaged point reads "
              "at DST: %r" % {p: got[p] for p in bad})
        check(all(got[p] == want[p] for p in want), "the other points were "
              "not copied right")

        rc, _, err = env.cbtfs("copy", back, back, ok=False)
        check(rc == 2 and "same store" in err, "a copy into itself: %d %s"
              % (rc, err))
    print("ok")


if __name__ == "__main__":
    main()
