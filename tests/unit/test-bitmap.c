/* Unit test: in-memory bitmaps and XAPI's MSB-first CBT bitmaps. */
#include <stdint.h>
#include <stdlib.h>

#include "chain/bitmap.h"
#include "common/error.h"
#include "common/util.h"
#include "check.h"

static void
test_basic (void)
{
  struct bitmap bm;

  CHECK (bitmap_init (&bm, 130) == 0);
  CHECK (bitmap_count (&bm) == 0);
  CHECK (bitmap_next_set (&bm, 0) == 130);
  bitmap_set (&bm, 0);
  bitmap_set (&bm, 63);
  bitmap_set (&bm, 64);
  bitmap_set (&bm, 129);
  CHECK (bitmap_get (&bm, 63) && bitmap_get (&bm, 64) && !bitmap_get (&bm, 65));
  CHECK (!bitmap_get (&bm, 500));       /* past the end reads clear */
  CHECK (bitmap_count (&bm) == 4);
  CHECK (bitmap_next_set (&bm, 1) == 63);
  CHECK (bitmap_next_set (&bm, 65) == 129);
  CHECK (bitmap_next_set (&bm, 130) == 130);
  bitmap_set_all (&bm);
  CHECK (bitmap_count (&bm) == 130);    /* no bits past the end */
  CHECK (bitmap_next_set (&bm, 129) == 129);
  bitmap_free (&bm);
  bitmap_free (&bm);                    /* idempotent */
}

static void
test_decode_order (void)
{
  struct bitmap bm;
  /* The CBT guide's example: 01100000 marks the 2nd and 3rd blocks. */
  const uint8_t guide[] = { 0x60 };
  const uint8_t two[] = { 0x01, 0x80 };

  CHECK (cbt_bitmap_decode (guide, 1, 8, &bm) == 0);
  CHECK (bitmap_count (&bm) == 2 && bitmap_get (&bm, 1) && bitmap_get (&bm, 2));
  bitmap_free (&bm);

  CHECK (cbt_bitmap_decode (two, 2, 16, &bm) == 0);
  CHECK (bitmap_count (&bm) == 2 && bitmap_get (&bm, 7) && bitmap_get (&bm, 8));
  bitmap_free (&bm);
}

static void
test_decode_padding_and_length (void)
{
  struct bitmap bm;
  const uint8_t pad[] = { 0x00, 0xff };
  uint8_t out[2];

  /* 10 blocks in 2 bytes: the last 6 bits are padding and ignored. */
  CHECK (cbt_bitmap_decode (pad, 2, 10, &bm) == 0);
  CHECK (bm.nbits == 10 && bitmap_count (&bm) == 2);
  CHECK (bitmap_get (&bm, 8) && bitmap_get (&bm, 9));
  cbt_bitmap_encode (&bm, out);
  CHECK (out[0] == 0x00 && out[1] == 0xc0);     /* padding written clear */
  bitmap_free (&bm);

  CHECK_FAILS (cbt_bitmap_decode (pad, 1, 10, &bm), EPROTO, "expected 2");
  CHECK_FAILS (cbt_bitmap_decode (pad, 2, 8, &bm), EPROTO, "is 2 bytes");
  CHECK (cbt_bitmap_decode (pad, 0, 0, &bm) == 0 && bm.nbits == 0);
  bitmap_free (&bm);
  CHECK (cbt_bitmap_bytes (0) == 0 && cbt_bitmap_bytes (1) == 1
         && cbt_bitmap_bytes (8) == 1 && cbt_bitmap_bytes (9) == 2);
}

static void
test_roundtrip (void)
{
  struct bitmap a, b;
  uint64_t n = 1000, i;
  uint8_t buf[125];

  CHECK (bitmap_init (&a, n) == 0);
  for (i = 0; i < n; i += 7)
    bitmap_set (&a, i);
  cbt_bitmap_encode (&a, buf);
  CHECK (cbt_bitmap_decode (buf, sizeof buf, n, &b) == 0);
  for (i = 0; i < n; i++)
    CHECK (bitmap_get (&a, i) == bitmap_get (&b, i));
  bitmap_free (&a);
  bitmap_free (&b);
}

static void
test_base64 (void)
{
  size_t len;
  uint8_t *p = base64_decode ("YA==", &len);

  CHECK (p && len == 1 && p[0] == 0x60);
  free (p);
  p = base64_decode ("AYA=\n", &len);
  CHECK (p && len == 2 && p[0] == 0x01 && p[1] == 0x80);
  free (p);
  p = base64_decode ("", &len);
  CHECK (p && len == 0);
  free (p);
  CHECK (base64_decode ("Y*==", &len) == NULL && errno == EINVAL);
}

int
main (void)
{
  test_basic ();
  test_decode_order ();
  test_decode_padding_and_length ();
  test_roundtrip ();
  test_base64 ();
  return 0;
}
