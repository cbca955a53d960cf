/* cbtfs: diagnostics for the user.
 *
 * Everything goes to stderr as "cbtfs: …" one line per event, or to
 * syslog once the mount daemon has detached from its terminal.  Never
 * pass a secret (password, session id, NBD export name) to these.
 */
#ifndef CBTFS_LOG_H
#define CBTFS_LOG_H

#include <stdbool.h>

/* Set the verbosity (0 quiet, 1 normal, 2 debug). */
extern void log_set_verbose (int level);

/* Put "CTX: " before later messages (NULL: nothing), e.g. the file and
 * line of the option at hand.  CTX is borrowed until the next call. */
extern void log_set_context (const char *ctx);

/* Route later messages to syslog (for a daemon without a terminal). */
extern void log_use_syslog (void);

extern void log_error (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));
extern void log_warn (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));
/* Printed at verbosity 1 and up. */
extern void log_info (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));
/* Printed at verbosity 2 and up. */
extern void log_debug (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));

/* True when log_debug would print. */
extern bool log_debugging (void);

#endif /* CBTFS_LOG_H */
