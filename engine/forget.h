/* cbtfs engine: forget, removing from a store every point of a VM (or
 * of one of its disks) that is no longer backed up: a decommissioned
 * machine's whole chains, and their snapshots on the host.
 *
 * No layer is merged: every point of a disk goes, so no point that
 * stays depends on one that goes.  Within a disk the newest point goes
 * first, each with store_layer_remove (atomic, durable), so a crash
 * part way leaves the disk's remaining points readable: every parent
 * of a point that is still listed is still there.  The next forget
 * finishes.
 *
 * With a server, the host is asked first whether the VM and its disks
 * (or, with a disk named, that disk) are really gone (VM.get_by_uuid,
 * VDI.get_by_uuid answering UUID_INVALID); if not, nothing is touched.
 * Then, before each point's layer goes, its snapshot VDI is destroyed
 * on the host if it is still there and no VBD connects it to a VM
 * (destroying it would take that VBD along): the store is dropping the
 * point, so its data, if any, is no longer needed, and only the
 * snapshots of this store's own layers are ever touched.  The host
 * goes first so that a crash between the two leaves a layer whose
 * snapshot is gone (the next forget simply removes it), never a
 * snapshot no layer names any more.  A snapshot that cannot be
 * destroyed is named in one warning and its point still goes.
 *
 * Thread model: no shared state; one thread; the session is used from
 * it alone.
 */
#ifndef CBTFS_ENGINE_FORGET_H
#define CBTFS_ENGINE_FORGET_H

#include <stdbool.h>
#include <stddef.h>

#include "../chain/catalog.h"
#include "session.h"

/* What became of a point's snapshot on the host. */
enum engine_forget_host {
  FORGET_HOST_UNASKED = 0,      /* no server, or not reached yet */
  FORGET_HOST_DESTROYED,        /* VDI.destroy'd by this forget */
  FORGET_HOST_GONE,             /* not on the host (already destroyed) */
  FORGET_HOST_KEPT,             /* still there: a VBD uses it, or the
                                 * host refused (a warning says which) */
};

struct engine_forget_point {
  const char *snapshot;         /* the layer's name (borrowed) */
  const struct catalog_point *point; /* borrowed; NULL for a layer the
                                 * catalog left out (damaged: logged) */
  enum engine_forget_host host;
  bool removed;                 /* its layer is gone from the store */
};

struct engine_forget_disk {
  const struct catalog_disk *disk;      /* borrowed from the catalog */
  struct engine_forget_point *points;   /* in removal order: the layers
                                         * the catalog left out, then
                                         * the points newest first */
  size_t npoints;
};

struct engine_forget_plan {
  const struct catalog_vm *vm;          /* borrowed from the catalog */
  struct engine_forget_disk *disks;     /* the VM's disks, or the one
                                         * named */
  size_t ndisks;
  size_t npoints;                       /* over all disks */
  /* Filled by engine_forget_run. */
  size_t removed;                       /* layers removed */
  size_t destroyed, gone, kept;         /* snapshots, by their fate */
};

/* A forget of one store: the store, its catalog and the plan. */
struct engine_forget;

/* Open the store at PATH and plan the forgetting of VM (its folder
 * name in the tree or its uuid) or, if DISK is not NULL, of DISK (a
 * folder name under VM or the live VDI's uuid).  With LOCK, take the
 * store's lock first (store_lock: one backup, forget or prune at a
 * time), as engine_forget_run needs, waiting up to LOCK_WAIT seconds
 * while another process holds it.  *OUT (engine_forget_close) or -1
 * with err_*: errno ENOENT when VM or DISK names nothing in the store,
 * or the VM has no points left (the message says which), EINVAL when
 * VM names more than one VM, EWOULDBLOCK when another process held the
 * lock all that time (the message names it). */
extern int engine_forget_open (const char *path, bool lock, double lock_wait,
                               const char *vm, const char *disk,
                               struct engine_forget **out)
  __attribute__ ((__nonnull__ (1, 4, 6)));

/* The plan of F (borrowed from F). */
extern const struct engine_forget_plan *
engine_forget_plan (const struct engine_forget *f)
  __attribute__ ((__nonnull__ (1)));

/* Called after each layer is removed (the plan shows what happened on
 * the host); OPAQUE is the caller's. */
typedef void (*engine_forget_cb) (void *opaque,
                                  const struct engine_forget_disk *d,
                                  const struct engine_forget_point *p);

/* Carry out F's plan (opened with LOCK): with SERVER (NULL: the store
 * alone, and one warning says that the host's snapshots stay), check
 * the host first and destroy the points' snapshots as forget.h's
 * header says; remove every layer, newest first per disk, calling CB
 * after each.  0 when every layer went; 1 when some did not (each
 * logged; the disk's older points then stay too, so that what stays
 * reads); -1 with err_* when nothing was removed because the run could
 * not start (login), or errno EEXIST when the VM or a disk still
 * exists on the host. */
extern int engine_forget_run (struct engine_forget *f,
                              const struct engine_server *server,
                              engine_forget_cb cb, void *opaque)
  __attribute__ ((__nonnull__ (1)));

/* Free F, releasing the store lock; NULL is a no-op. */
extern void engine_forget_close (struct engine_forget *f);

#endif /* CBTFS_ENGINE_FORGET_H */
