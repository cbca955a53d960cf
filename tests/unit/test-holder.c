/* Unit test: lock holders' records and a lease's age (chain/store/holder.c).
 *
 * store_lease_left judges by whole seconds of the server's clock: it
 * must never call a lease expired that is not (whatever the fractions
 * of the two seconds it sees), and must call it expired within two
 * seconds of its ttl running out.  A record's ttl is taken only from a
 * whole line holding 1 to a day's seconds.
 *
 * Thread model: the main thread only.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "chain/store/holder.h"

static long
ttl_of (const char *text)
{
  struct store_holder h;

  store_holder_parse (text, strlen (text), &h);
  return h.ttl;
}

static void
test_parse (void)
{
  struct store_holder h;
  const char *rec = "pid 12\ncommand backup\nsince 1796299384\n"
    "host web1\nttl 120\n";

  store_holder_parse (rec, strlen (rec), &h);
  CHECK (h.pid == 12 && strcmp (h.command, "backup") == 0
         && h.since == 1796299384 && strcmp (h.host, "web1") == 0
         && h.ttl == 120);
  CHECK (ttl_of ("pid 1\n") == 0);                /* not said */
  CHECK (ttl_of ("ttl 86400\n") == STORE_LEASE_TTL_MAX);
  CHECK (ttl_of ("ttl 86401\n") == 0);            /* more than a day */
  CHECK (ttl_of ("ttl 0\n") == 0);
  CHECK (ttl_of ("ttl -5\n") == 0);
  CHECK (ttl_of ("ttl 12x\n") == 0);
  CHECK (ttl_of ("ttl 99999999999999999999\n") == 0);
  CHECK (ttl_of ("ttl 120") == 0);                /* cut short */
  CHECK (ttl_of ("pid 1\nttl 3\n") == 3);
}

static void
test_left (void)
{
  /* Unknowable: never expires. */
  CHECK (store_lease_left (1000, 5000, 0) == LLONG_MAX);
  CHECK (store_lease_left (-1, 5000, 3) == LLONG_MAX);
  CHECK (store_lease_left (1000, -1, 3) == LLONG_MAX);
  CHECK (store_lease_left (LLONG_MAX - 2, LLONG_MAX, 3) == LLONG_MAX);

  /* Written in second 1000 with ttl 3: in second 1003 it may be only
   * 2.x s old; in 1004 it is more than 3 s old. */
  CHECK (store_lease_left (1000, 1000, 3) == 4);
  CHECK (store_lease_left (1000, 1003, 3) == 1);
  CHECK (store_lease_left (1000, 1004, 3) == 0);
  CHECK (store_lease_left (1000, 1010, 3) == -6);
  /* A Date before the Last-Modified (two gateways' clocks): young. */
  CHECK (store_lease_left (1000, 998, 3) == 6);

  /* Every moment of writing and of looking, in tenths of a second:
   * never expired while at most TTL seconds old; always once more than
   * TTL + 2 (the two seconds' fractions) old. */
  for (long ttl = 2; ttl <= 5; ttl++)
    for (long w = 0; w < 10; w++)
      for (long d = w; d < w + 10 * (ttl + 4); d++) {
        long long left = store_lease_left (1000 + w / 10, 1000 + d / 10,
                                           ttl);
        if (d - w <= 10 * ttl)
          CHECK (left > 0);
        if (d - w > 10 * (ttl + 2))
          CHECK (left <= 0);
      }
}

int
main (void)
{
  test_parse ();
  test_left ();
  return 0;
}
