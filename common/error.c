/* cbtfs: per-thread error messages.
 *
 * Thread model: the message buffer is thread-local; nothing is shared.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

#define ERR_MAX 1024

static _Thread_local char msg[ERR_MAX];

static void
vset (const char *fmt, va_list ap)
{
  vsnprintf (msg, sizeof msg, fmt, ap);
}

void
err_set (int errnum, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vset (fmt, ap);
  va_end (ap);
  if (errnum)
    errno = errnum;
}

void
err_sys (int errnum, const char *fmt, ...)
{
  va_list ap;
  size_t n;

  va_start (ap, fmt);
  vset (fmt, ap);
  va_end (ap);
  n = strlen (msg);
  /* A message cut short is still the best we have. */
  if (snprintf (msg + n, sizeof msg - n, ": %s", strerror (errnum)) < 0)
    msg[n] = '\0';
  errno = errnum;
}

void
err_prefix (const char *fmt, ...)
{
  int saved = errno;
  char old[ERR_MAX];
  va_list ap;
  size_t n;

  memcpy (old, msg, sizeof old);
  va_start (ap, fmt);
  vset (fmt, ap);
  va_end (ap);
  n = strlen (msg);
  if (old[0] && snprintf (msg + n, sizeof msg - n, ": %s", old) < 0)
    msg[n] = '\0';
  errno = saved;
}

const char *
err_get (void)
{
  return msg;
}

void
err_clear (void)
{
  msg[0] = '\0';
}
