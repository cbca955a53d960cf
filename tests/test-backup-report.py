#!/usr/bin/env python3
"""End to end: what cbtfs backup tells a monitor.

Two VMs of one disk each (one VM's name holds a quote, a backslash and
a newline, which the metrics' labels must escape).  backup --json prints one object on stdout: per disk the VM
and disk, the point made (snapshot, baseline or delta, its time), the
bytes read over NBD (the whole random disk for a baseline, the one
changed block for a delta), the bytes stored (what cbtfs ls --json says
the point takes) and the result.  --metrics-file writes Prometheus's
text format (checked by a parser here: HELP and TYPE once before each
family's samples, every sample a valid name, labels and number), mode
0644: each disk's last success time is its newest complete point's.

A second run in which one disk fails (XAPI refuses its
VDI.list_changed_blocks) exits 1; its JSON says "failed" with XAPI's
message, the other disk "ok"; in the metrics the failed disk keeps the
first run's success time with last_result 0, and the file was replaced
whole (the old inode, held open, still reads the old text; no .tmp is
left).  A run that cannot start (wrong password, exit 3) keeps every
disk in the metrics with last_result 0 and its exit status.  The
configuration file's metrics-file key works like the option.
"""
# store-kinds: dir s3
import json
import os
import re
import stat
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 4 * MiB
ODD_VM = 'db "main"\\\nx'            # a quote, a backslash, a newline
FAMILIES = ("cbtfs_backup_last_success_timestamp_seconds",
            "cbtfs_backup_last_run_timestamp_seconds",
            "cbtfs_backup_last_bytes_stored",
            "cbtfs_backup_last_duration_seconds",
            "cbtfs_backup_last_result",
            "cbtfs_backup_run_timestamp_seconds",
            "cbtfs_backup_failed_disks",
            "cbtfs_backup_run_exit_status")

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(r"(%s)(?:\{((?:%s,?)*)\})? (\S+)$" % (NAME, LABEL))


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n"
                  else m.group(1), v)


def parse_metrics(text):
    """Prometheus's text exposition format, strictly: {family: {frozenset
    of (label, value): float}}; fails the test on anything malformed."""
    check(text.endswith("\n"), "the metrics do not end in a newline")
    out, helped, typed, done = {}, set(), set(), set()
    current = None
    for line in text.splitlines():
        check(line != "", "an empty line in the metrics")
        if line.startswith("#"):
            m = re.match(r"# (HELP|TYPE) (%s) (.+)$" % NAME, line)
            check(m is not None, "malformed comment %r" % line)
            kind, name, rest = m.groups()
            check(name not in done, "%s declared again after its samples" % name)
            if kind == "HELP":
                check(name not in helped, "two HELP lines for %s" % name)
                helped.add(name)
            else:
                check(rest in ("gauge", "counter", "untyped"), line)
                check(name not in typed, "two TYPE lines for %s" % name)
                typed.add(name)
            if current and current != name:
                done.add(current)
            current = name
            continue
        m = SAMPLE.match(line)
        check(m is not None, "malformed sample %r" % line)
        name, labels, value = m.group(1), m.group(2) or "", m.group(5)
        check(name == current and name in helped and name in typed,
              "sample of %s outside its family (HELP/TYPE first)" % name)
        float(value)                                    # a number, or fails
        key = frozenset((k, unescape(v)) for k, v in re.findall(LABEL, labels))
        check(key not in out.setdefault(name, {}), "duplicate %r" % line)
        out[name][key] = float(value)
    for f in FAMILIES:
        check(f in helped and f in typed, "no HELP/TYPE for %s" % f)
    return out


def per_disk(metrics, family, disk_uuid):
    vals = [v for k, v in metrics[family].items()
            if ("disk_uuid", disk_uuid) in k]
    check(len(vals) == 1, "%s for %s: %r" % (family, disk_uuid, vals))
    return vals[0]


def run_value(metrics, family):
    return metrics[family][frozenset()]


def main():
    with sim.Sim() as s, cb.Env() as env:
        _, web_vdi, web_img, srv = cb.random_disk(s, env, "web", "root", SIZE)
        _, db_vdi, db_img, _ = cb.random_disk(s, env, ODD_VM, "data", SIZE)
        store = env.store()
        metrics = env.path("cbtfs.prom")

        def backup(*extra, ok=True, server=srv):
            t0 = int(time.time())
            rc, out, err = env.cbtfs("backup", store, "--json",
                                     "--metrics-file", metrics, *server,
                                     *extra, ok=ok)
            report = json.loads(out)
            check(report["status"] == rc, "JSON status %s, exit %d"
                  % (report["status"], rc))
            return rc, report, err, t0, int(time.time())

        def read_metrics():
            st = os.stat(metrics)
            check(stat.S_IMODE(st.st_mode) == 0o644, "metrics mode %o"
                  % stat.S_IMODE(st.st_mode))
            check(not os.path.exists(metrics + ".tmp"), "a .tmp was left")
            with open(metrics, encoding="utf-8") as f:
                return parse_metrics(f.read())

        # 1. Baselines of both disks.
        _, rep, _, t0, t1 = backup()
        ls = env.ls_json(store)
        points = {d["uuid"]: d["points"][-1] for d in ls["disks"]}
        disks = {d["disk_uuid"]: d for d in rep["disks"]}
        check(set(disks) == {web_vdi, db_vdi} and rep["failed"] == 0,
              "run 1: %s" % rep)
        for uuid, d in disks.items():
            p = points[uuid]
            check(d["result"] == "ok" and d["error"] is None
                  and d["kind"] == "baseline" and d["complete"], d)
            check(d["snapshot"] == p["snapshot"] and d["time"] == p["time"], d)
            check(d["bytes_read"] == SIZE, "a random %d-byte baseline read "
                  "%d bytes" % (SIZE, d["bytes_read"]))
            check(d["bytes_stored"] == p["stored_bytes"]
                  and d["bytes_stored"] >= SIZE, "stored %d, ls says %s"
                  % (d["bytes_stored"], p["stored_bytes"]))
            check(d["seconds"] >= 0 and d["seconds"] <= t1 - t0 + 1, d)
        check(disks[db_vdi]["vm"] == ODD_VM and disks[db_vdi]["disk"] == "data"
              and disks[db_vdi]["vm_uuid"] and disks[db_vdi]["userdevice"],
              disks[db_vdi])
        m1 = read_metrics()
        for uuid in (web_vdi, db_vdi):
            check(per_disk(m1, "cbtfs_backup_last_result", uuid) == 1, uuid)
            check(per_disk(m1, "cbtfs_backup_last_success_timestamp_seconds",
                           uuid) == points[uuid]["time"], "success time")
            check(per_disk(m1, "cbtfs_backup_last_bytes_stored", uuid)
                  == disks[uuid]["bytes_stored"], "bytes stored")
            check(t0 <= per_disk(m1, "cbtfs_backup_last_run_timestamp_seconds",
                                 uuid) <= t1, "run time")
        check(run_value(m1, "cbtfs_backup_failed_disks") == 0, "failed disks")
        check(run_value(m1, "cbtfs_backup_run_exit_status") == 0, "status")
        check(t0 <= run_value(m1, "cbtfs_backup_run_timestamp_seconds") <= t1,
              "run timestamp")
        labels = [dict(k) for k in m1["cbtfs_backup_last_result"]]
        odd = [x for x in labels if x["disk_uuid"] == db_vdi][0]
        check(odd["vm"] == ODD_VM and odd["disk"] == "data",
              "labels %r" % odd)

        # 2. One changed block each; XAPI refuses db's changed blocks.
        cb.write_at(web_img, MiB, os.urandom(100))
        cb.write_at(db_img, MiB, os.urandom(100))
        s.control("write_file", vdi=web_vdi, path=web_img)
        s.control("write_file", vdi=db_vdi, path=db_img)
        prev = s.control("vdi", uuid=points[db_vdi]["snapshot"])["ref"]
        s.control("set", fail_next={"method": "VDI.list_changed_blocks",
                                    "error": ["INTERNAL_ERROR", "no CBT today"],
                                    "ref": prev})
        with open(metrics, "rb") as held:
            old = held.read()
            rc, rep, err, t0, t1 = backup(ok=False)
            check(os.fstat(held.fileno()).st_ino != os.stat(metrics).st_ino,
                  "the metrics file was rewritten in place")
            check(os.pread(held.fileno(), len(old) + 1, 0) == old,
                  "the old metrics file changed")
        check(rc == 1 and "no CBT today" in err, "run 2: %d %s" % (rc, err))
        disks = {d["disk_uuid"]: d for d in rep["disks"]}
        check(disks[db_vdi]["result"] == "failed"
              and "INTERNAL_ERROR" in disks[db_vdi]["error"]
              and "no CBT today" in disks[db_vdi]["error"]
              and "\n" not in disks[db_vdi]["error"], disks[db_vdi])
        check(disks[db_vdi]["snapshot"] is None, disks[db_vdi])
        web = disks[web_vdi]
        check(web["result"] == "ok" and web["kind"] == "delta"
              and web["bytes_read"] == cb.BLOCK, "delta: %s" % web)
        check(rep["failed"] == 1, rep)
        ls = env.ls_json(store)
        new_web = [d for d in ls["disks"] if d["uuid"] == web_vdi][0]["points"][-1]
        check(new_web["snapshot"] == web["snapshot"]
              and web["bytes_stored"] == new_web["stored_bytes"], new_web)
        m2 = read_metrics()
        check(per_disk(m2, "cbtfs_backup_last_result", db_vdi) == 0, "db result")
        check(per_disk(m2, "cbtfs_backup_last_success_timestamp_seconds", db_vdi)
              == per_disk(m1, "cbtfs_backup_last_success_timestamp_seconds",
                          db_vdi), "the failed disk lost its success time")
        check(t0 <= per_disk(m2, "cbtfs_backup_last_run_timestamp_seconds",
                             db_vdi) <= t1, "db run time")
        check(per_disk(m2, "cbtfs_backup_last_result", web_vdi) == 1, "web")
        check(per_disk(m2, "cbtfs_backup_last_success_timestamp_seconds",
                       web_vdi) == new_web["time"], "web success time")
        check(run_value(m2, "cbtfs_backup_failed_disks") == 1, "failed disks")
        check(run_value(m2, "cbtfs_backup_run_exit_status") == 1, "status")

        # 3. A run that cannot start: every disk stays, result 0.
        bad = list(srv)
        bad[bad.index("--password-file") + 1] = env.password_file("wrong",
                                                                  name="bad")
        rc, rep, _, _, _ = backup(ok=False, server=bad)
        check(rc == 3 and "error" in rep, "wrong password: %d %s" % (rc, rep))
        m3 = read_metrics()
        for uuid in (web_vdi, db_vdi):
            check(per_disk(m3, "cbtfs_backup_last_result", uuid) == 0, uuid)
            check(per_disk(m3, "cbtfs_backup_last_success_timestamp_seconds",
                           uuid) == per_disk(
                               m2, "cbtfs_backup_last_success_timestamp_seconds",
                               uuid), "a failed start lost a success time")
        check(run_value(m3, "cbtfs_backup_run_exit_status") == 3, "status 3")

        # 4. The configuration file's key.
        other = env.path("other.prom")
        conf = env.path("cbtfs.conf")
        with open(conf, "w") as f:
            f.write("[cbtfs]\nmetrics-file = %s\n" % other)
        env.cbtfs("backup", store, *srv, "--config", conf, "-q")
        with open(other, encoding="utf-8") as f:
            m4 = parse_metrics(f.read())
        check(run_value(m4, "cbtfs_backup_run_exit_status") == 0
              and len(m4["cbtfs_backup_last_result"]) == 2, "config file: %s"
              % m4)
    print("ok")


if __name__ == "__main__":
    main()
