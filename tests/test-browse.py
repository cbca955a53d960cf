#!/usr/bin/env python3
"""End to end: the README's browsing recipe, as written, on a guest disk
as users' disks are.

A VM "web" has a GPT disk "root" (partition 1 ext4, 2 an LVM PV whose
VG vg0 holds an LV "data" with XFS, 3 NTFS made by Debian's ntfs-3g)
and a disk "home" that is one ext4 filesystem.  It is backed up while
its ext4 and XFS are mounted, as a running VM's are (their journal and
log not clean), files change in every filesystem, and it is backed up
again.  Through a cbtfs mount, both points are then browsed side by
side with the commands of README's "Browsing a snapshot", taken from
the README itself and run with only its paths and device names bound
to this test's, and every file of every filesystem must read as it was
at that point.  Every command of the section is run, or named in the
output as one this machine cannot run.

Where the kernel has no device-mapper, the LVM activation commands
cannot run: the test says so and reads the LV at its offset on the PV
(the README's way for that case), which it does on every machine, since
it is also how two points of one LV are mounted side by side.  Claims
the recipe rests on are checked too: every LVM command of it names its
device with --devices (with two points' PVs attached, LVM otherwise
warns that it prefers one of them, which the test sees it do), ext4
from a running guest does not mount read-only without noload, XFS
refuses a second point without nouuid, and no LVM command leaves the
guest's VG in this machine's /etc/lvm.  The teardown is the README's,
in its order; what a failure leaves is undone in the same order.
"""
# store-kinds: dir s3
# runs-alone: it takes loop devices and device-mapper
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
# XFS is at least 300 MiB (mkfs.xfs refuses less), so the PV partition
# is 320 MiB; the disk stays sparse, and backups copy only what holds
# data.
ROOT_SIZE = 360 * MiB
HOME_SIZE = 16 * MiB
VG, LV = "vg0", "data"
README = os.path.join(cb.TOP, "README")
# LVM warns on stderr about every descriptor it inherits.
LVM_ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")


def run(cmd, ok=True, env=None):
    """Run CMD (a list, or a string for sh -c) in ENV (LVM_ENV); the
    CompletedProcess.  With OK, a non-zero exit fails the test."""
    shell = isinstance(cmd, str)
    p = subprocess.run(cmd, shell=shell, capture_output=True, text=True,
                       env=env or LVM_ENV, timeout=300)
    if ok and p.returncode != 0:
        raise cb.TestFailure("%s exited %d: %s" % (
            cmd if shell else " ".join(cmd), p.returncode,
            (p.stderr or p.stdout).strip()))
    return p


def has_device_mapper():
    with open("/proc/devices") as f:
        return (any(line.split()[-1:] == ["device-mapper"] for line in f)
                and os.path.exists("/dev/mapper/control"))


# -- the recipe, from the README ---------------------------------------

# How the test finds each command of the recipe: by what it does (its
# tool and the device it works on), not by its options, so that a
# wrong option is run and fails rather than goes unfound.
KEYS = {
    "mounts a disk's filesystem": r"^mount .*-o loop\b",
    "attaches a disk": r"^losetup .*-P",
    "adds partitions": r"^partx ",
    "shows the partitions": r"^blkid ",
    "mounts ext4": r"^mount .*/dev/loop0p1 ",
    "mounts NTFS": r"^ntfs-3g ",
    "shows the PV": r"^pvs (?!.*--segments)",
    "shows the LVs": r"^lvs ",
    "activates": r"^vgchange -ay",
    "shows what an LV reads": r"^dmsetup ",
    "mounts the activated LV": r"^mount .*/dev/vg0/",
    "shows the LV's segments": r"^pvs .*--segments",
    "sets the segment's numbers": r"^([A-Z_]+=\S+ ?)+$",
    "attaches the LV at its offset": r"^losetup .*--offset",
    "mounts the LV at its offset": r"^mount .*/dev/loop2 ",
    "unmounts": r"^umount ",
    "deactivates": r"^vgchange -an",
    "detaches": r"^losetup -d",
    "unmounts cbtfs": r"^fusermount3 ",
}


class Recipe:
    """The commands of README's "Browsing a snapshot": its indented
    lines, continuation lines joined and comments dropped.  take()
    hands out one by the way it starts; unused() names those never
    taken."""

    def __init__(self):
        with open(README) as f:
            text = f.read()
        head = "\nBrowsing a snapshot\n-------------------\n"
        check(head in text, "README has no \"Browsing a snapshot\" section")
        section = text.split(head, 1)[1]
        section = re.split(r"\n[^\n]+\n-{3,}\n", section, maxsplit=1)[0]
        self.cmds = []
        cur = ""
        for line in section.splitlines():
            if not line.startswith("    "):
                continue
            line = re.sub(r"(^|\s)#.*$", "", line.strip()).rstrip()
            if line.endswith("\\"):
                cur += line[:-1]
                continue
            line = cur + line
            cur = ""
            if line:
                self.cmds.append(" ".join(line.split()))
        self.used = set()

    def take(self, what):
        """The one command that WHAT (a key of KEYS) finds."""
        hits = [c for c in self.cmds if re.search(KEYS[what], c)]
        check(len(hits) == 1, "README's browsing recipe has %d commands "
              "that %s (wanted one): %s" % (len(hits), what, hits))
        self.used.add(hits[0])
        return hits[0]

    def unused(self):
        return [c for c in self.cmds if c not in self.used]


class Point:
    """One point in time as the recipe sees it: the README's names
    bound to this test's (its image, its mount points, its loop
    devices)."""

    def __init__(self, env, mnt, name, label):
        self.env = env
        self.mnt = mnt            # the cbtfs mount
        self.name = name          # "latest" or "<time>.img"
        self.label = label
        self.dirs = env.mkdir("browse-" + label)
        self.loops = {}           # README's loop number -> device
        self.backs = {}           # ... -> what it read when attached

    def bind(self, cmd):
        cmd = re.sub(r"/mnt/backups\b", self.mnt, cmd)
        cmd = re.sub(r"(by-vm/web/\w+)/latest\b", r"\1/" + self.name, cmd)

        def mnt(m):
            d = os.path.join(self.dirs, m.group(1))
            os.makedirs(d, exist_ok=True)
            return d
        cmd = re.sub(r"/mnt/(web[\w-]*)", mnt, cmd)

        def loop(m):
            n = int(m.group(1))
            check(n in self.loops, "the recipe uses /dev/loop%d before it "
                  "attached it" % n)
            return self.loops[n]
        return re.sub(r"/dev/loop(\d)(?!\d)", loop, cmd)

    def attached(self, n, dev):
        """README's /dev/loopN is DEV here; detached at close."""
        self.loops[n] = dev
        self.backs[n] = backing(dev)
        self.env.on_close(detach, dev, self.backs[n])

    def dir(self, name):
        return os.path.join(self.dirs, name)

    def part(self, n):
        return "%sp%d" % (self.loops[0], n)

    def sh(self, recipe, prefix, ok=True):
        cmd = self.bind(recipe.take(prefix))
        print("%s$ %s" % (self.label, cmd))
        p = run(cmd, ok=ok)
        out = (p.stdout + p.stderr).strip()
        if out:
            print("    " + out.replace("\n", "\n    "))
        return p


# -- cleanup -------------------------------------------------------------

def mounted_at(path):
    return cb.mounted(path)


def unmount_at(path):
    if mounted_at(path):
        r = subprocess.run(["umount", path])
        if r.returncode != 0:
            subprocess.run(["umount", "-l", path])


def backing(dev):
    p = subprocess.run(["losetup", "-n", "-O", "BACK-FILE", dev],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def detach(dev, back):
    """losetup -d DEV if it still reads BACK: the device may have been
    detached already and taken since by someone else."""
    if back is not None and backing(dev) == back:
        subprocess.run(["losetup", "-d", dev])


def attach(env, image, *opts):
    """losetup --show -f OPTS IMAGE; detached at close."""
    dev = run(["losetup", "--show", "-f"] + list(opts) + [image]).stdout.strip()
    env.on_close(detach, dev, backing(dev))
    return dev


def ensure_parts(dev, partx):
    """Partition devices of DEV: losetup -P's, or PARTX's (a command)
    where it made none.  Returns which made them."""
    if os.path.exists(dev + "p1"):
        return "losetup -P"
    partx()
    check(os.path.exists(dev + "p1"), "no %sp1 after partx -a" % dev)
    return "partx -a"


def mount_rw(env, dev, path, *cmd):
    os.makedirs(path, exist_ok=True)
    run(list(cmd or ("mount",)) + [dev, path])
    env.on_close(unmount_at, path)


# -- the guest -----------------------------------------------------------

def put(root, files, gone=()):
    for rel in gone:
        os.unlink(os.path.join(root, rel))
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


def lv_range(pv):
    """(offset, size) in bytes of LV on PV, which must be one segment:
    the test's own reading of pvs, to build the guest."""
    out = run(["pvs", "--devices", pv, "--segments", "--units", "b",
               "--nosuffix", "--noheadings", "-o",
               "lv_name,pvseg_start,pvseg_size,pe_start,vg_extent_size"]).stdout
    rows = [r.split() for r in out.splitlines() if r.split()[:1] == [LV]]
    check(len(rows) == 1, "LV %s is not one segment: %s" % (LV, out))
    _, start, size, pe_start, ext = rows[0]
    return int(pe_start) + int(start) * int(ext), int(size) * int(ext)


class Guest:
    """The VM's disks as files here, written as the guest would write
    them (rw loop devices, real mounts), and what each filesystem holds
    at each point.  Like a running VM's, its ext4 and XFS are mounted
    when the backup snapshots the disk: their data is in place (a
    freeze checkpointed it) but their journal and log are not clean."""

    def __init__(self, env):
        self.env = env
        self.root = env.path("root.img")
        self.home = env.path("home.img")
        self.want = []            # per point: {fs: {path: bytes}}
        self.up = []              # (mount point or None, device)
        self.files = {
            "ext4": {"etc/hostname": b"web-1\n",
                     "srv/site/index.html": os.urandom(150000)},
            "xfs": {"db/table.bin": os.urandom(400000),
                    "db/old.log": b"old log\n" * 1000},
            "ntfs": {"Users/web/report.txt": b"report, version 1\r\n",
                     "Users/web/photo.jpg": os.urandom(120000)},
            "home": {"user/notes.txt": b"notes 1\n"},
        }
        self.gone = {}

    def create(self):
        """A new disk, its filesystems made and written; left running."""
        with open(self.root, "wb") as f:
            f.truncate(ROOT_SIZE)
        run(["sgdisk", "-o", "-n1:2048:+16M", "-t1:8300",
             "-n2:0:+320M", "-t2:8e00", "-n3:0:+16M", "-t3:0700", self.root])
        cb.make_ext4(self.home, HOME_SIZE, self.files["home"])
        parts = self._attach()
        run(["mkfs.ext4", "-q", "-F", parts[1]])
        pv = parts[2]
        run(["pvcreate", "-q", "--devices", pv, pv])
        run(["vgcreate", "-q", "-A", "n", "--devices", pv, VG, pv])
        # Metadata only: no device-mapper needed, none touched.
        run(["lvcreate", "-q", "-A", "n", "--devices", pv,
             "--config", "global/activation=0", "-an", "-Zn",
             "-n", LV, "-l", "100%FREE", VG])
        lvdev = self._attach_lv(pv)
        run(["mkfs.xfs", "-q", lvdev])
        run(["mkntfs", "-q", "-Q", "-F", parts[3]])
        self._run(parts, lvdev)

    def change(self):
        """The guest's changes between the backups: a file changed, one
        added and one removed in each filesystem; left running."""
        f = self.files
        f["ext4"]["etc/hostname"] = b"web-2\n"
        f["ext4"]["srv/site/new.html"] = b"<p>new</p>\n"
        f["xfs"]["db/table.bin"] = os.urandom(400000)
        f["xfs"]["db/new.log"] = b"new log\n" * 300
        del f["xfs"]["db/old.log"]
        f["ntfs"]["Users/web/report.txt"] = b"report, version 2\r\n"
        f["ntfs"]["Users/web/more.txt"] = b"more\r\n"
        del f["ntfs"]["Users/web/photo.jpg"]
        self.gone = {"xfs": ["db/old.log"], "ntfs": ["Users/web/photo.jpg"]}
        f["home"]["user/notes.txt"] = b"notes 2, longer\n"
        cb.ext4_write(self.home, "user/notes.txt", f["home"]["user/notes.txt"])
        parts = self._attach()
        self._run(parts, self._attach_lv(parts[2]))

    def stop(self):
        """The VM shuts down: filesystems unmounted, devices detached."""
        while self.up:
            d, dev = self.up.pop()
            if d:
                run(["umount", d])
            else:
                run(["blockdev", "--flushbufs", dev])
                run(["losetup", "-d", dev])

    def _attach(self):
        dev = attach(self.env, self.root, "-P")
        self.up.append((None, dev))
        ensure_parts(dev, lambda: run(["partx", "-a", dev]))
        return {n: "%sp%d" % (dev, n) for n in (1, 2, 3)}

    def _attach_lv(self, pv):
        off, size = lv_range(pv)
        dev = attach(self.env, pv, "--offset", str(off), "--sizelimit", str(size))
        self.up.append((None, dev))
        return dev

    def _run(self, parts, lvdev):
        """Write the files through rw mounts; NTFS is unmounted again,
        ext4 and XFS stay mounted with a transaction in their journal
        and log after their data was checkpointed."""
        env = self.env
        n = len(self.want)
        for fs, dev, how in (("ext4", parts[1], ("mount",)),
                             ("xfs", lvdev, ("mount",)),
                             ("ntfs", parts[3], ("ntfs-3g",))):
            d = env.path("guest-%s-%d" % (fs, n))
            mount_rw(env, dev, d, *how)
            put(d, self.files[fs], self.gone.get(fs, ()))
            if fs == "ntfs":
                run(["umount", d])
                continue
            self.up.append((d, dev))
            run(["fsfreeze", "-f", d])
            run(["fsfreeze", "-u", d])
            os.utime(d)
        os.sync()
        self.want.append({fs: dict(files) for fs, files in self.files.items()})


def tree(root):
    """Every regular file under ROOT: path -> bytes (ext4's lost+found
    and NTFS's system files left out)."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "lost+found" and not x.startswith("$")]
        for n in files:
            if n.startswith("$"):
                continue
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def check_tree(root, want, what):
    got = tree(root)
    check(sorted(got) == sorted(want), "%s holds %s, not %s"
          % (what, sorted(got), sorted(want)))
    for rel in want:
        check(got[rel] == want[rel], "%s: %s does not read as it was "
              "at that point" % (what, rel))
    print("    %s: %d files as they were" % (what, len(want)))


# -- browsing ------------------------------------------------------------

def lv_row(p, out):
    """The row of LV in the output of the recipe's pvs --segments."""
    rows = [r.split() for r in out.splitlines() if r.split()[:1] == [LV]]
    check(len(rows) == 1, "%s: the recipe's pvs --segments shows %d rows "
          "for %s: %s" % (p.label, len(rows), LV, out))
    return rows[0]


def browse(env, recipe, points, want, dm):
    """Each point attached and its filesystems mounted by the recipe,
    side by side; then checked."""
    for p, w in zip(points, want):
        # The filesystem directly on a disk: its own loop, gone with
        # its umount (mount -o loop sets autoclear).
        p.sh(recipe, "mounts a disk's filesystem")
        d = p.dir("web-home")
        env.on_close(unmount_at, d)
        check_tree(d, w["home"], "%s: home (ext4 on the disk)" % p.label)

        out = p.sh(recipe, "attaches a disk").stdout.strip()
        check(re.fullmatch(r"/dev/loop\d+", out), "losetup printed %r" % out)
        p.attached(0, out)
        made = ensure_parts(out, lambda: p.sh(recipe, "adds partitions"))
        print("    partition devices made by %s" % made)
        if made == "losetup -P":
            recipe.take("adds partitions")     # "only if": not needed here
        blk = p.sh(recipe, "shows the partitions").stdout
        for part, kind in ((1, "ext4"), (2, "LVM2_member"), (3, "ntfs")):
            check(re.search(r"%s:.*TYPE=\"%s\"" % (p.part(part), kind), blk),
                  "blkid does not say %s holds %s: %s" % (p.part(part), kind, blk))

        needs_noload(env, p.part(1))
        for what, fs, dname in (("mounts ext4", "ext4", "web"),
                                ("mounts NTFS", "ntfs", "web-ntfs")):
            env.on_close(unmount_at, p.dir(dname))
            p.sh(recipe, what)
            check_tree(p.dir(dname), w[fs], "%s: %s" % (p.label, fs))

        vgs = p.sh(recipe, "shows the PV").stdout
        check(re.search(r"%s\s+%s\s" % (re.escape(p.part(2)), VG), vgs),
              "pvs does not show VG %s on %s: %s" % (VG, p.part(2), vgs))
        lvs = p.sh(recipe, "shows the LVs").stdout
        check(re.search(r"^\s*%s\s+%s\s" % (LV, VG), lvs, re.M),
              "lvs does not show %s/%s: %s" % (VG, LV, lvs))

    # Both points' PVs attached: LVM's own choice is one of them (and
    # it says so); --devices, as the recipe has it, is the one asked.
    both = ",".join(p.part(2) for p in points)
    r = run(["pvs", "--devices", both, "-o", "pv_name,vg_name"], ok=False)
    check("prefers device" in r.stderr or "Not using device" in r.stderr,
          "LVM said nothing about the same PV twice: %s" % r.stderr)
    print("two points' PVs attached: LVM says %r" % r.stderr.strip().splitlines()[0])

    if dm:
        activate_each(env, recipe, points, want)
    else:
        print("NOTE: this kernel has no device-mapper: the LVM activation "
              "cannot activate, and dmsetup deps, the mount of /dev/%s/%s "
              "and vgchange -an are not run here; the LV is read at its "
              "offset on the PV instead, as the README says for that case"
              % (VG, LV))
        # The activation still reads the VG as it would (and would copy
        # it into /etc/lvm without -A n) before it finds no
        # device-mapper: a command LVM cannot parse fails otherwise.
        r = points[0].sh(recipe, "activates", ok=False)
        check(r.returncode != 0 and "device-mapper" in r.stderr
              and "now active" in r.stdout, "vgchange -ay without "
              "device-mapper did not fail for want of it: %s" % r.stderr)
        for c in ("shows what an LV reads", "mounts the activated LV",
                  "deactivates"):
            recipe.take(c)

    # The LV at its offset, both points side by side.
    for p, w in zip(points, want):
        out = p.sh(recipe, "shows the LV's segments").stdout
        row = lv_row(p, out)
        names = recipe.take("sets the segment's numbers").split()
        check(len(names) == 4 and all("=" in n for n in names),
              "the recipe's assignment is not four variables: %s" % names)
        values = dict((n.split("=")[0], v) for n, v in zip(names, row[1:]))
        print("%s$ %s   (from that row)" % (p.label, " ".join(
            "%s=%s" % kv for kv in values.items())))
        cmd = p.bind(recipe.take("attaches the LV at its offset"))
        print("%s$ %s" % (p.label, cmd))
        dev = run(cmd, env=dict(LVM_ENV, **values)).stdout.strip()
        check(re.fullmatch(r"/dev/loop\d+", dev), "losetup printed %r" % dev)
        p.attached(2, dev)
    nouuid_needed(env, [p.loops[2] for p in points])
    for p, w in zip(points, want):
        env.on_close(unmount_at, p.dir("web-data"))
        p.sh(recipe, "mounts the LV at its offset")
        check_tree(p.dir("web-data"), w["xfs"], "%s: xfs on LVM, at its "
                   "offset" % p.label)


def needs_noload(env, dev):
    """The claim behind noload: the ext4 of a running guest's snapshot
    wants its journal replayed, which a read-only device refuses."""
    d = env.mkdir("no-noload")
    env.on_close(unmount_at, d)
    r = run(["mount", "-o", "ro", dev, d], ok=False)
    unmount_at(d)
    check(r.returncode != 0, "ext4 of a running guest mounted read-only "
          "without noload: the README's reason for it is wrong")
    print("    without noload: %s" % r.stderr.strip().splitlines()[0])


def nouuid_needed(env, devs):
    """The claim behind nouuid: with one point's XFS mounted as XFS
    mounts by default, another point's is refused."""
    dirs = [env.mkdir("no-nouuid-%d" % i) for i in range(2)]
    for d in dirs:
        env.on_close(unmount_at, d)
    run(["mount", "-o", "ro,norecovery", devs[0], dirs[0]])
    r = run(["mount", "-o", "ro,norecovery", devs[1], dirs[1]], ok=False)
    unmount_at(dirs[1])
    run(["umount", dirs[0]])
    check(r.returncode != 0, "XFS mounted a second point without nouuid: "
          "the README's reason for it is wrong")
    print("two points' XFS without nouuid: %s" % r.stderr.strip().splitlines()[0])


def activate_each(env, recipe, points, want):
    """The recipe's activation, one point at a time."""
    for p, w in zip(points, want):
        env.on_close(lambda p=p: run(["vgchange", "-an", "--devices",
                                      p.part(2), VG], ok=False))
        p.sh(recipe, "activates")
        deps = p.sh(recipe, "shows what an LV reads").stdout
        check("(%s)" % os.path.basename(p.part(2)) in deps,
              "%s/%s reads %s, not %s" % (VG, LV, deps.strip(), p.part(2)))
        env.on_close(unmount_at, p.dir("web-data"))
        p.sh(recipe, "mounts the activated LV")
        check_tree(p.dir("web-data"), w["xfs"], "%s: xfs on LVM, activated"
                   % p.label)
        run(["umount", p.dir("web-data")])
        p.sh(recipe, "deactivates")


def teardown(recipe, points, mnt, dm):
    """The README's teardown, in its order, for each point."""
    for p in points:
        p.sh(recipe, "unmounts")
        if dm:
            p.sh(recipe, "deactivates")
        p.sh(recipe, "detaches")
    for p in points:
        check(not any(mounted_at(p.dir(d)) for d in os.listdir(p.dirs)),
              "%s: something stays mounted after the teardown" % p.label)
        for n, dev in p.loops.items():
            check(backing(dev) != p.backs[n], "%s stays attached after the "
                  "teardown" % dev)
    points[0].sh(recipe, "unmounts cbtfs")
    check(not cb.mounted(mnt), "the cbtfs mount stays after the teardown")


def guest_vg_copies():
    """This machine's LVM backups and archives of a VG named like the
    guest's."""
    out = set()
    for d in ("/etc/lvm/backup", "/etc/lvm/archive"):
        if os.path.isdir(d):
            out |= {os.path.join(d, n) for n in os.listdir(d)
                    if n == VG or n.startswith(VG + "_")}
    return out


def main():
    if os.geteuid() != 0:
        cb.skip("needs root for loop devices and mounts")
    for tool in ("sgdisk", "pvcreate", "mkfs.xfs", "mkntfs", "ntfs-3g", "partx"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            cb.skip("%s is not installed (scripts/install-deps.sh)" % tool)
    recipe = Recipe()
    # What keeps LVM to the point asked for: --devices on every LVM
    # command (where two points are attached, LVM's own pick is one).
    for c in recipe.cmds:
        if re.match(r"(pvs|lvs|vgs|vgchange|lvchange)\b", c):
            check("--devices " in c, "the recipe's %r reads every disk "
                  "of the machine: it lacks --devices" % c)
    dm = has_device_mapper()
    lvm_copies = guest_vg_copies()
    with sim.Sim() as s, cb.Env("cbtfs-browse") as env:
        # What an LVM command copied of the guest's VG goes, also when
        # the test fails.
        env.on_close(lambda: [os.unlink(f) for f in
                              guest_vg_copies() - lvm_copies])
        vm = s.control("create_vm", name="web",
                       disks=[{"name": "root", "size": ROOT_SIZE},
                              {"name": "home", "size": HOME_SIZE}])
        vdis = [d["vdi"] for d in vm["disks"]]
        store = env.store()
        srv = ["--server", s.info["xapi_url"], "--ca-file", s.info["ca_file"],
               "--password-file", env.password_file()]
        guest = Guest(env)

        def backup():
            for vdi, img in zip(vdis, (guest.root, guest.home)):
                s.control("write_file", vdi=vdi, path=img)
            env.cbtfs("backup", store, "--vm", "web", *srv)

        guest.create()
        backup()
        guest.stop()
        guest.change()
        backup()
        guest.stop()

        mnt = env.mount(store, env.path("backups"))
        folder = os.path.join(mnt, "by-vm", "web", "root")
        names = sorted(n for n in os.listdir(folder) if n.endswith(".img"))
        check(len(names) == 2, "two points expected, the mount shows %s" % names)
        newest = os.readlink(os.path.join(folder, "latest"))
        older = [n for n in names if n != newest]
        check(len(older) == 1, "latest is %s of %s" % (newest, names))
        home = sorted(os.listdir(os.path.join(mnt, "by-vm", "web", "home")))
        check(older[0] in home, "the disks' points differ: %s, %s"
              % (names, home))
        # The older point by its time, the newer by the README's
        # "latest"; both attached at once.
        points = [Point(env, mnt, older[0], "old"),
                  Point(env, mnt, "latest", "new")]
        browse(env, recipe, points, guest.want, dm)
        teardown(recipe, points, mnt, dm)
        left = recipe.unused()
        check(not left, "README's browsing commands this test never ran: "
              "%s" % left)
        new = guest_vg_copies() - lvm_copies
        check(not new, "LVM copied the guest's VG into this machine's "
              "/etc/lvm: %s" % sorted(new))
    print("OK: %s" % ("both points browsed by the README's recipe"
                      + ("" if dm else ", the LV at its offset (no device-mapper)")))


if __name__ == "__main__":
    main()
