/* Unit test: the retention policy (engine/retention.c).
 *
 * Table-driven: each case is a disk's points (times in UTC, with flags)
 * and a policy, and says for every point "drop" or "keep" with the
 * rules that keep it, in retention_reason_names's order.  Then the
 * same rules against restic's own policy test: a list of snapshots
 * shaped like the one restic's TestApplyPolicy uses (2014 to 2016,
 * with ties, a year-end week and gaps), and what restic's expectations
 * for it say is kept, for the rules cbtfs has.
 *
 * Thread model: the main thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "common/error.h"
#include "engine/retention.h"

#define MAXPTS 128

/* "YYYY-MM-DD HH:MM:SS" in UTC as seconds. */
static int64_t
t_of (const char *s)
{
  struct tm tm = { 0 };

  if (sscanf (s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
              &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
    fprintf (stderr, "bad time in test: %s\n", s);
    exit (1);
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return timegm (&tm);
}

static void
time_str (int64_t t, char *buf, size_t len)
{
  time_t tt = t;
  struct tm tm;

  gmtime_r (&tt, &tm);
  strftime (buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* "keep R1,R2" or "drop" for PT. */
static void
verdict_str (const struct retention_point *pt, char *buf, size_t len)
{
  const char *names[RETENTION_MAX_REASONS];
  size_t n = retention_reason_names (pt, names), off;

  CHECK (pt->keep == (n > 0));
  if (!pt->keep) {
    snprintf (buf, len, "drop");
    return;
  }
  off = snprintf (buf, len, "keep ");
  for (size_t i = 0; i < n; i++)
    off += snprintf (buf + off, len - off, "%s%s", i ? "," : "", names[i]);
}

/* A point: "YYYY-MM-DD HH:MM:SS" then optional flags: 'I' its data is
 * only on the host (and so it does not read from the store), 'U' it
 * does not read from the store (a broken chain), "#N" seq N (default:
 * its place in the list, from 1, so later entries win ties). */
static void
parse_point (const char *s, size_t i, struct retention_point *pt)
{
  const char *f = s + 19;

  memset (pt, 0, sizeof *pt);
  pt->time = t_of (s);
  pt->seq = i + 1;
  pt->readable = true;
  for (; *f; f++) {
    switch (*f) {
    case ' ': break;
    case 'I': pt->host_only = true; pt->readable = false; break;
    case 'U': pt->readable = false; break;
    case '#': pt->seq = strtoull (f + 1, (char **) &f, 10); f--; break;
    default:
      fprintf (stderr, "bad flag in test point: %s\n", s);
      exit (1);
    }
  }
}

#define FAR_FUTURE "2100-01-01 00:00:00"
#define P(...) { __VA_ARGS__ }
#define K(last, hourly, daily, weekly, monthly, yearly) \
  .keep = { last, hourly, daily, weekly, monthly, yearly }
#define U RETENTION_UNLIMITED

struct tcase {
  const char *what;
  struct retention_policy p;
  const char *now;              /* NULL: FAR_FUTURE */
  const char *pts[16];          /* any order */
  const char *expect[16];       /* for each point, as verdict_str */
};

static const struct tcase cases[] = {
  /* keep-last */
  { "keep-last 2 of 4", { K (2, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-04 10:00:00",
       "2026-01-03 10:00:00"),
    P ("drop", "drop", "keep last,newest", "keep last") },
  { "keep-last larger than the points", { K (10, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-01 10:00:00", "2026-01-02 10:00:00"),
    P ("keep last", "keep last", "keep last,newest") },
  { "keep-last unlimited", { K (U, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-03 10:00:00"),
    P ("keep last", "keep last", "keep last,newest") },

  /* keep-hourly: hour edges; the oldest rule needs count left. */
  { "keep-hourly 2, hour edges", { K (0, 2, 0, 0, 0, 0) }, NULL,
    P ("2026-05-05 10:00:00", "2026-05-05 10:59:59", "2026-05-05 11:00:00",
       "2026-05-05 12:30:00"),
    P ("drop", "drop", "keep hourly", "keep hourly,newest") },
  { "keep-hourly 3 uses its count up before the oldest",
    { K (0, 3, 0, 0, 0, 0) }, NULL,
    P ("2026-05-05 10:00:00", "2026-05-05 10:59:59", "2026-05-05 11:00:00",
       "2026-05-05 12:30:00"),
    P ("drop", "keep hourly", "keep hourly", "keep hourly,newest") },
  { "keep-hourly 4 keeps the oldest in a kept hour as oldest",
    { K (0, 4, 0, 0, 0, 0) }, NULL,
    P ("2026-05-05 10:00:00", "2026-05-05 10:59:59", "2026-05-05 11:00:00",
       "2026-05-05 12:30:00"),
    P ("keep oldest-hourly", "keep hourly", "keep hourly",
       "keep hourly,newest") },

  /* keep-daily: midnight UTC */
  { "keep-daily 2, midnight UTC", { K (0, 0, 2, 0, 0, 0) }, NULL,
    P ("2026-02-28 12:00:00", "2026-03-01 23:59:59", "2026-03-02 00:00:00",
       "2026-03-02 00:00:01"),
    P ("drop", "keep daily", "drop", "keep daily,newest") },
  { "keep-daily 7 with one point a day for 3 days, two on the first",
    { K (0, 0, 7, 0, 0, 0) }, NULL,
    P ("2026-03-01 01:00:00", "2026-03-01 02:00:00", "2026-03-02 01:00:00",
       "2026-03-03 01:00:00"),
    P ("keep oldest-daily", "keep daily", "keep daily", "keep daily,newest") },

  /* keep-weekly: ISO weeks, Monday to Sunday, across year ends */
  { "keep-weekly 3 across 2020/2021 (2020-W53)", { K (0, 0, 0, 3, 0, 0) }, NULL,
    P ("2020-12-27 23:59:59",     /* Sunday, 2020-W52 */
       "2020-12-28 00:00:00",     /* Monday, 2020-W53 */
       "2021-01-03 23:59:59",     /* Sunday, still 2020-W53 */
       "2021-01-04 00:00:00"),    /* Monday, 2021-W01 */
    P ("keep weekly", "drop", "keep weekly", "keep weekly,newest") },
  { "keep-weekly 2 across 2025/2026 (2026-W01 starts in December)",
    { K (0, 0, 0, 2, 0, 0) }, NULL,
    P ("2025-12-28 12:00:00",     /* Sunday, 2025-W52 */
       "2025-12-29 12:00:00",     /* Monday, 2026-W01 */
       "2026-01-01 12:00:00"),    /* Thursday, 2026-W01 */
    P ("keep weekly", "drop", "keep weekly,newest") },

  /* keep-monthly: months of 28, 29, 30 and 31 days */
  { "keep-monthly 3, month ends", { K (0, 0, 0, 0, 3, 0) }, NULL,
    P ("2024-02-29 23:59:59", "2026-01-31 23:59:59", "2026-02-01 00:00:00",
       "2026-02-28 23:59:59", "2026-03-01 00:00:00", "2026-04-30 23:59:59"),
    P ("drop", "drop", "drop", "keep monthly", "keep monthly",
       "keep monthly,newest") },
  { "keep-monthly 5 reaches the leap day", { K (0, 0, 0, 0, 5, 0) }, NULL,
    P ("2024-02-29 23:59:59", "2024-03-01 00:00:00", "2026-01-31 23:59:59",
       "2026-02-28 23:59:59", "2026-04-30 23:59:59"),
    P ("keep monthly", "keep monthly", "keep monthly", "keep monthly",
       "keep monthly,newest") },

  /* keep-yearly */
  { "keep-yearly 1, new year", { K (0, 0, 0, 0, 0, 1) }, NULL,
    P ("2025-12-31 23:59:59", "2026-01-01 00:00:00"),
    P ("drop", "keep yearly,newest") },
  { "keep-yearly 5 over 2 years keeps the oldest", { K (0, 0, 0, 0, 0, 5) },
    NULL,
    P ("2025-06-01 00:00:00", "2025-12-31 23:59:59", "2026-01-01 00:00:00"),
    P ("keep oldest-yearly", "keep yearly", "keep yearly,newest") },

  /* ties: the higher seq is the newer */
  { "ties: keep-last 1 keeps the higher seq", { K (1, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00 #7", "2026-01-01 10:00:00 #8"),
    P ("drop", "keep last,newest") },
  { "ties: keep-daily 1, seq decides whatever the list order",
    { K (0, 0, 1, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00 #9", "2026-01-01 10:00:00 #8"),
    P ("keep daily,newest", "drop") },
  { "ties: keep-daily 2, the older twin is the oldest",
    { K (0, 0, 2, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00 #1", "2026-01-01 10:00:00 #2"),
    P ("keep oldest-daily", "keep daily,newest") },

  /* keep-within: calendar months and years, strictly newer */
  { "keep-within 1m from 31 March (not a leap year)",
    { .within = { 0, 1, 0, 0 } }, NULL,
    P ("2026-03-03 12:00:00", "2026-03-03 12:00:01", "2026-03-31 12:00:00",
       "2026-02-28 12:00:00"),
    P ("drop", "keep within", "keep within,newest", "drop") },
  { "keep-within 1m from 31 March 2024 (a leap year)",
    { .within = { 0, 1, 0, 0 } }, NULL,
    P ("2024-03-02 12:00:00", "2024-03-02 12:00:01", "2024-03-31 12:00:00"),
    P ("drop", "keep within", "keep within,newest") },
  { "keep-within 1y from a leap day", { .within = { 1, 0, 0, 0 } }, NULL,
    P ("2023-02-28 23:00:00", "2023-03-01 00:00:00", "2023-03-01 00:00:01",
       "2024-02-29 00:00:00"),
    P ("drop", "drop", "keep within", "keep within,newest") },
  { "keep-within 1d2h", { .within = { 0, 0, 1, 2 } }, NULL,
    P ("2026-01-09 10:00:00", "2026-01-09 10:00:01", "2026-01-10 12:00:00"),
    P ("drop", "keep within", "keep within,newest") },
  { "keep-within 1y2m3d4h as one date, then hours",
    { .within = { 1, 2, 3, 4 } }, NULL,
    /* 2026-05-31 - 1y2m = 2025-03-31, - 3d = 2025-03-28, - 4h */
    P ("2025-03-28 06:00:00", "2025-03-28 06:00:01", "2026-05-31 10:00:00"),
    P ("drop", "keep within", "keep within,newest") },
  { "keep-within measures from the newest point not in the future",
    { .within = { 0, 0, 1, 0 } }, "2026-01-10 13:00:00",
    P ("2026-01-08 12:00:00", "2026-01-09 12:00:00", "2026-01-09 12:00:01",
       "2026-01-10 12:00:00", "2026-01-20 00:00:00"),
    P ("drop", "drop", "keep within", "keep within",
       "keep within,newest") },
  { "keep-within with every point in the future keeps them all",
    { .within = { 0, 0, 1, 0 } }, "2020-01-01 00:00:00",
    P ("2026-01-01 00:00:00", "2026-03-01 00:00:00"),
    P ("keep within", "keep within,newest") },

  /* newest readable, incomplete */
  { "the newest is incomplete: the newest readable is kept too",
    { K (1, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-03 10:00:00 I"),
    P ("drop", "keep newest", "keep last,incomplete") },
  { "the newest is incomplete, --include-incomplete",
    { K (1, 0, 0, 0, 0, 0), .include_incomplete = true }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-03 10:00:00 I"),
    P ("drop", "keep newest", "keep last") },
  { "an old incomplete point is kept unless --include-incomplete",
    { K (1, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00 I", "2026-01-02 10:00:00"),
    P ("keep incomplete", "keep last,newest") },
  { "an old incomplete point goes with --include-incomplete",
    { K (1, 0, 0, 0, 0, 0), .include_incomplete = true }, NULL,
    P ("2026-01-01 10:00:00 I", "2026-01-02 10:00:00"),
    P ("drop", "keep last,newest") },
  { "the newest reads not (broken chain): the next readable is newest",
    { K (1, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-02 10:00:00", "2026-01-03 10:00:00 U"),
    P ("drop", "keep newest", "keep last") },
  { "no point reads: none is kept as newest", { K (1, 0, 0, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00 U", "2026-01-02 10:00:00 U"),
    P ("drop", "keep last") },
  { "incomplete points count in the buckets like any other",
    { K (0, 0, 2, 0, 0, 0) }, NULL,
    P ("2026-01-01 10:00:00", "2026-01-02 09:00:00", "2026-01-02 10:00:00 I",
       "2026-01-03 10:00:00 I"),
    P ("drop", "keep newest", "keep daily,incomplete",
       "keep daily,incomplete") },

  /* combinations */
  { "keep-daily 2 keep-weekly 2 keep-monthly 2", { K (0, 0, 2, 2, 2, 0) },
    NULL,
    P ("2026-01-15 10:00:00",     /* Thursday, W03 */
       "2026-01-31 10:00:00",     /* Saturday, W05 */
       "2026-02-01 10:00:00",     /* Sunday, W05 */
       "2026-02-02 10:00:00",     /* Monday, W06 */
       "2026-02-03 10:00:00"),    /* Tuesday, W06 */
    P ("drop", "keep monthly", "keep weekly", "keep daily",
       "keep daily,weekly,monthly,newest") },
  { "keep-last 1 keep-within 2d keep-yearly 1", { K (1, 0, 0, 0, 0, 1),
      .within = { 0, 0, 2, 0 } }, NULL,
    P ("2025-12-30 00:00:00", "2025-12-31 00:00:00", "2026-01-01 00:00:00",
       "2026-01-02 00:00:00"),
    P ("drop", "drop", "keep within", "keep last,yearly,within,newest") },
};

static void
run_case (const struct tcase *c)
{
  struct retention_point pts[16];
  size_t n = 0;
  char buf[160];
  bool bad = false;

  while (n < 16 && c->pts[n])
    n++;
  for (size_t i = 0; i < n; i++)
    parse_point (c->pts[i], i, &pts[i]);
  CHECK (retention_apply (&c->p, t_of (c->now ? c->now : FAR_FUTURE), pts,
                          n) == 0);
  for (size_t i = 0; i < n; i++) {
    CHECK (c->expect[i] != NULL);
    verdict_str (&pts[i], buf, sizeof buf);
    if (strcmp (buf, c->expect[i]) != 0) {
      fprintf (stderr, "%s: point %s: got \"%s\", expected \"%s\"\n",
               c->what, c->pts[i], buf, c->expect[i]);
      bad = true;
    }
  }
  CHECK (c->expect[n] == NULL);
  if (bad)
    exit (1);
}

/* A list of snapshots shaped like restic's TestApplyPolicy's: in each
 * of 2014 and 2015, August to November at 10:20:30 on the days below
 * (13 August and 13 November twice, a tenth of a second apart, here a
 * higher seq; 22 October 2015 five times), then nineteen in January
 * 2016, one a week across the year end.  Oldest first.  Returns how
 * many. */
static size_t
restic_list (struct retention_point *pts)
{
  static const int aug_nov[] = { 8, 10, 12, 13, 13, 15, 18, 20, 21, 22 };
  static const int sep_oct[] = { 1, 2, 5, 6, 8, 9, 10, 11, 20, 22 };
  static const char *const jan2016[] = {
    "01 01:02:03", "01 01:03:03", "01 07:08:03", "03 07:02:03",
    "04 10:23:03", "04 11:23:03", "04 12:23:03", "04 12:24:03",
    "04 12:28:03", "04 12:30:03", "04 16:23:03", "05 09:02:03",
    "06 08:02:03", "07 10:02:03", "08 20:02:03", "09 21:02:03",
    "12 21:02:03", "12 21:08:03", "18 12:02:03",
  };
  size_t n = 0;
  char buf[64];

  for (int y = 2014; y <= 2015; y++)
    for (int m = 8; m <= 11; m++)
      for (int i = 0; i < 10; i++) {
        int d = (m == 8 || m == 11) ? aug_nov[i] : sep_oct[i];
        int times = (y == 2015 && m == 10 && d == 22) ? 5 : 1;
        for (int k = 0; k < times; k++) {
          snprintf (buf, sizeof buf, "%d-%02d-%02d 10:20:30", y, m, d);
          parse_point (buf, n, &pts[n]);
          n++;
        }
      }
  for (size_t i = 0; i < sizeof jan2016 / sizeof jan2016[0]; i++) {
    snprintf (buf, sizeof buf, "2016-01-%s", jan2016[i]);
    parse_point (buf, n, &pts[n]);
    n++;
  }
  return n;
}

struct rcase {
  const char *what;
  struct retention_policy p;
  const char *kept[20];         /* "TIME keep REASONS", newest first */
};

/* What restic's expectations keep of its list for these rules (its
 * reasons named as cbtfs names them; "newest" is cbtfs's own). */
static const struct rcase restic_cases[] = {
  { "restic: keep-daily 3", { K (0, 0, 3, 0, 0, 0) },
    P ("2016-01-18 12:02:03 keep daily,newest",
       "2016-01-12 21:08:03 keep daily",
       "2016-01-09 21:02:03 keep daily") },
  { "restic: keep-weekly 4 (a week across the year end)",
    { K (0, 0, 0, 4, 0, 0) },
    P ("2016-01-18 12:02:03 keep weekly,newest",
       "2016-01-12 21:08:03 keep weekly",
       "2016-01-09 21:02:03 keep weekly",
       "2016-01-03 07:02:03 keep weekly") },
  { "restic: keep-monthly 6", { K (0, 0, 0, 0, 6, 0) },
    P ("2016-01-18 12:02:03 keep monthly,newest",
       "2015-11-22 10:20:30 keep monthly",
       "2015-10-22 10:20:30 keep monthly",
       "2015-09-22 10:20:30 keep monthly",
       "2015-08-22 10:20:30 keep monthly",
       "2014-11-22 10:20:30 keep monthly") },
  { "restic: keep-yearly 10 (and the oldest)", { K (0, 0, 0, 0, 0, 10) },
    P ("2016-01-18 12:02:03 keep yearly,newest",
       "2015-11-22 10:20:30 keep yearly",
       "2014-11-22 10:20:30 keep yearly",
       "2014-08-08 10:20:30 keep oldest-yearly") },
  { "restic: daily 7 weekly 2 monthly 3 yearly 10", { K (0, 0, 7, 2, 3, 10) },
    P ("2016-01-18 12:02:03 keep daily,weekly,monthly,yearly,newest",
       "2016-01-12 21:08:03 keep daily,weekly",
       "2016-01-09 21:02:03 keep daily",
       "2016-01-08 20:02:03 keep daily",
       "2016-01-07 10:02:03 keep daily",
       "2016-01-06 08:02:03 keep daily",
       "2016-01-05 09:02:03 keep daily",
       "2015-11-22 10:20:30 keep monthly,yearly",
       "2015-10-22 10:20:30 keep monthly",
       "2014-11-22 10:20:30 keep yearly",
       "2014-08-08 10:20:30 keep oldest-yearly") },
  { "restic: daily 3 weekly 2 monthly and yearly unlimited",
    { K (0, 0, 3, 2, U, U) },
    P ("2016-01-18 12:02:03 keep daily,weekly,monthly,yearly,newest",
       "2016-01-12 21:08:03 keep daily,weekly",
       "2016-01-09 21:02:03 keep daily",
       "2015-11-22 10:20:30 keep monthly,yearly",
       "2015-10-22 10:20:30 keep monthly",
       "2015-09-22 10:20:30 keep monthly",
       "2015-08-22 10:20:30 keep monthly",
       "2014-11-22 10:20:30 keep monthly,yearly",
       "2014-10-22 10:20:30 keep monthly",
       "2014-09-22 10:20:30 keep monthly",
       "2014-08-22 10:20:30 keep monthly",
       "2014-08-08 10:20:30 keep oldest-monthly,oldest-yearly") },
  { "restic: keep-within 13d23h", { .within = { 0, 0, 13, 23 } },
    P ("2016-01-18 12:02:03 keep within,newest",
       "2016-01-12 21:08:03 keep within",
       "2016-01-12 21:02:03 keep within",
       "2016-01-09 21:02:03 keep within",
       "2016-01-08 20:02:03 keep within",
       "2016-01-07 10:02:03 keep within",
       "2016-01-06 08:02:03 keep within",
       "2016-01-05 09:02:03 keep within",
       "2016-01-04 16:23:03 keep within") },
};

static int
newest_first (const void *a, const void *b)
{
  const struct retention_point *x = a, *y = b;

  if (x->time != y->time)
    return x->time > y->time ? -1 : 1;
  return x->seq > y->seq ? -1 : x->seq < y->seq;
}

static void
test_restic (void)
{
  static struct retention_point pts[MAXPTS];   /* big for the stack */
  const int64_t now = t_of (FAR_FUTURE);
  char buf[200], tbuf[32];

  for (size_t c = 0; c < sizeof restic_cases / sizeof restic_cases[0]; c++) {
    const struct rcase *rc = &restic_cases[c];
    size_t n = restic_list (pts), k = 0;

    CHECK (n == 103);
    CHECK (retention_apply (&rc->p, now, pts, n) == 0);
    qsort (pts, n, sizeof pts[0], newest_first);
    for (size_t i = 0; i < n; i++) {
      if (!pts[i].keep)
        continue;
      time_str (pts[i].time, tbuf, sizeof tbuf);
      snprintf (buf, sizeof buf, "%s ", tbuf);
      verdict_str (&pts[i], buf + strlen (buf), sizeof buf - strlen (buf));
      if (rc->kept[k] == NULL || strcmp (buf, rc->kept[k]) != 0) {
        fprintf (stderr, "%s: kept #%zu is \"%s\", expected \"%s\"\n",
                 rc->what, k, buf, rc->kept[k] ? rc->kept[k] : "(none)");
        exit (1);
      }
      k++;
    }
    if (rc->kept[k] != NULL) {
      fprintf (stderr, "%s: \"%s\" was not kept\n", rc->what, rc->kept[k]);
      exit (1);
    }
  }

  /* restic's keep-within 1y2m3d3h from 2016-01-18 12:02:03: one date
   * 2014-11-15 12:02:03, then 3 hours back, so 68 snapshots from
   * 2014-11-15 10:20:30 on; and 1m14d keeps January 2016's 19. */
  struct retention_policy p = { .within = { 1, 2, 3, 3 } };
  size_t n = restic_list (pts), kept = 0;
  CHECK (retention_apply (&p, now, pts, n) == 0);
  for (size_t i = 0; i < n; i++) {
    kept += pts[i].keep;
    CHECK (pts[i].keep == (pts[i].time >= t_of ("2014-11-15 10:20:30")));
  }
  CHECK (kept == 68);
  p.within = (struct retention_duration) { 0, 1, 14, 0 };
  n = restic_list (pts);
  CHECK (retention_apply (&p, now, pts, n) == 0);
  kept = 0;
  for (size_t i = 0; i < n; i++)
    kept += pts[i].keep;
  CHECK (kept == 19);

  /* restic's keep-last 10, 15, 99 and 200: that many, then all. */
  static const int64_t lasts[] = { 10, 15, 99, 200 };
  for (size_t j = 0; j < 4; j++) {
    struct retention_policy pl = { K (lasts[j], 0, 0, 0, 0, 0) };
    n = restic_list (pts);
    CHECK (retention_apply (&pl, now, pts, n) == 0);
    kept = 0;
    for (size_t i = 0; i < n; i++)
      kept += pts[i].keep;
    CHECK (kept == (size_t) (lasts[j] < 103 ? lasts[j] : 103));
  }
}

static void
test_parse (void)
{
  struct retention_duration d;
  int64_t v;
  char buf[48];

  CHECK (retention_parse_count ("0", &v) == 0 && v == 0);
  CHECK (retention_parse_count ("7", &v) == 0 && v == 7);
  CHECK (retention_parse_count ("1000000000", &v) == 0 && v == 1000000000);
  CHECK (retention_parse_count ("unlimited", &v) == 0
         && v == RETENTION_UNLIMITED);
  v = 42;
  CHECK_FAILS (retention_parse_count ("", &v), EINVAL, "is not a count");
  CHECK_FAILS (retention_parse_count ("-1", &v), EINVAL, "'-1'");
  CHECK_FAILS (retention_parse_count ("+1", &v), EINVAL, "is not a count");
  CHECK_FAILS (retention_parse_count ("7d", &v), EINVAL, "is not a count");
  CHECK_FAILS (retention_parse_count (" 7", &v), EINVAL, "is not a count");
  CHECK_FAILS (retention_parse_count ("1000000001", &v), EINVAL, "count");
  CHECK_FAILS (retention_parse_count ("99999999999999999999999", &v), EINVAL,
               "count");
  CHECK_FAILS (retention_parse_count ("Unlimited", &v), EINVAL, "count");
  CHECK (v == 42);

  CHECK (retention_parse_duration ("1y2m3d4h", &d) == 0);
  CHECK (d.years == 1 && d.months == 2 && d.days == 3 && d.hours == 4);
  CHECK (retention_parse_duration ("4h3d", &d) == 0);
  CHECK (d.years == 0 && d.months == 0 && d.days == 3 && d.hours == 4);
  CHECK (retention_parse_duration ("0d", &d) == 0);
  CHECK (d.years == 0 && d.months == 0 && d.days == 0 && d.hours == 0);
  CHECK (retention_parse_duration ("1000000h", &d) == 0 && d.hours == 1000000);
  d.days = 99;
  CHECK_FAILS (retention_parse_duration ("", &d), EINVAL, "not a duration");
  CHECK_FAILS (retention_parse_duration ("7", &d), EINVAL, "not a duration");
  CHECK_FAILS (retention_parse_duration ("d", &d), EINVAL, "not a duration");
  CHECK_FAILS (retention_parse_duration ("1w", &d), EINVAL, "'1w'");
  CHECK_FAILS (retention_parse_duration ("-1d", &d), EINVAL, "duration");
  CHECK_FAILS (retention_parse_duration ("1d2d", &d), EINVAL, "duration");
  CHECK_FAILS (retention_parse_duration ("1d ", &d), EINVAL, "duration");
  CHECK_FAILS (retention_parse_duration ("1D", &d), EINVAL, "duration");
  CHECK_FAILS (retention_parse_duration ("1000001h", &d), EINVAL, "duration");
  CHECK (d.days == 99);

  retention_format_duration (&(struct retention_duration) { 1, 0, 3, 0 },
                             buf, sizeof buf);
  CHECK (strcmp (buf, "1y3d") == 0);
  retention_format_duration (&(struct retention_duration) { 0, 2, 0, 12 },
                             buf, sizeof buf);
  CHECK (strcmp (buf, "2m12h") == 0);
  retention_format_duration (&(struct retention_duration) {
      1000000, 1000000, 1000000, 1000000 }, buf, sizeof buf);
  CHECK (strcmp (buf, "1000000y1000000m1000000d1000000h") == 0);

  struct retention_policy p = { 0 };
  CHECK (retention_policy_empty (&p));
  p.include_incomplete = true;
  CHECK (retention_policy_empty (&p));
  p.within.hours = 1;
  CHECK (!retention_policy_empty (&p));
  p.within.hours = 0;
  p.keep[RETENTION_YEARLY] = RETENTION_UNLIMITED;
  CHECK (!retention_policy_empty (&p));
}

static void
test_minus (void)
{
  static const struct {
    const char *t;
    struct retention_duration d;
    const char *want;
  } m[] = {
    { "2026-03-31 12:00:00", { 0, 1, 0, 0 }, "2026-03-03 12:00:00" },
    { "2024-03-31 12:00:00", { 0, 1, 0, 0 }, "2024-03-02 12:00:00" },
    { "2024-02-29 00:00:00", { 1, 0, 0, 0 }, "2023-03-01 00:00:00" },
    { "2024-02-29 00:00:00", { 4, 0, 0, 0 }, "2020-02-29 00:00:00" },
    { "2026-01-15 00:30:00", { 0, 13, 0, 0 }, "2024-12-15 00:30:00" },
    { "2026-01-01 00:30:00", { 0, 0, 1, 1 }, "2025-12-30 23:30:00" },
    { "2026-03-01 00:00:00", { 0, 0, 1, 0 }, "2026-02-28 00:00:00" },
    { "2016-01-18 12:02:03", { 1, 2, 3, 3 }, "2014-11-15 09:02:03" },
    { "2016-01-18 12:02:03", { 0, 0, 0, 0 }, "2016-01-18 12:02:03" },
    { "1970-01-01 00:00:00", { 0, 0, 0, 1 }, "1969-12-31 23:00:00" },
    { "1970-03-31 00:00:00", { 0, 1, 0, 0 }, "1970-03-03 00:00:00" },
  };
  char buf[32];

  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
    time_str (retention_minus (t_of (m[i].t), &m[i].d), buf, sizeof buf);
    if (strcmp (buf, m[i].want) != 0) {
      fprintf (stderr, "%s minus case %zu: got %s, expected %s\n", m[i].t, i,
               buf, m[i].want);
      exit (1);
    }
  }
  /* Saturates rather than overflowing. */
  CHECK (retention_minus (INT64_MIN + 10,
                          &(struct retention_duration) { 0, 0, 0, 1 })
         == INT64_MIN);

  struct retention_point pts[3] = {
    { .time = 100 }, { .time = 300 }, { .time = 200 },
  };
  CHECK (retention_reference (pts, 3, 1000) == 300);
  CHECK (retention_reference (pts, 3, 300) == 200);
  CHECK (retention_reference (pts, 3, 100) == INT64_MIN);
  CHECK (retention_reference (pts, 0, 100) == INT64_MIN);
}

/* Properties over many random disks: every kept point has a reason,
 * counts bound the keeps, the newest readable point is always kept,
 * the input order does not matter, and before 1970 buckets work too. */
static void
test_random (void)
{
  struct retention_point a[64], b[64];
  uint64_t rng = 88172645463325252u;

  for (int round = 0; round < 2000; round++) {
    struct retention_policy p = { 0 };
    size_t n = 1 + round % 60, kept_counted = 0;
    int64_t base = (round % 3 == 0) ? -400000000 : 1700000000;
    int64_t sum = 0;
    bool unlimited = false;

    for (int r = 0; r < RETENTION_NCOUNTED; r++) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      p.keep[r] = rng % 4 == 0 ? (int64_t) (rng >> 8) % 6 : 0;
      if (rng % 37 == 0)
        p.keep[r] = RETENTION_UNLIMITED, unlimited = true;
      sum += p.keep[r] > 0 ? p.keep[r] : 0;
    }
    p.include_incomplete = round & 1;
    for (size_t i = 0; i < n; i++) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      a[i] = (struct retention_point) {
        .time = base + (int64_t) (rng % (86400 * 800)), .seq = i + 1,
        .readable = rng % 5 != 0, .host_only = rng % 11 == 0,
      };
      if (a[i].host_only)
        a[i].readable = false;
    }
    /* The same points, reversed. */
    for (size_t i = 0; i < n; i++)
      b[i] = a[n - 1 - i];
    CHECK (retention_apply (&p, INT64_MAX, a, n) == 0);
    CHECK (retention_apply (&p, INT64_MAX, b, n) == 0);

    const struct retention_point *newest = NULL;
    for (size_t i = 0; i < n; i++) {
      const struct retention_point *x = &a[i], *y = &b[n - 1 - i];
      CHECK (x->keep == y->keep && x->reasons == y->reasons
             && x->oldest == y->oldest);
      CHECK (x->keep == (x->reasons != 0));
      CHECK ((x->oldest & ~x->reasons) == 0);
      CHECK (!!(x->reasons & RETAIN_INCOMPLETE)
             == (x->host_only && !p.include_incomplete));
      if (x->reasons & ((1u << RETENTION_NCOUNTED) - 1))
        kept_counted++;
      if (x->readable && (newest == NULL || x->time > newest->time
                          || (x->time == newest->time
                              && x->seq > newest->seq)))
        newest = x;
    }
    if (!unlimited)
      CHECK (kept_counted <= (size_t) sum);
    for (size_t i = 0; i < n; i++)
      CHECK (!!(a[i].reasons & RETAIN_NEWEST) == (&a[i] == newest));
    if (newest)
      CHECK (newest->keep);
  }

  /* Nothing to decide. */
  struct retention_policy p = { K (1, 0, 0, 0, 0, 0) };
  CHECK (retention_apply (&p, 0, NULL, 0) == 0);
}

int
main (void)
{
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_case (&cases[i]);
  test_restic ();
  test_parse ();
  test_minus ();
  test_random ();
  printf ("test-retention: %zu cases, restic's %zu, ok\n",
          sizeof cases / sizeof cases[0],
          sizeof restic_cases / sizeof restic_cases[0]);
  return 0;
}
