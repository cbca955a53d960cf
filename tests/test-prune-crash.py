#!/usr/bin/env python3
"""End to end: kill -9 of cbtfs prune at random moments.

A store made once by real backups from the stand-in: VM "db" with two
dense 32 MiB disks, seven nights (times chosen with snapshot_claims)
whose deltas differ in size: the baseline, two big ones, one of random
data and zeros, one of a few blocks, a big one, a medium one.  The
policy --keep-last 2 --keep-weekly 2 keeps N3 (the newest of its week),
N6 and N7, and drops N1 (the baseline) and N2 into N3, N4 and N5 into
N6.  Each point's bytes are known (the guests' disks hashed every
night).  Three undisturbed prunes, each on a fresh copy, give T (the
shortest of their durations); the last is checked as the trials are.

CRASH_TRIALS times (5 by default; `make check-crash` runs 50; on an
object store CRASH_TRIALS_S3: 3, and 10, as a prune there takes many
times longer, and T is the one undisturbed prune's): a fresh
copy of the store (cp -a, which keeps hard links: checked on the first
state a kill left with one), a prune
killed with -9 after a random delay in [0, 1.2 T] (one in each of
CRASH_TRIALS equal slices of that span, in random order); then

  (a) before anything resumes, every point the policy keeps reads its
      night's bytes, through storefmt (an independent reader of
      FORMAT.md) and through a mount; no disk's manifests note holds a
      copy of a layer's manifest other than its own;
      cbtfs verify passes, or names as damaged only points whose drop
      the journal holds as pending (FORMAT.md, invariant 2);
  (b) the work is finished by, in turn, cbtfs prune (the same policy),
      or cbtfs backup, which must finish the interrupted drop first (no
      drop pending after it), and then cbtfs prune;
  (c) verify passes, the points are exactly those the policy keeps,
      each reads its bytes through a mount (and the dropped ones are
      not in the tree), nothing is left that no point needs (tmp/; a
      bucket's stages, marks and unnamed packs) and no disk keeps a
      prune note.

Then, on a fresh copy, the moment between a drop's last line and the
note's removal (too short for the trials to meet often) is made by
hand: a note whose drops are all done; the next backup removes it.

On an object store, the copy is a server-side copy of every object
(the hard links are a directory store's), storefmt reads the bucket's
objects, and the mounts read with an empty cache (a trial's packs may
take a name another trial's had).

Of 3 trials or more, at least one kill must land while prune runs (not
after it exited), and of 10 or more one while a drop was pending, or the
loop proves nothing.  Each trial says how far its pending drops had come.  The seed
is printed; CRASH_SEED repeats a run's choices (the data stays random).
"""
# store-kinds: dir s3
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
import storefmt as sf  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 32 * MiB
BLOCK = cb.BLOCK
DISKS = ("a", "b")

# label, time (UTC), what the guests change: (MiB of random data, MiB of
# zeros) or a number of 4 KiB writes.  2021-W09 is 1-7 March, W10 8-14
# March.  The folds start from either side (the one that stores more for
# the merged layer): N1 into N2 from N1 (a baseline of 512 blocks, N2 192),
# N2 into N3 from N3 (256 of 512), N4 into N5 from N4, N5 into N6 from N6.
NIGHTS = [
    ("N1", "2021-03-01 02:00:00", None),            # baseline
    ("N2", "2021-03-02 02:00:00", (12, 0)),
    ("N3", "2021-03-03 02:00:00", (16, 0)),         # newest of W09
    ("N4", "2021-03-08 02:00:00", (8, 2)),
    ("N5", "2021-03-09 02:00:00", 3),
    ("N6", "2021-03-10 02:00:00", (20, 0)),
    ("N7", "2021-03-11 02:00:00", (2, 0)),
]
AFTER = "2021-03-12 02:00:00"      # the backups of the trials (W10)
POLICY = ["--keep-last", "2", "--keep-weekly", "2"]
KEEP = {"N3", "N6", "N7"}
# After a backup (N8, the newest of W10), the same policy keeps:
KEEP_AFTER_BACKUP = {"N3", "N7", "N8"}


def utc(s):
    import calendar
    return calendar.timegm(time.strptime(s, "%Y-%m-%d %H:%M:%S"))


def sha_blocks(blocks):
    import hashlib
    h = hashlib.sha256()
    for b in blocks:
        h.update(b)
    return h.hexdigest()


def pending(env, store):
    """{snapshot} whose drop a disk's prune note holds as started and
    neither done nor kept (FORMAT.md, "Dropping a point": the lines are
    those of `verified`, with the words drop, done and kept)."""
    out = set()
    for d in env.store_disks(store):
        data = env.note_bytes(store, d, "prune")
        if data is None:
            continue
        lines = data.split(b"\n")
        lines.pop()                     # a torn last line is ignored
        for line in lines:
            m = re.match(rb"^([0-9a-f-]{36}) ([0-9]+) (drop|done|kept) "
                         rb"([0-9a-f]{16})$", line)
            if not m or int(m.group(4), 16) != sf.xxh3_64(line[:-17]):
                continue
            snap, word = m.group(1).decode(), m.group(3)
            if word == b"drop":
                out.add(snap)
            else:
                out.discard(snap)
    return out


def stage(env, store, busy):
    """Where each pending drop of BUSY stands (FORMAT.md, "Dropping a
    point"): "journalled" (its child not being rebuilt), "building" (the
    child's rebuild under way: in tmp/, or a bucket's stage), "swapped"
    (no layer names it as parent any more) or "removed" (its layer
    gone)."""
    out = []
    layers = {d: env.listed_layers(store, d) for d in env.store_disks(store)}
    for snap in sorted(busy):
        disks = [d for d, v in layers.items() if snap in v]
        if not disks:
            out.append("removed")
            continue
        children = [n for n in layers[disks[0]] if sf.parse_manifest(
            env.manifest_bytes(store, disks[0], n))["parent"] == snap]
        if not children:
            out.append("swapped")
        elif env.rebuilding(store, disks[0], children[0]):
            out.append("building")
        else:
            out.append("journalled")
    return out


def stale_copies(env, store):
    """The layers of STORE that their disk's manifests note holds a good
    copy of that is not their manifest (a mount would take it for
    theirs)."""
    out = []
    for disk in env.store_disks(store):
        layers = env.listed_layers(store, disk)
        for piece in sf.split_manifests(env.note_bytes(store, disk,
                                                       "manifests") or b""):
            try:
                m = sf.parse_manifest(piece)
            except sf.FormatError:
                continue
            if m["disk"] == disk and m["snapshot"] in layers \
                    and piece != env.manifest_bytes(store, disk,
                                                    m["snapshot"]):
                out.append(m["snapshot"])
    return out


def links(root):
    """Groups (sorted) of the paths under ROOT that are one file."""
    by_inode = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(
                os.path.relpath(p, root))
    return sorted(sorted(g) for g in by_inode.values())


def main():
    if os.geteuid() != 0:
        cb.skip("needs root (FUSE)")
    trials = int(os.environ.get("CRASH_TRIALS", "5") if cb.store_kind() == "dir"
                 else os.environ.get("CRASH_TRIALS_S3", "3"))
    seed = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print("seed %d, %d trials" % (seed, trials))
    t0 = time.monotonic()
    with sim.Sim() as s, cb.Env() as env:
        vm = s.control("create_vm", name="db", disks=[
            {"name": n, "size": SIZE} for n in DISKS])
        vdi = {n: d["vdi"] for n, d in zip(DISKS, vm["disks"])}
        guest = {n: env.path("guest-%s.img" % n) for n in DISKS}
        for n in DISKS:
            with open(guest[n], "wb") as f:
                f.write(os.urandom(SIZE))
        srv = ["--server", s.info["xapi_url"], "--ca-file", s.info["ca_file"],
               "--password-file", env.password_file()]
        pristine = env.store("pristine")
        want = {}               # snapshot -> sha256 of its disk then
        label = {}              # snapshot -> night
        snap = {}               # (disk, night) -> snapshot

        def backup(store, night, when):
            for n in DISKS:
                s.control("write_file", vdi=vdi[n], path=guest[n])
                s.control("set", snapshot_claims={"vdi": vdi[n],
                                                  "snapshot_time": utc(when)})
            env.cbtfs("backup", store, *srv, "-q")
            for d in env.ls_json(store)["disks"]:
                n = [k for k in DISKS if vdi[k] == d["uuid"]][0]
                new = d["points"][-1]
                check(new["time"] == utc(when) and new["snapshot"] not in want,
                      "%s: no new point on %s" % (night, n))
                want[new["snapshot"]] = cb.sha256(guest[n])
                label[new["snapshot"]] = night
                snap[n, night] = new["snapshot"]

        for night, when, change in NIGHTS:
            for n in DISKS:
                if isinstance(change, int):
                    for _ in range(change):
                        cb.write_at(guest[n], rng.randrange(SIZE // BLOCK) * BLOCK
                                    + rng.randrange(16) * 4096, os.urandom(4096))
                elif change:
                    rand, zeros = change
                    off = rng.randrange((SIZE - rand * MiB) // BLOCK) * BLOCK
                    cb.write_at(guest[n], off, os.urandom(rand * MiB))
                    if zeros:
                        off = rng.randrange((SIZE - zeros * MiB) // BLOCK) * BLOCK
                        cb.write_at(guest[n], off, bytes(zeros * MiB))
            backup(pristine, night, when)
        ls0 = env.ls_json(pristine)
        print("built %d points (%d MiB stored) in %.1fs" % (
            len(want), sum(p["stored_blocks"] for d in ls0["disks"]
                           for p in d["points"]) // 16, time.monotonic() - t0))

        def of(labels):
            return {x for x, lab in label.items() if lab in labels}

        work = env.store("work")

        def restore():
            env.remove_store(work)
            env.copy_store(pristine, work)
            if not cb.is_dir_store(work):
                # A mount's cache of another trial's packs is not this
                # store's.
                shutil.rmtree(env.path("s3-cache"), ignore_errors=True)
                return
            # The copy written back now, not by the prune's first fsyncs:
            # every run starts alike, so T says when to kill.
            for d, _, files in os.walk(work):
                for n in files:
                    fd = os.open(os.path.join(d, n), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)

        restore()
        check(env.store_state(work) == env.store_state(pristine)
              and (not cb.is_dir_store(work) or links(work) == links(pristine)),
              "the copy differs (files, hard links, objects)")

        def kept_read(what, kept, mount=False):
            """Every point of KEPT reads its bytes, through storefmt (and
            with MOUNT through a mount, which takes manifests from the
            disks' manifests notes), and no note holds a stale copy."""
            st = env.read_store(work)
            for x in kept:
                check(sha_blocks(st.point_blocks(st.layer(x))) == want[x],
                      "%s: %s reads otherwise (storefmt)" % (what, label[x]))
            stale = stale_copies(env, work)
            check(not stale, "%s: the manifests notes hold stale copies of %s"
                  % (what, sorted(label.get(x, x) for x in stale)))
            if not mount:
                return
            mnt = env.mount(work, env.path("mnt"))
            try:
                for x in kept:
                    n = [n for n in DISKS if snap.get((n, label[x])) == x][0]
                    img = os.path.join(mnt, "by-uuid", vdi[n], x + ".img")
                    check(cb.sha256(img) == want[x], "%s: %s reads otherwise "
                          "through a mount" % (what, label[x]))
            finally:
                cb.unmount(mnt)

        def finished(what, kept):
            """(c): the store after the policy's work is done."""
            rc, _, err = env.cbtfs("verify", work, ok=False)
            check(rc == 0, "%s: verify exited %d: %s" % (what, rc, err))
            listed = {p["snapshot"] for d in env.ls_json(work)["disks"]
                      for p in d["points"]}
            check(listed == kept, "%s: the store holds %s, not %s" % (
                what, sorted(label[x] for x in listed),
                sorted(label[x] for x in kept)))
            left = env.rubbish(work)
            check(left == [], "%s: left behind: %r" % (what, left[:10]))
            notes = env.prune_notes(work)
            check(notes == [], "%s: disks %r keep a prune note" % (what, notes))
            mnt = env.mount(work, env.path("mnt"))
            try:
                for n in DISKS:
                    folder = os.path.join(mnt, "by-uuid", vdi[n])
                    shown = {f[:-4] for f in os.listdir(folder)}
                    mine = {x for x in kept if snap.get((n, label[x])) == x}
                    check(shown == mine, "%s: disk %s shows %s" % (
                        what, n, sorted(label.get(x, x) for x in shown)))
                    for x in mine:
                        check(cb.sha256(os.path.join(folder, x + ".img"))
                              == want[x], "%s: %s of disk %s reads otherwise "
                              "through a mount" % (what, label[x], n))
            finally:
                cb.unmount(mnt)

        # Undisturbed prunes: how long one takes (the least of three),
        # and that it does the job.
        spans = []
        for _ in range(3 if cb.is_dir_store(work) else 1):
            restore()
            t = time.monotonic()
            p = subprocess.run([cb.cbtfs_binary(), "prune", work, *POLICY, "-q"],
                               stdin=subprocess.DEVNULL)
            spans.append(time.monotonic() - t)
            check(p.returncode == 0, "an undisturbed prune exited %d"
                  % p.returncode)
        span = min(spans)
        kept_read("undisturbed", of(KEEP))
        finished("undisturbed", of(KEEP))
        print("an undisturbed prune takes %s s" % ", ".join("%.2f" % x
                                                           for x in spans))

        # Random delays in [0, 1.2 T], one in each of TRIALS equal slices
        # (in random order), so that even a short loop kills early, midway
        # and late.
        slices = list(range(trials))
        rng.shuffle(slices)
        killed = interrupted = damaged_seen = 0
        seen = {}               # how far the pending drops had come
        linked_copy = False
        for k in range(1, trials + 1):
            restore()
            delay = 1.2 * span * (slices[k - 1] + rng.random()) / trials
            proc = subprocess.Popen([cb.cbtfs_binary(), "prune", work, *POLICY,
                                     "-q"], stdin=subprocess.DEVNULL)
            env.on_close(lambda p=proc: p.poll() is None and p.kill())
            time.sleep(delay)           # the random moment under test
            proc.send_signal(signal.SIGKILL)
            rc = proc.wait()
            if rc == -signal.SIGKILL:
                killed += 1
                how = "killed"
            else:
                check(rc == 0, "trial %d: prune exited %d" % (k, rc))
                how = "exited"
            what = "trial %d (%s after %.2fs)" % (k, how, delay)
            # (a) Before anything resumes.
            busy = pending(env, work)
            interrupted += bool(busy)
            if not linked_copy and cb.is_dir_store(work) \
                    and any(len(g) > 1 for g in links(work)):
                # A fold left a hard link (a rebuilt layer's data is the
                # base's): cp -a keeps it, so copies of the store do.
                dst = env.path("linked-copy")
                subprocess.run(["cp", "-a", work, dst], check=True)
                check(links(dst) == links(work), "%s: cp -a did not keep "
                      "the store's hard links" % what)
                shutil.rmtree(dst)
                linked_copy = True
            stages = stage(env, work, busy)
            for x in stages:
                seen[x] = seen.get(x, 0) + 1
            kept_read(what, of(KEEP), mount=True)
            rc, out, err = env.cbtfs("verify", work, ok=False)
            damaged = set(re.findall(r"damaged: \S+ \(snapshot ([0-9a-f-]{36})\)",
                                     out + err))
            check(rc == 0 or (damaged and damaged <= busy),
                  "%s: verify exited %d, naming %s damaged with drops of %s "
                  "pending: %s" % (what, rc, sorted(label.get(x, x) for x in damaged),
                                   sorted(label.get(x, x) for x in busy),
                                   out + err))
            damaged_seen += bool(damaged)
            # (b) Finish.
            if k % 2:
                env.cbtfs("prune", work, *POLICY, "-q")
                kept = of(KEEP)
                how = "prune"
            else:
                for n in DISKS:
                    cb.write_at(guest[n], rng.randrange(SIZE // 4096) * 4096,
                                os.urandom(4096))
                for x in [x for x, lab in label.items() if lab == "N8"]:
                    del label[x]        # another trial's N8, not in this store
                backup(work, "N8", AFTER)
                left = pending(env, work)
                check(not left, "%s: the backup left drops of %s pending"
                      % (what, sorted(label[x] for x in left)))
                kept_read(what + ", backed up", of(KEEP) | of({"N8"}))
                env.cbtfs("prune", work, *POLICY, "-q")
                kept = of(KEEP_AFTER_BACKUP)
                how = "backup, prune"
            # (c)
            finished(what + ", finished by " + how, kept)
            print("%s: drops pending: %s%s; finished by %s" % (
                what, ", ".join(stages) or "none",
                " (verify: damaged)" if damaged else "", how))

        # A kill after a drop's last line, before the note's removal
        # (too short a moment for the trials to meet often): the drops
        # are all done, and the next backup removes the note.
        restore()
        for n in DISKS:
            x = snap[n, "N1"]
            env.append_note(work, vdi[n], "prune",
                            sf.format_verified(x, utc(AFTER), "drop")
                            + sf.format_verified(x, utc(AFTER), "done"))
        check(len(env.prune_notes(work)) == len(DISKS), "no prune note to "
              "leave: %s" % env.prune_notes(work))
        for x in [x for x, lab in label.items() if lab == "N8"]:
            del label[x]
        backup(work, "N8", AFTER)
        check(env.prune_notes(work) == [], "the backup left the notes of "
              "finished drops: %s" % env.prune_notes(work))
        print("a note whose drops are all done: the backup removed it")

        print("%d of %d trials killed prune while it ran, %d with a drop "
              "pending (%s), %d where verify found the going point damaged"
              % (killed, trials, interrupted, ", ".join(
                  "%s %d" % kv for kv in sorted(seen.items())), damaged_seen))
        # The kills must have landed while prune ran; in a long loop, also
        # while a drop was under way (about half the kills do: the rest
        # land while it starts, plans or tidies up).
        if trials >= 3:
            check(killed >= 1, "no kill landed while prune ran: the loop "
                  "proved nothing")
        if trials >= 10:
            check(interrupted >= 1, "no kill landed while a drop was under "
                  "way: the loop proved nothing")
    print("ok (%.1fs)" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
