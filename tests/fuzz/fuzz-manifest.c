/* Fuzz target: layer manifests read from the store, alone and as a
 * disk's manifests file of copies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chain/layer-meta.h"
#include "chain/manifests.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Every copy the splitter finds lies inside the file, and it always
 * moves forward. */
static void
split_copies (const char *buf, size_t len)
{
  size_t pos = 0, last = 0;
  const char *text;
  size_t tlen;

  while (manifests_next (buf, len, &pos, &text, &tlen)) {
    struct layer_meta m;
    if (text < buf || text + tlen > buf + len || pos <= last || pos > len)
      abort ();
    last = pos;
    if (layer_meta_parse (text, tlen, &m) == 0)
      layer_meta_clear (&m);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct layer_meta m;

  split_copies ((const char *) data, size);

  if (layer_meta_parse ((const char *) data, size, &m) == 0) {
    /* What parses must format back to something that parses the same. */
    char *text = layer_meta_format (&m);
    struct layer_meta m2;
    if (text == NULL || layer_meta_parse (text, strlen (text), &m2) == -1)
      abort ();
    if (strcmp (m.snapshot, m2.snapshot) || m.size != m2.size
        || m.seq != m2.seq || strcmp (m.vm_name, m2.vm_name)
        || strcmp (m.disk_name, m2.disk_name) || m.lazy != m2.lazy)
      abort ();
    layer_meta_clear (&m2);
    free (text);
    layer_meta_clear (&m);
  }
  return 0;
}
