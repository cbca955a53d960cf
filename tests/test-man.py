#!/usr/bin/env python3
"""The man pages (`make man`): cbtfs.1, cbtfs-store.5 and mount.cbtfs.8
render with man(1) without a warning; cbtfs.1 names every command and
every long option the binary's usage text lists, and mount.cbtfs.8
every flag and every -o option of cbtfs mount's own that the helper
(dist/mount.cbtfs.in) takes, so that they cannot drift apart; and
cbtfs.1 has a section for each topic the README explains (issue 17:
man cbtfs answers every question the README does), each with a few of
its key facts."""
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
    options = set(re.findall(r"--[a-z][a-z0-9-]*", usage))
    check(len(commands) >= 9 and len(options) > 20, "usage: %r" % usage)
    for c in commands:
        check(re.search(r"^\s+%s\b" % c, text, re.M),
              "cbtfs.1 does not describe the command %s" % c)
    for o in sorted(options):
        check(o in text, "cbtfs.1 does not mention %s" % o)
    for word in ("EXIT STATUS", "ENVIRONMENT", "FILES", "CBTFS_NBDKIT_PLUGIN"):
        check(word in text, "cbtfs.1 has no %s" % word)
    check_readme_sections(text)
    helper = check_helper_page(render(page("mount.cbtfs.8")))
    print("ok: %d commands, %d options; mount.cbtfs: %d" % (len(commands),
                                                         len(options), helper))


# Each README topic: its section in cbtfs.1 and facts it must state.
README_SECTIONS = {
    "THE TREE": ("by-vm/", "by-uuid/", "latest", "MD5SUMS", "md5sum -c",
                 "user.cbtfs.snapshot", "user.cbtfs.complete", "SEEK_HOLE",
                 "200 bytes"),
    "BROWSING A POINT": ("losetup -r -P", "partx -a", "noload", "norecovery",
                         "nouuid", "--devices", "read_only_volume_list"),
    "RESTORE": ("--sr", "--vdi", "import_raw_vdi", "VDI.checksum",
                "snapshot=on", "xe vdi-import"),
    "RETENTION": ("--keep-within", "--keep-last", "oldest-daily", "ISO weeks",
                  "unlimited", "--include-incomplete", "--dry-run",
                  "RENAME_EXCHANGE", "3 March"),
    "THE STORE": ("cbtfs-store(5)", "STORE/lock", "--lock-wait",
                  "written once"),
    "MONITORING": ("--metrics-file", "cbtfs_backup_last_success_timestamp_seconds",
                   "cbtfs_backup_last_result", "cbtfs_backup_run_exit_status"),
    "AFTER A CRASH": ("incomplete", "fusermount3 -u", "cbtfs backup STORE-ID",
                      "--accept"),
    "SECURITY": ("--ca-file", "--insecure", "VDI.get_nbd_info", "non-dumpable",
                 "default_permissions", "allow_other", "0700"),
    "REQUIREMENTS": ("licence", "param-key=nbd", "snapshot VMs"),
    "PERFORMANCE": ("16 NBD connections", "2 MiB regions", "readahead"),
}


def check_readme_sections(text):
    """Every README topic has its section in cbtfs.1, and the section
    (up to the next heading) states its key facts."""
    heads = [m.start() for m in re.finditer(r"^[A-Z][A-Z ]+$", text, re.M)]
    for name, facts in README_SECTIONS.items():
        m = re.search(r"^%s$" % name, text, re.M)
        check(m, "cbtfs.1 has no section %s" % name)
        end = min([h for h in heads if h > m.start()] + [len(text)])
        # Words wrapped over lines (or hyphenated by man) read as one.
        body = re.sub(r"\s+", " ", text[m.start():end])
        for fact in facts:
            check(fact in body, "cbtfs.1's %s does not mention %r"
                  % (name, fact))


def check_helper_page(text):
    """mount.cbtfs.8 against the helper script: its getopts letters and
    the -o options it turns into cbtfs mount's; the sections a section 8
    page needs.  Returns how many options it checked."""
    with open(os.path.join(cb.TOP, "dist", "mount.cbtfs.in")) as f:
        # Case patterns continued over lines read as one.
        script = re.sub(r"\\\n\s*", "", f.read())
    letters = re.search(r"getopts ([a-zA-Z:]+) ", script)
    check(letters, "no getopts in mount.cbtfs.in")
    flags = re.sub(r"[:tN]", "", letters.group(1))
    keys = re.search(r"^\s*((?:[a-z0-9-]+=\*\|)+[a-z0-9-]+=\*)\)", script,
                     re.M)
    check(keys, "no option=VALUE case in mount.cbtfs.in")
    keys = [k[:-1] for k in keys.group(1).split("|")]
    check(len(flags) >= 4 and "config=" in keys, "%r %r" % (flags, keys))
    check("mount.cbtfs SPEC DIR [-sfnv] [-o OPTIONS]" in text,
          "mount.cbtfs.8 has no SYNOPSIS line: %r" % text[:600])
    for c in flags:
        check(re.search(r"^\s+-%s\b" % c, text, re.M),
              "mount.cbtfs.8 does not describe -%s" % c)
    for k in keys:
        check('"%s"' % k in text, "mount.cbtfs.8 does not describe %s" % k)
    for word in ("EXIT STATUS", "EXAMPLE", "SEE ALSO", "cbtfs(1)", "mount(8)",
                 "fstab(5)", " cbtfs  ro,"):
        check(word in text, "mount.cbtfs.8 has no %r" % word)
    for status in ("0", "1", "32"):
        check(re.search(r"^\s+%s\s" % status, text, re.M),
              "mount.cbtfs.8 does not describe exit status %s" % status)
    return len(flags) + len(keys)


if __name__ == "__main__":
    main()
