#!/usr/bin/env python3
"""End to end: the configuration file (man cbtfs, CONFIGURATION).

- a file whose [cbtfs] section gives server, user, ca-file,
  password-file, nbd-connections and timeout drives a backup against
  the stand-in, also when $CBTFS_CONFIG names it; keys no option of the
  command has, and other sections, are ignored (said with -v);
- the command line wins: a file naming a closed port with --server of
  the stand-in succeeds, the reverse exits 3; --vm on the command line
  replaces the file's vm keys; --config beats $CBTFS_CONFIG;
- a malformed file, a bad boolean, a value the option refuses and a
  --config that cannot be read exit 2 with one line naming the file
  (and its line);
- a password file others may read or write (0604, 0602) is refused
  (exit 2, naming it and its mode), 0600 and 0640 are fine;
- with --server and no --password-file the password is systemd's
  credential $CREDENTIALS_DIRECTORY/cbtfs-password;
- a usage error under --json prints {"status": 2, …}; a STORE that is
  no store exits 2.
"""
import json
import os
import shutil
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20


def closed_port():
    """A port on 127.0.0.1 nothing listens on (bound, then closed)."""
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def write(env, name, text, mode=0o644):
    p = env.path(name)
    with open(p, "w") as f:
        f.write(text)
    os.chmod(p, mode)
    return p


def conf(env, name, **keys):
    """A file with a [cbtfs] section of KEYS ('_' for '-'), in order."""
    lines = ["# made by test-config", "[cbtfs]"]
    lines += ["%s = %s" % (k.replace("_", "-"), v) for k, v in keys.items()]
    return write(env, name, "\n".join(lines) + "\n")


def points(env, store):
    return sum(len(d["points"]) for d in env.ls_json(store)["disks"])


def one_line(err):
    return len(err.strip().splitlines()) == 1


def main():
    with sim.Sim() as s, cb.Env() as env:
        _, _, _, srv = cb.random_disk(s, env, "web", "root", 1 * MiB)
        url, ca, pw = srv[1], srv[3], srv[5]
        wrong = "https://127.0.0.1:%d" % closed_port()
        store = env.path("store")

        # The file alone drives a backup; what it does not know is
        # ignored, and said so with -v.
        good = write(env, "good.conf", "\n".join([
            "[cbtfs]", "server = " + url, "user = root", "ca-file = " + ca,
            "password-file = " + pw, "nbd-connections = 2", "timeout = 60",
            "colour = blue", "", "[elsewhere]", "server = " + wrong, ""]))
        rc, _, err = env.cbtfs("backup", store, "--config", good, "-v")
        check(rc == 0 and points(env, store) == 1, "file backup: %d" % rc)
        check("good.conf:8: 'colour' is not an option" in err,
              "unknown key not said at -v: %r" % err)
        rc, _, err = env.cbtfs("backup", store, "--config=" + good, "-q")
        check(rc == 0 and err == "" and points(env, store) == 2,
              "--config=FILE, -q: %d %r" % (rc, err))

        # The command line wins, both ways.
        bad = conf(env, "bad.conf", server=wrong, ca_file=ca,
                   password_file=pw, timeout=5)
        rc, _, err = env.cbtfs("backup", store, "--config", bad,
                               "--server", url, "-q")
        check(rc == 0 and points(env, store) == 3,
              "argv --server over a wrong file: %d %r" % (rc, err))
        rc, _, err = env.cbtfs("backup", store, "--config", good, "--server",
                               wrong, "--timeout", "5", "-q", ok=False)
        check(rc == 3 and "cannot connect" in err,
              "a wrong argv --server over a right file: %d %r" % (rc, err))
        # Repeatable options too: --vm replaces the file's vm keys.
        vms = write(env, "vms.conf", open(good).read().replace(
            "[elsewhere]", "vm = nosuch\n[elsewhere]"))
        rc, _, err = env.cbtfs("backup", store, "--config", vms, "-q",
                               ok=False)
        check(rc == 1 and "nosuch" in err, "file's vm: %d %r" % (rc, err))
        env.cbtfs("backup", store, "--config", vms, "--vm", "web", "-q")

        # $CBTFS_CONFIG names the file; --config beats it.
        envvars = dict(os.environ, CBTFS_CONFIG=good)
        before = points(env, store)
        env.cbtfs("backup", store, "-q", environ=envvars)
        check(points(env, store) == before + 1, "$CBTFS_CONFIG not read")
        rc, _, err = env.cbtfs("backup", store, "--config", bad, "-q",
                               environ=envvars, ok=False)
        check(rc == 3, "--config did not beat $CBTFS_CONFIG: %d %r" % (rc, err))

        # Files and values that are wrong: exit 2, one line, file:line.
        cases = [
            ("[cbtfs]\nserver = %s\nthis is no ini line\n" % url,
             "syntax.conf:3:"),
            ("[cbtfs\nserver = %s\n" % url, "section.conf:1:"),
            ("[cbtfs]\nserver = %s\nno-copy = maybe\n" % url,
             "bool.conf:3: no-copy = maybe"),
            ("[cbtfs]\nserver = %s\n\ntimeout = soon\n" % url,
             "value.conf:4: --timeout"),
            ("[cbtfs]\nlimit-rate = fast\n", "rate.conf:2: --limit-rate"),
        ]
        for text, says in cases:
            f = write(env, says.split(":")[0], text)
            rc, out, err = env.cbtfs("backup", store, "--config", f,
                                     "--password-file", pw, ok=False)
            check(rc == 2 and says in err and one_line(err),
                  "%s: %d %r" % (says, rc, err))
        rc, _, err = env.cbtfs("ls", store, "--config", env.path("nosuch.conf"),
                               ok=False)
        check(rc == 2 and "nosuch.conf: No such file" in err and one_line(err),
              "missing --config: %d %r" % (rc, err))
        unreadable = write(env, "unreadable.conf", "[cbtfs]\n", 0o000)
        if os.access(unreadable, os.R_OK):      # root reads it anyway
            unreadable = env.mkdir("a-directory.conf")
        rc, _, err = env.cbtfs("ls", store, "--config", unreadable, ok=False)
        check(rc == 2 and unreadable in err and one_line(err),
              "unreadable --config: %d %r" % (rc, err))

        # The password file's mode.
        for mode, refused in ((0o604, "read"), (0o602, "write"),
                              (0o600, None), (0o640, None)):
            p = env.path("pw-%o" % mode)
            shutil.copy(pw, p)
            os.chmod(p, mode)
            rc, _, err = env.cbtfs("backup", store, "--config", good,
                                   "--password-file", p, "-q", ok=False)
            if refused:
                check(rc == 2 and p in err and "%04o" % mode in err
                      and refused in err and one_line(err),
                      "mode %o: %d %r" % (mode, rc, err))
            else:
                check(rc == 0, "mode %o: %d %r" % (mode, rc, err))

        # systemd's credential when no --password-file is given.
        creds = env.mkdir("credentials")
        shutil.copy(pw, os.path.join(creds, "cbtfs-password"))
        os.chmod(os.path.join(creds, "cbtfs-password"), 0o400)
        nopw = conf(env, "nopw.conf", server=url, ca_file=ca)
        before = points(env, store)
        env.cbtfs("backup", store, "--config", nopw, "-q",
                  environ=dict(os.environ, CREDENTIALS_DIRECTORY=creds))
        check(points(env, store) == before + 1, "credential not used")
        rc, _, err = env.cbtfs("backup", store, "--config", nopw, ok=False)
        check(rc == 2 and "--password-file is required" in err,
              "no password at all: %d %r" % (rc, err))

        # --json: a usage error is JSON too; a STORE that is none is 2.
        for args in (["ls", store, "--json", "--bogus"],
                     ["prune", "--bogus", store, "--json"],
                     ["forget", store, "--json", "--vm"],
                     ["ls", store, store, "--json"]):
            rc, out, err = env.cbtfs(*args, ok=False)
            got = json.loads(out)
            check(rc == 2 and got["status"] == 2 and got["error"]
                  and "usage:" in err, "%s: %d %r %r" % (args, rc, out, err))
        check("'--bogus'" in json.loads(
            env.cbtfs("ls", store, "--json", "--bogus", ok=False)[1])["error"],
            "the JSON error does not name the option")
        rc, out, _ = env.cbtfs("ls", env.path("nosuch"), "--json", ok=False)
        check(rc == 2 and json.loads(out)["status"] == 2,
              "ls of no store: %d %r" % (rc, out))
    print("ok")


if __name__ == "__main__":
    main()
