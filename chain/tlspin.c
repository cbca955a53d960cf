/* cbtfs: pinning TLS handshakes to a certificate's public key.
 *
 * Thread model: see tlspin.h.  The pin lives in thread-local storage;
 * real_handshake is written once under pthread_once and only read
 * after it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "../common/error.h"
#include "tlspin.h"

struct pin {
  bool armed;
  gnutls_datum_t key;           /* SubjectPublicKeyInfo, DER (gnutls_free) */
  enum tlspin_result result;
};

static _Thread_local struct pin pin;

static int (*real_handshake) (gnutls_session_t);
static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void
find_real (void)
{
  void *f = dlsym (RTLD_NEXT, "gnutls_handshake");

  /* Never ourselves (a copy of this file in a library after us would
   * find the executable's): that would recurse. */
  if (f != NULL && f != (void *) gnutls_handshake)
    real_handshake = (int (*) (gnutls_session_t)) f;
}

/* The DER SubjectPublicKeyInfo of certificate CERT (in FMT) into *KEY
 * (caller gnutls_frees key->data).  0, or a negative GnuTLS error. */
static int
spki_of (const gnutls_datum_t *cert, gnutls_x509_crt_fmt_t fmt,
         gnutls_datum_t *key)
{
  gnutls_x509_crt_t crt;
  gnutls_pubkey_t pub = NULL;
  int r;

  r = gnutls_x509_crt_init (&crt);
  if (r < 0)
    return r;
  if ((r = gnutls_x509_crt_import (crt, cert, fmt)) < 0
      || (r = gnutls_pubkey_init (&pub)) < 0
      || (r = gnutls_pubkey_import_x509 (pub, crt, 0)) < 0)
    goto out;
  r = gnutls_pubkey_export2 (pub, GNUTLS_X509_FMT_DER, key);
 out:
  if (pub)
    gnutls_pubkey_deinit (pub);
  gnutls_x509_crt_deinit (crt);
  return r;
}

/* Does the server of SESSION (handshake complete) hold the pinned key?
 * Completing the handshake proved it holds the private key of the
 * certificate it showed (TLS 1.2: it signed the key exchange, or
 * decrypted it with RSA key exchange; TLS 1.3: it signed the
 * transcript), so comparing that certificate's key is enough. */
static enum tlspin_result
check_peer (gnutls_session_t session)
{
  const gnutls_datum_t *peers;
  unsigned n = 0;
  gnutls_datum_t key = { NULL, 0 };
  enum tlspin_result res;

  peers = gnutls_certificate_get_peers (session, &n);
  if (peers == NULL || n == 0
      || spki_of (&peers[0], GNUTLS_X509_FMT_DER, &key) < 0)
    return TLSPIN_NO_CERT;
  res = key.size == pin.key.size && memcmp (key.data, pin.key.data,
                                            key.size) == 0
    ? TLSPIN_MATCHED : TLSPIN_MISMATCH;
  gnutls_free (key.data);
  return res;
}

static void
record (enum tlspin_result res)
{
  if (pin.result == TLSPIN_UNCHECKED || pin.result == TLSPIN_MATCHED)
    pin.result = res;
}

/* Every call of gnutls_handshake in the process lands here: see
 * tlspin.h.  A handshake refused here returns a fatal error, which
 * libnbd treats as the end of the connection. */
int
gnutls_handshake (gnutls_session_t session)
{
  enum tlspin_result res;
  int r;

  pthread_once (&real_once, find_real);
  if (real_handshake == NULL)
    return GNUTLS_E_INTERNAL_ERROR;
  r = real_handshake (session);
  if (!pin.armed)
    return r;
  /* Only with a libnbd that verifies itself (nbd_set_tls_hostname). */
  if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR
      || r == GNUTLS_E_CERTIFICATE_ERROR) {
    record (TLSPIN_REFUSED);
    return r;
  }
  if (r != 0)
    return r;                   /* not done yet (EAGAIN), or failed */
  res = check_peer (session);
  record (res);
  return res == TLSPIN_MATCHED ? 0 : GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
}

bool
tlspin_active (void)
{
  pthread_once (&real_once, find_real);
  /* The lookup libnbd's reference gets.  Not dlvsym (…, "GNUTLS_3_4"):
   * it insists on that version node, which our unversioned definition
   * lacks, so it names GnuTLS's function even though the relocation
   * of libnbd's versioned reference binds to ours (glibc accepts an
   * unversioned definition in the executable for it). */
  return real_handshake != NULL
    && dlsym (RTLD_DEFAULT, "gnutls_handshake") == (void *) gnutls_handshake;
}

int
tlspin_arm (const char *pem)
{
  gnutls_datum_t cert = { (unsigned char *) pem, strlen (pem) };
  int r;

  tlspin_disarm ();
  r = spki_of (&cert, GNUTLS_X509_FMT_PEM, &pin.key);
  if (r < 0) {
    pin.key = (gnutls_datum_t) { NULL, 0 };
    err_set (EKEYREJECTED, "cannot read the certificate to pin: %s",
             gnutls_strerror (r));
    return -1;
  }
  pin.armed = true;
  pin.result = TLSPIN_UNCHECKED;
  return 0;
}

enum tlspin_result
tlspin_disarm (void)
{
  enum tlspin_result res = pin.armed ? pin.result : TLSPIN_UNCHECKED;

  gnutls_free (pin.key.data);
  pin = (struct pin) { .armed = false };
  return res;
}
