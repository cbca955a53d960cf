/* cbtfs: what a store holds, as people browse it.
 *
 * Loads every layer of a store, links each to its parent, and names
 * things for the by-vm tree: VMs and disks by their XenServer names made
 * safe for a path, points in time by their UTC snapshot time.  Names are
 * derived from the store alone, oldest first, so they are stable: a VM
 * that later takes a name already shown gets the ".2" suffix, never the
 * VM that had it first.
 *
 * Thread model: catalog_load reads disks with a few threads of its
 * own, all joined before it returns; afterwards the catalog is
 * immutable, so any number of threads may read it (the layers inside
 * have their own locks).
 */
#ifndef CBTFS_CHAIN_CATALOG_H
#define CBTFS_CHAIN_CATALOG_H

#include <stddef.h>

#include "layer.h"
#include "store/store.h"

struct catalog_vm;

struct catalog_point {
  struct layer *layer;          /* owned by the catalog */
  char *name;                   /* "2026-11-25T18:41:24Z", "….2"; no ".img" */
};

struct catalog_disk {
  char uuid[UUID_LEN + 1];      /* the live VDI */
  char *name;                   /* folder name under its VM */
  struct catalog_vm *vm;
  struct catalog_point *points; /* oldest first */
  size_t npoints;
  int64_t since;                /* when its first point was taken (also
                                   one a prune dropped) */
};

struct catalog_vm {
  char uuid[UUID_LEN + 1];
  char *name;                   /* folder name under by-vm */
  struct catalog_disk **disks;  /* borrowed from the catalog */
  size_t ndisks;
};

struct catalog {
  struct catalog_disk *disks;   /* sorted by uuid */
  size_t ndisks;
  struct catalog_vm *vms;       /* oldest first */
  size_t nvms;
  size_t nskipped;              /* damaged layers left out (each logged) */
  struct store *own_store;      /* closed by catalog_free, or NULL */
};

/* How catalog_load reads layers. */
enum catalog_flags {
  /* Read only manifests (all that naming, linking and sizes need); a
   * layer's set and index are read when a read first needs them
   * (layer_load), and damage there is found then, not at load. */
  CATALOG_LAZY = 1,
  /* Read every layer whole, as without CATALOG_LAZY (damage is found
   * here), but keep only its counts (layer_unload): memory then grows
   * with the number of layers, not with their blocks, and a command
   * loads again the layers it works on (and unloads them after). */
  CATALOG_COUNTS = 2,
  /* Leave out the layers their backup is still filling
   * (store_filling_begin): what a mount shows. */
  CATALOG_SHOWN = 4,
};

/* Load STORE (FLAGS: enum catalog_flags), which must outlive the
 * catalog.  A damaged layer is logged
 * and left out (with CATALOG_LAZY only damaged manifests are found
 * here); points above it then fail reads of the blocks they would take
 * from it (never serve wrong data).  NULL with err_* only when the
 * store itself cannot be read. */
extern struct catalog *catalog_load (struct store *store, unsigned flags)
  __attribute__ ((__nonnull__ (1)));

/* As catalog_load, of the store WHERE opened read-only for the
 * catalog's lifetime (its layers read through it). */
extern struct catalog *catalog_open (const char *where, unsigned flags)
  __attribute__ ((__nonnull__ (1)));

/* Record in D's store the names the tree gives D's points now, and
 * when its first point was taken, so that they stay when points are
 * dropped (FORMAT.md, `names`); durable.  Needs the store lock.  0 or
 * -1 with err_*. */
extern int catalog_record_names (const struct catalog_disk *d)
  __attribute__ ((__nonnull__ (1)));

/* Free C and its layers (and the store, if catalog_open opened it);
 * NULL is a no-op.  A store given to catalog_load must outlive C. */
extern void catalog_free (struct catalog *c);

/* The point whose snapshot is SNAPSHOT, or NULL; *DISK (if not NULL)
 * gets its disk.  Borrowed from C. */
extern struct catalog_point *catalog_find (const struct catalog *c,
                                           const char *snapshot,
                                           struct catalog_disk **disk)
  __attribute__ ((__nonnull__ (1, 2)));

/* Make a XenServer name usable as one path component: '/' and control
 * characters become '_', "" becomes "unnamed", "." and ".." get a
 * leading '_', and it is cut to at most 200 bytes on a UTF-8 boundary.
 * Returns a malloc'd string or NULL. */
extern char *catalog_safe_name (const char *name);

/* Format T as "2026-11-25T18:41:24Z" into BUF (at least 32 bytes). */
extern void catalog_time_name (int64_t t, char *buf, size_t len)
  __attribute__ ((__nonnull__ (2)));

#endif /* CBTFS_CHAIN_CATALOG_H */
