#!/usr/bin/env python3
"""make bench: cbtfs against real tools, as ratios measured in one run.

Absolute times on a shared machine are noise; ratios of two runs on the
same data, minutes apart, are not.  Each row times cbtfs and a baseline
(nbdcopy, nbdfuse, cat, fio, or cbtfs itself at another size or depth)
and prints ours/theirs as a speed ratio (higher is better) unless the
goal says otherwise.  Snapshots are served by nbdkit with TLS (loopback)
through the XenServer stand-in's nbd_override, so cbtfs talks XAPI as
it would to a host.  Needs root and the packages install-deps.sh adds.

    scripts/bench.py [CBTFS]        BENCH_GIB (default 1), BENCH_BIG_GIB
                                    (default 8), BENCH_ONLY=r1,r2,…,p1,b1,rs1,
                                    s1,…,s4 (object store: Ceph RGW),
                                    BENCH_REPEAT (default 3)

The rows near their goals are measured BENCH_REPEAT times, each time
cbtfs then its baseline back to back, and show the median of those
ratios and their range: on a small shared VM one pair can be 20 % off
the next.
"""
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
SIZE = int(float(os.environ.get("BENCH_GIB", "1")) * GiB)
BIG = int(float(os.environ.get("BENCH_BIG_GIB", "8")) * GiB)
ONLY = [x for x in os.environ.get("BENCH_ONLY", "").split(",") if x]
REPEAT = max(1, int(os.environ.get("BENCH_REPEAT", "3")))
MKCHAIN = os.path.join(TOP, "build", "tests", "mkchain")

rows = []


def row(key, what, ours, theirs, goal, higher=True, unit="s"):
    """Record a row: OURS and THEIRS are times (or rates if unit is a
    rate), or lists of them measured in pairs; the ratio is theirs/ours
    for times, ours/theirs for rates, the median of the pairs' ratios
    when there are several."""
    ours = ours if isinstance(ours, list) else [ours]
    theirs = theirs if isinstance(theirs, list) else [theirs] * len(ours)
    ratios = [(t / o if higher else o / t) if unit == "s" else
              (o / t if higher else t / o) for o, t in zip(ours, theirs)]
    ratio = statistics.median(ratios)
    ok = ratio >= goal if higher else ratio <= goal
    spread = ("  (%d: %.2f-%.2f)" % (len(ratios), min(ratios), max(ratios))
              if len(ratios) > 1 else "")
    rows.append((key, what, ours, theirs, unit, ratio, goal, higher, ok))
    print("%-4s %-62s %8.3f %8.3f %s  %6.3f %s %s %s%s" % (
        key, what, statistics.median(ours), statistics.median(theirs), unit,
        ratio, ">=" if higher else "<=", goal, "ok" if ok else "MISSED",
        spread), flush=True)


def extra(key, what, value, goal, unit, below=True):
    ok = value < goal if below else value >= goal
    rows.append((key, what, value, None, unit, None, goal, below, ok))
    print("%-4s %-62s %10.3f %s  goal %s %s %s" % (
        key, what, value, unit, "<" if below else ">=", goal,
        "ok" if ok else "MISSED"), flush=True)


def wanted(key):
    return not ONLY or key in ONLY


def timed(fn, *args):
    t = time.monotonic()
    fn(*args)
    return time.monotonic() - t


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def cat(path):
    """Read PATH sequentially in 1 MiB pieces, as cat does."""
    with open(path, "rb", buffering=0) as f:
        while f.readinto(BUF):
            pass


BUF = bytearray(MiB)


def cat_open(f):
    """cat of an open file F, from where it is."""
    while f.readinto(BUF):
        pass


def peak_rss(cmd):
    """Run CMD; its peak resident memory in MiB (its own, by wait4)."""
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, "%s exited %d" % (cmd[1], p.returncode)
    return usage.ru_maxrss / 1024


def mount_peak(env, store, read):
    """Mount STORE in the foreground, READ(mountpoint), and return the
    mount's peak resident memory in MiB."""
    mp = env.mkdir("peak-%d" % len(os.listdir(env.dir)))
    m = env.mount_fg(store, mp)
    read(mp)
    with open("/proc/%d/status" % m.proc.pid) as f:
        hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
    assert m.unmount() == 0
    return hwm


def newest_images(mp):
    """cat every disk's newest point (each reads through all its layers)."""
    for vm in os.listdir(os.path.join(mp, "by-vm")):
        for disk in os.listdir(os.path.join(mp, "by-vm", vm)):
            cat(os.path.join(mp, "by-vm", vm, disk, "latest"))


def read_across(mp):
    """Read 4096 blocks spread evenly over the one image under MP."""
    img = [os.path.join(d, f) for d, _, fs in os.walk(
        os.path.join(mp, "by-uuid")) for f in fs][0]
    fd = os.open(img, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for i in range(4096):
            assert os.pread(fd, cb.BLOCK, size // 4096 * i) == bytes(cb.BLOCK)
    finally:
        os.close(fd)


def warm(store):
    """Read the data of every data file of STORE once, so it is in page
    cache (only the data: reading the holes of sparse files would fill
    the page cache with zeros and push the data out)."""
    for d, _, files in os.walk(store):
        if "data" not in files:
            continue
        fd = os.open(os.path.join(d, "data"), os.O_RDONLY)
        try:
            off, end = 0, os.fstat(fd).st_size
            while off < end:
                try:
                    off = os.lseek(fd, off, os.SEEK_DATA)
                except OSError:
                    break
                hole = os.lseek(fd, off, os.SEEK_HOLE)
                while off < hole:
                    n = os.preadv(fd, [BUF], off)
                    if n <= 0:
                        break
                    off += n
        finally:
            os.close(fd)


def free_port(addr="127.0.0.1"):
    with socket.socket() as so:
        so.bind((addr, 0))
        return so.getsockname()[1]


class Bench:
    def __init__(self, env, s):
        self.env = env
        self.s = s
        self.info = s.info
        self.pw = env.password_file()
        self.store = env.path("store")
        self.srv = ["--server", self.info["xapi_url"], "--ca-file",
                    self.info["ca_file"], "--password-file", self.pw]
        self.n = 0

    def nbdkit(self, image, *filters):
        """nbdkit serving IMAGE read-only with TLS on 127.0.0.1 (named in
        the stand-in's certificate); returns its port and nbds:// URI."""
        _, port = self.env.nbdkit(image, "127.0.0.1", self.info["tls_dir"],
                                  filters)
        return port, "nbds://127.0.0.1:%d/?tls-certificates=%s" % (
            port, self.info["tls_dir"])

    def disk(self, size, name=None):
        """A VM with one disk of SIZE random bytes; (vm, vdi)."""
        self.n += 1
        name = name or "bench%d" % self.n
        vm = self.s.control("create_vm", name=name,
                            disks=[{"name": "d", "size": size}])
        vdi = vm["disks"][0]["vdi"]
        guest = self.env.path("%s.img" % name)
        run("dd", "if=/dev/urandom", "of=" + guest, "bs=1M",
            "count=%d" % (size // MiB), "status=none")
        self.s.control("write_file", vdi=vdi, path=guest)
        os.unlink(guest)                # the rows repeat: mind the disk
        return vm, vdi

    def lazy_point(self, size, *filters):
        """A --no-copy point of a new disk, its snapshot served by nbdkit
        (with FILTERS); returns (image path in a mount, nbds URI, mount,
        the snapshot's file, nbdkit's port)."""
        vm, vdi = self.disk(size)
        self.env.cbtfs("backup", self.store, "--no-copy", "--vm", vm["vm"],
                       "-q", *self.srv)
        snap = [d for d in self.env.ls_json(self.store)["disks"]
                if d["uuid"] == vdi][0]["points"][-1]["snapshot"]
        path = self.s.control("vdi", uuid=snap)["path"]
        port, uri = self.nbdkit(path, *filters)
        self.s.control("nbd_override", vdi=snap, address="127.0.0.1", port=port)
        mnt = self.env.mount(self.store, self.env.path("m%d" % self.n), *self.srv)
        # Writeback of what setting up wrote must not land in the timing.
        os.sync()
        return os.path.join(mnt, "by-uuid", vdi, snap + ".img"), uri, mnt, path, port

    def forget(self, img):
        """Drop the disk of IMG (a path in a mount) from the store: the
        rows that repeat would otherwise fill the machine's disk."""
        shutil.rmtree(os.path.join(self.store, "disks",
                                   os.path.basename(os.path.dirname(img))))

    def nbdcopy(self, uri, *flags):
        out = self.env.path("nbdcopy.out")
        os.sync()                       # nobody's writeback in the window
        t = timed(run, "nbdcopy", *flags, uri, out)
        os.unlink(out)
        return t

    def nbdfuse_cat(self, image, *filters):
        """cat of IMAGE through nbdfuse over nbdkit (with FILTERS).  nbdfuse
        refuses URIs naming local certificate files, so this link has no
        TLS: an advantage for the baseline."""
        mnt = self.env.mkdir("nbdfuse%d" % self.n)
        cmd = ["nbdfuse", "-r", mnt, "--command", "nbdkit", "-s",
               "--exit-with-parent", "-r"]
        for f in filters:
            cmd.append("--filter=" + f[0])
        cmd += ["file", image] + [a for f in filters for a in f[1:]]
        p = subprocess.Popen(cmd)
        self.env.on_close(lambda: p.poll() is None and p.kill())
        f = os.path.join(mnt, "nbd")
        deadline = time.monotonic() + 30
        while not os.path.exists(f):
            assert p.poll() is None and time.monotonic() < deadline, "nbdfuse"
            time.sleep(0.05)
        t = timed(cat, f)
        cb.unmount(mnt)
        p.wait()
        return t


def backup_time(env, *args):
    """Run cbtfs backup -v; the time from its snapshot to the end of the
    slowest disk, as cbtfs reports it (the stand-in copies data to take a
    snapshot, where XenServer's are copy-on-write: not ours to time)."""
    os.sync()                           # the guest's writes are not ours
    _, _, err = env.cbtfs("backup", *args, "-v")
    return max(float(x) for x in re.findall(r"done ([0-9.]+) s after the "
                                             r"snapshot", err))


def curl_s3(r, transfers, parallel):
    """Run curl once over TRANSFERS (each a list of curl config lines:
    url, upload-file or range and output), PARALLEL at a time, signed
    with R's keys (given on stdin, never in argv)."""
    lines = ["parallel", "parallel-max = %d" % parallel, "silent",
             "show-error", "fail"]
    for t in transfers:
        lines += ['user = "%s:%s"' % (r.access_key, r.secret_key),
                  'aws-sigv4 = "aws:amz:%s:s3"' % r.region,
                  'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"']
        lines += t + ["next"]
    subprocess.run(["curl", "-K", "-"], input="\n".join(lines[:-1]).encode(),
                   check=True, stdout=subprocess.DEVNULL)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def s3_rows(env, s, b):
    """The object store's rows: backup into a bucket, a cold and a
    cached read of a bucket's mount, cbtfs copy into a bucket, each
    against curl moving the same bytes (or a directory store)."""
    import rgw  # noqa: E402 (only these rows need Ceph)
    if not rgw.have_ceph():
        print("s1-s4: skipped (no Ceph)")
        return
    with rgw.Rgw() as r:
        r.curl("PUT", "bench", check=True)
        os.environ.update(AWS_ENDPOINT_URL=r.http_url, AWS_REGION=r.region,
                          AWS_ACCESS_KEY_ID=r.access_key,
                          AWS_SECRET_ACCESS_KEY=r.secret_key,
                          CBTFS_S3_PATH_STYLE="yes", CBTFS_S3_ALLOW_HTTP="yes")
        vm, vdi = b.disk(SIZE, "s3")
        flat = env.path("s3.img")
        shutil.copyfile(s.control("vdi", uuid=vdi)["path"], flat)
        pieces = []
        for i in range(SIZE // (16 * MiB)):
            piece = env.path("s3-piece%03d" % i)
            with open(flat, "rb") as f, open(piece, "wb") as o:
                f.seek(i * 16 * MiB)
                o.write(f.read(16 * MiB))
            pieces.append(piece)
        os.unlink(flat)

        def put_pieces(prefix):
            drop_caches()
            return timed(curl_s3, r, [
                ['upload-file = "%s"' % p,
                 'url = "%s/bench/%s/%s"' % (r.http_url, prefix,
                                              os.path.basename(p))]
                for p in pieces], 4)

        ours, theirs, stores = [], [], []
        for i in range(REPEAT):
            store = "s3://bench/s1-%d" % i
            ours.append(backup_time(env, store, "--vm", vm["vm"], *b.srv))
            theirs.append(put_pieces("curl-%d" % i))
            stores.append(store)
        row("s1", "backup into a bucket vs curl, 4 PUTs of 16 MiB at once",
            ours, theirs, 0.7)

        # Reads: a cold one from the bucket, then one from the cache.
        dstore = env.path("s-dir")
        env.cbtfs("backup", dstore, "--vm", vm["vm"], "-q", *b.srv)
        cold, gets, cached, local = [], [], [], []
        # The prefix encoded: curl 7.88 signs a "/" in a query as is.
        listing = r.curl("GET", "bench?list-type=2&prefix=s1-0%2Fpacks%2F")
        packs = [(k, int(n)) for k, n in re.findall(
            r"<Key>([^<]*)</Key>.*?<Size>(\d+)</Size>",
            listing.stdout.decode())]
        for i in range(REPEAT):
            cache = env.path("s-cache-%d" % i)
            for k in (0, 1):
                mnt = env.mount("s3://bench/s1-0", env.path("s-m%d%d" % (i, k)),
                                "--cache", cache)
                img = os.path.join(mnt, "by-uuid", vdi)
                img = os.path.join(img, os.listdir(img)[0])
                drop_caches()
                (cold if k == 0 else cached).append(timed(cat, img))
                cb.unmount(mnt)
            drop_caches()
            gets.append(timed(curl_s3, r, [
                ['url = "%s/bench/%s"' % (r.http_url, key),
                 "range = %d-%d" % (o, min(o + 4 * MiB, n) - 1),
                 "output = /dev/null"]
                for key, n in packs for o in range(0, n, 4 * MiB)], 16))
            mnt = env.mount(dstore, env.path("s-d%d" % i))
            img = os.path.join(mnt, "by-uuid", vdi)
            img = os.path.join(img, os.listdir(img)[0])
            drop_caches()
            local.append(timed(cat, img))
            cb.unmount(mnt)
        row("s2", "cold read of a bucket's mount vs curl, 16 ranged GETs at "
            "once", cold, gets, 0.7)
        row("s3", "second read, from the local cache, vs a directory store",
            cached, local, 0.9)

        ours, theirs = [], []
        for i in range(REPEAT):
            drop_caches()
            ours.append(timed(env.cbtfs, "copy", dstore,
                              "s3://bench/s4-%d" % i, "-q"))
            theirs.append(put_pieces("curl4-%d" % i))
        row("s4", "cbtfs copy of a directory store into a bucket vs curl, "
            "4 PUTs of 16 MiB", ours, theirs, 0.7)
        shutil.rmtree(dstore)
        for p in pieces:
            os.unlink(p)


def fio_iops(path, seconds=10):
    out = subprocess.run(["fio", "--name=r", "--filename=" + path,
                          "--rw=randread", "--bs=4k", "--direct=1",
                          "--numjobs=4", "--iodepth=1", "--time_based",
                          "--runtime=%d" % seconds, "--group_reporting",
                          "--output-format=json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["jobs"][0]["read"]["iops"]


def main():
    if len(sys.argv) > 1:
        os.environ["CBTFS"] = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        sys.exit("make bench needs root (FUSE, dropping caches)")
    print("cbtfs bench: %d MiB images, %d MiB for the incremental row"
          % (SIZE // MiB, BIG // MiB))
    print("%-4s %-62s %8s %8s    %6s" % ("", "what", "cbtfs", "base", "ratio"))
    with sim.Sim() as s, cb.Env("cbtfs-bench") as env:
        b = Bench(env, s)

        if wanted("r1") or wanted("r4") or wanted("r5"):
            t = {k: [] for k in ("cold", "nbdcopy", "8x1", "first", "second",
                                 "cat")}
            for _ in range(REPEAT):
                img, uri, mnt, flat, _port = b.lazy_point(SIZE)
                t["cold"].append(timed(cat, img))
                t["nbdcopy"].append(b.nbdcopy(uri))
                t["8x1"].append(b.nbdcopy(uri, "--connections=8",
                                          "--requests=1"))
                cb.unmount(mnt)
                # The store's files in page cache too (fetched blocks went
                # to disk directly): r4 is about the path through FUSE.
                warm(b.store)
                again = env.mount(b.store, env.path("again%d" % b.n))
                img = os.path.join(again, os.path.relpath(img, mnt))
                cat(flat)                 # the flat file is in page cache
                t["cat"].append(timed(cat, flat))
                with open(img, "rb", buffering=0) as f:
                    t["first"].append(timed(cat_open, f))
                    f.seek(0)
                    t["second"].append(timed(cat_open, f))
                cb.unmount(again)
                b.forget(img)
            row("r1", "cold read over NBD (TLS), kept, vs nbdcopy to a file",
                t["cold"], t["nbdcopy"], 0.9)
            # nbdkit answers 64 requests per connection at once; xapi-nbd
            # answers one.  Also shown: nbdcopy held to what XenServer allows.
            row("r1x", "  the same vs nbdcopy, 8 connections x 1 request",
                t["cold"], t["8x1"], 0.9)
            row("r4", "first read, all blocks in the store, vs cat (page cache)",
                t["first"], t["cat"], 0.2)
            row("r5", "second read of the open image vs cat (page cache)",
                t["second"], t["cat"], 0.9)

        if wanted("r2") or wanted("r3"):
            delay = ("delay", "rdelay=2ms")
            ours, theirs = [], []
            for i in range(REPEAT if wanted("r2") else 1):
                img, uri, mnt, flat, _port = b.lazy_point(SIZE, delay)
                ours.append(timed(cat, img))
                if wanted("r2"):
                    theirs.append(b.nbdcopy(uri))
                if i == 0 and wanted("r3"):
                    # nbdfuse takes 10x as long: once is enough.
                    r3 = (ours[0], b.nbdfuse_cat(flat, delay))
                cb.unmount(mnt)
                b.forget(img)
            if wanted("r2"):
                row("r2", "cold read, 2 ms per NBD read, vs nbdcopy (same delay)",
                    ours, theirs, 0.8)
            if wanted("r3"):
                row("r3", "cold read, 2 ms per NBD read, vs nbdfuse + cat",
                    r3[0], r3[1], 5)

        if wanted("r2x"):
            # XAPI on a real pool answers in tens of milliseconds: a
            # mount must not ask it again for every NBD connection.
            delay = ("delay", "rdelay=2ms")
            slow, fast = [], []
            for i in range(REPEAT):
                for xapi_ms, times in ((20, slow), (0, fast)):
                    s.control("set", xapi_delay_ms=xapi_ms)
                    img, _uri, mnt, _flat, _port = b.lazy_point(SIZE, delay)
                    times.append(timed(cat, img))
                    cb.unmount(mnt)
                    b.forget(img)
            s.control("set", xapi_delay_ms=0)
            row("r2x", "cold read, 2 ms per NBD read, XAPI answering in 20 ms "
                "vs in 0 ms", slow, fast, 0.9)

        if wanted("r6"):
            ours, theirs = [], []
            for i in range(REPEAT):
                vm, vdi = b.disk(SIZE, "r6-%d" % i)
                live = s.control("vdi", uuid=vdi)["path"]
                port, uri = b.nbdkit(live)
                s.control("nbd_override", vdi="*", address="127.0.0.1",
                          port=port)
                ours.append(backup_time(env, b.store, "--vm", "r6-%d" % i,
                                        *b.srv))
                s.control("nbd_override", vdi="*")
                theirs.append(b.nbdcopy(uri, "--flush"))
            row("r6", "baseline backup vs nbdcopy --flush to a file",
                ours, theirs, 0.9)

        if wanted("r7") or wanted("p1"):
            vm, vdi = b.disk(BIG, "r7")
            live = s.control("vdi", uuid=vdi)["path"]
            port, uri = b.nbdkit(live)
            s.control("nbd_override", vdi="*", address="127.0.0.1", port=port)
            full = backup_time(env, b.store, "--vm", "r7", *b.srv)
            incr = []
            import random
            for i in range(REPEAT):
                # 1 % of the blocks change.
                rng = random.Random(7 + i)
                nblocks = BIG // cb.BLOCK
                for blk in rng.sample(range(nblocks), nblocks // 100):
                    s.control("write", vdi=vdi, offset=blk * cb.BLOCK,
                              data_b64="AAECAw==")
                incr.append(backup_time(env, b.store, "--vm", "r7", *b.srv))
            s.control("nbd_override", vdi="*")
            if wanted("r7"):
                row("r7", "incremental backup, %d GiB, 1%% changed, vs its "
                    "baseline" % (BIG // GiB), incr, full, 0.03, higher=False)
            if wanted("p1"):
                # Drop the baseline: it folds into the first 1 % delta,
                # which is rebuilt from the baseline's blocks (a hard
                # link) plus its own: what is written is the 1 %.
                os.sync()
                t = timed(env.cbtfs, "prune", b.store, "--vm", "r7",
                          "--keep-last", str(REPEAT), "-q")
                row("p1", "prune folding a %d GiB baseline into a 1%% delta, "
                    "vs the baseline's backup" % (BIG // GiB), t, full, 0.05,
                    higher=False)

        if wanted("r8") or wanted("r9"):
            chains = env.path("chains")
            one = run(MKCHAIN, chains, "dddddddd-0000-4000-8000-000000000001",
                      "depth1", 1, SIZE // MiB, 0, 1, capture_output=True,
                      text=True).stdout.split()
            deep = run(MKCHAIN, chains, "dddddddd-0000-4000-8000-000000001000",
                       "depth1000", 1000, SIZE // MiB, 16, 2,
                       capture_output=True, text=True).stdout.split()
            def paths(mnt):
                return [os.path.join(mnt, "by-uuid", d, p + ".img") for d, p in
                        (("dddddddd-0000-4000-8000-000000000001", one[-1]),
                         ("dddddddd-0000-4000-8000-000000001000", deep[-1]))]
            if wanted("r8"):
                warm(chains)
                deep_t, one_t = [], []
                for i in range(REPEAT):
                    # A new mount each time: the kernel keeps what was read.
                    mnt = env.mount(chains, env.path("chains-mnt%d" % i))
                    p1, p1000 = paths(mnt)
                    deep_t.append(timed(cat, p1000))
                    one_t.append(timed(cat, p1))
                    cb.unmount(mnt)
                row("r8", "sequential read at chain depth 1000 vs depth 1",
                    deep_t, one_t, 0.9)
            mnt = env.mount(chains, env.path("chains-mnt"))
            p1, p1000 = paths(mnt)
            if wanted("r9"):
                ours = fio_iops(p1)
                flat = env.path("flat.img")
                run("dd", "if=/dev/urandom", "of=" + flat, "bs=1M",
                    "count=%d" % (SIZE // MiB), "status=none")
                nf = env.mkdir("nbdfuse-flat")
                p = subprocess.Popen(["nbdfuse", "-r", nf, "--command", "nbdkit",
                                      "-s", "--exit-with-parent", "file", flat])
                env.on_close(lambda: p.poll() is None and p.kill())
                deadline = time.monotonic() + 30
                while not os.path.exists(os.path.join(nf, "nbd")):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                theirs = fio_iops(os.path.join(nf, "nbd"))
                cb.unmount(nf)
                row("r9", "4 KiB random O_DIRECT reads, 4 readers (fio) vs "
                    "nbdfuse/nbdkit file", ours, theirs, 1.0, unit="IOPS")
            cb.unmount(mnt)

        many = env.path("many")
        if any(wanted(k) for k in ("x1", "m1", "m2", "m3", "m4")):
            for i in range(100):
                run("eatmydata", MKCHAIN, many,
                    "eeeeeeee-0000-4000-8000-%012d" % i, "vm%d" % i, 1000, 1,
                    1, i + 10, stdout=subprocess.DEVNULL)
        if wanted("x1"):
            mp = env.mkdir("many-mnt")
            os.sync()                   # writeback of mkchain's files: not ours
            t = timed(env.cbtfs, "mount", many, mp)
            cb.unmount(mp)
            extra("x1", "mount a store of 100 disks x 1000 layers", t, 1.0, "s")
            # After a reboot, or when other work has pushed the store out.
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            t = timed(env.cbtfs, "mount", many, mp)
            cb.unmount(mp)
            extra("x1c", "  the same with the page cache dropped first", t,
                  1.0, "s")

        if wanted("x2"):
            big = env.path("big")
            run("eatmydata", MKCHAIN, big, "ffffffff-0000-4000-8000-000000000064",
                "big", 1, 64 * 1024, 0, 3, 2, stdout=subprocess.DEVNULL)
            mp = env.mkdir("big-mnt")
            m = env.mount_fg(big, mp)
            img = [os.path.join(d, f) for d, _, fs in os.walk(
                os.path.join(mp, "by-uuid")) for f in fs][0]
            cat(img)
            with open("/proc/%d/status" % m.proc.pid) as f:
                hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
            m.unmount()
            extra("x2", "peak RSS of the mount streaming a 64 GiB image", hwm,
                  256, "MiB")

        # Peak memory: a store of many small layers, and one layer of a
        # fully stored 2 TiB disk (its data holes; mkchain --holes).
        for key, what, args in (
                ("m1", "ls", ["ls", many, "--json"]),
                ("m2", "verify", ["verify", many]),
                ("m3", "fetch (nothing to fetch)", ["fetch", many] + b.srv)):
            if wanted(key):
                extra(key, "peak RSS of cbtfs %s, 100 disks x 1000 layers"
                      % what, peak_rss([cb.cbtfs_binary()] + args), 256, "MiB")
        if wanted("m4"):
            extra("m4", "peak RSS of a mount reading every disk's newest "
                  "image, same store", mount_peak(env, many, newest_images), 256,
                  "MiB")
        if wanted("m5") or wanted("m6"):
            huge = env.path("huge")
            run("eatmydata", MKCHAIN, "--holes", huge,
                "ffffffff-0000-4000-8000-0000000002ff", "huge", 2 * 1024 * 1024,
                stdout=subprocess.DEVNULL)
            if wanted("m5"):
                extra("m5", "peak RSS of cbtfs ls, one layer of 32 M records "
                      "(2 TiB)", peak_rss([cb.cbtfs_binary(), "ls", huge]), 256, "MiB")
            if wanted("m6"):
                extra("m6", "peak RSS of a mount reading across that layer",
                      mount_peak(env, huge, read_across), 256, "MiB")
            shutil.rmtree(huge)

        if wanted("x3") or wanted("p2"):
            # 1 GiB of data spread over a disk of the largest size XAPI
            # exports as VHD: the baseline reads that, not the disk.
            size = 2040 * GiB
            vm = s.control("create_vm", name="x3", disks=[{"name": "d",
                                                           "size": size}])
            vdi = vm["disks"][0]["vdi"]
            chunk = os.urandom(4 * MiB)
            for i in range(256):
                s.control("write", vdi=vdi, offset=i * (size // 256),
                          data_b64=base64.b64encode(chunk).decode())
            live = s.control("vdi", uuid=vdi)["path"]
            stats = env.path("x3.stats")
            proc, port = env.nbdkit(live, "127.0.0.1", b.info["tls_dir"],
                                    [("stats", "statsfile=" + stats)])
            s.control("nbd_override", vdi="*", address="127.0.0.1", port=port)
            t = backup_time(env, b.store, "--vm", "x3", *b.srv)
            s.control("nbd_override", vdi="*")
            extra("x3", "baseline of a 2040 GiB disk with 1 GiB written", t,
                  60, "s")
            proc.terminate()
            proc.wait()
            got = re.search(r"read: \d+ ops, [0-9.]+ s, ([0-9.]+) (\w+)",
                            open(stats).read())
            gib = float(got.group(1)) / {"GiB": 1, "MiB": 1024,
                                         "KiB": 1024 * 1024}[got.group(2)]
            extra("x3b", "  of which read over NBD", gib, 1.1, "GiB")
            if wanted("p2"):
                # A night that changes 4 blocks, then drop the baseline:
                # the cost is the 16 Ki blocks stored, not the 2040 GiB.
                s.control("write", vdi=vdi, offset=size // 3,
                          data_b64=base64.b64encode(chunk[:4 * 65536]).decode())
                live = s.control("vdi", uuid=vdi)["path"]
                proc, port = env.nbdkit(live, "127.0.0.1", b.info["tls_dir"])
                s.control("nbd_override", vdi="*", address="127.0.0.1",
                          port=port)
                backup_time(env, b.store, "--vm", "x3", *b.srv)
                s.control("nbd_override", vdi="*")
                proc.terminate()
                proc.wait()
                os.sync()
                t = timed(env.cbtfs, "prune", b.store, "--vm", "x3",
                          "--keep-last", "1", "-q")
                extra("p2", "prune the baseline of that disk under a 4-block "
                      "delta", t, 10, "s")

        if wanted("b1"):
            # A pool of many small VMs, XAPI answering in 20 ms as a real
            # pool does: parallel jobs overlap the round trips that a
            # serial run waits out one by one.
            import random
            nvms, size = 20, 64 * MiB
            store = env.path("b1-store")
            names = []
            for i in range(nvms):
                names.append(b.disk(size, "b1-%02d" % i))
            vmargs = [a for vm, _ in names for a in ("--vm", vm["vm"])]
            env.cbtfs("backup", store, "--jobs", "4", "-q", *vmargs, *b.srv)
            rng = random.Random(11)

            def change():
                # 1 % of each disk's blocks.
                nblocks = size // cb.BLOCK
                for _, vdi in names:
                    for blk in rng.sample(range(nblocks), nblocks // 100):
                        s.control("write", vdi=vdi, offset=blk * cb.BLOCK,
                                  data_b64=base64.b64encode(
                                      os.urandom(4096)).decode())
                os.sync()                   # the guest's writes are not ours

            par, ser = [], []
            for i in range(REPEAT):
                for jobs, times in (("4", par), ("1", ser)):
                    change()
                    s.control("set", xapi_delay_ms=20)
                    times.append(timed(env.cbtfs, "backup", store, "--jobs",
                                       jobs, "-q", *vmargs, *b.srv))
                    s.control("set", xapi_delay_ms=0)
            row("b1", "incremental backup of 20 VMs, 1 % changed, XAPI at 20 ms,"
                " --jobs 4 vs --jobs 1", par, ser, 0.5, higher=False)
            shutil.rmtree(store)

        if wanted("f1"):
            # A mount that is up: how long after a backup exits its new
            # point shows (the mount looks at the store once a second).
            store = env.path("f1-store")
            vm, vdi = b.disk(4 * MiB, "f1")
            env.cbtfs("backup", store, "--vm", vm["vm"], "-q", *b.srv)
            mnt = env.mount(store, env.path("f1-mnt"))
            by_uuid = os.path.join(mnt, "by-uuid", vdi)
            waits = []
            for i in range(max(REPEAT, 5)):
                s.control("write", vdi=vdi, offset=0,
                          data_b64=base64.b64encode(os.urandom(4096)).decode())
                env.cbtfs("backup", store, "--vm", vm["vm"], "-q", *b.srv)
                t0 = time.monotonic()
                shown = cb.wait_for(lambda: len(os.listdir(by_uuid)) == i + 2,
                                    30)
                waits.append(time.monotonic() - t0 if shown else 30)
            cb.unmount(mnt)
            shutil.rmtree(store)
            extra("f1", "a new point shows in a mount that is up, after its "
                  "backup (worst of %d)" % len(waits), max(waits), 2, "s")

        if wanted("rs1"):
            # cbtfs restore --vdi's upload (raw) against curl -T sending
            # the same bytes (the image, raw) to the same endpoint and a
            # VDI alike: the upload's own time (--json "seconds"), not
            # the host's VDI.checksum after it.
            vm, vdi = b.disk(SIZE, "rs1")
            store = env.path("rs1-store")
            env.cbtfs("backup", store, "--vm", vm["vm"], "-q", *b.srv)
            snap = env.ls_json(store)["disks"][0]["points"][0]["snapshot"]
            flat = env.path("rs1.img")
            # The disk has not changed since: its bytes are the point's.
            shutil.copyfile(s.control("vdi", uuid=vdi)["path"], flat)
            x = s.server_proxy()
            sess = x.session.login_with_password("root", "secret")["Value"]
            sr = x.SR.get_by_name_label(sess, "Local storage")["Value"][0]
            ours, theirs = [], []
            def new_vdi():
                ref = x.VDI.create(sess, {
                    "name_label": "rs1", "SR": sr, "virtual_size": str(SIZE),
                    "type": "user", "sharable": False, "read_only": False,
                    "other_config": {}})["Value"]
                return ref, x.VDI.get_uuid(sess, ref)["Value"]

            for _ in range(REPEAT):
                warm(store)
                target, uuid = new_vdi()
                _, out, _ = env.cbtfs("restore", store, snap, "--vdi", uuid,
                                      "--json", *b.srv)
                ours.append(json.loads(out)["seconds"])
                x.VDI.destroy(sess, target)
                target, uuid = new_vdi()
                cat(flat)
                theirs.append(timed(run, "curl", "-sS", "-o", "/dev/null",
                                    "--cacert", b.info["ca_file"], "-T", flat,
                                    "%s/import_raw_vdi?session_id=%s&vdi=%s"
                                    "&format=raw" % (b.info["xapi_url"],
                                                     sess, uuid)))
                x.VDI.destroy(sess, target)
            x.session.logout(sess)
            row("rs1", "restore --vdi upload (raw, PUT /import_raw_vdi) vs "
                "curl -T of the same bytes", ours, theirs, 0.8)
            shutil.rmtree(store)
            os.unlink(flat)

        if any(wanted(k) for k in ("s1", "s2", "s3", "s4")):
            s3_rows(env, s, b)

    missed = [r for r in rows if not r[-1]]
    print("%d rows, %d missed their goal" % (len(rows), len(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
