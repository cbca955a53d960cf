/* cbtfs engine: the retention policy, which points of one disk a prune
 * keeps and why.  Pure: no I/O, no clock, no global state.
 *
 * The rules mean what restic's `forget` options mean (restic's
 * doc/060_forget.rst and ApplyPolicy in its snapshot_policy.go), applied
 * to one disk's points at a time (restic's "group"):
 *
 * - The points are taken newest first; ties in time are broken by seq,
 *   the higher being the newer (restic keeps the list's order there).
 * - keep-last N keeps the N newest points.
 * - keep-hourly/daily/weekly/monthly/yearly N: a point is kept if it is
 *   the newest of its hour/day/week/month/year and fewer than N such
 *   buckets have been kept so far; buckets without points do not count.
 *   Weeks are ISO 8601 weeks, Monday 00:00 to Sunday 23:59:59 (restic
 *   buckets by Go's ISOWeek), so the week of a year end is one bucket.
 * - "Oldest": when a bucket rule still has count left at the oldest
 *   point, that point is kept too, even if its bucket was already kept
 *   (restic 0.16 and later, "oldest daily snapshot"); it uses up one
 *   count like any other keep.
 * - N may be RETENTION_UNLIMITED (restic's "unlimited"): every bucket.
 *   N = 0 means the rule is not given.
 * - keep-within DURATION keeps every point strictly newer than the
 *   newest point's time minus DURATION.  Years and months are calendar
 *   ones, subtracted together with days as one date (Go's AddDate):
 *   the day of month stays and overflow rolls forward, so 1m before
 *   31 March is 3 March (2 March in a leap year), then hours as 3600
 *   seconds each.  The "newest point" is the newest one not in the
 *   future (before NOW); when every point is in the future, every point
 *   is within (restic then measures from the zero time).
 * - A point is kept if any rule keeps it; every rule that keeps it is
 *   recorded.
 *
 * Followed deliberately otherwise:
 * - Buckets are taken in UTC (restic uses each snapshot's own zone):
 *   XenServer's snapshot_time is UTC, and the tree names points in UTC.
 * - Two rules of cbtfs's own, which do not take part in the counting
 *   (as restic's --keep-tag does not): the newest readable point of the
 *   disk is always kept ("newest"), so that a disk never loses its last
 *   point that reads from the store alone; and every point whose data
 *   only the host holds ("incomplete": not yet copied, --no-copy, or
 *   held after a failed check) is kept unless include_incomplete.
 * - Not implemented: --keep-tag (points have no tags) and
 *   --keep-within-hourly/daily/… (not asked for yet).
 * - A count is decimal digits or "unlimited" (restic's ParseInt also
 *   takes a sign, then refuses negatives).
 * - DURATION is stricter than restic's: only decimal digits (no sign,
 *   no spaces), each unit at most once, each number at most
 *   RETENTION_DURATION_MAX, and "" is an error; restic lets a repeated
 *   unit overwrite the earlier one.
 *
 * Thread model: no shared state; every function is reentrant.
 */
#ifndef CBTFS_ENGINE_RETENTION_H
#define CBTFS_ENGINE_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The counted rules, in the order they are reported. */
enum retention_rule {
  RETENTION_LAST = 0,
  RETENTION_HOURLY,
  RETENTION_DAILY,
  RETENTION_WEEKLY,
  RETENTION_MONTHLY,
  RETENTION_YEARLY,
  RETENTION_NCOUNTED,
};

/* A count meaning "every bucket" (restic's "unlimited"). */
#define RETENTION_UNLIMITED (-1)

/* Largest count (and largest number in a duration) that parses. */
#define RETENTION_COUNT_MAX 1000000000
#define RETENTION_DURATION_MAX 1000000

/* restic's "1y2m3d4h": calendar years and months, days, hours. */
struct retention_duration {
  int32_t years, months, days, hours;
};

struct retention_policy {
  /* Indexed by enum retention_rule: 0 (not given), a count, or
   * RETENTION_UNLIMITED. */
  int64_t keep[RETENTION_NCOUNTED];
  struct retention_duration within;     /* all zero: not given */
  bool include_incomplete;              /* "incomplete" keeps nothing */
};

/* Why a point is kept: bits of retention_point.reasons. */
enum retention_reason {
  RETAIN_LAST = 1u << RETENTION_LAST,
  RETAIN_HOURLY = 1u << RETENTION_HOURLY,
  RETAIN_DAILY = 1u << RETENTION_DAILY,
  RETAIN_WEEKLY = 1u << RETENTION_WEEKLY,
  RETAIN_MONTHLY = 1u << RETENTION_MONTHLY,
  RETAIN_YEARLY = 1u << RETENTION_YEARLY,
  RETAIN_WITHIN = 1u << 6,
  RETAIN_NEWEST = 1u << 7,              /* the newest readable point */
  RETAIN_INCOMPLETE = 1u << 8,          /* its data is only on the host */
};

/* The most reasons one point can have (every RETAIN_* bit). */
#define RETENTION_MAX_REASONS 9

/* One point of a disk. */
struct retention_point {
  /* Filled by the caller. */
  int64_t time;                 /* snapshot time, UTC seconds */
  uint64_t seq;                 /* order among the disk's points: ties */
  bool readable;                /* reads wholly and soundly from the store */
  bool host_only;               /* its data only the host holds */
  /* Filled by retention_apply. */
  bool keep;
  unsigned reasons;             /* RETAIN_* bits, every rule that keeps it */
  unsigned oldest;              /* of the counted bits in REASONS, those
                                 * given only as the oldest point */
};

/* True when P gives no rule at all (include_incomplete is not one):
 * pruning with it would keep only what cbtfs always keeps. */
extern bool retention_policy_empty (const struct retention_policy *p)
  __attribute__ ((__nonnull__ (1)));

/* Parse a --keep-* count: decimal digits (0 to RETENTION_COUNT_MAX) or
 * "unlimited" (RETENTION_UNLIMITED).  0 with *OUT set, or -1 with
 * err_* and errno EINVAL (*OUT unchanged). */
extern int retention_parse_count (const char *s, int64_t *out)
  __attribute__ ((__nonnull__ (1, 2)));

/* Parse a --keep-within DURATION such as "1y2m3d4h" (units y, m for
 * months, d, h, in any order, each at most once; "0d" is a valid,
 * zero duration, i.e. no rule).  0 with *OUT set, or -1 with err_*
 * and errno EINVAL (*OUT unchanged). */
extern int retention_parse_duration (const char *s,
                                     struct retention_duration *out)
  __attribute__ ((__nonnull__ (1, 2)));

/* Format D as restic does ("1y2m", "" for zero) into BUF (LEN bytes;
 * 48 is always enough). */
extern void retention_format_duration (const struct retention_duration *d,
                                       char *buf, size_t len)
  __attribute__ ((__nonnull__ (1, 2)));

/* T minus D as keep-within counts it (see the top of this file). */
extern int64_t retention_minus (int64_t t, const struct retention_duration *d)
  __attribute__ ((__nonnull__ (2)));

/* The time keep-within measures from among PTS (N points): the newest
 * before NOW, or INT64_MIN when there is none (then every point is
 * within). */
extern int64_t retention_reference (const struct retention_point *pts,
                                    size_t n, int64_t now);

/* Decide every point of PTS (N points of one disk, in any order) under
 * P, with NOW the current time (for keep-within's reference).  Fills
 * keep, reasons and oldest.  0, or -1 with err_* and errno ENOMEM. */
extern int retention_apply (const struct retention_policy *p, int64_t now,
                            struct retention_point *pts, size_t n)
  __attribute__ ((__nonnull__ (1)));

/* The names of PT's reasons, in report order, into NAMES (room for
 * RETENTION_MAX_REASONS): "last", "hourly", …, "yearly" (or
 * "oldest-daily" etc.), "within", "newest", "incomplete".  Static
 * strings.  Returns how many. */
extern size_t retention_reason_names (const struct retention_point *pt,
                                      const char **names)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_ENGINE_RETENTION_H */
