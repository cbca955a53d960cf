/* Fuzz target: layer manifests read from the store. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chain/layer.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct layer_meta m;

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
