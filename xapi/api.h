/* cbtfs: the XAPI calls cbtfs makes, with typed results.
 *
 * One function per call (docs/xapi.md, "The calls").  Refs and uuids
 * are strings.
 * Every function returns 0/-1 or pointer/NULL with err_* set by
 * xapi_call; xapi_last_error (s) then has the XAPI code, so callers can
 * tell SR_BACKEND_FAILURE_460 ("unrelated") or UUID_INVALID apart.
 *
 * Ownership: records and strings returned are the caller's; free them
 * with the matching *_free.  Thread model: as xapi_session.
 */
#ifndef CBTFS_XAPI_API_H
#define CBTFS_XAPI_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"
#include "vhd.h"

struct xapi_vm {
  char *ref;
  char *uuid;
  char *name;                   /* name_label */
  char *power_state;
  bool is_a_template;
  bool is_a_snapshot;
  bool is_control_domain;
  char **vbds;                  /* VBD refs */
  size_t nvbds;
  char **snapshots;             /* refs of this VM's snapshot VMs */
  size_t nsnapshots;
};

struct xapi_vbd {
  char *ref;
  char *vm;                     /* VM ref */
  char *vdi;                    /* VDI ref, "OpaqueRef:NULL" when empty */
  char *userdevice;             /* "0", "1", … */
  char *type;                   /* "Disk", "CD", "Floppy" */
  char *mode;                   /* "RO", "RW" */
  bool empty;
  bool currently_attached;
};

struct xapi_vdi {
  char *ref;
  char *uuid;
  char *name;                   /* name_label */
  char *type;                   /* "user", "system", "cbt_metadata", … */
  char *snapshot_of;            /* VDI ref, "OpaqueRef:NULL" if none */
  int64_t virtual_size;         /* bytes */
  int64_t snapshot_time;        /* UTC seconds (0 if not a snapshot) */
  bool is_a_snapshot;
  bool cbt_enabled;
};

struct xapi_nbd_info {
  char *address;
  int64_t port;
  char *cert;                   /* PEM of the host's certificate */
  char *exportname;             /* secret: embeds the session ref */
  char *subject;
};

/* VM.get_all_records: every VM (callers filter).  *VMS caller-owned. */
extern int xapi_vm_get_all (xapi_session *s, struct xapi_vm **vms, size_t *n);
extern void xapi_vms_free (struct xapi_vm *vms, size_t n);

/* VM.get_record for REF.  On failure *VM is left empty (clear is safe). */
extern int xapi_vm_get (xapi_session *s, const char *ref, struct xapi_vm *vm);
extern void xapi_vm_clear (struct xapi_vm *vm);

/* VM.snapshot (vm, name): returns the snapshot VM's ref (caller frees). */
extern char *xapi_vm_snapshot (xapi_session *s, const char *vm,
                               const char *name);

/* VM.destroy (a VM snapshot: its VDIs stay). */
extern int xapi_vm_destroy (xapi_session *s, const char *vm);

/* VM.get_by_uuid: the ref (caller frees); NULL with UUID_INVALID if gone. */
extern char *xapi_vm_by_uuid (xapi_session *s, const char *uuid);

/* VBD.get_record for REF.  On failure *VBD is left empty. */
extern int xapi_vbd_get (xapi_session *s, const char *ref,
                         struct xapi_vbd *vbd);
extern void xapi_vbd_clear (struct xapi_vbd *vbd);

/* VDI.get_record for REF.  On failure *VDI is left empty. */
extern int xapi_vdi_get (xapi_session *s, const char *ref,
                         struct xapi_vdi *vdi);
extern void xapi_vdi_clear (struct xapi_vdi *vdi);

/* VDI.get_snapshots: the refs of VDI's snapshots, every kind (caller
 * frees with xapi_refs_free).  *REFS caller-owned array of *N. */
extern int xapi_vdi_get_snapshots (xapi_session *s, const char *vdi,
                                   char ***refs, size_t *n);
extern void xapi_refs_free (char **refs, size_t n);

/* VDI.get_VBDs: the refs of the VBDs that connect VDI to VMs, attached
 * or not (caller frees with xapi_refs_free). */
extern int xapi_vdi_get_vbds (xapi_session *s, const char *vdi,
                              char ***refs, size_t *n);

/* VDI.get_by_uuid: the ref (caller frees); NULL with UUID_INVALID if gone. */
extern char *xapi_vdi_by_uuid (xapi_session *s, const char *uuid);

/* VDI.enable_cbt (idempotent). */
extern int xapi_vdi_enable_cbt (xapi_session *s, const char *vdi);

/* VDI.snapshot (vdi, {}): the new snapshot's ref (caller frees). */
extern char *xapi_vdi_snapshot (xapi_session *s, const char *vdi);

/* VDI.list_changed_blocks (from, to): the base64 bitmap (caller frees). */
extern char *xapi_vdi_list_changed_blocks (xapi_session *s, const char *from,
                                           const char *to);

/* VDI.get_nbd_info: *INFO caller-owned array of *N (may be 0). */
extern int xapi_vdi_get_nbd_info (xapi_session *s, const char *vdi,
                                  struct xapi_nbd_info **info, size_t *n);
extern void xapi_nbd_info_free (struct xapi_nbd_info *info, size_t n);

/* VDI.data_destroy (keep only CBT metadata). */
extern int xapi_vdi_data_destroy (xapi_session *s, const char *vdi);

/* VDI.destroy (e.g. a snapshot no backup layer describes). */
extern int xapi_vdi_destroy (xapi_session *s, const char *vdi);

/* VDI.checksum: md5 hex of the VDI's content (caller frees).  The host
 * reads the whole disk for it: it gets TIMEOUT seconds. */
extern char *xapi_vdi_checksum (xapi_session *s, const char *vdi,
                                long timeout);

/* SR.get_by_uuid: the ref (caller frees); NULL with UUID_INVALID if none. */
extern char *xapi_sr_by_uuid (xapi_session *s, const char *uuid);

/* Whether new VDIs on SR read as zeros (*YES), as xapi decides when it
 * gives vhd-tool --prezeroed (sm_fs_ops.ml
 * must_write_zeroes_into_new_vdi): all SRs but thick LVM (lvm,
 * lvmoiscsi, lvmohba without sm_config use_vhd=true), EqualLogic with
 * allocation=thick, and CSLG.  0, or -1 with err_*. */
extern int xapi_sr_prezeroed (xapi_session *s, const char *sr, bool *yes);

/* VDI.create: a new empty "user" VDI named NAME of SIZE bytes (the SR
 * may round it up) on SR; its ref (caller frees) or NULL. */
extern char *xapi_vdi_create (xapi_session *s, const char *sr,
                              const char *name, uint64_t size);

/* task.create (label, description): its ref (caller frees) or NULL. */
extern char *xapi_task_create (xapi_session *s, const char *label);

/* task.destroy. */
extern int xapi_task_destroy (xapi_session *s, const char *task);

/* Wait (polling task.get_status, up to TIMEOUT seconds) until TASK is
 * no longer pending.  0 when it succeeded; -1 with err_* set to its
 * error_info ("VDI_IO_ERROR [Device I/O errors]") when it failed or was
 * cancelled, or to why it could not be asked. */
extern int xapi_task_wait (xapi_session *s, const char *task, long timeout);

/* GET /export_raw_vdi?vdi=UUID&format=vhd, read only up to the end
 * of the block table, then hang up: which parts of the VDI (XAPI says
 * SIZE bytes) hold data.  *HEAD gets the bytes (caller frees) and *H
 * the parsed table (borrowing *HEAD).  0, or -1 with err_* (the
 * handler missing, a failed export, a stream that is not a VHD). */
extern int xapi_vdi_vhd_head (xapi_session *s, const char *uuid,
                              uint64_t size, uint8_t **head,
                              struct vhd_head *h);

#endif /* CBTFS_XAPI_API_H */
