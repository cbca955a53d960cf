/* cbtfs: pinning an NBD server's TLS certificate, which libnbd 1.14
 * cannot do on a socket we connected ourselves.
 *
 * libnbd checks the server's certificate only when the handle has a
 * host name (lib/crypto.c), and nbd_aio_connect_socket sets none, so
 * any key would be accepted.  The executable therefore defines
 * gnutls_handshake: the dynamic linker binds libnbd's call (and
 * libcurl's) to it, it calls GnuTLS's own, and when a handshake
 * completes on a thread that armed a pin, it compares the server's
 * public key with the pinned certificate's.  On a mismatch it fails
 * the handshake with a fatal GnuTLS error, so libnbd's state machine
 * dies before it sends NBD_OPT_EXPORT_NAME (which carries a session).
 * Handshakes on threads without a pin (libcurl's XAPI calls) pass
 * straight through.  Only the public key is compared, as XenServer's
 * CBT guide suggests: a host that renews its certificate with the same
 * key still matches, a certificate with the same names and another key
 * does not.
 *
 * Why this rather than the other ways (docs/xapi-nbd.md, "Pinning the
 * certificate with libnbd 1.14"): a TLS relay thread in front of libnbd
 * would cost a copy and a thread hop for every byte read; this costs
 * one thread-local test per call of gnutls_handshake and one key
 * comparison per connection.  What it relies on (symbol interposition
 * from the executable) is checked at run time: tlspin_active, and
 * tlspin_disarm's result for every connection.
 *
 * Thread model: the pin is per thread.  A thread arms it, drives its
 * libnbd handle through the handshake itself (nbd_aio_connect_socket
 * and nbd_poll run libnbd's state machine, and so gnutls_handshake, in
 * the calling thread), then disarms it.  GnuTLS's function is looked
 * up once (pthread_once).  No locks.
 */
#ifndef CBTFS_CHAIN_TLSPIN_H
#define CBTFS_CHAIN_TLSPIN_H

#include <stdbool.h>

/* What the handshakes completed on a thread while it was armed showed. */
enum tlspin_result {
  TLSPIN_UNCHECKED = 0,         /* no handshake completed (or none reached us) */
  TLSPIN_MATCHED = 1,           /* the server holds the pinned key */
  TLSPIN_NO_CERT = 2,           /* the server showed no usable certificate */
  TLSPIN_MISMATCH = 3,          /* the server's key is another one */
  TLSPIN_REFUSED = 4,           /* GnuTLS's own verification refused it */
};

/* True if the dynamic linker resolves gnutls_handshake to tlspin's, so
 * that libraries' handshakes are checked; false means pinning cannot
 * work in this process (the caller must refuse to connect). */
extern bool tlspin_active (void);

/* Pin the calling thread's TLS handshakes to the public key of the
 * first certificate in PEM, until tlspin_disarm.  0, or -1 with err_*
 * (EKEYREJECTED: PEM holds no certificate GnuTLS can read). */
extern int tlspin_arm (const char *pem)
  __attribute__ ((__nonnull__ (1)));

/* Stop pinning on the calling thread and say what it saw (a mismatch
 * sticks even if a later handshake matched).  No-op result
 * TLSPIN_UNCHECKED if not armed. */
extern enum tlspin_result tlspin_disarm (void);

#endif /* CBTFS_CHAIN_TLSPIN_H */
