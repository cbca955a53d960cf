#!/usr/bin/env python3
"""End to end: cbtfs backup --limit-rate RATE.

The rate bounds every NBD read of the run together, all jobs and all
connections: two VMs backed up by two jobs at RATE take at least
(X - burst) / RATE seconds for the X bytes the stand-in sent, where the
burst is what the bucket holds (README: a tenth of a second of the
rate, at least 64 KiB).  A lower bound only: a slow machine makes the
backup slower, never the test fail.  A RATE that is not a byte count is
a usage error (exit 2).
"""
# store-kinds: dir s3
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import cbtfs as cb  # noqa: E402
import sim  # noqa: E402
from cbtfs import check  # noqa: E402

MiB = 1 << 20
SIZE = 4 * MiB
RATE = 2 * MiB


def main():
    with sim.Sim() as s, cb.Env() as env:
        for k in range(2):
            _, _, _, srv = cb.random_disk(s, env, "vm%d" % k, "d%d" % k, SIZE)
        store = env.store()

        for bad in ("", "0", "-1", "abc", "1.5M", "2T", "10MB", "M", "1 K",
                    "99999999999999999999"):
            rc, _, err = env.cbtfs("backup", store, "--limit-rate", bad, *srv,
                                   ok=False)
            check(rc == 2, "--limit-rate %r exited %d, not 2: %s"
                  % (bad, rc, err))
        check(not env.store_exists(store), "a refused command made the store")

        s.control("reset_stats")
        start = time.monotonic()
        env.cbtfs("backup", store, "--jobs", "2", "--limit-rate", "2M", *srv)
        took = time.monotonic() - start
        sent = s.control("stats")["nbd"]["bytes"]
        burst = max(RATE // 10, 65536)
        check(sent >= 2 * SIZE, "only %d bytes were read over NBD" % sent)
        least = (sent - burst) / RATE
        check(took >= least, "%d bytes at --limit-rate 2M took %.2f s, less "
              "than %.2f s" % (sent, took, least))
        print("%d bytes in %.2f s (at least %.2f s)" % (sent, took, least))
    print("ok")


if __name__ == "__main__":
    main()
