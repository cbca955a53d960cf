/* cbtfs: lock holders' records (holder.h). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/util.h"
#include "holder.h"

/* The decimal number S (digits only) if it is 1 to MAX, else 0. */
static long long
parse_count (const char *s, long long max)
{
  long long v = 0;

  if (*s == '\0')
    return 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10)
      return 0;
    v = v * 10 + (*s - '0');
  }
  return v;
}

/* Copy W into OUT (SIZE bytes) if it is 1 to SIZE-1 bytes of ALLOWED. */
static void
take_word (const char *w, const char *allowed, char *out, size_t size)
{
  size_t len = strlen (w);

  if (len >= 1 && len < size && strspn (w, allowed) == len)
    memcpy (out, w, len + 1);
}

static const char host_chars[] =
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";

void
store_holder_parse (const char *text, size_t len, struct store_holder *h)
{
  char buf[512];
  char *line, *nl;

  memset (h, 0, sizeof *h);
  len = len < sizeof buf - 1 ? len : sizeof buf - 1;
  memcpy (buf, text, len);
  buf[len] = '\0';
  /* Only whole lines: one cut short may be a prefix of the truth. */
  for (line = buf; (nl = strchr (line, '\n')) != NULL; line = nl + 1) {
    *nl = '\0';
    if (strncmp (line, "pid ", 4) == 0)
      h->pid = parse_count (line + 4, INT32_MAX);
    else if (strncmp (line, "since ", 6) == 0)
      /* Up to the end of year 9999, which gmtime_r and %Y can show. */
      h->since = parse_count (line + 6, 253402300799LL);
    else if (strncmp (line, "command ", 8) == 0)
      take_word (line + 8, "abcdefghijklmnopqrstuvwxyz-", h->command,
                 sizeof h->command);
    else if (strncmp (line, "host ", 5) == 0)
      take_word (line + 5, host_chars, h->host, sizeof h->host);
    else if (strncmp (line, "ttl ", 4) == 0)
      h->ttl = parse_count (line + 4, STORE_LEASE_TTL_MAX);
    else if (strncmp (line, "boot ", 5) == 0 && is_uuid (line + 5))
      memcpy (h->boot, line + 5, UUID_LEN + 1);
  }
}

/* This machine's host name and boot id ("" when unknown). */
static void
this_machine (char host[65], char boot[UUID_LEN + 1])
{
  char tmp[256];
  CLEANUP_FREE char *id = NULL;

  host[0] = boot[0] = '\0';
  if (gethostname (tmp, sizeof tmp) == 0) {
    tmp[sizeof tmp - 1] = '\0';
    take_word (tmp, host_chars, host, 65);
  }
  id = read_file ("/proc/sys/kernel/random/boot_id", 64, NULL);
  if (id && strlen (id) >= UUID_LEN) {
    id[UUID_LEN] = '\0';
    if (is_uuid (id))
      memcpy (boot, id, UUID_LEN + 1);
  }
}

size_t
store_holder_format (const char *who, char *buf, size_t len)
{
  char host[65], boot[UUID_LEN + 1];
  int n;

  this_machine (host, boot);
  n = snprintf (buf, len, "pid %ld\ncommand %s\nsince %lld\n%s%s%s%s%s%s",
                (long) getpid (), who, (long long) time (NULL),
                host[0] ? "host " : "", host, host[0] ? "\n" : "",
                boot[0] ? "boot " : "", boot, boot[0] ? "\n" : "");
  return n < 0 ? 0 : (size_t) n < len ? (size_t) n : len - 1;
}

bool
store_holder_elsewhere (const struct store_holder *h)
{
  char host[65], boot[UUID_LEN + 1];

  this_machine (host, boot);
  return h->host[0] && strcmp (h->host, host) != 0;
}

bool
store_holder_gone (const struct store_holder *h)
{
  char host[65], boot[UUID_LEN + 1];

  this_machine (host, boot);
  if (h->host[0] && strcmp (h->host, host) != 0)
    return false;
  /* The same host booted since: nothing of then still runs. */
  if (h->boot[0] && boot[0] && strcmp (h->boot, boot) != 0)
    return true;
  return h->pid && kill ((pid_t) h->pid, 0) == -1 && errno == ESRCH;
}

long long
store_lease_left (long long modified, long long date, long ttl)
{
  /* Written during second MODIFIED, seen during second DATE: more
   * than DATE - MODIFIED - 1 seconds ago.  So TTL surely passed when
   * DATE - MODIFIED >= TTL + 1. */
  if (ttl <= 0 || modified < 0 || date < 0 || modified > LLONG_MAX - ttl - 1)
    return LLONG_MAX;
  return modified + ttl + 1 - date;
}

void
store_holder_describe (const struct store_holder *h, char *buf, size_t len)
{
  char when[64] = "", on[80] = "", host[65], boot[UUID_LEN + 1];
  struct tm tm;
  time_t t = (time_t) h->since;
  size_t n;

  if (h->since && gmtime_r (&t, &tm))
    strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
  /* Only another host is worth naming. */
  this_machine (host, boot);
  if (h->host[0] && strcmp (h->host, host) != 0)
    snprintf (on, sizeof on, " on %s", h->host);
  if (h->command[0])
    snprintf (buf, len, "cbtfs %s", h->command);
  else
    snprintf (buf, len, "another cbtfs process");
  n = strlen (buf);
  if (h->pid && when[0])
    snprintf (buf + n, len - n, " (pid %ld%s, since %s)", h->pid, on, when);
  else if (h->pid)
    snprintf (buf + n, len - n, " (pid %ld%s)", h->pid, on);
  else if (when[0])
    snprintf (buf + n, len - n, " (%s%ssince %s)", on[0] ? on + 1 : "",
              on[0] ? ", " : "", when);
}
