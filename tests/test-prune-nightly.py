#!/usr/bin/env python3
"""End to end: backup then prune, night after night, for years.

NIGHTS nights (PRUNE_NIGHTS: 30 by default, `make check-crash` runs
400; on an object store PRUNE_NIGHTS_S3: 15, and 40), each one day
after the last from 2024-01-01 (snapshot_claims gives each night's
snapshots their time), as a timer runs them: the guests
change, `cbtfs backup` runs, then `cbtfs prune`.  Two VMs, three disks:
web's "root", db's "sys" and "log" (which grows at half time).  Each
night each disk takes a few writes, mostly in a hot set of blocks that
grows every few nights, now and then zeros over data or a burst of
contiguous blocks.  The policy changes twice (at a third and two thirds
of the nights) among daily/weekly/monthly, last/weekly/monthly/yearly
and within/monthly/yearly rules.

On about one night in six the backup, and on about one in six the
prune (of a night with something to drop), is killed with -9 at a
random moment of its run: once it holds the store lock (polled for),
after a random delay of up to what the last undisturbed runs took (of
five kills of a command or more, one at least must land while it
runs).  The runs of the next night resume.  Decided and asserted exactly: a point is made only on its night (its
time is that night's), by the night's backup, killed or not; a killed
backup's point (if it made one) is completed by the next night's backup
and then reads as the disk was on its own night; a night whose backup
was killed before it made a point has none, ever.

Every night: each disk's points after an undisturbed prune are exactly
those the policy keeps (worked out here from restic's rules, as
engine/retention.h states them); after a killed one, at least those
and at most those there were.  After an undisturbed backup no prune
note is left (the backup finishes an interrupted drop first), every
point is complete, and the host holds, per disk, one snapshot: the
newest point's, reduced to CBT metadata, and no VM snapshot.  After a
kill, and at each quarter of the nights, every point the policy keeps
reads, through a mount, exactly as its disk was on its night, and
`cbtfs verify` passes (after a killed prune it may name as damaged only
points the policy drops: their drop is pending).  At the quarters and
at the end also: no prune note, no rubbish (tmp/; an object store's
stages, marks and unnamed packs), and the blocks held are what the kept
points need: each disk's first point's non-zero blocks and, for each
later one, the non-zero blocks written since the point before it (a
directory store's data files allocate that, give or take file system
metadata; an object store's packs hold at least that in places some
layer reads, and no pack that no index names).

The seed is printed; PRUNE_SEED repeats a run's choices (the data stays
random).
"""
# store-kinds: dir s3
import datetime
import hashlib
import os
import random
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
BLOCK = cb.BLOCK
DAY = 86400
T0 = 1_704_110_400                      # 2024-01-01 12:00:00 UTC (leap year)
# (vm, disk): size at first, size after it grows (at half time)
DISKS = {("web", "root"): (2 * MiB, 2 * MiB),
         ("db", "sys"): (2 * MiB, 2 * MiB),
         ("db", "log"): (1 * MiB, 2 * MiB)}
# The policy from a fraction of the nights on.
POLICIES = [
    (0, ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "3"]),
    (1 / 3, ["--keep-last", "3", "--keep-weekly", "2", "--keep-monthly", "6",
             "--keep-yearly", "unlimited"]),
    (2 / 3, ["--keep-within", "12d", "--keep-monthly", "2",
             "--keep-yearly", "3"]),
]


# ---- the policy, from restic's rules --------------------------------------

def bucket(rule, t, k):
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return {"last": k, "hourly": t // 3600, "daily": t // DAY,
            "weekly": d.isocalendar()[:2], "monthly": (d.year, d.month),
            "yearly": d.year}[rule]


def minus(t, within):
    """T minus a duration "NyNmNdNh" as Go's AddDate then hours do it:
    years and months keeping the day of the month (rolling over past
    the month's end), then days, then hours."""
    n, parts = "", {}
    for c in within:
        if c.isdigit():
            n += c
        else:
            parts[c], n = int(n), ""
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    months = d.year * 12 + d.month - 1 - parts.get("y", 0) * 12 \
        - parts.get("m", 0)
    first = datetime.datetime(months // 12, months % 12 + 1, 1, d.hour,
                              d.minute, d.second, tzinfo=datetime.timezone.utc)
    return int(first.timestamp()) + (d.day - 1 - parts.get("d", 0)) * DAY \
        - parts.get("h", 0) * 3600


def policy_keeps(args, pts, now):
    """The snapshots of one disk's points PTS (ls --json's, oldest
    first) that prune ARGS keeps: restic's counted rules (newest of a
    bucket while count is left; the oldest point also when a rule has
    count left at it), keep-within from the newest point before NOW,
    and cbtfs's own: the newest readable point, and every incomplete
    one."""
    counted, within = {}, None
    for i in range(0, len(args), 2):
        rule = args[i][len("--keep-"):]
        if rule == "within":
            within = args[i + 1]
        else:
            counted[rule] = -1 if args[i + 1] == "unlimited" else int(args[i + 1])
    order = pts[::-1]
    cutoff = None
    if within:
        past = [p["time"] for p in pts if p["time"] < now]
        cutoff = minus(max(past), within) if past else None
    keep, last, newest = set(), {}, False
    for k, p in enumerate(order):
        why = False
        for rule in counted:
            if counted[rule] == 0:
                continue
            b = bucket(rule, p["time"], k)
            if rule in last and last[rule] == b and k != len(order) - 1:
                continue
            last[rule] = b
            counted[rule] -= counted[rule] > 0
            why = True
        if within and (cutoff is None or p["time"] > cutoff):
            why = True
        if not newest and p["readable"]:
            why = newest = True
        if not p["complete"]:
            why = True
        if why:
            keep.add(p["snapshot"])
    return keep


# ---- the guests -------------------------------------------------------------

class Guests:
    """The VMs' disks on the stand-in, the writes of each night, and
    what each disk was on each night."""

    def __init__(self, s, env, rng, nights):
        self.s, self.rng = s, rng
        self.vdi, self.guest, self.size, self.hot = {}, {}, {}, {}
        self.grow_night = nights // 2
        for vm in ("web", "db"):
            keys = [k for k in DISKS if k[0] == vm]
            rec = s.control("create_vm", name=vm, disks=[
                {"name": k[1], "size": DISKS[k][0]} for k in keys])
            for k, d in zip(keys, rec["disks"]):
                self.vdi[k], self.size[k] = d["vdi"], DISKS[k][0]
                self.guest[k] = env.path("%s-%s.img" % k)
                with open(self.guest[k], "wb") as f:
                    if k[1] == "log":           # sparse: a few MiB of data
                        f.truncate(self.size[k])
                        f.seek(BLOCK * 2)
                        f.write(os.urandom(4 * BLOCK))
                    else:
                        f.write(os.urandom(self.size[k]))
                s.control("write_file", vdi=d["vdi"], path=self.guest[k])
                nblocks = self.size[k] // BLOCK
                self.hot[k] = set(rng.sample(range(nblocks), 2))
        self.srv = ["--server", s.info["xapi_url"], "--ca-file",
                    s.info["ca_file"], "--password-file", env.password_file()]
        self.written = {}       # (key, night) -> blocks written that night
        self.sha = {}           # (key, night) -> sha256 of the disk then
        self.zeros = {}         # (key, night) -> its zero blocks then

    def night(self, n, when):
        """The guests write, the stand-in takes the disks, and each
        disk's next snapshot claims WHEN."""
        rng = self.rng
        for k in DISKS:
            w = self.written[k, n] = set()
            if n == 0:
                w.update(range(self.size[k] // BLOCK))
            else:
                if n == self.grow_night and DISKS[k][1] > self.size[k]:
                    old, self.size[k] = self.size[k], DISKS[k][1]
                    self.s.control("resize", vdi=self.vdi[k], size=self.size[k])
                    with open(self.guest[k], "r+b") as f:
                        f.truncate(self.size[k])
                    self.write(k, old + BLOCK, os.urandom(BLOCK), w)
                nblocks = self.size[k] // BLOCK
                if n % 5 == 0 and len(self.hot[k]) < nblocks // 2:
                    self.hot[k].add(rng.randrange(nblocks))   # the set grows
                for _ in range(rng.randint(1, 3)):
                    b = (rng.choice(sorted(self.hot[k])) if rng.random() < 0.7
                         else rng.randrange(nblocks))
                    if rng.random() < 0.15:
                        self.write(k, b * BLOCK, bytes(BLOCK), w)
                    else:
                        size = rng.choice([4096, BLOCK])
                        self.write(k, b * BLOCK + rng.randrange(
                            0, BLOCK - size + 1, 4096), os.urandom(size), w)
                if rng.random() < 0.05:
                    b = rng.randrange(nblocks - 8)
                    self.write(k, b * BLOCK, os.urandom(rng.randint(4, 8)
                                                        * BLOCK), w)
            self.s.control("write_file", vdi=self.vdi[k], path=self.guest[k])
            self.s.control("set", snapshot_claims={"vdi": self.vdi[k],
                                                   "snapshot_time": when})
            with open(self.guest[k], "rb") as f:
                image = f.read()
            self.sha[k, n] = hashlib.sha256(image).hexdigest()
            self.zeros[k, n] = {b for b in range(len(image) // BLOCK)
                                if not any(image[b * BLOCK:(b + 1) * BLOCK])}

    def write(self, k, off, data, w):
        cb.write_at(self.guest[k], off, data)
        w.update(range(off // BLOCK, (off + len(data) - 1) // BLOCK + 1))

    def need(self, k, nights):
        """The bytes the points of disk K made on NIGHTS (oldest first)
        store: the first one's non-zero blocks, each later one's
        non-zero blocks written since the one before."""
        total, prev = 0, None
        for n in nights:
            blocks = set().union(*(self.written[k, u] for u in range(
                0 if prev is None else prev + 1, n + 1)))
            total += len(blocks - self.zeros[k, n]) * BLOCK
            prev = n
        return total


# ---- runs that may be killed ---------------------------------------------

class Runner:
    """cbtfs backup and prune, undisturbed or killed with -9 at a random
    moment; keeps what the undisturbed runs took, to aim the kills."""

    def __init__(self, env, store, rng):
        self.env, self.store, self.rng = env, store, rng
        self.spans = {}         # command -> seconds of the last few runs
        self.kills = {}         # command -> [killed while it ran, tried]

    def run(self, args, kill):
        """Run cbtfs ARGS; returns True if KILL was asked and the kill
        landed while it ran (else it must have succeeded)."""
        cmd = args[0]
        spans = self.spans.setdefault(cmd, [])
        if not kill or not spans:
            t = time.monotonic()
            self.env.cbtfs(*args)
            spans.append(time.monotonic() - t)
            del spans[:-7]
            return False
        log = self.env.path("killed.log")
        with open(log, "w") as f:
            proc = subprocess.Popen([cb.cbtfs_binary(), *map(str, args)],
                                    stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=f)
        self.env.on_close(lambda: proc.poll() is None and proc.kill())
        # From when it holds the store lock: it has started its work.
        # Polled often: a prune of these small disks takes milliseconds.
        deadline = time.monotonic() + 120
        while (proc.poll() is None
               and self.env.lock_holder(self.store) != proc.pid):
            check(time.monotonic() < deadline, "%s never took the store "
                  "lock" % cmd)
            time.sleep(0.002)           # polling a condition
        delay = self.rng.uniform(0, statistics.median(spans))
        try:
            proc.wait(timeout=delay)    # the random moment under test
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        print("  %s %s after %.3f s of its lock" % (
            cmd, "killed" if rc == -signal.SIGKILL else "exited", delay))
        tally = self.kills.setdefault(cmd, [0, 0])
        tally[1] += 1
        if rc == -signal.SIGKILL:
            tally[0] += 1
            return True
        with open(log) as f:
            check(rc == 0, "%s exited %d: %s" % (cmd, rc, f.read()))
        return False


# ---- the test ----------------------------------------------------------------

def main():
    nights = int(os.environ.get("PRUNE_NIGHTS", "30") if cb.store_kind() == "dir"
                 else os.environ.get("PRUNE_NIGHTS_S3", "15"))
    seed = int(os.environ.get("PRUNE_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print("seed %d, %d nights, %s store" % (seed, nights, cb.store_kind()))
    check(T0 + nights * DAY < time.time(), "the nights must be in the past "
          "(keep-within measures from the newest point before now)")
    t_start = time.monotonic()
    with sim.Sim() as s, cb.Env() as env:
        g = Guests(s, env, rng, nights)
        store = env.store()
        runner = Runner(env, store, rng)
        vdi_key = {v: k for k, v in g.vdi.items()}
        made = {}               # snapshot -> (disk key, night)
        nkill = max(3, nights // 6)
        kill_backup = set(rng.sample(range(1, nights - 1), min(nkill, nights - 2)))
        kill_prune = set(rng.sample(range(1, nights - 1), min(nkill, nights - 2)))
        quarters = {nights // 4, nights // 2, 3 * nights // 4}
        most = 0

        def points():
            """Disk key -> its points (ls --json), oldest first."""
            return {vdi_key[d["uuid"]]: d["points"]
                    for d in env.ls_json(store)["disks"]}

        def reads(keep, what):
            """Every point of KEEP reads its night's bytes."""
            mnt = env.mount(store, env.path("mnt"))
            try:
                for x in sorted(keep):
                    k, n = made[x]
                    img = os.path.join(mnt, "by-uuid", g.vdi[k], x + ".img")
                    check(cb.sha256(img) == g.sha[k, n], "%s: the point of "
                          "night %d of %s/%s does not read as the disk was "
                          "then" % (what, n, k[0], k[1]))
            finally:
                cb.unmount(mnt)

        def at_rest(pts, what):
            """The checks of a store no run is busy with."""
            check(env.prune_notes(store) == [], "%s: disks %s keep a prune "
                  "note" % (what, env.prune_notes(store)))
            places = None if cb.is_dir_store(store) else \
                env.block_places(store)
            left = env.rubbish(store, places)
            check(not left, "%s: rubbish left: %s" % (what, left[:10]))
            env.cbtfs("verify", store)
            need = sum(g.need(k, [made[p["snapshot"]][1] for p in pts[k]])
                       for k in DISKS)
            held = env.block_bytes(store)
            if cb.is_dir_store(store):
                # ext4 counts a fragmented file's extent tree blocks too
                # (4 KiB each): less than one 64 KiB block per file.
                files = sum(len(v) for v in pts.values())
                check(need <= held <= need + 16384 * files, "%s: the data "
                      "files take %d bytes; the kept points need %d"
                      % (what, held, need))
                read = need
            else:
                # Packs are written once, whole: the places no layer reads
                # stay while an index object names their pack (a merge's
                # first object names its base's places, those its later
                # objects name anew too).  No pack no index names stays
                # (rubbish, above).
                read = sum(len(v) for v in places.values()) * BLOCK
                check(need <= read <= held, "%s: packs of %d bytes, %d in "
                      "places a layer reads; the kept points need %d"
                      % (what, held, read, need))
            print("%s: %d points need %d KiB, the store holds %d KiB for "
                  "them, %d KiB of it %s" % (
                      what, sum(len(v) for v in pts.values()), need >> 10,
                      held >> 10, (held - read) >> 10,
                      "file system metadata" if cb.is_dir_store(store)
                      else "in places no layer reads"))

        policy, owed = None, 0
        for n in range(nights):
            when = T0 + n * DAY
            was = policy
            policy = [a for f, a in POLICIES if n >= f * nights][-1]
            if was and policy != was:
                print("night %d: the policy is now %s" % (n, " ".join(policy)))
            what = "night %d" % n
            print(what)
            g.night(n, when)

            # The backup.
            killed_b = runner.run(["backup", store, *g.srv, "-q"],
                                  n in kill_backup)
            pts = points()
            for k in DISKS:
                new = [p for p in pts.get(k, []) if p["snapshot"] not in made]
                check(all(p["time"] == when for p in new) and len(new) <= 1,
                      "%s: %s/%s has new points %s" % (what, k[0], k[1],
                                                        [p["time"] for p in new]))
                check(new or killed_b, "%s: no point of %s/%s" % (what, *k))
                for p in new:
                    made[p["snapshot"]] = (k, n)
            if not killed_b:
                check(all(p["complete"] for v in pts.values() for p in v),
                      "%s: an incomplete point after the backup" % what)
                check(env.prune_notes(store) == [], "%s: the backup left "
                      "drops pending on %s" % (what, env.prune_notes(store)))

            # The prune.
            keep = {k: policy_keeps(policy, pts[k], time.time())
                    for k in pts}
            # A kill of a prune with nothing to drop proves little: it
            # waits for a night with drops.
            owed += n in kill_prune
            drops = any(len(keep[k]) < len(pts[k]) for k in pts)
            killed_p = runner.run(["prune", store, *policy, "-q"],
                                  owed > 0 and drops and n < nights - 1)
            owed -= owed > 0 and drops
            after = points()
            for k in after:
                have = {p["snapshot"] for p in after[k]}
                if killed_p:
                    check(keep[k] <= have <= {p["snapshot"] for p in pts[k]},
                          "%s: a killed prune left %d of %d points, the "
                          "policy keeps %d" % (what, len(have), len(pts[k]),
                                               len(keep[k])))
                else:
                    check(have == keep[k], "%s: %s/%s keeps nights %s, the "
                          "policy nights %s" % (what, k[0], k[1],
                                                sorted(made[x][1] for x in have),
                                                sorted(made[x][1] for x in keep[k])))
            most = max(most, max(len(v) for v in after.values()))

            # The host: one CBT-metadata snapshot per disk, the newest.
            if not killed_b:
                vdis = s.control("vdis")["vdis"]
                for k in DISKS:
                    ref = [v["ref"] for v in vdis if v["vdi"] == g.vdi[k]][0]
                    snaps = [(v["vdi"], v["type"]) for v in vdis
                             if v["snapshot_of"] == ref]
                    check(snaps == [(after[k][-1]["snapshot"], "cbt_metadata")],
                          "%s: %s/%s has on the host %s" % (what, *k, snaps))
                vms = [v for v in s.control("vms")["vms"] if v["is_a_snapshot"]]
                check(not vms, "%s: VM snapshots on the host: %s" % (what, vms))

            # After a kill: the points the policy keeps read right.
            if killed_b or killed_p:
                kept = set().union(*keep.values())
                reads({x for v in after.values() for p in v
                       for x in [p["snapshot"]] if x in kept and p["complete"]},
                      what + " (killed " + " and ".join(
                          ["backup"] * killed_b + ["prune"] * killed_p) + ")")
                rc, out, err = env.cbtfs("verify", store, ok=False)
                if rc != 0:
                    named = {x for x in made if x in out + err}
                    check(killed_p and named and not named & kept,
                          "%s: verify exited %d: %s" % (what, rc, out + err))
            if n in quarters and not killed_b and not killed_p:
                reads({p["snapshot"] for v in after.values() for p in v}, what)
                at_rest(after, what)

        pts = points()
        reads({p["snapshot"] for v in pts.values() for p in v}, "the end")
        at_rest(pts, "the end")
        gone = [n for n in range(nights) if not any(
            made.get(p["snapshot"], (None, -1))[1] == n for v in pts.values()
            for p in v)]
        print("at most %d points of a disk; %d nights with no point left; "
              "kills landed (of tried): %s; %.0f s"
              % (most, len(gone), ", ".join("%s %d of %d" % (c, *v) for c, v in
                                            sorted(runner.kills.items())),
                 time.monotonic() - t_start))
        for cmd, (landed, tried) in runner.kills.items():
            check(tried < 5 or landed >= 1, "no kill of %s landed while it "
                  "ran: the nights proved nothing" % cmd)
    print("ok")


if __name__ == "__main__":
    main()
