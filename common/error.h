/* cbtfs: per-thread error messages.
 *
 * Functions report failure by returning -1 or NULL with errno set; the
 * human-readable reason is kept here, per thread, like libnbd's
 * nbd_get_error().  The CLI prints it as the one line the user sees,
 * so a message names the object and the problem ("VDI 1234…: bitmap is
 * 3 bytes, expected 16"), and never a secret (password, session id,
 * NBD export name).
 */
#ifndef CBTFS_ERROR_H
#define CBTFS_ERROR_H

/* Set the calling thread's message and errno (ERRNUM 0 leaves errno). */
extern void err_set (int errnum, const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 2, 3)));

/* As err_set, with ": <strerror (errnum)>" appended. */
extern void err_sys (int errnum, const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 2, 3)));

/* Prefix the current message with context ("ctx: message"); errno is kept. */
extern void err_prefix (const char *fmt, ...)
  __attribute__ ((__format__ (__printf__, 1, 2)));

/* The calling thread's last message, or "" (borrowed until the next err_*). */
extern const char *err_get (void);

/* Forget the calling thread's message (and its class). */
extern void err_clear (void);

/* What the current error is, for the CLI's exit status: the server
 * could not be reached or refused us, or our own configuration is
 * wrong; anything else is ERR_OTHER.  err_set and err_sys start a new
 * error of class ERR_OTHER; err_prefix keeps the class. */
enum err_class { ERR_OTHER, ERR_CONFIG, ERR_SERVER };

/* Give the calling thread's current error class C. */
extern void err_set_class (enum err_class c);

/* The calling thread's current error class. */
extern enum err_class err_class (void);

#endif /* CBTFS_ERROR_H */
