#!/usr/bin/env python3
"""A mount of an object store keeps the blocks it reads in a local
cache (--cache DIR, --cache-size SIZE), checked, and reused by the next
mount:

  - a first read fills the cache with the image's blocks; a second
    mount reads the image again without a single GET of a pack (RGW's
    own request log says so), and reads it right;
  - a cached block damaged on this machine is read from the bucket
    again (its GET is in the log), never served: the image reads right;
  - --cache-size bounds what the cache takes;
  - a cache directory others may read is refused with a warning, and
    the mount reads without it.

Exit 0 when everything holds, 1 on failure, 77 without Ceph or root.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import rgw  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def image_of(mnt, vdi):
    d = os.path.join(mnt, "by-uuid", vdi)
    names = os.listdir(d)
    check(len(names) == 1, "points of the disk: %r" % names)
    return os.path.join(d, names[0])


def pack_gets(log, prefix):
    """The GETs of packs of the store PREFIX in RGW's log text LOG."""
    return [l for l in log.splitlines()
            if '"GET /%s/%s/packs/' % (rgw.TEST_BUCKET, prefix) in l]


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    if not rgw.have_ceph():
        cb.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    os.environ["CBTFS_TEST_STORE_KIND"] = "s3"
    with rgw.shared() as r, sim.Sim() as s, cb.Env() as env:
        if not isinstance(r, rgw.Shared):
            # A cluster of our own: described as tests/run would, for
            # Env.store.
            r.curl("PUT", rgw.TEST_BUCKET, check=True)
            os.environ["CBTFS_TEST_RGW"] = env.path("rgw.json")
            with open(env.path("rgw.json"), "w") as f:
                json.dump({k: getattr(r, k) for k in rgw.SHARED_FIELDS}, f)
        store = env.store()
        prefix = store.split("/", 3)[3]
        cache = os.environ["CBTFS_S3_CACHE"]
        _, vdi, guest, srv = cb.random_disk(s, env, "vm", "d", SIZE)
        want = cb.sha256(guest)
        env.cbtfs("backup", store, *srv)

        # A first mount reads from the bucket and keeps what it read.
        m = env.mount(store, env.path("m1"))
        check(cb.sha256(image_of(m, vdi)) == want, "the first read is wrong")
        cb.unmount(m)
        kept = cb.allocated_bytes(cache)
        check(SIZE <= kept <= SIZE + 2 * MiB, "the cache holds %d bytes after "
              "reading %d" % (kept, SIZE))

        # A second mount reads it all from the cache.
        before = len(r.rgw_log())
        m = env.mount(store, env.path("m2"))
        check(cb.sha256(image_of(m, vdi)) == want, "the cached read is wrong")
        cb.unmount(m)
        gets = pack_gets(r.rgw_log()[before:], prefix)
        check(not gets, "the second mount fetched %d runs of packs: %s"
              % (len(gets), gets[:2]))

        # A damaged block of the cache is fetched again, never served.
        packs = [os.path.join(d, f) for d, _, fs in os.walk(cache)
                 for f in fs if not f.endswith(".sum")]
        check(packs, "no pack in the cache")
        with open(packs[0], "r+b") as f:
            f.seek(3 * 65536 + 100)
            f.write(b"damaged on this machine")
        before = len(r.rgw_log())
        m = env.mount(store, env.path("m3"))
        check(cb.sha256(image_of(m, vdi)) == want, "a damaged cache block "
              "was served")
        cb.unmount(m)
        name = os.path.basename(packs[0])
        gets = pack_gets(r.rgw_log()[before:], prefix)
        check(any(name in g for g in gets), "the damaged block was not "
              "fetched again: %s" % gets)

        # --cache-size bounds it.
        small = env.path("small-cache")
        m = env.mount(store, env.path("m4"), "--cache", small,
                      "--cache-size", "16M")
        check(cb.sha256(image_of(m, vdi)) == want, "a read with a small "
              "cache is wrong")
        cb.unmount(m)
        check(0 < cb.allocated_bytes(small) <= 17 * MiB, "a 16 MiB cache holds %d bytes"
              % cb.allocated_bytes(small))

        # A cache others may read is not used.
        shared = env.mkdir("shared-cache")
        os.chmod(shared, 0o755)
        mnt = env.path("m5")
        os.makedirs(mnt)
        _, _, err = env.cbtfs("mount", store, mnt, "--cache", shared)
        env.on_close(cb.unmount, mnt)
        check("without a local cache" in err, "no warning for a cache others "
              "may read: %r" % err)
        check(cb.sha256(image_of(mnt, vdi)) == want, "the read without a "
              "cache is wrong")
        cb.unmount(mnt)
        check(cb.allocated_bytes(shared) == 0, "a cache others may read was filled")
    print("ok")


if __name__ == "__main__":
    main()
