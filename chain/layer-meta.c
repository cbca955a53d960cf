/* cbtfs: a layer's manifest: parse and format (layer-meta.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "../common/error.h"
#include "../common/util.h"
#include "layer-meta.h"

/* Names may hold any byte but NUL; the manifest is line-based, so
 * control bytes, space, '%' and DEL are written as %XX. */
static int
pct_encode (FILE *f, const char *s)
{
  for (; *s; s++) {
    unsigned char c = *s;
    if (c <= 0x20 || c == 0x7f || c == '%') {
      if (fprintf (f, "%%%02X", c) < 0)
        return -1;
    }
    else if (fputc (c, f) == EOF)
      return -1;
  }
  return 0;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static char *
pct_decode (const char *s, size_t len)
{
  char *out = malloc (len + 1), *p = out;
  size_t i;

  if (out == NULL)
    return NULL;
  for (i = 0; i < len; i++) {
    if (s[i] == '%') {
      int hi, lo;
      /* %00 would cut the name short: refuse it like any bad escape. */
      if (i + 2 >= len || (hi = hexval (s[i + 1])) < 0
          || (lo = hexval (s[i + 2])) < 0 || (hi == 0 && lo == 0)) {
        free (out);
        errno = EPROTO;
        return NULL;
      }
      *p++ = hi * 16 + lo;
      i += 2;
    }
    else
      *p++ = s[i];
  }
  *p = '\0';
  return out;
}

char *
layer_meta_format (const struct layer_meta *m)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream (&text, &len);
  int ok;

  if (f == NULL)
    return NULL;
  ok = fprintf (f, "cbtfs-layer 1\n"
                "snapshot %s\ndisk %s\nchain %s\nparent %s\nvm %s\n"
                "seq %" PRIu64 "\ntime %" PRId64 "\nsize %" PRIu64 "\n"
                "blocks %s\nfill %s\nuserdevice %s\nvm-name ",
                m->snapshot, m->disk, m->chain,
                m->parent[0] ? m->parent : "-", m->vm[0] ? m->vm : "-",
                m->seq, m->time, m->size, m->full ? "all" : "changed",
                m->lazy ? "lazy" : "eager",
                m->userdevice[0] ? m->userdevice : "-") >= 0
    && pct_encode (f, m->vm_name ? m->vm_name : "") == 0
    && fputs ("\ndisk-name ", f) >= 0
    && pct_encode (f, m->disk_name ? m->disk_name : "") == 0
    && fputs ("\n", f) >= 0;
  if (fclose (f) == EOF || !ok) {
    free (text);
    return NULL;
  }
  /* The check line makes damage to the manifest visible rather than
   * silently changing what a layer claims to be. */
  {
    char *out;
    if (asprintf (&out, "%scheck %016" PRIx64 "\n", text,
                  (uint64_t) XXH3_64bits (text, len)) == -1)
      out = NULL;
    free (text);
    return out;
  }
}

static int
parse_u64 (const char *s, size_t n, uint64_t *out)
{
  uint64_t v = 0;
  size_t i;

  if (n == 0 || n > 20)
    return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    if (v > (UINT64_MAX - (s[i] - '0')) / 10)
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

static int
copy_uuid (char dst[UUID_LEN + 1], const char *s, size_t n, bool optional)
{
  if (optional && n == 1 && s[0] == '-') {
    dst[0] = '\0';
    return 0;
  }
  if (n != UUID_LEN)
    return -1;
  memcpy (dst, s, n);
  dst[n] = '\0';
  return is_uuid (dst) ? 0 : -1;
}

int
layer_meta_parse (const char *text, size_t len, struct layer_meta *m)
{
  static const char *const keys[] = {
    "snapshot", "disk", "chain", "parent", "vm", "seq", "time", "size",
    "blocks", "userdevice", "vm-name", "disk-name", "fill",
  };
  unsigned seen = 0;
  const char *p = text, *end = text + len, *check_line = NULL;
  uint64_t v;

  memset (m, 0, sizeof *m);
  if (len < 14 || memcmp (text, "cbtfs-layer 1\n", 14) != 0) {
    err_set (EPROTO, "not a cbtfs layer manifest (format 1)");
    return -1;
  }
  for (p = text + 14; p < end;) {
    const char *nl = memchr (p, '\n', end - p), *sp, *val;
    size_t klen, vlen;
    unsigned k;

    if (nl == NULL)
      goto bad;
    sp = memchr (p, ' ', nl - p);
    if (sp == NULL)
      goto bad;
    klen = sp - p;
    val = sp + 1;
    vlen = nl - val;
    if (klen == 5 && memcmp (p, "check", 5) == 0) {
      check_line = p;
      if (nl + 1 != end || vlen != 16)
        goto bad;
      break;
    }
    for (k = 0; k < ARRAY_SIZE (keys); k++)
      if (strlen (keys[k]) == klen && memcmp (p, keys[k], klen) == 0)
        break;
    if (k == ARRAY_SIZE (keys) || (seen & (1u << k)))
      goto bad;
    seen |= 1u << k;
    switch (k) {
    case 0: if (copy_uuid (m->snapshot, val, vlen, false)) goto bad; break;
    case 1: if (copy_uuid (m->disk, val, vlen, false)) goto bad; break;
    case 2: if (copy_uuid (m->chain, val, vlen, false)) goto bad; break;
    case 3: if (copy_uuid (m->parent, val, vlen, true)) goto bad; break;
    case 4: if (copy_uuid (m->vm, val, vlen, true)) goto bad; break;
    case 5: if (parse_u64 (val, vlen, &m->seq) || m->seq == 0) goto bad; break;
    case 6:
      if (parse_u64 (val, vlen, &v) || v > INT64_MAX) goto bad;
      m->time = v;
      break;
    case 7:
      /* Sizes past 2^62 would overflow offset arithmetic elsewhere. */
      if (parse_u64 (val, vlen, &m->size) || m->size > (UINT64_C (1) << 62))
        goto bad;
      break;
    case 8:
      if (vlen == 3 && memcmp (val, "all", 3) == 0)
        m->full = true;
      else if (!(vlen == 7 && memcmp (val, "changed", 7) == 0))
        goto bad;
      break;
    case 9:
      if (vlen == 1 && val[0] == '-')
        break;
      if (vlen == 0 || vlen >= sizeof m->userdevice
          || parse_u64 (val, vlen, &v))
        goto bad;
      memcpy (m->userdevice, val, vlen);
      break;
    case 10:
      if ((m->vm_name = pct_decode (val, vlen)) == NULL) goto bad;
      break;
    case 11:
      if ((m->disk_name = pct_decode (val, vlen)) == NULL) goto bad;
      break;
    case 12:
      if (vlen == 4 && memcmp (val, "lazy", 4) == 0)
        m->lazy = true;
      else if (!(vlen == 5 && memcmp (val, "eager", 5) == 0))
        goto bad;
      break;
    }
    p = nl + 1;
  }
  if (check_line == NULL || seen != (1u << ARRAY_SIZE (keys)) - 1)
    goto bad;
  {
    char hex[17];
    snprintf (hex, sizeof hex, "%016" PRIx64,
              (uint64_t) XXH3_64bits (text, check_line - text));
    if (memcmp (hex, check_line + 6, 16) != 0) {
      layer_meta_clear (m);
      err_set (EPROTO, "layer manifest is damaged (check mismatch)");
      return -1;
    }
  }
  return 0;

 bad:
  layer_meta_clear (m);
  err_set (EPROTO, "layer manifest is malformed at byte %zu",
           (size_t) (p - text));
  return -1;
}

void
layer_meta_clear (struct layer_meta *m)
{
  free (m->vm_name);
  free (m->disk_name);
  m->vm_name = m->disk_name = NULL;
}
