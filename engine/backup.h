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
#include "../common/util.h"
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

/* What became of one disk in a run, for reports (cli/report.c). */
enum engine_disk_result {
  ENGINE_DISK_OK,               /* this run's point is in the store */
  ENGINE_DISK_FAILED,           /* error says why */
  ENGINE_DISK_SKIPPED,          /* --exclude-disk names it */
};

struct engine_disk_report {
  char *vm_name;                /* XenServer's name_label, as it is */
  char vm_uuid[UUID_LEN + 1];
  char *disk_name;              /* NULL: the VM failed before its disks
                                   were known (error says why) */
  char disk_uuid[UUID_LEN + 1]; /* "" with disk_name NULL */
  char userdevice[16];
  enum engine_disk_result result;
  char *error;                  /* FAILED: the first problem, one line */
  char snapshot[UUID_LEN + 1];  /* the point this run made, or "" */
  bool baseline;
  bool complete;                /* that point is whole in the store */
  int64_t time;                 /* its snapshot_time */
  uint64_t bytes_read;          /* over NBD for the disk this run, older
                                   incomplete points it finished included */
  uint64_t bytes_stored;        /* what the point's layer takes in the
                                   store (cbtfs ls's stored_bytes) */
  double seconds;               /* the disk's own work: the store's scan,
                                   describing, copying, checking, reducing */
  int64_t last_complete;        /* snapshot_time of the disk's newest
                                   complete point in the store once the
                                   run is over, -1 for none */
};

/* Every disk of a run, by VM name and uuid, then device. */
struct engine_backup_report {
  struct engine_disk_report *disks;  /* owned */
  size_t ndisks;
};

/* Free what a report holds; it is empty again. */
extern void engine_backup_report_clear (struct engine_backup_report *r)
  __attribute__ ((__nonnull__ (1)));

/* Back up the VMs O selects from the pool SERVER names into the store
 * at STORE (created if need be).  Every problem with a disk or VM is
 * logged as it happens, and with REPORT (may be NULL; empty on entry,
 * the caller clears it) also kept there with what each disk's backup
 * made.  0 when every disk was backed up, 1 when some were not, or -1
 * with err_* when the run could not start (the store stayed locked for
 * O->lock_wait seconds or is unusable, login failed, a --vm names no
 * VM); the report is empty then. */
extern int engine_backup (const char *store, const struct engine_server *server,
                          const struct engine_backup_opts *o,
                          struct engine_backup_report *report)
  __attribute__ ((__nonnull__ (1, 2, 3)));

#endif /* CBTFS_ENGINE_BACKUP_H */
