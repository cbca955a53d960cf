/* cbtfs: diagnostics for the user.
 *
 * Thread model: any thread may log.  Each message is formatted into a
 * local buffer and written with one write(2)/syslog(3) call, so lines
 * from different threads do not interleave; the settings are written
 * once at start-up, before threads exist.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static int verbose = 1;
static bool to_syslog;
static const char *context;

void
log_set_verbose (int level)
{
  verbose = level;
}

void
log_set_context (const char *ctx)
{
  context = ctx;
}

void
log_use_syslog (void)
{
  openlog ("cbtfs", LOG_PID, LOG_DAEMON);
  to_syslog = true;
}

bool
log_debugging (void)
{
  return verbose >= 2;
}

static void
emit (int prio, const char *tag, const char *fmt, va_list ap)
{
  int saved = errno;
  char line[2048];
  int n;

  if (to_syslog) {
    vsnprintf (line, sizeof line, fmt, ap);
    syslog (prio, "%s%s%s%s", context ? context : "", context ? ": " : "",
            tag, line);
    errno = saved;
    return;
  }
  n = snprintf (line, sizeof line, "cbtfs: %s%s%s", context ? context : "",
                context ? ": " : "", tag);
  if (n < 0 || (size_t) n >= sizeof line)
    n = 0;
  vsnprintf (line + n, sizeof line - n, fmt, ap);
  n = strlen (line);
  if ((size_t) n >= sizeof line - 1)
    n = sizeof line - 2;
  line[n++] = '\n';
  if (write (STDERR_FILENO, line, n) == -1) {
    /* Nowhere left to report it. */
  }
  errno = saved;
}

#define DEFINE_LOG(name, prio, tag, level)        \
  void                                            \
  name (const char *fmt, ...)                     \
  {                                               \
    va_list ap;                                   \
    if (verbose < (level))                        \
      return;                                     \
    va_start (ap, fmt);                           \
    emit ((prio), (tag), fmt, ap);                \
    va_end (ap);                                  \
  }

DEFINE_LOG (log_error, LOG_ERR, "", 0)
DEFINE_LOG (log_warn, LOG_WARNING, "warning: ", 0)
DEFINE_LOG (log_info, LOG_INFO, "", 1)
DEFINE_LOG (log_debug, LOG_DEBUG, "debug: ", 2)
