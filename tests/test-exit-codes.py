#!/usr/bin/env python3
"""End to end: every command's exit status (README "Exit status").

- `cbtfs --version` prints the version and the store format (0);
  `cbtfs --help` and `cbtfs COMMAND --help` print usage to stdout with
  nothing on stderr (0); an unknown command and an unknown option exit 2
  with the usage on stderr;
- each command that talks to a server (backup, mount, fetch, verify,
  prune, forget, serve, restore) exits 3 for a wrong password, for a
  certificate --ca-file does not trust, and (all but mount and serve,
  which go on without the host) for a closed port on 127.0.0.1, with one
  line naming the problem; a missing --password-file is 2;
- with --json the failure is a JSON object with the same "status"
  (2 for a STORE that is not a store);
- each command's normal run exits 0 (--json: "status": 0).
"""
# store-kinds: dir s3
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
COMMANDS = ("backup", "mount", "ls", "fetch", "verify", "prune", "forget",
            "serve", "restore")


def other_ca(env):
    """A CA certificate that has nothing to do with the stand-in's."""
    key, crt = env.path("other.key"), env.path("other.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "1", "-subj",
                    "/CN=other"], check=True, capture_output=True)
    return crt


def closed_port():
    """A port on 127.0.0.1 nothing listens on (bound, then closed)."""
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def help_and_usage(env):
    rc, out, err = env.cbtfs("--version")
    check(rc == 0 and out.startswith("cbtfs ") and "store format 2" in out
          and err == "", "--version: %d %r %r" % (rc, out, err))
    rc, out, err = env.cbtfs("--help")
    check(rc == 0 and all("cbtfs %s " % c in out for c in COMMANDS)
          and "exit status" in out and err == "", "--help: %r %r" % (out, err))
    rc, out, err = env.cbtfs("nosuch", ok=False)
    check(rc == 2 and "unknown command" in err and out == "",
          "unknown command: %d %r" % (rc, err))
    for c in COMMANDS:
        rc, out, err = env.cbtfs(c, "--help")
        check(rc == 0 and "cbtfs %s " % c in out and err == "",
              "%s --help: %d %r %r" % (c, rc, out, err))
        others = [o for o in COMMANDS if o != c]
        check(not any("cbtfs %s " % o in out for o in others),
              "%s --help shows other commands: %r" % (c, out))
        rc, out, err = env.cbtfs(c, "--bogus", ok=False)
        check(rc == 2 and "usage:" in err and "cbtfs %s " % c in err
              and out == "", "%s --bogus: %d %r %r" % (c, rc, out, err))


def main():
    with sim.Sim() as s, cb.Env() as env:
        help_and_usage(env)

        web, _, _, srv = cb.random_disk(s, env, "web", "root", 2 * MiB)
        old, old_vdi, _, _ = cb.random_disk(s, env, "old", "d", 2 * MiB)
        store = env.store()
        url, ca, pw = srv[1], srv[3], srv[5]

        rc, _, _ = env.cbtfs("backup", store, *srv, "-q")
        check(rc == 0, "backup: %d" % rc)
        point = "by-vm/web/root/latest"

        # old decommissioned: forget --server may then remove it.
        px = s.server_proxy()
        sess = px.session.login_with_password("root", "secret")["Value"]

        def xapi(method, *args):
            obj, name = method.split(".")
            r = getattr(getattr(px, obj), name)(sess, *args)
            check(r["Status"] == "Success", "%s: %r" % (method, r))
            return r["Value"]

        s.control("set_power_state", vm=old["vm"], state="Halted")
        xapi("VM.destroy", xapi("VM.get_by_uuid", old["vm"]))
        xapi("VDI.destroy", xapi("VDI.get_by_uuid", old_vdi))
        srs = xapi("SR.get_all_records")
        main_sr = [v["uuid"] for v in srs.values()
                   if v["name_label"] == "Local storage"][0]

        mnt = env.mkdir("mnt")
        env.on_close(cb.unmount, mnt)
        sock = env.path("serve.sock")
        args = {
            "backup": [store],
            "mount": [store, mnt],
            "fetch": [store],
            "verify": [store],
            "prune": [store, "--keep-last", "100"],
            "forget": [store, "--vm", "old", "--yes"],
            "serve": [store, point, "--unix", sock],
            "restore": [store, point, "--sr", main_sr],
        }
        bad = {
            "wrong password": (["--server", url, "--ca-file", ca,
                                "--password-file",
                                env.password_file("wrong", name="bad")],
                               "Authentication"),
            "untrusted CA": (["--server", url, "--ca-file", other_ca(env),
                              "--password-file", pw], "not trusted"),
            "unreachable": (["--server", "https://127.0.0.1:%d" % closed_port(),
                             "--ca-file", ca, "--password-file", pw, "--timeout",
                             "5"], "cannot connect"),
        }
        before = env.ls_json(store)
        for c, a in args.items():
            for what, (opts, says) in bad.items():
                if what == "unreachable" and c in ("mount", "serve"):
                    continue        # they go on without the host
                rc, out, err = env.cbtfs(c, *a, *opts, ok=False, timeout=120)
                lines = err.strip().splitlines()
                check(rc == 3 and says in err and len(lines) == 1,
                      "%s, %s: exit %d, %r" % (c, what, rc, err))
                check(not cb.mounted(mnt), "%s mounted" % c)
            rc, _, err = env.cbtfs(c, *a, "--server", url, "--password-file",
                                   env.path("nosuch.pw"), ok=False)
            check(rc == 2 and "nosuch.pw" in err,
                  "%s, a missing password file: exit %d, %r" % (c, rc, err))
        check(env.ls_json(store) == before, "a refused command changed the store")

        # A mount goes on while the host is unreachable (a warning).
        rc, _, err = env.cbtfs("mount", store, mnt, *bad["unreachable"][0])
        check(rc == 0 and cb.mounted(mnt) and "cannot connect" in err,
              "mount, unreachable: %d %r" % (rc, err))
        cb.unmount(mnt)

        # --json: the failure is JSON with the same status.
        for c in ("prune", "forget", "restore"):
            rc, out, _ = env.cbtfs(c, *args[c], "--json",
                                   *bad["wrong password"][0], ok=False)
            got = json.loads(out)
            check(rc == 3 and got["status"] == 3
                  and "Authentication" in got["error"],
                  "%s --json, wrong password: %d %r" % (c, rc, out))
        # A STORE that is none is the caller's mistake: 2 (a directory
        # that is not there, a prefix of the bucket that holds none).
        for nosuch in sorted({env.path("nosuch"), env.store("nosuch")}):
            rc, out, _ = env.cbtfs("ls", nosuch, "--json", ok=False)
            check(rc == 2 and json.loads(out)["status"] == 2,
                  "ls --json %s: %r" % (nosuch, out))

        # Each command's normal run.
        check(env.ls_json(store)["status"] == 0, "ls --json has no status 0")
        for c in ("fetch", "verify"):
            env.cbtfs(c, *args[c], *srv, "-q")
        for c in ("prune", "forget", "restore"):
            rc, out, _ = env.cbtfs(c, *args[c], *srv, "--json", "-q")
            check(json.loads(out)["status"] == 0, "%s --json: %r" % (c, out))
        env.cbtfs("backup", store, *srv, "-q")
        env.mount(store, mnt, *srv)
        check(os.path.exists(os.path.join(mnt, point)), "nothing mounted")
        cb.unmount(mnt)
        pidfile = env.path("serve.pid")
        proc = subprocess.Popen([cb.cbtfs_binary(), "serve", *args["serve"],
                                 *srv, "--pidfile", pidfile],
                                stdin=subprocess.DEVNULL)
        env.on_close(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        cb.wait_for_file(pidfile, proc)
        p = subprocess.run(["nbdinfo", "--size",
                            "nbd+unix:///?socket=%s" % sock],
                           capture_output=True, text=True)
        check(p.returncode == 0 and p.stdout.strip() == str(2 * MiB),
              "nbdinfo: %r %r" % (p.stdout, p.stderr))
        proc.terminate()
        check(proc.wait(timeout=60) == 0, "serve exited %d" % proc.returncode)
    print("ok")


if __name__ == "__main__":
    main()
