/* cbtfs engine: finding points in time in a store (helpers on top of
 * chain/catalog.h, chain/verdict.h and chain/store.h).
 *
 * Thread model: no shared state; what they return belongs to the
 * caller.
 */
#ifndef CBTFS_ENGINE_POINTS_H
#define CBTFS_ENGINE_POINTS_H

#include "../chain/catalog.h"
#include "../chain/verdict.h"

/* Open the store at PATH read-only and load its catalog with FLAGS
 * (enum catalog_flags; caller frees with catalog_free); NULL with err_*. */
extern struct catalog *engine_catalog (const char *path, unsigned flags)
  __attribute__ ((__nonnull__ (1)));

/* The verdicts of disk D (chain/verdict.h) into *VS: empty if there are
 * none, or if they cannot be read (then a warning says why). */
extern void engine_load_verdicts (const struct catalog_disk *d,
                                  struct verdicts *vs)
  __attribute__ ((__nonnull__ (1, 2)));

/* The run that made DISK's point SNAPSHOT in S is done filling it
 * (store_filling_end): mounts may show it.  A failure is a warning (a
 * later lock holder clears the mark); err_* and errno stay as they
 * were, so that the run's own failure is still the one told. */
extern void engine_filling_end (struct store *s, const char *disk,
                                const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2, 3)));

/* "by-vm/VM/DISK/TIME.img": where people find point P of disk D in a
 * mount.  Malloc'd (caller frees), or NULL on ENOMEM. */
extern char *engine_point_label (const struct catalog_disk *d,
                                 const struct catalog_point *p)
  __attribute__ ((__nonnull__ (1, 2)));

/* The point POINT names in C: its snapshot uuid, or its path in the
 * mounted tree relative to the mount's root ("by-vm/VM/DISK/TIME.img",
 * "by-vm/VM/DISK/latest", "by-uuid/DISK/SNAPSHOT.img"; leading '/'
 * ignored).  *DISK (if not NULL) gets its disk.  Borrowed from C, or
 * NULL if POINT names none. */
extern struct catalog_point *engine_point_find (const struct catalog *c,
                                                const char *point,
                                                struct catalog_disk **disk)
  __attribute__ ((__nonnull__ (1, 2)));

/* Whether VM is named by NAME: its folder name in the tree, or its uuid
 * in either case (XenServer writes them lowercase, people may not). */
extern bool engine_vm_named (const struct catalog_vm *vm, const char *name)
  __attribute__ ((__nonnull__ (1, 2)));

/* The same for disk D: its folder name under its VM, or its uuid. */
extern bool engine_disk_named (const struct catalog_disk *d,
                               const char *name)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_ENGINE_POINTS_H */
