#!/usr/bin/env python3
"""End to end: a store whose disk fails never vouches for lost data and
never shuts out cbtfs fetch.

- A real fsync failure (writes to the store's filesystem fail with EIO
  while a trigger file exists: nbdkit's error filter, under nbdfuse, a
  loop device and ext4): the layer gives the block up instead of letting
  a second fsync, which the kernel lets succeed, vouch for it
  (tests/unit/test-store --flaky does the layer calls).
- Every directory cbtfs makes in a store (the store itself, disks/,
  tmp/, a disk's folder) has its name made durable (its parent
  fsynced), also when a crash left the folder made but not yet durable
  (mkdir then says EEXIST): checked with strace.
- A garbage record appended to the index of a point a mount partly
  filled is a torn tail: cbtfs fetch keeps every good record before it,
  and the point reads back whole after its snapshot is reduced.
- A mount whose store fills up (ENOSPC) while it keeps fetched blocks
  still serves them, says so once, and gives the layer's writer lock
  back, so that `cbtfs fetch` finishes the point once there is room.
"""
# runs-alone: it takes loop devices
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20


def rw_filesystem(env, image_or_file, name, journal=True):
    """mkfs.ext4 on a loop device over IMAGE_OR_FILE, mounted read-write
    at env.path(NAME); the mount point.  Both undone at close."""
    loop = subprocess.run(["losetup", "--show", "-f", image_or_file],
                          capture_output=True, text=True, check=True).stdout.strip()
    env.on_close(subprocess.run, ["losetup", "-d", loop])
    opts = [] if journal else ["-O", "^has_journal"]
    subprocess.run(["mkfs.ext4", "-q", "-F"] + opts + [loop], check=True)
    mnt = env.mkdir(name)
    subprocess.run(["mount", loop, mnt], check=True)
    env.on_close(subprocess.run, ["umount", mnt])
    return mnt


def flaky_sync(env):
    """The kernel's own fsync failure, on a filesystem whose writes fail
    while TRIGGER exists."""
    # Beside build/cbtfs (make check), or under build/ beside ./cbtfs.
    top = os.path.dirname(cb.cbtfs_binary())
    unit = [p for p in (os.path.join(top, "tests", "test-store"),
                        os.path.join(top, "build", "tests", "test-store"))
            if os.access(p, os.X_OK)]
    check(unit, "tests/test-store is not built next to %s" % top)
    unit = unit[0]
    trigger, sock, fuse = env.path("trigger"), env.path("nbd.sock"), env.mkdir("fuse")
    pidfile = env.path("nbdkit.pid")
    nbdkit = subprocess.Popen(
        ["nbdkit", "-f", "--exit-with-parent", "-P", pidfile, "-U", sock,
         "--filter=error", "memory", "64M", "error-pwrite=EIO",
         "error-pwrite-rate=100%", "error-pwrite-file=" + trigger])
    env.on_close(lambda: nbdkit.poll() is None and nbdkit.terminate())
    cb.wait_for_file(pidfile, nbdkit)
    nbdfuse = subprocess.Popen(["nbdfuse", fuse, "--unix", sock])
    env.on_close(lambda: (cb.unmount(fuse), nbdfuse.wait(timeout=60)))
    cb.wait_for_file(os.path.join(fuse, "nbd"), nbdfuse)
    mnt = rw_filesystem(env, os.path.join(fuse, "nbd"), "flaky", journal=False)
    r = subprocess.run([unit, "--flaky", mnt, trigger], capture_output=True,
                       text=True, timeout=300)
    sys.stderr.write(r.stdout + r.stderr)
    check(r.returncode == 0 and "flaky sync: ok" in r.stdout,
          "a failed fsync was not handled: %r" % (r.stdout + r.stderr))


def unsynced_mkdirs(log, store):
    """The directories of STORE an strace -f log shows made (or found
    made: EEXIST) whose parent was not fsynced afterwards.  Stages in
    tmp/ need not be: they are renamed into place, then fsynced."""
    fds, synced, made = {}, [], []
    for i, line in enumerate(log.splitlines()):
        m = re.match(r'(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)', line)
        if not m:
            continue
        pid, call, args, ret = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if call == "openat" and "O_DIRECTORY" in args and ret >= 0:
            fds[(pid, ret)] = re.search(r'"(.*?)"', args).group(1)
        elif call == "fsync" and (pid, int(args)) in fds:
            synced.append((i, fds[(pid, int(args))]))
        elif call == "mkdir" and (ret == 0 or "EEXIST" in line):
            made.append((i, re.search(r'"(.*?)"', args).group(1)))
    return [d for i, d in made
            if (d == store or d.startswith(store + "/"))
            and not d.startswith(os.path.join(store, "tmp") + "/")
            and not any(j > i and p == os.path.dirname(d) for j, p in synced)]


def dir_fsyncs(env, s):
    """mkdir in a store is followed by an fsync of its parent."""
    info = s.info
    vms = [s.control("create_vm", name=n, disks=[{"name": "d", "size": MiB}])
           for n in ("one", "two")]
    pw = env.password_file()
    store = env.path("store")
    srv = ["--server", info["xapi_url"], "--ca-file", info["ca_file"],
           "--password-file", pw]

    def traced(*args):
        log = env.path("strace.log")
        # LeakSanitizer cannot run under ptrace (make check-asan).
        e = dict(os.environ)
        e["ASAN_OPTIONS"] = ":".join(filter(None, [e.get("ASAN_OPTIONS"),
                                                   "detect_leaks=0"]))
        r = subprocess.run(["strace", "-f", "-qq", "-o", log, "-e",
                            "trace=mkdir,openat,fsync", cb.cbtfs_binary()]
                           + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=e)
        check(r.returncode == 0, "backup under strace: %s" % r.stderr)
        with open(log) as f:
            return f.read()

    log = traced("backup", store, "--vm", "one", *srv)
    check("mkdir(\"%s\"" % store in log, "strace saw no mkdir of the store")
    bad = unsynced_mkdirs(log, store)
    check(not bad, "made without fsyncing the parent: %r" % bad)
    # A crash left the second VM's disk folder made, its name not durable.
    os.mkdir(os.path.join(store, "disks", vms[1]["disks"][0]["vdi"]), 0o700)
    log = traced("backup", store, "--vm", "two", *srv)
    check("EEXIST" in log, "the folder was not found made")
    bad = unsynced_mkdirs(log, store)
    check(not bad, "found made without fsyncing the parent: %r" % bad)


def torn_index(env, s):
    """Garbage after the records a mount kept costs none of them."""
    vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", 8 * MiB)
    store = env.path("store")
    env.cbtfs("backup", store, "--no-copy", *srv)
    snap = env.ls_json(store)["disks"][0]["points"][-1]["snapshot"]
    index = os.path.join(store, "disks", vdi, snap, "index")
    m = env.mount_fg(store, env.path("m"), *srv)
    img = os.path.join(m.mnt, "by-vm/web/root/latest")
    with open(img, "rb") as f:
        head = f.read(5 * MiB)
    check(head == cb.pread(guest, 0, 5 * MiB), "the lazy read is wrong")
    check(m.unmount() == 0, "the mount failed: %s" % m.log())
    kept = os.path.getsize(index) // 40 - 1
    check(kept >= 5 * MiB // cb.BLOCK, "the mount kept %d records" % kept)
    with open(index, "ab") as f:
        f.write(os.urandom(40))
    env.cbtfs("fetch", store, *srv)
    check(s.control("vdi", uuid=snap)["type"] == "cbt_metadata",
          "the snapshot was not reduced")
    m = env.mount(store, env.path("m2"))
    check(cb.sha256(os.path.join(m, "by-vm/web/root/latest")) == cb.sha256(guest),
          "the point reads wrong after fetch")
    cb.unmount(m)


def full_store(env, s):
    """A lazy point read through a mount whose store is out of space."""
    vm, vdi, guest, srv = cb.random_disk(s, env, "web", "root", 24 * MiB)

    image = env.path("small.ext4")
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    fs = rw_filesystem(env, image, "fs")
    store = os.path.join(fs, "store")
    env.cbtfs("backup", store, "--no-copy", *srv)
    disk = env.ls_json(store)["disks"][0]
    snap = disk["points"][-1]["snapshot"]
    index = os.path.join(store, "disks", disk["uuid"], snap, "index")
    check(os.path.exists(index), "no index at %s" % index)
    # Leave room for about 4 MiB of the point's 24.
    filler = os.path.join(fs, "filler")
    st = os.statvfs(fs)
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - 4 * MiB)

    m = env.mount_fg(store, env.path("m"), *srv)
    img = os.path.join(m.mnt, "by-vm/web/root/latest")
    check(cb.sha256(img) == cb.sha256(guest), "a full store changed what is served")
    said = [ln for ln in m.log().splitlines() if "not keeping fetched blocks" in ln]
    check(len(said) == 1 and snap in said[0] and "space" in said[0],
          "the failure should be said once, naming the point: %r" % m.log())
    check(cb.wait_for(lambda: cb.unlocked(index), 30),
          "the mount kept the writer lock of a layer it cannot fill")

    os.unlink(filler)
    env.cbtfs("fetch", store, *srv)
    point = env.ls_json(store)["disks"][0]["points"][-1]
    check(point["complete"], "fetch did not finish the point: %r" % point)
    check(s.control("vdi", uuid=snap)["type"] == "cbt_metadata",
          "the snapshot was not reduced")
    check(cb.sha256(img) == cb.sha256(guest), "the mount reads wrong after fetch")
    check(m.unmount() == 0, "the mount failed: %s" % m.log())






def main():
    if os.geteuid() != 0:
        cb.skip("needs root for loop devices and mounts")
    with cb.Env() as env:
        flaky_sync(env)
    with sim.Sim() as s, cb.Env() as env:
        dir_fsyncs(env, s)
    with sim.Sim() as s, cb.Env() as env:
        torn_index(env, s)
    with sim.Sim() as s, cb.Env() as env:
        full_store(env, s)
    print("ok")


if __name__ == "__main__":
    main()
