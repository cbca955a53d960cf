#!/usr/bin/env python3
"""End to end: hostile input from XenServer never harms the store.

Names with '/', '..', tabs, newlines, 2000 bytes, non-ASCII text, empty,
or "by-uuid" become safe, stable, readable names in the mount.  Malformed
XAPI answers (missing Status, wrong types, a control character, a huge
string, an answer over the size limit) end in one clear line, commit no
layer, and leave earlier points readable; so does a snapshot whose
record says it was taken before 1970 or is larger than 2^62 bytes
(baseline or delta, with or without --no-copy), and the next backup
goes on from the last good point.
"""
# store-kinds: dir s3
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20

NAMES = {
    "a/b": "a_b",
    "..": "_..",
    ".": "_.",
    "tab\there": "tab_here",
    "new\nline": "new_line",
    "by-uuid": "by-uuid",
    "日本語のVM": "日本語のVM",
    "": "unnamed",
}
LONG = "é" * 1000                     # 2000 bytes


def main():
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        vms = {}
        for name in list(NAMES) + [LONG]:
            vms[name] = s.control("create_vm", name=name, disks=[
                {"name": name, "size": MiB}, {"name": name, "size": MiB}])
        pw = env.password_file()
        store = env.store()
        base = ["backup", store, "--server", info["xapi_url"], "--ca-file",
                info["ca_file"], "--password-file", pw]
        env.cbtfs(*base)

        mnt = env.mount(store, env.path("m1"))
        listed = sorted(os.listdir(os.path.join(mnt, "by-vm")))
        want = sorted(list(NAMES.values()) + [LONG[:100]])
        check(listed == want, "by-vm lists %r, expected %r" % (listed, want))
        for name, safe in list(NAMES.items()) + [(LONG, LONG[:100])]:
            disks = sorted(os.listdir(os.path.join(mnt, "by-vm", safe)))
            check(disks == [safe + "-0", safe + "-1"], "%r has disks %r"
                  % (safe, disks))
            img = os.path.join(mnt, "by-vm", safe, safe + "-0", "latest")
            check(os.path.getsize(img) == MiB, "%r unreadable" % safe)
        first = sorted(os.walk(mnt))
        cb.unmount(mnt)

        # Names stay put: a later VM takes a suffix, not an earlier name.
        s.control("create_vm", name="a/b", disks=[{"name": "x", "size": MiB}])
        env.cbtfs(*base)
        mnt = env.mount(store, env.path("m2"))
        check("a_b.2" in os.listdir(os.path.join(mnt, "by-vm")),
              "the later VM did not get a suffix")
        for d, dirs, files in first:
            rel = os.path.relpath(d, env.path("m1"))
            check(os.path.isdir(os.path.join(mnt, rel)), "%s moved" % rel)
        cb.unmount(mnt)

        # Malformed answers: one line, nothing committed.
        before = env.ls_json(store)
        bad = {
            "no Status": "<?xml version=\"1.0\"?><methodResponse><params><param>"
                         "<value><struct><member><name>Value</name><value>x"
                         "</value></member></struct></value></param></params>"
                         "</methodResponse>",
            "control character": "<?xml version=\"1.0\"?><methodResponse>"
                                 "<params><param><value>\x01</value></param>"
                                 "</params></methodResponse>",
            "huge string": "<?xml version=\"1.0\"?><methodResponse><params>"
                           "<param><value><struct><member><name>Status</name>"
                           "<value>Success</value></member><member><name>Value"
                           "</name><value>" + "x" * (20 * MiB) + "</value>"
                           "</member></struct></value></param></params>"
                           "</methodResponse>",
            "too big": "<?xml version=\"1.0\"?>" + " " * (65 * MiB),
        }
        for what, body in bad.items():
            s.control("set", raw_next={"method": "VM.get_all_records", "body": body})
            rc, _, err = env.cbtfs(*base, ok=False)
            lines = err.strip().splitlines()
            check(rc == 1 and len(lines) == 1, "%s: exit %d, %r" % (what, rc, err[:300]))
            print("%s -> %s" % (what, lines[0][:200]))
            check(env.ls_json(store) == before, "%s: the store changed" % what)
        # A record with a field of the wrong type.
        s.control("set", return_next={"method": "VDI.get_record", "value": {
            "uuid": "x", "virtual_size": ["not", "an", "int"]}})
        rc, _, err = env.cbtfs(*base, "--vm", vms["a/b"]["vm"], ok=False)
        check(rc == 1 and "not" in err and "VDI.get_record" in err,
              "wrong type: %d %r" % (rc, err))
        check(env.ls_json(store) == before, "wrong type: the store changed")
        # An NBD export whose size disagrees with XAPI's virtual_size.
        wrong = env.path("wrong.img")
        with open(wrong, "wb") as f:
            f.truncate(2 * MiB)
        _, port = env.nbdkit(wrong, info["nbd_address"], info["tls_dir"])
        s.control("nbd_override", vdi="*", address=info["nbd_address"], port=port)
        rc, _, err = env.cbtfs(*base, "--vm", vms["a/b"]["vm"], ok=False)
        s.control("nbd_override", vdi="*")
        check(rc == 1 and "is %d bytes but XAPI says its virtual size is %d"
              % (2 * MiB, MiB) in err, "size mismatch: %d %r" % (rc, err))
        check(env.ls_json(store) == before, "size mismatch: a layer was committed")
        left = [v for v in s.control("vdis")["vdis"]
                if v["is_a_snapshot"] and v["type"] != "cbt_metadata"]
        check(not left, "size mismatch: snapshots left holding data: %s" % left)

        mnt = env.mount(store, env.path("m3"))
        check(os.path.getsize(os.path.join(mnt, "by-vm", "a_b", "a_b-0", "latest"))
              == MiB, "an earlier point is gone")
    refused_values()
    print("ok")


def refused_values():
    """A snapshot whose record carries a value the store cannot hold (a
    time before 1970, a size above 2^62) is refused in one line before
    anything is committed, as a baseline and as a delta."""
    with sim.Sim() as s, cb.Env() as env:
        info = s.info
        pw = env.password_file()
        store = env.store()
        base = ["backup", store, "--server", info["xapi_url"], "--ca-file",
                info["ca_file"], "--password-file", pw]
        old = s.control("create_vm", name="old", disks=[{"name": "d", "size": 4 * MiB}])
        guest = env.path("old.img")
        with open(guest, "wb") as f:
            f.write(os.urandom(4 * MiB))
        s.control("write_file", vdi=old["disks"][0]["vdi"], path=guest)
        env.cbtfs(*base)
        first = cb.sha256(guest)
        cb.write_at(guest, MiB, os.urandom(MiB))
        s.control("write_file", vdi=old["disks"][0]["vdi"], path=guest)
        new = s.control("create_vm", name="new", disks=[{"name": "d", "size": 4 * MiB}])
        before = env.ls_json(store)

        time_1960 = -315619200                # 19600101T00:00:00Z
        huge = (1 << 62) + 65536
        cases = [
            # (VM, extra options, claims, what the line must say)
            (old, [], {"snapshot_time": time_1960}, ("snapshot_time", "before 1970")),
            (old, [], {"virtual_size": huge}, ("virtual size %d" % huge, "2^62")),
            (new, ["--no-copy"], {"virtual_size": huge}, ("virtual size", "2^62")),
            (new, ["--no-copy"], {"snapshot_time": -1}, ("snapshot_time -1",)),
            (new, [], {"snapshot_time": time_1960, "virtual_size": huge},
             ("virtual size",)),
        ]
        for vm, extra, claims, words in cases:
            what = "%s %s" % (vm["vm"][:8], claims)
            s.control("set", snapshot_claims=dict(claims, vdi=vm["disks"][0]["vdi"]))
            rc, _, err = env.cbtfs(*base, "--vm", vm["vm"], *extra, ok=False)
            lines = err.strip().splitlines()
            check(rc == 1 and len(lines) == 1, "%s: exit %d, %r" % (what, rc, err))
            check(all(w in lines[0] for w in words), "%s: %r does not say %s"
                  % (what, lines[0], words))
            print("%s -> %s" % (what, lines[0]))
            check(env.ls_json(store) == before, "%s: the store changed" % what)
        left = [v for v in s.control("vdis")["vdis"]
                if v["is_a_snapshot"] and v["type"] != "cbt_metadata"]
        check(not left, "snapshots left holding data: %s" % left)

        # The earlier point still reads, and the chain goes on from it.
        mnt = env.mount(store, env.path("m"))
        check(cb.sha256(os.path.join(mnt, "by-vm/old/d/latest")) == first,
              "the earlier point reads wrong")
        cb.unmount(mnt)
        env.cbtfs(*base)
        pts = env.ls_json(store)["disks"]
        kinds = sorted((len(d["points"]), d["points"][-1]["kind"]) for d in pts)
        check(kinds == [(1, "baseline"), (2, "delta")], "after: %r" % kinds)
        mnt = env.mount(store, env.path("m2"))
        check(cb.sha256(os.path.join(mnt, "by-vm/old/d/latest")) == cb.sha256(guest),
              "the delta after the refusals reads wrong")


if __name__ == "__main__":
    main()
