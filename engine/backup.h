/* cbtfs engine: backing up VMs into a store.
 *
 * Per VM: look at what the store has for each disk (finishing layers a
 * crashed or failed run left incomplete), take one VM.snapshot so all
 * disks share a point in time, describe a layer per disk (its changed
 * set from VDI.list_changed_blocks, or the blocks with data for a
 * baseline), destroy the VM snapshot object, copy the blocks over NBD,
 * and only when a layer is complete (and, with verify, equal to the
 * host's VDI.checksum) reduce its snapshot to CBT metadata, and then
 * destroy the disk's older metadata snapshots of this store
 * (hostclean.h), so the host keeps one per disk.
 *
 * Several VMs are backed up at once (jobs), each with a session of its
 * own; together they never use more than XenServer's 16 NBD
 * connections per host (copy.conns caps one copy), and a copy waits
 * for a connection rather than failing.
 *
 * Thread model: engine_backup is called from one thread; it starts the
 * jobs' threads (backup.c) and joins them all before returning.
 */
#ifndef CBTFS_ENGINE_BACKUP_H
#define CBTFS_ENGINE_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../chain/copy.h"
#include "session.h"

struct engine_backup_opts {
  struct copy_opts copy;        /* each disk's copy; label is set per disk */
  bool no_copy;                 /* describe layers only (lazy) */
  bool verify;                  /* compare with VDI.checksum before
                                   data_destroy */
  char *const *vms;             /* --vm: names or uuids; none means all */
  size_t nvms;
  char *const *exclude;         /* --exclude-disk: VDI name_labels or uuids
                                   of disks neither kept nor copied */
  size_t nexclude;
  unsigned jobs;                /* VMs backed up at once (>= 1) */
  uint64_t rate;                /* bytes per second over every NBD read of
                                   the run, 0 for no limit */
  double lock_wait;             /* seconds to wait for the store's lock
                                   while another process holds it
                                   (store_lock), 0 for not at all */
};

/* Back up the VMs O selects from the pool SERVER names into the store
 * at STORE (created if need be).  Every problem with a disk or VM is
 * logged as it happens.  0 when every disk was backed up, 1 when some
 * were not, or -1 with err_* when the run could not start (the store
 * stayed locked for O->lock_wait seconds or is unusable, login failed,
 * a --vm names no VM). */
extern int engine_backup (const char *store, const struct engine_server *server,
                          const struct engine_backup_opts *o)
  __attribute__ ((__nonnull__ (1, 2, 3)));

#endif /* CBTFS_ENGINE_BACKUP_H */
