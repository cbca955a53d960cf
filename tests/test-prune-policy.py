#!/usr/bin/env python3
"""End to end: cbtfs prune --dry-run, the retention policy.

A store made by real backups from the stand-in, whose snapshots claim
chosen times (the stand-in's snapshot_claims knob: XAPI's snapshot_time
is what cbtfs records, and the stand-in's clock cannot be set): a VM
"web" with nine points around the 2020/2021 year end (the ISO week
2020-W53 runs from 28 December to 3 January), two of them in the same
second (named …Z and …Z.2), the newest backed up with --no-copy (its
data only on the host); and a VM "db" with two points.

Then prune --dry-run with several policies, in text and in --json,
against keep/drop sets and rules worked out by hand from restic's
meanings (and cbtfs's own "newest" and "incomplete"); --vm by name and
by uuid; the usage errors (exit 2: no rule, bad counts and durations, a
--vm that names nothing); and that no dry run
changed a byte, a name or a time of anything in the store (of a
bucket: a key, a size or an ETag).
"""
# store-kinds: dir s3
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 1 * MiB


def utc(s):
    """'2021-01-05 12:00:00' as seconds since 1970 (UTC)."""
    import calendar
    import time
    return calendar.timegm(time.strptime(s, "%Y-%m-%d %H:%M:%S"))


# web's points, oldest first: (label, time, --no-copy)
WEB = [
    ("p1", "2020-11-15 12:00:00", False),
    ("p2", "2020-12-20 12:00:00", False),
    ("p3", "2020-12-31 23:59:59", False),   # Thursday, 2020-W53
    ("p4", "2021-01-01 00:00:00", False),   # Friday, 2020-W53
    ("p5", "2021-01-01 06:00:00", False),
    ("p6", "2021-01-03 12:00:00", False),   # Sunday, still 2020-W53
    ("p7", "2021-01-05 12:00:00", False),   # Tuesday, 2021-W01
    ("p8", "2021-01-05 12:00:00", False),   # the same second: "….2"
    ("p9", "2021-01-06 08:00:00", True),    # --no-copy: only on the host
]
DB = [
    ("d1", "2021-01-02 10:00:00", False),   # Saturday, 2020-W53
    ("d2", "2021-01-04 10:00:00", False),   # Monday, 2021-W01
]

# Policy -> expected rules per point (absent: dropped).
CASES = [
    (["--keep-daily", "3"], {
        "p9": "daily,incomplete", "p8": "daily,newest", "p6": "daily",
        "d2": "daily,newest", "d1": "daily"}),
    (["--keep-weekly", "2", "--keep-monthly", "2", "--keep-within", "1d"], {
        "p9": "weekly,monthly,within,incomplete", "p8": "within,newest",
        "p7": "within", "p6": "weekly", "p3": "monthly",
        "d2": "weekly,monthly,within,newest", "d1": "weekly,oldest-monthly"}),
    (["--keep-weekly", "2", "--keep-monthly", "2", "--keep-within", "1d",
      "--include-incomplete"], {
        "p9": "weekly,monthly,within", "p8": "within,newest",
        "p7": "within", "p6": "weekly", "p3": "monthly",
        "d2": "weekly,monthly,within,newest", "d1": "weekly,oldest-monthly"}),
    (["--keep-last", "1", "--include-incomplete"], {
        "p9": "last", "p8": "newest", "d2": "last,newest"}),
    (["--keep-yearly", "unlimited"], {
        "p9": "yearly,incomplete", "p8": "newest", "p3": "yearly",
        "p1": "oldest-yearly", "d2": "yearly,newest", "d1": "oldest-yearly"}),
    (["--keep-hourly", "1"], {
        "p9": "hourly,incomplete", "p8": "newest", "d2": "hourly,newest"}),
    (["--keep-within", "1m5d"], {     # from 2021-01-06 08:00: after 12-01 08:00
        "p9": "within,incomplete", "p8": "within,newest", "p7": "within",
        "p6": "within", "p5": "within", "p4": "within", "p3": "within",
        "p2": "within", "d2": "within,newest", "d1": "within"}),
]


def backup(env, s, base, vm, vdi, guest, when, no_copy):
    cb.write_at(guest, (utc(when) % 16) * 65536, os.urandom(65536))
    s.control("write_file", vdi=vdi, path=guest)
    s.control("set", snapshot_claims={"vdi": vdi, "snapshot_time": utc(when)})
    env.cbtfs(*base, "--vm", vm, *(["--no-copy"] if no_copy else []))


def main():
    with sim.Sim() as s, cb.Env() as env:
        web, web_vdi, web_guest, srv = cb.random_disk(s, env, "web", "root", SIZE)
        rec = s.control("create_vm", name="db", disks=[{"name": "data", "size": SIZE}])
        db_vdi = rec["disks"][0]["vdi"]
        db_guest = env.path("data.img")
        with open(db_guest, "wb") as f:
            f.write(os.urandom(SIZE))
        s.control("write_file", vdi=db_vdi, path=db_guest)
        store = env.store()
        base = ["backup", store, *srv]

        for vm, vdi, guest, pts in (("web", web_vdi, web_guest, WEB),
                                    ("db", db_vdi, db_guest, DB)):
            for _, when, no_copy in pts:
                backup(env, s, base, vm, vdi, guest, when, no_copy)

        # Which snapshot is which point: ls lists them oldest first.
        ls = env.ls_json(store)
        label = {}                      # snapshot uuid -> label
        names = {}                      # label -> tree name
        for d in ls["disks"]:
            pts = WEB if d["vm"] == "web" else DB
            check(len(d["points"]) == len(pts), "%s has %d points, not %d"
                  % (d["vm"], len(d["points"]), len(pts)))
            for (lab, when, no_copy), p in zip(pts, d["points"]):
                check(p["time"] == utc(when), "%s: time %d, not %s"
                      % (lab, p["time"], when))
                check(p["readable"] != no_copy, "%s: readable %s"
                      % (lab, p["readable"]))
                label[p["snapshot"]] = lab
                names[lab] = p["name"]
        check(names["p8"] == names["p7"] + ".2", "the tie is named %r, %r"
              % (names["p7"], names["p8"]))
        before = env.store_state(store, mtime=True)

        for args, want in CASES:
            what = " ".join(args)
            # --json
            _, out, _ = env.cbtfs("prune", store, "--dry-run", "--json", *args)
            doc = json.loads(out)
            got = {}
            for d in doc["disks"]:
                for p in d["points"]:
                    lab = label[p["snapshot"]]
                    check(p["name"] == names[lab], "%s: %s named %r"
                          % (what, lab, p["name"]))
                    check(p["path"] == "by-vm/%s/%s/%s.img"
                          % (d["vm"], d["name"], names[lab]),
                          "%s: path %r" % (what, p["path"]))
                    check(p["action"] == ("keep" if p["rules"] else "drop"),
                          "%s: %s is %s with rules %r" % (what, lab,
                                                          p["action"], p["rules"]))
                    if p["rules"]:
                        got[lab] = ",".join(p["rules"])
            check(got == want, "%s --json: kept %r, expected %r"
                  % (what, got, want))
            check(doc["kept"] == len(want) and
                  doc["dropped"] == len(label) - len(want),
                  "%s: kept %d dropped %d" % (what, doc["kept"], doc["dropped"]))
            check(doc["dry_run"] is True, "%s: dry_run %r" % (what, doc["dry_run"]))
            pol = doc["policy"]
            for i in range(0, len(args)):
                if args[i].startswith("--keep-") and args[i] != "--keep-within":
                    v = args[i + 1]
                    check(pol[args[i][2:].replace("-", "_")] ==
                          (v if v == "unlimited" else int(v)),
                          "%s: policy %r" % (what, pol))
            check(pol["keep_within"] == (args[args.index("--keep-within") + 1]
                                         if "--keep-within" in args else None)
                  and pol["include_incomplete"] == ("--include-incomplete" in args),
                  "%s: policy %r" % (what, pol))

            # text: "keep|drop  NAME.img  SNAPSHOT  [RULES]" under VM and disk
            _, out, _ = env.cbtfs("prune", store, "--dry-run", *args)
            got = {}
            seen = 0
            for line in out.splitlines():
                f = line.split()
                if f and f[0] in ("keep", "drop"):
                    lab = label[f[2]]
                    seen += 1
                    check(f[1] == names[lab] + ".img", "%s: %r" % (what, line))
                    if f[0] == "keep":
                        check(len(f) == 4, "%s: %r" % (what, line))
                        got[lab] = f[3]
                    else:
                        check(len(f) == 3, "%s: %r" % (what, line))
            check(seen == len(label), "%s: %d point lines\n%s" % (what, seen, out))
            check(got == want, "%s text: kept %r, expected %r\n%s"
                  % (what, got, want, out))
            summary = "%d points kept, %d would be dropped" % (
                len(want), len(label) - len(want))
            check(out.splitlines()[-1] == summary, "%s: last line %r, not %r"
                  % (what, out.splitlines()[-1], summary))
            print("%-60s kept %s" % (what, " ".join(sorted(want))))

        # --vm by folder name and by uuid (any case); -q; -v.
        for sel in (["--vm", "web"], ["--vm", web["vm"].upper()]):
            _, out, _ = env.cbtfs("prune", store, "--dry-run", "--json",
                                  "--keep-last", "2", *sel)
            doc = json.loads(out)
            check([d["vm"] for d in doc["disks"]] == ["web"],
                  "%s: disks of %r" % (sel, [d["vm"] for d in doc["disks"]]))
            check(doc["kept"] == 2 and doc["dropped"] == 7,
                  "%s: kept %d dropped %d" % (sel, doc["kept"], doc["dropped"]))
        _, out, _ = env.cbtfs("prune", store, "--dry-run", "--keep-last", "2",
                              "--vm", "web", "--vm", "db", "--vm", "web")
        check(out.splitlines()[-1] == "4 points kept, 7 would be dropped",
              "--vm web --vm db --vm web: %r" % out)
        _, out, _ = env.cbtfs("prune", store, "--dry-run", "-q", "--keep-last", "2")
        check(out == "4 points kept, 7 would be dropped\n", "-q printed %r" % out)
        _, out, _ = env.cbtfs("prune", store, "--dry-run", "-v", "--keep-within",
                              "1d", "--keep-daily", "unlimited")
        check("policy: --keep-daily unlimited --keep-within 1d" in out
              and "(keep-within: points after 2021-01-05T08:00:00Z)" in out
              and "(keep-within: points after 2021-01-03T10:00:00Z)" in out,
              "-v printed %r" % out)

        # Usage errors: exit 2 with one line, nothing read or written.
        errors = [
            ([], "no --keep-* rule given"),
            (["--keep-daily", "0"], "no --keep-* rule given"),
            (["--keep-within", "0d"], "no --keep-* rule given"),
            (["--include-incomplete"], "no --keep-* rule given"),
            (["--keep-daily", "-1"], "--keep-daily: '-1' is not a count"),
            (["--keep-last", "many"], "--keep-last: 'many' is not a count"),
            (["--keep-weekly", "99999999999"], "--keep-weekly: "),
            (["--keep-within", "1w"], "--keep-within: '1w' is not a duration"),
            (["--keep-within", "7"], "--keep-within: '7' is not a duration"),
            (["--keep-within", ""], "--keep-within: '' is not a duration"),
            (["--keep-daily", "7", "--vm", "nosuch"], "--vm nosuch: no VM"),
            (["--keep-daily", "7", "--vm", "web", "--vm", "nosuch"],
             "--vm nosuch: no VM"),
        ]
        for args, words in errors:
            rc, out, err = env.cbtfs("prune", store, "--dry-run", *args, ok=False)
            lines = err.strip().splitlines()
            check(rc == 2 and len(lines) == 1 and out == ""
                  and lines[0].startswith("cbtfs: ") and words in lines[0],
                  "%r: exit %d, %r" % (args, rc, err))
        rc, _, err = env.cbtfs("prune", store, "--keep-daily", "7", "--bogus", ok=False)
        check(rc == 2 and "usage:" in err, "--bogus: exit %d, %r" % (rc, err))
        rc, _, err = env.cbtfs("prune", env.store("nostore"), "--dry-run",
                               "--keep-daily", "7", ok=False)
        check(rc == 2 and len(err.strip().splitlines()) == 1,
              "not a store: exit %d, %r" % (rc, err))

        after = env.store_state(store, mtime=True)
        changed = sorted(k for k in set(before) | set(after)
                         if before.get(k) != after.get(k))
        check(not changed, "the dry runs changed the store: %s" % changed[:10])
        print("store untouched: %d files and folders" % len(after))


if __name__ == "__main__":
    main()
