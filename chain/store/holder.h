/* cbtfs: who holds a lock in a store: the record a holder leaves in
 * the lock it took (the directory store's `lock` file, an object
 * store's lease objects), read by those it keeps waiting.
 *
 * A record is lines of "WORD VALUE" (FORMAT.md): pid, command, since,
 * host and boot.  Readers take only the whole lines they understand:
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
};

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

/* H for a message: "cbtfs prune (pid 1234 on web1, since 2026-12-03
 * 12:03:04 UTC)", or "another cbtfs process" and what H says. */
extern void store_holder_describe (const struct store_holder *h, char *buf,
                                   size_t len)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_CHAIN_STORE_HOLDER_H */
