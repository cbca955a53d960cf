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
static _Thread_local enum err_class cls;

/* Replace the message with FMT… followed by ": TAIL" when TAIL is not
 * NULL.  The new text is composed in a local buffer first, because an
 * argument may be this thread's message itself (err_set (EIO, "x: %s",
 * err_get ()), or TAIL for err_prefix), and vsnprintf into MSG would
 * overwrite it while reading it.  Cut short at ERR_MAX - 1 bytes. */
static void
vset (const char *fmt, va_list ap, const char *tail)
{
  char buf[ERR_MAX];
  size_t n;

  if (vsnprintf (buf, sizeof buf, fmt, ap) < 0)
    buf[0] = '\0';
  n = strlen (buf);
  /* A message cut short is still the best we have. */
  if (tail && snprintf (buf + n, sizeof buf - n, ": %s", tail) < 0)
    buf[n] = '\0';
  memcpy (msg, buf, strlen (buf) + 1);
}

void
err_set (int errnum, const char *fmt, ...)
{
  int saved = errno;
  va_list ap;

  va_start (ap, fmt);
  vset (fmt, ap, NULL);
  va_end (ap);
  cls = ERR_OTHER;
  errno = errnum ? errnum : saved;
}

void
err_sys (int errnum, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vset (fmt, ap, strerror (errnum));
  va_end (ap);
  cls = ERR_OTHER;
  errno = errnum;
}

void
err_prefix (const char *fmt, ...)
{
  int saved = errno;
  va_list ap;

  va_start (ap, fmt);
  vset (fmt, ap, msg[0] ? msg : NULL);
  va_end (ap);
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
  cls = ERR_OTHER;
}

void
err_set_class (enum err_class c)
{
  cls = c;
}

enum err_class
err_class (void)
{
  return cls;
}
