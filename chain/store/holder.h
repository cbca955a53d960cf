/* cbtfs: who holds a lock in a store: the record a holder leaves in
 * the lock it took (the directory store's `lock` file, an object
 * store's lease objects), read by those it keeps waiting.
 *
 * A record is lines of "WORD VALUE" (FORMAT.md): pid, command, since,
 * host and boot, and in an object store's lease ttl.  Readers take only the whole lines they understand:
 * a crash, a holder still writing, or another program may leave
 * anything there.
 *
 * Thread model: plain functions on the caller's buffers.
 */
#ifndef CBTFS_CHAIN_STORE_HOLDER_H
#define CBTFS_CHAIN_STORE_HOLDER_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

/* The boot id is a uuid; a host name at most HOST_NAME_MAX (64). */
struct store_holder {
  long pid;                     /* 0: not said */
  char command[STORE_WHO_MAX + 1];
  long long since;              /* unix time; 0: not said */
  char host[65];                /* "": not said */
  char boot[UUID_LEN + 1];      /* /proc/sys/kernel/random/boot_id; "" */
  long ttl;                     /* seconds a lease lasts unrenewed; 0:
                                   not said (it never expires) */
};

/* The longest lease a record may promise: a day. */
#define STORE_LEASE_TTL_MAX 86400

/* Parse LEN bytes of TEXT (need not be NUL-terminated) into *H. */
extern void store_holder_parse (const char *text, size_t len,
                                struct store_holder *h)
  __attribute__ ((__nonnull__ (1, 3)));

/* This process's record as the holder WHO, into BUF (LEN bytes, 256 is
 * enough): its length. */
extern size_t store_holder_format (const char *who, char *buf, size_t len)
  __attribute__ ((__nonnull__ (1, 2)));

/* Whether H surely names a holder that is gone: a process of this
 * machine (same host, or no host said) that no longer exists, or one
 * of this host from before its last boot.  A holder on another host is
 * never known to be gone. */
extern bool store_holder_gone (const struct store_holder *h)
  __attribute__ ((__nonnull__ (1)));

/* Whether H names a host other than this one. */
extern bool store_holder_elsewhere (const struct store_holder *h)
  __attribute__ ((__nonnull__ (1)));

/* Seconds until a lease with TTL (H->ttl; 0: none) whose object was
 * last written at MODIFIED expires, judged at DATE; both by the same
 * clock (the server's), in whole seconds cut down, so that a lease is
 * called expired (<= 0) only when more than TTL seconds surely passed.
 * LLONG_MAX when it cannot expire (no TTL, a time not known: < 0). */
extern long long store_lease_left (long long modified, long long date,
                                   long ttl);

/* H for a message: "cbtfs prune (pid 1234 on web1, since 2026-12-03
 * 12:03:04 UTC)", or "another cbtfs process" and what H says. */
extern void store_holder_describe (const struct store_holder *h, char *buf,
                                   size_t len)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_CHAIN_STORE_HOLDER_H */
