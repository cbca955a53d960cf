/* cbtfs: a layer's manifest (FORMAT.md): what a layer is, as text.
 *
 * Lines "key value" after "cbtfs-layer 1", ending with a check line
 * (XXH3-64 of everything before it), so that damage is seen rather than
 * silently changing what a layer claims to be.  Pure: no I/O.
 */
#ifndef CBTFS_CHAIN_LAYER_META_H
#define CBTFS_CHAIN_LAYER_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"

/* What the manifest says; strings owned by the struct. */
struct layer_meta {
  char snapshot[UUID_LEN + 1];  /* this point's snapshot VDI */
  char disk[UUID_LEN + 1];      /* the live VDI it was taken of */
  char chain[UUID_LEN + 1];     /* the baseline snapshot of its CBT set */
  char parent[UUID_LEN + 1];    /* the previous snapshot, "" for a baseline */
  char vm[UUID_LEN + 1];        /* the VM the disk belonged to, or "" */
  uint64_t seq;                 /* order among the disk's layers, from 1 */
  int64_t time;                 /* snapshot time, UTC seconds */
  uint64_t size;                /* virtual size in bytes */
  bool full;                    /* every block is in the set (a baseline) */
  bool lazy;                    /* filled on demand, not by the backup */
  char *vm_name;                /* names at backup time, any bytes but NUL */
  char *disk_name;
  char userdevice[16];          /* the VBD's device number, "0", "1", … */
};

/* A baseline starts a chain.  It holds every block ("blocks all"), or
 * only those the host said hold data: then the rest reads as zeros. */
static inline bool
layer_is_baseline (const struct layer_meta *m)
{
  return m->parent[0] == '\0';
}

/* Parse a manifest: fills *META (caller clears).  0, or -1 with err_*
 * and errno EPROTO. */
extern int layer_meta_parse (const char *text, size_t len,
                             struct layer_meta *meta)
  __attribute__ ((__nonnull__ (1, 3)));

/* Format META as a manifest; malloc'd text (caller frees) or NULL. */
extern char *layer_meta_format (const struct layer_meta *meta)
  __attribute__ ((__nonnull__ (1)));

/* Free the strings of META. */
extern void layer_meta_clear (struct layer_meta *meta)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_CHAIN_LAYER_META_H */
