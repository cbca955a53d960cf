/* cbtfs engine: the retention policy (retention.h).
 *
 * Thread model: see retention.h (no shared state).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "retention.h"

/* Division rounding towards minus infinity: buckets of times before
 * 1970 must not fold into the one after. */
static int64_t
floor_div (int64_t a, int64_t b)
{
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of the proleptic Gregorian date Y-M-D (M 1 to
 * 12, D 1 to 31, or past the month's end: it rolls on, as Go's Date
 * does), and back (Howard Hinnant's days_from_civil and
 * civil_from_days, which need no tables and no time zone). */
static int64_t
days_from_civil (int64_t y, unsigned m, unsigned d)
{
  y -= m <= 2;
  const int64_t era = floor_div (y, 400);
  const unsigned yoe = (unsigned) (y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t) doe - 719468;
}

static void
civil_from_days (int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
  z += 719468;
  const int64_t era = floor_div (z, 146097);
  const unsigned doe = (unsigned) (z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;

  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t) yoe + era * 400 + (*m <= 2);
}

/* The bucket of T for counted rule R; NR (the point's place, newest
 * first) makes every point its own bucket for keep-last.  Any value
 * identifies one bucket: only equality matters. */
static int64_t
bucket_of (enum retention_rule r, int64_t t, size_t nr)
{
  const int64_t days = floor_div (t, 86400);
  int64_t y;
  unsigned m, d;

  switch (r) {
  case RETENTION_LAST: return (int64_t) nr;
  case RETENTION_HOURLY: return floor_div (t, 3600);
  case RETENTION_DAILY: return days;
  case RETENTION_WEEKLY:
    /* Weeks from Monday: 1970-01-01 was a Thursday, so day -3 was the
     * Monday of its ISO week.  One number per ISO (year, week), and a
     * week across a year end is one week, as ISO has it. */
    return floor_div (days + 3, 7);
  case RETENTION_MONTHLY:
    civil_from_days (days, &y, &m, &d);
    return y * 12 + (m - 1);
  case RETENTION_YEARLY:
    civil_from_days (days, &y, &m, &d);
    return y;
  default:
    abort ();
  }
}

bool
retention_policy_empty (const struct retention_policy *p)
{
  for (int r = 0; r < RETENTION_NCOUNTED; r++)
    if (p->keep[r] != 0)
      return false;
  return p->within.years == 0 && p->within.months == 0
    && p->within.days == 0 && p->within.hours == 0;
}

/* Digits only, at most MAX: a number; else -1. */
static int64_t
parse_digits (const char *s, size_t len, int64_t max)
{
  int64_t v = 0;

  if (len == 0)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
    if (v > max)
      return -1;
  }
  return v;
}

int
retention_parse_count (const char *s, int64_t *out)
{
  int64_t v;

  if (strcmp (s, "unlimited") == 0) {
    *out = RETENTION_UNLIMITED;
    return 0;
  }
  v = parse_digits (s, strlen (s), RETENTION_COUNT_MAX);
  if (v == -1) {
    err_set (EINVAL, "'%s' is not a count (0 to %d, or 'unlimited')", s,
             RETENTION_COUNT_MAX);
    return -1;
  }
  *out = v;
  return 0;
}

int
retention_parse_duration (const char *s, struct retention_duration *out)
{
  struct retention_duration d = { 0 };
  const char *p = s;
  unsigned seen = 0;

  if (*p == '\0')
    goto bad;
  while (*p) {
    size_t len = strspn (p, "0123456789");
    int64_t v = parse_digits (p, len, RETENTION_DURATION_MAX);
    int32_t *field;
    unsigned bit;

    if (v == -1)
      goto bad;
    switch (p[len]) {
    case 'y': field = &d.years; bit = 1; break;
    case 'm': field = &d.months; bit = 2; break;
    case 'd': field = &d.days; bit = 4; break;
    case 'h': field = &d.hours; bit = 8; break;
    default: goto bad;
    }
    /* restic lets "1d2d" mean 2d; a typo more likely, so refuse. */
    if (seen & bit)
      goto bad;
    seen |= bit;
    *field = (int32_t) v;
    p += len + 1;
  }
  *out = d;
  return 0;

 bad:
  err_set (EINVAL, "'%s' is not a duration (such as 1y2m3d4h: years, "
           "months, days, hours, each at most %d)", s,
           RETENTION_DURATION_MAX);
  return -1;
}

void
retention_format_duration (const struct retention_duration *d, char *buf,
                           size_t len)
{
  snprintf (buf, len, "%.0" PRId32 "%s%.0" PRId32 "%s%.0" PRId32 "%s%.0"
            PRId32 "%s",
            d->years, d->years ? "y" : "", d->months, d->months ? "m" : "",
            d->days, d->days ? "d" : "", d->hours, d->hours ? "h" : "");
}

int64_t
retention_minus (int64_t t, const struct retention_duration *d)
{
  /* The second of the day without days * 86400, which overflows for
   * the earliest times. */
  const int64_t days = floor_div (t, 86400);
  const int64_t sod = (t % 86400 + 86400) % 86400;
  int64_t y, months, r;
  unsigned m, dd;

  /* As Go's t.AddDate (-years, -months, -days): year and month first,
   * keeping the day of the month, then the days; Date normalises what
   * falls outside a month by rolling on (days_from_civil does too). */
  civil_from_days (days, &y, &m, &dd);
  months = y * 12 + (m - 1) - (int64_t) d->years * 12 - d->months;
  r = days_from_civil (floor_div (months, 12),
                       (unsigned) (months - floor_div (months, 12) * 12) + 1,
                       1)
    + (dd - 1) - d->days;
  /* Then the hours; saturate rather than overflow, far outside any
   * snapshot's time. */
  if (__builtin_mul_overflow (r, 86400, &r)
      || __builtin_add_overflow (r, sod, &r)
      || __builtin_sub_overflow (r, (int64_t) d->hours * 3600, &r))
    return INT64_MIN;
  return r;
}

int64_t
retention_reference (const struct retention_point *pts, size_t n,
                     int64_t now)
{
  int64_t ref = INT64_MIN;

  for (size_t i = 0; i < n; i++)
    if (pts[i].time < now && pts[i].time > ref)
      ref = pts[i].time;
  return ref;
}

/* A point's place in the newest-first order. */
struct order {
  int64_t time;
  uint64_t seq;
  size_t i;
};

static int
newer_first (const void *a, const void *b)
{
  const struct order *x = a, *y = b;

  if (x->time != y->time)
    return x->time > y->time ? -1 : 1;
  if (x->seq != y->seq)
    return x->seq > y->seq ? -1 : 1;
  return x->i > y->i ? -1 : x->i < y->i;
}

int
retention_apply (const struct retention_policy *p, int64_t now,
                 struct retention_point *pts, size_t n)
{
  const bool within = p->within.years || p->within.months
    || p->within.days || p->within.hours;
  int64_t left[RETENTION_NCOUNTED], last[RETENTION_NCOUNTED];
  bool have_last[RETENTION_NCOUNTED] = { false };
  int64_t ref = INT64_MIN, cutoff = INT64_MIN;
  struct order *order;
  bool newest_done = false;

  if (n == 0)
    return 0;
  order = malloc (n * sizeof *order);
  if (order == NULL) {
    err_sys (ENOMEM, "retention: %zu points", n);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    order[i] = (struct order) { pts[i].time, pts[i].seq, i };
    pts[i].keep = false;
    pts[i].reasons = pts[i].oldest = 0;
  }
  qsort (order, n, sizeof *order, newer_first);
  memcpy (left, p->keep, sizeof left);
  if (within) {
    ref = retention_reference (pts, n, now);
    if (ref != INT64_MIN)
      cutoff = retention_minus (ref, &p->within);
  }

  for (size_t k = 0; k < n; k++) {
    struct retention_point *pt = &pts[order[k].i];

    /* Strictly newer than the cutoff, as Go's After; with no reference
     * (every point in the future) all are within. */
    if (within && (ref == INT64_MIN || pt->time > cutoff))
      pt->reasons |= RETAIN_WITHIN;

    for (int r = 0; r < RETENTION_NCOUNTED; r++) {
      if (left[r] == 0)
        continue;
      const int64_t val = bucket_of (r, pt->time, k);
      const bool oldest = k == n - 1;
      if (have_last[r] && val == last[r] && !oldest)
        continue;
      if (have_last[r] && val == last[r])
        pt->oldest |= 1u << r;
      pt->reasons |= 1u << r;
      last[r] = val;
      have_last[r] = true;
      if (left[r] > 0)
        left[r]--;
    }

    if (!newest_done && pt->readable) {
      pt->reasons |= RETAIN_NEWEST;
      newest_done = true;
    }
    if (pt->host_only && !p->include_incomplete)
      pt->reasons |= RETAIN_INCOMPLETE;
    pt->keep = pt->reasons != 0;
  }
  free (order);
  return 0;
}

size_t
retention_reason_names (const struct retention_point *pt, const char **names)
{
  static const char *const counted[RETENTION_NCOUNTED][2] = {
    { "last", "oldest-last" },
    { "hourly", "oldest-hourly" },
    { "daily", "oldest-daily" },
    { "weekly", "oldest-weekly" },
    { "monthly", "oldest-monthly" },
    { "yearly", "oldest-yearly" },
  };
  size_t n = 0;

  for (int r = 0; r < RETENTION_NCOUNTED; r++)
    if (pt->reasons & (1u << r))
      names[n++] = counted[r][(pt->oldest >> r) & 1];
  if (pt->reasons & RETAIN_WITHIN)
    names[n++] = "within";
  if (pt->reasons & RETAIN_NEWEST)
    names[n++] = "newest";
  if (pt->reasons & RETAIN_INCOMPLETE)
    names[n++] = "incomplete";
  return n;
}
