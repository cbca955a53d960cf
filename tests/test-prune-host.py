#!/usr/bin/env python3
"""End to end: prune --server removes the dropped points' snapshots from
the host.

VM "web", one disk: N1 a baseline, N2 with --no-copy (its snapshot keeps
its data on the host: the store lacks its blocks), N3 writing over the
same blocks as N2 (so no kept point needs N2's missing blocks), N4.
After N4's backup the host holds N2's snapshot (data) and N4's
(CBT metadata): backup removed the other metadata-only ones.

- prune --keep-last 1 --include-incomplete without --server, on a copy
  of the store: N2 and N3 go from the store, folded into N4 (N1 stays,
  the newest point that read from the store alone when the plan was
  made), a warning names N2's snapshot with `xe vdi-destroy`, and the
  host still holds it;
- prune --server with a CA that does not trust the host: exit 3 with
  one line, the store unchanged (no point gone);
- --password-file without --server: exit 2;
- prune --server: the same drops, N2's snapshot destroyed on the host
  (--json host_snapshots_removed 1, -v names it), N4's snapshot and the
  live disk untouched; the next backup (N5) is exact: its point reads
  the guest's disk, so the host's changed-block tracking still holds.
"""
# store-kinds: dir s3
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 2 * MiB
BLOCK = 65536


def on_host(s, uuid):
    return any(v["vdi"] == uuid for v in s.control("vdis")["vdis"])


def other_ca(env):
    """A CA certificate that has nothing to do with the stand-in's."""
    key, crt = env.path("other.key"), env.path("other.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "1", "-subj",
                    "/CN=other"], check=True, capture_output=True)
    return crt


def main():
    with sim.Sim() as s, cb.Env() as env:
        vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        store = env.store()
        want = {}

        def night(*extra, blocks=(3, 4)):
            for b in blocks:
                cb.write_at(guest, b * BLOCK, os.urandom(BLOCK))
            s.control("write_file", vdi=vdi, path=guest)
            env.cbtfs("backup", store, *srv, "--vm", vm["vm"], "-q", *extra)
            snap = env.ls_json(store)["disks"][0]["points"][-1]["snapshot"]
            want[snap] = cb.sha256(guest)
            return snap

        n1 = night(blocks=())
        n2 = night("--no-copy")
        n3 = night()                    # over N2's blocks
        n4 = night(blocks=(7,))
        check(on_host(s, n2) and on_host(s, n4) and not on_host(s, n1)
              and not on_host(s, n3),
              "before the prune the host holds N2's and N4's snapshots only")
        policy = ["--keep-last", "1", "--include-incomplete"]

        # Without --server: the store only, and a warning.
        copy = env.store("copy")
        env.copy_store(store, copy)
        _, _, err = env.cbtfs("prune", copy, *policy)
        check("xe vdi-destroy uuid=%s" % n2 in err,
              "no warning names N2's snapshot: %r" % err)
        check(on_host(s, n2), "prune without --server touched the host")
        pts = [p["snapshot"] for p in env.ls_json(copy)["disks"][0]["points"]]
        check(pts == [n1, n4], "without --server the store keeps %s" % pts)

        # A host it cannot trust: refused before the store changes.
        rc, _, err = env.cbtfs("prune", store, *policy, "--server",
                               s.info["xapi_url"], "--ca-file", other_ca(env),
                               "--password-file", srv[-1], ok=False)
        check(rc == 3 and len(err.strip().splitlines()) == 1
              and "not trusted" in err, "an untrusted host: %d %r" % (rc, err))
        pts = [p["snapshot"] for p in env.ls_json(store)["disks"][0]["points"]]
        check(pts == [n1, n2, n3, n4], "a refused prune changed the store: %s"
              % pts)
        rc, _, err = env.cbtfs("prune", store, *policy, "--password-file",
                               srv[-1], ok=False)
        check(rc == 2 and "--password-file without --server" in err,
              "--password-file alone: %d %r" % (rc, err))

        # With --server: the host loses N2's snapshot, nothing else.
        _, out, err = env.cbtfs("prune", store, *policy, *srv, "--json", "-v")
        doc = json.loads(out)
        check(doc["dropped"] == 2 and doc["host_snapshots_removed"] == 1,
              "--json: dropped %s, host_snapshots_removed %s"
              % (doc["dropped"], doc["host_snapshots_removed"]))
        check("%s: removed from the host" % n2 in err,
              "-v does not name the removed snapshot: %r" % err)
        check("vdi-destroy" not in err, "a warning after all: %r" % err)
        check(not on_host(s, n2), "N2's snapshot is still on the host")
        check(on_host(s, n4) and on_host(s, vdi),
              "N4's snapshot or the live disk went")
        pts = [p["snapshot"] for p in env.ls_json(store)["disks"][0]["points"]]
        check(pts == [n1, n4], "with --server the store keeps %s" % pts)

        # The next backup is exact: the changed blocks since N4 are right.
        n5 = night(blocks=(0, 9))
        mnt = env.mount(store, env.mkdir("mnt"))
        for snap in (n4, n5):
            img = os.path.join(mnt, "by-uuid", vdi, snap + ".img")
            check(cb.sha256(img) == want[snap],
                  "%s reads otherwise after the prune" % snap)
        cb.unmount(mnt)
    print("ok")


if __name__ == "__main__":
    main()
