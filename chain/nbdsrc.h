/* cbtfs: reading a snapshot over NBD (libnbd), as XenServer serves it.
 *
 * xapi-nbd (docs/xapi-nbd.md) forces TLS, knows only NBD_OPT_EXPORT_NAME,
 * sends simple replies, serves one request at a time per connection and
 * at most 16 connections.  Its address is often an IP the certificate
 * does not name, so TLS is pinned to the certificate get_nbd_info
 * returns, wherever the server is reached: the server must hold that
 * certificate's key, or the connection is refused before the export
 * name (which carries a session) is sent.  libnbd 1.14 checks nothing
 * on a socket we connected, so tlspin.h does the check; newer libnbd
 * also verifies chain and name itself.  Every wait is bounded: a
 * stalled server is an error after the timeout, never a hang.
 *
 * Thread model: one connection is used by one thread at a time (one
 * libnbd handle per connection, as libnbd wants).  Different
 * connections are independent.  nbdsrc_connect runs the whole TLS
 * handshake in the calling thread, which is what lets tlspin's
 * per-thread pin apply to it alone.
 */
#ifndef CBTFS_CHAIN_NBDSRC_H
#define CBTFS_CHAIN_NBDSRC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where one snapshot's data is served (a VDI.get_nbd_info record).
 * Strings owned; exportname is secret (it embeds a session). */
struct nbdsrc_target {
  char *address;
  int port;
  char *cert;                   /* PEM: the server must hold its key */
  char *subject;                /* the name cert is issued for; may be NULL */
  char *exportname;
};

/* Free the strings of T. */
extern void nbdsrc_target_clear (struct nbdsrc_target *t)
  __attribute__ ((__nonnull__ (1)));

/* Make *DST a copy of SRC, strings duplicated (DST's own are not
 * freed).  0, or -1 with err_* (ENOMEM, DST then empty). */
extern int nbdsrc_target_copy (struct nbdsrc_target *dst,
                               const struct nbdsrc_target *src)
  __attribute__ ((__nonnull__ (1, 2)));

struct nbdsrc_conn;

/* Connect to T with TLS required and pinned to t->cert, within TIMEOUT
 * seconds.  NULL with err_* ("NBD 10.0.0.5:10809: TLS handshake
 * failed: …"), never naming the export.  errno EKEYREJECTED (no
 * t->cert, or the server does not hold its key) and ENOTSUP (the
 * server will not speak TLS) are answers no retry changes. */
extern struct nbdsrc_conn *nbdsrc_connect (const struct nbdsrc_target *t,
                                           int timeout)
  __attribute__ ((__nonnull__ (1)));

struct nbdlimit;

/* As nbdsrc_connect, holding one of the host's connection slots of LIM
 * (nbdlimit.h; NULL: none) until closed, waiting for one first, and
 * keeping every read to LIM's rate. */
extern struct nbdsrc_conn *nbdsrc_connect_shared (const struct nbdsrc_target *t,
                                                  int timeout,
                                                  struct nbdlimit *lim)
  __attribute__ ((__nonnull__ (1)));

/* The export's size in bytes. */
extern uint64_t nbdsrc_size (struct nbdsrc_conn *c)
  __attribute__ ((__nonnull__ (1)));

/* 0 if the export is EXPECT bytes, the virtual size XAPI gives for
 * SNAPSHOT; else -1 with err_* (EPROTO), an answer no retry changes. */
extern int nbdsrc_check_size (struct nbdsrc_conn *c, const char *snapshot,
                              uint64_t expect)
  __attribute__ ((__nonnull__ (1, 2)));

/* Read COUNT bytes at OFFSET (both multiples of 512, within the
 * export) within TIMEOUT seconds.  0 or -1 with err_*; after a failure
 * the connection is dead: close it. */
extern int nbdsrc_pread (struct nbdsrc_conn *c, void *buf, size_t count,
                         uint64_t offset, int timeout)
  __attribute__ ((__nonnull__ (1, 2)));

/* Start reading COUNT bytes at OFFSET (as nbdsrc_pread) into BUF, which
 * must stay valid until the read completes.  Several reads may be in
 * flight at once: xapi-nbd serves them in turn, which hides the round
 * trip; other servers serve them in parallel.  The cookie (> 0), or -1
 * with err_*. */
extern int64_t nbdsrc_start_read (struct nbdsrc_conn *c, void *buf,
                                  size_t count, uint64_t offset)
  __attribute__ ((__nonnull__ (1, 2)));

/* Wait within TIMEOUT seconds for any started read to finish; its
 * cookie, or -1 with err_* (a read failed or the connection died:
 * close it; the reads still in flight are lost). */
extern int64_t nbdsrc_wait_any (struct nbdsrc_conn *c, int timeout)
  __attribute__ ((__nonnull__ (1)));

/* The details XAPI gave for one snapshot, shared by all connections
 * to it: asked once, not once per connection (each ask is XAPI round
 * trips), and again when connecting with them fails (a session that
 * expired, a host that moved).  lock is held across the ask, so one
 * thread asks while the others wait for its answer. */
struct nbdsrc_known {
  pthread_mutex_t lock;
  struct nbdsrc_target t;       /* valid when have */
  bool have;
};

/* Initialise K (nothing known), or free what it knows. */
extern void nbdsrc_known_init (struct nbdsrc_known *k)
  __attribute__ ((__nonnull__ (1)));
extern void nbdsrc_known_clear (struct nbdsrc_known *k)
  __attribute__ ((__nonnull__ (1)));

struct chain_targets;

/* Connect, within TIMEOUT seconds, with K's details of SNAPSHOT, asked
 * of TG (targets.h) first if K knows none; if known details fail, once
 * more with TG's answer now.  The connection shares LIM (may be NULL)
 * as nbdsrc_connect_shared says.  NULL with err_*: *ASK_FAILED (if not
 * NULL) says TG failed; errno EKEYREJECTED or ENOTSUP (the server is
 * not the one XAPI named, or refuses TLS) says asking again cannot
 * help. */
extern struct nbdsrc_conn *nbdsrc_connect_known (struct nbdsrc_known *k,
                                                 const struct chain_targets *tg,
                                                 const char *snapshot,
                                                 int timeout,
                                                 struct nbdlimit *lim,
                                                 bool *ask_failed)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* Disconnect and free; NULL is a no-op. */
extern void nbdsrc_close (struct nbdsrc_conn *c);

#endif /* CBTFS_CHAIN_NBDSRC_H */
