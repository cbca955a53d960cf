/* Unit tests: the head of a VHD export (xapi/vhd.c).  The heads are
 * built here from the layout in docs/vhd-export.md ("The stream", "The
 * fields cbtfs reads and checks"), independently of the parser. */
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "common/error.h"
#include "xapi/vhd.h"

#define MiB (1024 * 1024)
#define BS (2 * MiB)

static void
put32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void
put64 (uint8_t *p, uint64_t v)
{
  put32 (p, v >> 32);
  put32 (p + 4, v);
}

static void
sum (uint8_t *p, size_t len, size_t at)
{
  uint32_t s = 0;

  put32 (p + at, 0);
  for (size_t i = 0; i < len; i++)
    s += p[i];
  put32 (p + at, ~s);
}

/* A head as XAPI streams it: footer, header, gap, BAT (N entries, the
 * blocks in ALLOC allocated), padded to 512.  Returns its length. */
static size_t
make_head (uint8_t *buf, uint64_t size, const uint32_t *alloc, size_t nalloc)
{
  uint32_t n = (size + BS - 1) / BS;
  size_t bat = ((size_t) n * 4 + 511) & ~(size_t) 511;
  uint8_t *f = buf, *h = buf + 512;

  memset (buf, 0, 2048 + bat);
  memcpy (f, "conectix", 8);
  put32 (f + 8, 2);
  put32 (f + 12, 0x00010000);
  put64 (f + 16, 512);
  memcpy (f + 28, "caml", 4);
  put64 (f + 40, size);
  put64 (f + 48, size);
  put32 (f + 60, 3);
  sum (f, 512, 64);
  memcpy (h, "cxsparse", 8);
  put64 (h + 8, UINT64_MAX);
  put64 (h + 16, 2048);
  put32 (h + 24, 0x00010000);
  put32 (h + 28, n);
  put32 (h + 32, BS);
  sum (h, 1024, 36);
  memset (buf + 2048, 0xff, bat);
  for (size_t k = 0; k < nalloc; k++)
    put32 (buf + 2048 + 4 * alloc[k], (2048 + bat) / 512 + k * 4097);
  return 2048 + bat;
}

static uint8_t buf[2048 + 8192];

static void
test_parse (void)
{
  const uint32_t alloc[] = { 0, 7, 19 };
  uint64_t size = 40 * MiB + 64 * 1024;   /* 21 blocks, the last partial */
  size_t len = make_head (buf, size, alloc, 3), need;
  struct vhd_head h;

  CHECK (vhd_head_need (buf, 100, 1 << 20, &need) == 0 && need == 1536);
  CHECK (vhd_head_need (buf, 1535, 1 << 20, &need) == 0 && need == 1536);
  CHECK (vhd_head_need (buf, 1536, 1 << 20, &need) == 0 && need == len);
  CHECK (vhd_head_parse (buf, len, size, &h) == 0);
  CHECK (h.nentries == 21 && h.block_size == BS && h.current_size == size);
  for (uint32_t i = 0; i < 21; i++)
    CHECK (vhd_allocated (&h, i) == (i == 0 || i == 7 || i == 19));

  /* A raw SR reports the size rounded up to whole blocks. */
  CHECK (vhd_head_parse (buf, len, size - 512, &h) == 0);
  CHECK_FAILS (vhd_head_parse (buf, len, size + 512, &h), EPROTO,
               "XAPI says");
  CHECK_FAILS (vhd_head_parse (buf, len, size - BS, &h), EPROTO,
               "XAPI says");
  CHECK_FAILS (vhd_head_parse (buf, len - 1, size, &h), EPROTO,
               "ends inside its head");
  CHECK_FAILS (vhd_head_need (buf, 1536, len - 1, &need), EPROTO,
               "out of range");
}

/* Change one byte of the head: refused, or (when the checksum is fixed
 * up) refused for what the field means. */
static void
test_damage (void)
{
  const uint32_t alloc[] = { 1 };
  uint64_t size = 8 * MiB;
  size_t len;
  struct vhd_head h;

  len = make_head (buf, size, alloc, 1);
  buf[3] ^= 1;
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO, "footer cookie");
  len = make_head (buf, size, alloc, 1);
  buf[100] ^= 1;
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO,
               "footer checksum");
  len = make_head (buf, size, alloc, 1);
  buf[512 + 200] ^= 1;
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO,
               "header checksum");

  len = make_head (buf, size, alloc, 1);
  put32 (buf + 60, 4);                  /* differencing */
  sum (buf, 512, 64);
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO, "not dynamic");
  len = make_head (buf, size, alloc, 1);
  put32 (buf + 512 + 28, 5);            /* entries for 10 MiB */
  sum (buf + 512, 1024, 36);
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO, "entries");
  len = make_head (buf, size, alloc, 1);
  put32 (buf + 512 + 32, 3 * MiB);
  sum (buf + 512, 1024, 36);
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO, "power of 2");
  len = make_head (buf, size, alloc, 1);
  put64 (buf + 512 + 16, 1024);         /* BAT inside the header */
  sum (buf + 512, 1024, 36);
  CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO, "out of range");
  len = make_head (buf, size, alloc, 1);
  put32 (buf + 512 + 28, UINT32_MAX);   /* a 16 GiB table */
  sum (buf + 512, 1024, 36);
  CHECK_FAILS (vhd_head_need (buf, len, 64 << 20, &len), EPROTO,
               "out of range");
}

/* A table offset so large that offset + table length wraps past 2^64
 * must not pass as a short head: the table would then be read from
 * before the buffer and taken for an allocation map. */
static void
test_wrap (void)
{
  const uint32_t alloc[] = { 1 };
  const struct { uint64_t table; uint32_t entries; } c[] = {
    { UINT64_MAX - 511, 4 },            /* a 512-byte table ending at 0 */
    { UINT64_MAX - 255, 4 },            /* ... at 256 */
    { UINT64_MAX, 4 },                  /* ... at 511 */
    { UINT64_MAX - (UINT64_C (8) << 30) + 1, UINT32_MAX }, /* 16 GiB */
  };
  uint64_t size = 8 * MiB;              /* 4 entries */
  size_t len, need;
  struct vhd_head h;

  for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
    len = make_head (buf, size, alloc, 1);
    put64 (buf + 512 + 16, c[k].table);
    put32 (buf + 512 + 28, c[k].entries);
    sum (buf + 512, 1024, 36);
    CHECK_FAILS (vhd_head_need (buf, len, 64 << 20, &need), EPROTO,
                 "out of range");
    CHECK_FAILS (vhd_head_need (buf, len, SIZE_MAX, &need), EPROTO,
                 "out of range");
    CHECK_FAILS (vhd_head_parse (buf, len, size, &h), EPROTO,
                 "out of range");
  }
}

/* The writer (xapi/vhd-stream.c): its head is what make_head builds
 * (the same layout, BAT entries and all) apart from the creator and
 * CHS fields, the parser takes it, and the bitmap of a partial last
 * block marks only the sectors within the disk. */
static void
test_write (void)
{
  static uint8_t mine[2048 + 8192], ref[2048 + 8192], bm[512];
  const uint64_t size = 6 * MiB + 65536;        /* 4 blocks, the last 64 KiB */
  const bool inc[4] = { true, false, true, true };
  const uint32_t alloc[] = { 0, 2, 3 };
  const uint8_t uid[16] = { 1, 2, 3 };
  struct vhd_head h;
  size_t len = vhd_stream_head_len (size);

  CHECK (len == 2048 + 512);
  CHECK (vhd_stream_len (size, 3) == len + 3 * (512 + BS) + 512);
  vhd_stream_head (mine, size, uid, inc);
  CHECK (make_head (ref, size, alloc, 3) == len);
  CHECK (memcmp (mine + 512, ref + 512, len - 512) == 0);     /* header, BAT */
  CHECK (memcmp (mine, "conectix", 8) == 0 && memcmp (mine + 68, uid, 16) == 0);
  CHECK (vhd_head_parse (mine, len, size, &h) == 0);
  CHECK (h.nentries == 4 && h.current_size == size && h.block_size == BS);
  for (uint32_t i = 0; i < 4; i++)
    CHECK (vhd_allocated (&h, i) == inc[i]);
  vhd_stream_footer (ref, size, uid);
  CHECK (memcmp (mine, ref, 512) == 0);
  vhd_stream_bitmap (bm, size, 0);
  CHECK (bm[0] == 0xFF && bm[511] == 0xFF);
  vhd_stream_bitmap (bm, size, 3);               /* 128 sectors */
  CHECK (bm[15] == 0xFF && bm[16] == 0 && bm[511] == 0);
  vhd_stream_bitmap (bm, 6 * MiB + 1536, 3);     /* 3 sectors */
  CHECK (bm[0] == 0xE0 && bm[1] == 0);
}

int
main (void)
{
  test_parse ();
  test_damage ();
  test_wrap ();
  test_write ();
  printf ("test-vhd: ok\n");
  return 0;
}
