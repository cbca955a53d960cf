/* cbtfs engine: what the files of one backup share (not an interface:
 * only engine/backup*.c, engine/leftovers.c and engine/vhdmap.c
 * include it).
 *
 * Thread model: a struct backup and the disks it works on belong to
 * the one thread backing up a VM.
 */
#ifndef CBTFS_ENGINE_BACKUP_INT_H
#define CBTFS_ENGINE_BACKUP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "../chain/bitmap.h"
#include "../chain/copy.h"
#include "../chain/layer.h"
#include "../chain/store/store.h"
#include "../chain/verdict.h"
#include "../common/util.h"
#include "../xapi/api.h"
#include "backup.h"
#include "targets.h"

/* VM snapshots cbtfs takes are named SNAP_NAME and the store's id, set
 * atomically with the snapshot (VM.snapshot's new_name; other_config
 * could only be set after it returns, and a crash in between would
 * leave an untagged snapshot), so that a store removes only its own
 * leftovers.  Older versions named them SNAP_NAME alone. */
#define SNAP_NAME "cbtfs backup"

struct backup_run;

/* One job's backup of VMs, one VM at a time: the store and options are
 * the run's (borrowed), the session and targets this job's own. */
struct backup {
  struct backup_run *run;       /* what the run's jobs share (backup.c) */
  struct store *store;
  const char *snap_name;        /* "cbtfs backup <store id>" */
  xapi_session *xs;
  struct engine_targets *targets;  /* NBD details through xs */
  struct copy_opts copy;
  bool no_copy;                 /* describe layers only (lazy) */
  bool verify;                  /* compare with VDI.checksum before
                                   data_destroy */
  char *const *exclude;         /* disks not to back up: names or uuids */
  size_t nexclude;
  bool *exclude_used;           /* atomic: exclude[i] named a disk (shared
                                   by the jobs) */
};

struct disk {
  char *label;                  /* "VM 'web' disk 'root' (0)", safe to print */
  char userdevice[16];
  struct xapi_vdi live;
  bool prepared;                /* its place in the store is made */
  uint64_t max_seq;
  struct layer_meta prev;       /* the newest layer, if have_prev */
  bool have_prev;
  char *prev_ref;               /* its snapshot on the host */
  bool baseline;
  char *snap_ref;
  struct xapi_vdi snap;
  struct layer *layer;          /* this run's layer */
  bool filling;                 /* its mark is set (store_filling_begin) */
  bool failed;                  /* this run's backup of the disk failed */
  bool resume_failed;           /* an earlier incomplete layer stays so */
  char *error;                  /* the first problem logged, or NULL */
  uint64_t bytes_read;          /* over NBD this run */
  double seconds;               /* spent on this disk alone */
  int64_t last_complete;        /* newest complete point's time, or -1 */
  char held[UUID_LEN + 1];      /* a point of prev's chain that failed a
                                   check (verdict.h), or "" */
  enum verdict held_as;
};

/* backup.c: wait until no other job works on any of the N disks V,
 * then mark them as this job's (two VMs may share a disk, whose folder
 * one job at a time may fill), and take them in the store
 * (store_disk_lock: no other process backs them up meanwhile); or let
 * them go.  Claiming all at once never deadlocks.  0 or -1 with err_*
 * (EWOULDBLOCK naming the process that holds one; ENOMEM). */
extern int backup_claim_disks (struct backup *b, const struct disk *v,
                               size_t n);
extern void backup_release_disks (struct backup *b, const struct disk *v,
                                  size_t n);

/* backup.c: keep in the run's report (if it has one) what became of D
 * of VM (D NULL: the VM failed before its disks were known, for the
 * reason ERROR), R; D's strings are copied.  Thread-safe. */
extern void backup_report (struct backup *b, const struct xapi_vm *vm,
                           const struct disk *d, enum engine_disk_result r,
                           const char *error);

/* backup-vm.c: log err_get () as a problem with D, and keep the first
 * one for the report. */
extern void backup_disk_error (struct disk *d);

/* backup-vm.c: back up VM; 0, or 1 when some disk failed (logged). */
extern int backup_vm (struct backup *b, const struct xapi_vm *vm);

/* backup-vm.c: fill L, a layer of D, from snapshot REF over NBD,
 * adding what it read to D's bytes_read; 0 or -1 with err_*. */
extern int backup_fill_layer (struct backup *b, struct disk *d,
                              struct layer *l, const char *ref);

/* backup-scan.c: read what the store holds for D (finishing what the
 * host still has), decide baseline or delta, make sure CBT is on.  0
 * or -1 with err_*. */
extern int backup_prepare_disk (struct backup *b, struct disk *d);

/* leftovers.c: remove what interrupted runs left on the host for VM,
 * whose disks (N, with their store folders) are V. */
extern void backup_remove_leftovers (struct backup *b,
                                     const struct xapi_vm *vm,
                                     const struct disk *v, size_t n);

/* vhdmap.c: the blocks of D's snapshot that hold data, from the head
 * of its VHD export, into *SET (NBLOCKS bits): 1, or 0 to copy every
 * block (one warning says why). */
extern int backup_allocated_blocks (struct backup *b, struct disk *d,
                                    uint64_t nblocks, struct bitmap *set);

#endif /* CBTFS_ENGINE_BACKUP_INT_H */
