#!/usr/bin/env python3
"""The bash completion (dist/cbtfs.bash, installed for bash-completion):
sourced in `bash -c`, it registers _cbtfs for cbtfs, and _cbtfs offers
the commands (`cbtfs ba<TAB>` gives backup), each command's long
options, every one that `cbtfs COMMAND --help` lists (so that they
cannot drift apart) and none of another command's alone, the object
store's options (--s3-*, which `cbtfs --help` lists) for every command
and before it, files after --password-file, --s3-secret-file and
--s3-ca-file (also as --opt=), and directories for STORE and mount's
MOUNTPOINT but nothing for a third argument, skipping options' values
(also those that end a line of the script, and URLs bash splits at
":") and taking s3://BUCKET as one argument.  For restore's and serve's
POINT in a store made here (stand-in and backup), the tree's paths a
folder at a time (by-vm/ gives the VMs, a disk's folder its points and
latest, a VM named with a space quoted), by-uuid/ and snapshot uuids;
and `cbtfs ls` is never run for an s3:// store or a directory that is
not a store."""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

SCRIPT = os.path.join(cb.TOP, "dist", "cbtfs.bash")


def complete(cwd, *words, path=None):
    """What _cbtfs offers for the command line WORDS, the last being the
    word under the cursor (bash splits --opt=value at "=" itself), with
    PATH (if given) first in $PATH."""
    line = " ".join(words)
    prog = ('source "$1"; shift; COMP_WORDS=("$@"); '
            'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=$2; '
            'COMP_POINT=${#COMP_LINE}; _cbtfs; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    environ = dict(os.environ)
    if path:
        environ["PATH"] = path + os.pathsep + environ.get("PATH", "")
    p = subprocess.run(["bash", "--norc", "-c", prog, "bash", SCRIPT, *words],
                       cwd=cwd, capture_output=True, text=True, env=environ)
    check(p.returncode == 0 and p.stderr == "",
          "%r: %d %r" % (line, p.returncode, p.stderr))
    return sorted(w.rstrip() for w in p.stdout.splitlines() if w)


def main():
    p = subprocess.run(["bash", "--norc", "-c", 'source "$1"; complete -p cbtfs',
                        "bash", SCRIPT], capture_output=True, text=True)
    check(p.returncode == 0 and "-F _cbtfs" in p.stdout and p.stdout.rstrip()
          .endswith(" cbtfs"), "complete -p cbtfs: %r %r" % (p.stdout, p.stderr))

    with cb.Env() as env:
        d = env.mkdir("work")
        os.mkdir(os.path.join(d, "store"))
        os.mkdir(os.path.join(d, "mnt"))
        open(os.path.join(d, "pw"), "w").close()

        check(complete(d, "cbtfs", "ba") == ["backup"], "cbtfs ba")
        usage = subprocess.run([cb.cbtfs_binary(), "--help"], capture_output=True,
                               text=True, check=True).stdout
        commands = sorted(set(re.findall(r"^  cbtfs ([a-z]+) ", usage, re.M)))
        check(complete(d, "cbtfs", "") == sorted(commands + ["--help", "--version"]),
              "cbtfs <TAB>: %r" % complete(d, "cbtfs", ""))
        options = {}
        for c in commands:
            text = subprocess.run([cb.cbtfs_binary(), c, "--help"],
                                  capture_output=True, text=True, check=True).stdout
            offered = {o.rstrip("=") for o in complete(d, "cbtfs", c, "--")}
            options[c] = offered
            listed = set(re.findall(r"--[a-z][a-z0-9-]*", text))
            check(listed <= offered, "cbtfs %s --<TAB> lacks %s"
                  % (c, sorted(listed - offered)))
            check("--help" in offered, "cbtfs %s --<TAB> lacks --help" % c)
        check("--yes" not in options["backup"] and "--server" not in options["ls"],
              "options of other commands: %r" % options)
        # The object store's options: every command's, values or not.
        s3 = set(re.findall(r"--s3-[a-z-]+|--cache[a-z-]*", usage))
        check(len(s3) == 9, "cbtfs --help lists %s" % sorted(s3))
        for c in commands:
            check(s3 <= options[c], "cbtfs %s --<TAB> lacks %s"
                  % (c, sorted(s3 - options[c])))
        check(complete(d, "cbtfs", "ls", "--s3-path") == ["--s3-path-style"],
              "--s3-path: %r" % complete(d, "cbtfs", "ls", "--s3-path"))
        check(complete(d, "cbtfs", "ls", "--s3-e") == ["--s3-endpoint="],
              "--s3-e: %r" % complete(d, "cbtfs", "ls", "--s3-e"))
        for opt in ("--s3-secret-file", "--s3-ca-file"):
            check(complete(d, "cbtfs", "prune", "st", opt, "p") == ["pw"], opt)
            check(complete(d, "cbtfs", "serve", opt, "=", "p") == ["pw"], opt + "=")
            check(complete(d, "cbtfs", opt, "p") == ["pw"], "cbtfs %s p" % opt)
        check(complete(d, "cbtfs", "--s3-path-style", "l") == ["ls"],
              "a command after --s3-path-style")
        check(complete(d, "cbtfs", "--s3-region", "eu", "--s3-endpoint", "=",
                       "https", ":", "//h", ":", "9000", "mo") == ["mount"],
              "a command after --s3-region VALUE --s3-endpoint=URL")
        check(complete(d, "cbtfs", "--s3-endpoint", "https", ":", "//h",
                       "mount", "s3", ":", "//b", "") == ["mnt", "store"],
              "MOUNTPOINT after s3://BUCKET: %r" % complete(
                  d, "cbtfs", "--s3-endpoint", "https", ":", "//h", "mount",
                  "s3", ":", "//b", ""))
        check(complete(d, "cbtfs", "ls", "--s3-region", "eu", "") == ["mnt", "store"],
              "STORE after --s3-region VALUE")
        check(complete(d, "cbtfs", "backup", "--nbd-connections", "4", "")
              == ["mnt", "store"], "STORE after --nbd-connections VALUE")
        check(complete(d, "cbtfs", "backup", "--config", "p") == ["pw"],
              "--config p")

        check(complete(d, "cbtfs", "backup", "--no-c") == ["--no-copy"],
              "--no-c: %r" % complete(d, "cbtfs", "backup", "--no-c"))

        check(complete(d, "cbtfs", "backup", "st", "--password-file", "p")
              == ["pw"], "--password-file p")
        check(complete(d, "cbtfs", "backup", "st", "--password-file", "=", "p")
              == ["pw"], "--password-file=p")
        check(complete(d, "cbtfs", "backup", "") == ["mnt", "store"],
              "STORE: %r" % complete(d, "cbtfs", "backup", ""))
        check(complete(d, "cbtfs", "mount", "--server", "h", "store", "")
              == ["mnt", "store"], "MOUNTPOINT")
        check(complete(d, "cbtfs", "ls", "store", "") == [], "ls STORE <TAB>")
        not_listed(env, d)
    points()
    print("ok")


def not_listed(env, d):
    """restore's and serve's POINT run no `cbtfs ls` for an s3:// store
    or a directory without a cbtfs-store file: a cbtfs that leaves a
    mark when run shows it."""
    fake = env.mkdir("fake")
    mark = os.path.join(fake, "ran")
    with open(os.path.join(fake, "cbtfs"), "w") as f:
        f.write("#!/bin/sh\ntouch '%s'\n" % mark)
    os.chmod(os.path.join(fake, "cbtfs"), 0o755)
    for words in (("restore", "s3", ":", "//bucket", ""),
                  ("serve", "s3", ":", "//bucket/prefix", "x", "b"),
                  ("restore", "store", "by"), ("serve", "mnt", "")):
        got = complete(d, "cbtfs", *words, path=fake)
        check(got == [] and not os.path.exists(mark),
              "cbtfs %s: %r, ran cbtfs: %s"
              % (" ".join(words), got, os.path.exists(mark)))


def points():
    """POINT: the tree of a store with two VMs backed up twice, one VM and
    its disk named with spaces."""
    with sim.Sim() as s, cb.Env() as env:
        _, _, _, srv = cb.random_disk(s, env, "web", "root", 1 << 20)
        cb.random_disk(s, env, "my vm", "data disk", 1 << 20)
        store = env.path("store")
        for _ in range(2):
            env.cbtfs("backup", store, *srv, "-q")
        rc, out, _ = env.cbtfs("ls", store, "--json")
        disks = {(d["vm"], d["name"]): d for d in json.loads(out)["disks"]}
        check(sorted(disks) == [("my vm", "data disk"), ("web", "root")],
              "ls --json: %r" % sorted(disks))
        web = disks[("web", "root")]
        names = sorted(p["name"] + ".img" for p in web["points"])
        snaps = sorted(p["snapshot"] for p in web["points"])
        check(len(names) == 2, "web's points: %r" % names)

        # cbtfs on PATH, as installed; run from elsewhere, STORE absolute.
        bindir = env.mkdir("bin")
        os.symlink(cb.cbtfs_binary(), os.path.join(bindir, "cbtfs"))
        d = env.mkdir("cwd")

        def comp(*words):
            return complete(d, "cbtfs", *words, path=bindir)

        for cmd in ("restore", "serve"):
            got = comp(cmd, store, "by-vm/")
            check(got == ["by-vm/my\\ vm/", "by-vm/web/"],
                  "%s STORE by-vm/<TAB>: %r" % (cmd, got))
        got = comp("restore", store, "")
        check("by-vm/" in got and "by-uuid/" in got and set(snaps) <= set(got)
              and len(got) == 2 + 4, "restore STORE <TAB>: %r" % got)
        check(comp("restore", store, "by-vm/w") == ["by-vm/web/"], "by-vm/w")
        got = comp("restore", store, "by-vm/web/root/")
        check(got == sorted(["by-vm/web/root/" + n for n in names]
                            + ["by-vm/web/root/latest"]),
              "by-vm/web/root/<TAB>: %r" % got)
        # A whole point: one candidate, with the space after it.
        p = subprocess.run(
            ["bash", "--norc", "-c", 'source "$1"; shift; COMP_WORDS=("$@"); '
             'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _cbtfs; '
             'printf "[%s]\\n" "${COMPREPLY[@]}"', "bash", SCRIPT, "cbtfs",
             "restore", store, "by-vm/web/root/la"],
            cwd=d, capture_output=True, text=True,
            env=dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"]))
        check(p.stdout == "[by-vm/web/root/latest ]\n",
              "by-vm/web/root/la: %r %r" % (p.stdout, p.stderr))
        check(comp("restore", store, snaps[0][:8]) == [snaps[0]],
              "a snapshot uuid's start")
        got = comp("restore", store, "by-uuid/" + web["uuid"] + "/")
        check(got == ["by-uuid/%s/%s.img" % (web["uuid"], u) for u in snaps],
              "by-uuid/DISK/<TAB>: %r" % got)
        # A name with spaces, typed quoted with backslashes as bash does.
        got = comp("restore", store, "by-vm/my\\ vm/data\\ disk/l")
        check(got == ["by-vm/my\\ vm/data\\ disk/latest"], "quoted: %r" % got)
        # serve takes POINTs after a first one, and after options.
        got = comp("serve", store, snaps[0], "--unix", "s", "by-vm/web/")
        check(got == ["by-vm/web/root/"], "serve's second POINT: %r" % got)
        # restore has one POINT.
        check(comp("restore", store, snaps[0], "") == [], "a second POINT")
        # A STORE given relative to the current directory works too.
        got = complete(env.path(""), "cbtfs", "restore", "store", "by-vm/",
                       path=bindir)
        check(got == ["by-vm/my\\ vm/", "by-vm/web/"], "relative: %r" % got)


if __name__ == "__main__":
    main()
