/* cbtfs engine: restore's upload body (see restore-int.h).
 *
 * Thread model: see restore-int.h.  The VHD stream's layout
 * (xapi/vhd.h): the head, then for the j-th included block a 512-byte
 * sector bitmap and its 2 MiB, then the footer; offsets into it map to
 * the content by arithmetic, so any range can be produced in order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "../chain/read.h"
#include "../common/error.h"
#include "../common/util.h"
#include "../xapi/vhd.h"
#include "readahead.h"
#include "restore-int.h"

#define SECTOR 512
#define WIRE_BLOCK (SECTOR + VHD_STREAM_BLOCK)

struct restore_body {
  struct layer *top;
  struct fetcher *f;
  uint64_t size;                /* the VDI's: the content's length */
  uint64_t len;                 /* the body's */
  struct readahead *ra;         /* reads the content from 0 */
  uint64_t ra_pos;              /* content bytes taken from ra */
  uint64_t given;               /* body bytes handed out */
  bool vhd;
  uint8_t *head;                /* VHD: footer, header, BAT */
  uint64_t head_len;
  uint8_t footer[VHD_FOOTER_SIZE];
  uint32_t *blocks;             /* VHD: the included blocks, ascending */
  uint64_t nblocks;
  bool progress;
  double start, shown;
};

/* Which 2 MiB blocks of the content the point has anything in. */
static int
find_blocks (struct restore_body *b)
{
  uint64_t n = (b->size + VHD_STREAM_BLOCK - 1) / VHD_STREAM_BLOCK;
  uint64_t psize = layer_meta (b->top)->size;
  uint64_t per = VHD_STREAM_BLOCK / CHAIN_BLOCK_SIZE;
  bool *inc = calloc (n ? n : 1, sizeof *inc);
  uint8_t uid[16];

  if (inc == NULL)
    goto err_oom;
  b->blocks = malloc ((n ? n : 1) * sizeof *b->blocks);
  if (b->blocks == NULL)
    goto err_oom;
  for (uint64_t c = 0; c * CHAIN_BLOCK_SIZE < psize; c++) {
    bool broken = false;
    struct layer *l;

    if (inc[c / per])
      continue;
    /* Zeros, stored as such or in no layer, need not be sent; a block
     * that cannot be known is sent (its read then fails), as is one
     * still to be fetched. */
    l = chain_resolve (b->top, c, &broken);
    if (broken || (l && layer_block_state (l, c) != LAYER_ZERO))
      inc[c / per] = true;
  }
  for (uint64_t i = 0; i < n; i++)
    if (inc[i])
      b->blocks[b->nblocks++] = i;
  b->head_len = vhd_stream_head_len (b->size);
  b->head = malloc (b->head_len);
  if (b->head == NULL)
    goto err_oom;
  if (gnutls_rnd (GNUTLS_RND_NONCE, uid, sizeof uid) < 0) {
    err_set (EIO, "no random numbers");
    goto err;
  }
  uid[6] = (uid[6] & 0x0F) | 0x40;      /* a v4 uuid, as XAPI's */
  uid[8] = (uid[8] & 0x3F) | 0x80;
  vhd_stream_head (b->head, b->size, uid, inc);
  vhd_stream_footer (b->footer, b->size, uid);
  b->len = vhd_stream_len (b->size, b->nblocks);
  free (inc);
  return 0;

 err_oom:
  err_set (ENOMEM, "out of memory");
 err:
  free (inc);
  return -1;
}

struct restore_body *
restore_body_new (struct layer *top, struct fetcher *f, uint64_t vdi_size,
                  bool vhd, bool progress)
{
  struct restore_body *b = calloc (1, sizeof *b);

  if (b == NULL) {
    err_set (ENOMEM, "out of memory");
    return NULL;
  }
  b->top = top;
  b->f = f;
  b->size = b->len = vdi_size;
  b->vhd = vhd;
  b->progress = progress;
  if ((vhd && find_blocks (b) == -1)
      || (b->ra = readahead_new (top, f, vdi_size)) == NULL) {
    restore_body_free (b);
    return NULL;
  }
  b->start = b->shown = now_monotonic ();
  return b;
}

uint64_t
restore_body_len (const struct restore_body *b)
{
  return b->len;
}

static void
show (struct restore_body *b, uint64_t done, bool last)
{
  double secs = now_monotonic () - b->start;

  fprintf (stderr, "\rrestore: %.1f of %.1f MiB (%.0f%%), %.1f MiB/s%s",
           done / 1048576.0, b->len / 1048576.0,
           b->len ? 100.0 * done / b->len : 100.0,
           secs > 0 ? done / 1048576.0 / secs : 0.0, last ? "\n" : "   ");
  b->shown = now_monotonic ();
}

/* LEN content bytes at content offset AT into BUF, passing by what lies
 * before them (still hashed). */
static int
content (struct restore_body *b, void *buf, size_t len, uint64_t at)
{
  if (at > b->ra_pos) {
    if (readahead_take (b->ra, NULL, at - b->ra_pos) == -1)
      return -1;
    b->ra_pos = at;
  }
  if (readahead_take (b->ra, buf, len) == -1)
    return -1;
  b->ra_pos += len;
  return 0;
}

/* LEN bytes of the VHD stream at OFF. */
static int
vhd_fill (struct restore_body *b, uint8_t *buf, size_t len, uint64_t off)
{
  while (len > 0) {
    uint64_t data_end = b->head_len + b->nblocks * WIRE_BLOCK;
    size_t n;

    if (off < b->head_len) {
      n = MIN ((uint64_t) len, b->head_len - off);
      memcpy (buf, b->head + off, n);
    }
    else if (off >= data_end) {
      n = MIN ((uint64_t) len, data_end + VHD_FOOTER_SIZE - off);
      memcpy (buf, b->footer + (off - data_end), n);
    }
    else {
      uint64_t j = (off - b->head_len) / WIRE_BLOCK;
      uint64_t in = (off - b->head_len) % WIRE_BLOCK;
      uint64_t start = (uint64_t) b->blocks[j] * VHD_STREAM_BLOCK;

      if (in < SECTOR) {
        uint8_t bm[SECTOR];
        vhd_stream_bitmap (bm, b->size, b->blocks[j]);
        n = MIN ((uint64_t) len, SECTOR - in);
        memcpy (buf, bm + in, n);
      }
      else {
        uint64_t at = start + in - SECTOR;
        n = MIN ((uint64_t) len, WIRE_BLOCK - in);
        /* Past the disk's end (a last partial block): zeros that the
         * bitmap marks absent. */
        if (at >= b->size)
          memset (buf, 0, n);
        else {
          size_t c = MIN ((uint64_t) n, b->size - at);
          if (content (b, buf, c, at) == -1)
            return -1;
          memset (buf + c, 0, n - c);
        }
      }
    }
    buf += n;
    off += n;
    len -= n;
  }
  return 0;
}

int
restore_body_fill (void *buf, size_t len, uint64_t off, void *opaque)
{
  struct restore_body *b = opaque;

  if (off == 0 && b->given > 0) {
    /* From the start again (after a redirect): so is the reading. */
    readahead_free (b->ra, NULL);
    b->given = b->ra_pos = 0;
    b->ra = readahead_new (b->top, b->f, b->size);
    b->start = now_monotonic ();
  }
  if (b->ra == NULL)
    return -1;
  if (b->vhd ? vhd_fill (b, buf, len, off) == -1
      : content (b, buf, len, off) == -1)
    return -1;
  b->given += len;
  if (b->progress && now_monotonic () - b->shown >= 0.5)
    show (b, off + len, false);
  return 0;
}

int
restore_body_finish (struct restore_body *b, char md5[33])
{
  int r;

  if (b->progress)
    show (b, b->len, true);
  if (b->ra_pos < b->size
      && readahead_take (b->ra, NULL, b->size - b->ra_pos) == -1)
    return -1;
  b->ra_pos = b->size;
  r = readahead_free (b->ra, md5);
  b->ra = NULL;
  if (r == -1)
    err_set (EIO, "the image was not read whole");
  return r;
}

void
restore_body_free (struct restore_body *b)
{
  if (b == NULL)
    return;
  readahead_free (b->ra, NULL);
  free (b->head);
  free (b->blocks);
  free (b);
}
