#!/usr/bin/env python3
"""The man pages (`make man`): cbtfs.1 and cbtfs-store.5 render with
man(1) without a warning, and cbtfs.1 names every command and every
long option the binary's usage text lists, so that they cannot drift
apart."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
from cbtfs import check  # noqa: E402


def page(name):
    for d in (os.path.dirname(cb.cbtfs_binary()), os.path.join(cb.TOP, "build")):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    cb.skip("%s not built (make man)" % name)


def render(path):
    env = dict(os.environ, LC_ALL="C.UTF-8", MANROFFSEQ="", MANWIDTH="80")
    p = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", path],
                       env=env, capture_output=True, text=True)
    check(p.returncode == 0 and p.stderr == "",
          "man -l %s: %d %r" % (path, p.returncode, p.stderr))
    return re.sub(r".\x08", "", p.stdout)


def main():
    text = render(page("cbtfs.1"))
    render(page("cbtfs-store.5"))
    usage = subprocess.run([cb.cbtfs_binary(), "--help"], capture_output=True,
                           text=True, check=True).stdout
    commands = re.findall(r"^  cbtfs ([a-z]+) ", usage, re.M)
    options = set(re.findall(r"--[a-z][a-z-]*", usage))
    check(len(commands) >= 9 and len(options) > 20, "usage: %r" % usage)
    for c in commands:
        check(re.search(r"^\s+%s\b" % c, text, re.M),
              "cbtfs.1 does not describe the command %s" % c)
    for o in sorted(options):
        check(o in text, "cbtfs.1 does not mention %s" % o)
    for word in ("EXIT STATUS", "ENVIRONMENT", "FILES", "CBTFS_NBDKIT_PLUGIN"):
        check(word in text, "cbtfs.1 has no %s" % word)
    print("ok: %d commands, %d options" % (len(commands), len(options)))


if __name__ == "__main__":
    main()
