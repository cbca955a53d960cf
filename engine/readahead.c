/* cbtfs engine: a point's image read ahead, for streaming it.
 *
 * Thread model: see readahead.h.  The ring: NBUF slots of CHUNK bytes;
 * the reader fills slot (filled % NBUF) while filled - taken < NBUF,
 * the caller empties slot (taken % NBUF).  Both counters change under
 * the mutex only; a slot's bytes are touched by one side at a time (the
 * reader before it counts the slot filled, the caller before it counts
 * it taken).
 */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "../chain/read.h"
#include "../common/error.h"
#include "../common/util.h"
#include "readahead.h"

enum { NBUF = 4, CHUNK = 2 << 20 };

struct readahead {
  struct layer *top;
  struct fetcher *f;
  uint64_t length, size;        /* the stream's, the point's */
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t more, room;    /* a slot filled, a slot taken */
  uint8_t *buf[NBUF];
  size_t len[NBUF];             /* bytes in each filled slot */
  uint64_t filled, taken;       /* slots, ever */
  size_t pos;                   /* into the slot being taken */
  bool stop, failed, done;
  char why[1024];               /* the reader's error, when failed */
  int why_errno;
  gnutls_hash_hd_t md5;
};

static void *
reader (void *opaque)
{
  struct readahead *ra = opaque;
  uint64_t off = 0;

  while (off < ra->length) {
    size_t n = MIN ((uint64_t) CHUNK, ra->length - off), part = 0;
    uint8_t *b;
    bool stop;
    int r = 0;

    pthread_mutex_lock (&ra->lock);
    while (!ra->stop && ra->filled - ra->taken == NBUF)
      pthread_cond_wait (&ra->room, &ra->lock);
    b = ra->buf[ra->filled % NBUF];
    stop = ra->stop;
    pthread_mutex_unlock (&ra->lock);
    if (stop)
      break;
    if (off < ra->size) {
      part = MIN ((uint64_t) n, ra->size - off);
      r = chain_read (ra->top, b, part, off, ra->f);
    }
    pthread_mutex_lock (&ra->lock);
    if (r == -1) {
      snprintf (ra->why, sizeof ra->why, "%s", err_get ());
      ra->why_errno = errno;
      ra->failed = true;
      pthread_cond_broadcast (&ra->more);
      pthread_mutex_unlock (&ra->lock);
      return NULL;
    }
    pthread_mutex_unlock (&ra->lock);
    memset (b + part, 0, n - part);
    gnutls_hash (ra->md5, b, n);
    pthread_mutex_lock (&ra->lock);
    ra->len[ra->filled % NBUF] = n;
    ra->filled++;
    pthread_cond_broadcast (&ra->more);
    pthread_mutex_unlock (&ra->lock);
    off += n;
  }
  pthread_mutex_lock (&ra->lock);
  ra->done = off == ra->length;
  pthread_mutex_unlock (&ra->lock);
  return NULL;
}

struct readahead *
readahead_new (struct layer *top, struct fetcher *f, uint64_t length)
{
  struct readahead *ra = calloc (1, sizeof *ra);
  int e;

  if (ra == NULL)
    goto err_oom;
  ra->top = top;
  ra->f = f;
  ra->length = length;
  ra->size = layer_meta (top)->size;
  for (int i = 0; i < NBUF; i++)
    if ((ra->buf[i] = malloc (CHUNK)) == NULL)
      goto err_oom;
  if (gnutls_hash_init (&ra->md5, GNUTLS_DIG_MD5) < 0) {
    err_set (ENOTSUP, "md5 is not available");
    goto err;
  }
  pthread_mutex_init (&ra->lock, NULL);
  pthread_cond_init (&ra->more, NULL);
  pthread_cond_init (&ra->room, NULL);
  if ((e = pthread_create (&ra->thread, NULL, reader, ra)) != 0) {
    err_sys (e, "cannot start a reader thread");
    gnutls_hash_deinit (ra->md5, NULL);
    pthread_mutex_destroy (&ra->lock);
    pthread_cond_destroy (&ra->more);
    pthread_cond_destroy (&ra->room);
    goto err;
  }
  return ra;

 err_oom:
  err_set (ENOMEM, "out of memory");
 err:
  if (ra)
    for (int i = 0; i < NBUF; i++)
      free (ra->buf[i]);
  free (ra);
  return NULL;
}

int
readahead_take (struct readahead *ra, void *buf, size_t len)
{
  uint8_t *out = buf;

  while (len > 0) {
    size_t slot, n;

    pthread_mutex_lock (&ra->lock);
    while (ra->filled == ra->taken && !ra->failed)
      pthread_cond_wait (&ra->more, &ra->lock);
    if (ra->filled == ra->taken) {
      err_set (ra->why_errno ? ra->why_errno : EIO, "%s", ra->why);
      pthread_mutex_unlock (&ra->lock);
      return -1;
    }
    slot = ra->taken % NBUF;
    pthread_mutex_unlock (&ra->lock);
    n = MIN (len, ra->len[slot] - ra->pos);
    if (out) {
      memcpy (out, ra->buf[slot] + ra->pos, n);
      out += n;
    }
    len -= n;
    ra->pos += n;
    if (ra->pos == ra->len[slot]) {
      ra->pos = 0;
      pthread_mutex_lock (&ra->lock);
      ra->taken++;
      pthread_cond_signal (&ra->room);
      pthread_mutex_unlock (&ra->lock);
    }
  }
  return 0;
}

int
readahead_free (struct readahead *ra, char *hex)
{
  unsigned char md5[16];
  bool whole;

  if (ra == NULL)
    return -1;
  pthread_mutex_lock (&ra->lock);
  ra->stop = true;
  pthread_cond_broadcast (&ra->room);
  pthread_mutex_unlock (&ra->lock);
  pthread_join (ra->thread, NULL);
  whole = ra->done && !ra->failed;
  gnutls_hash_deinit (ra->md5, md5);
  if (hex && whole) {
    for (int i = 0; i < 16; i++) {
      hex[2 * i] = "0123456789abcdef"[md5[i] >> 4];
      hex[2 * i + 1] = "0123456789abcdef"[md5[i] & 15];
    }
    hex[32] = '\0';
  }
  pthread_mutex_destroy (&ra->lock);
  pthread_cond_destroy (&ra->more);
  pthread_cond_destroy (&ra->room);
  for (int i = 0; i < NBUF; i++)
    free (ra->buf[i]);
  free (ra);
  return whole ? 0 : -1;
}
