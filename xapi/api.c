/* cbtfs: the XAPI calls cbtfs makes, with typed results.
 *
 * Each function builds its parameters, calls xapi_call and converts
 * the result.  Records are read with value.h's lenient getters; a
 * field that is missing or of the wrong type fails the whole call
 * (EPROTO), as a half-read record would only fail later, less clearly.
 *
 * Thread model: as xapi_session (one thread per session at a time).
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/util.h"
#include "api.h"

#define MAX_ARGS 3

/* Call METHOD with string arguments ARGS (the session ref goes first).
 * The result (caller frees), or NULL with err_* set. */
static xapi_value *
call_strings (xapi_session *s, const char *method, size_t n,
              const char *const *args)
{
  xapi_value *p[MAX_ARGS] = { NULL };
  xapi_value *r = NULL;
  size_t i;

  for (i = 0; i < n; i++) {
    p[i] = xv_string (args[i]);
    if (p[i] == NULL) {
      err_set (ENOMEM, "%s: out of memory", method);
      goto out;
    }
  }
  r = xapi_call (s, method, n, p);

 out:
  for (i = 0; i < n; i++)
    xv_free (p[i]);
  return r;
}

/* As call_strings, for calls returning void (sent as ""). */
static int
call_void (xapi_session *s, const char *method, size_t n,
           const char *const *args)
{
  xapi_value *r = call_strings (s, method, n, args);

  if (r == NULL)
    return -1;
  xv_free (r);
  return 0;
}

/* Take ownership of R, which must be a string; return a copy (caller
 * frees), or NULL with err_* set. */
static char *
take_string (const char *method, xapi_value *r)
{
  char *ret = NULL;

  if (r == NULL)
    return NULL;
  if (xv_str (r) == NULL)
    err_set (EPROTO, "%s: result is not a string", method);
  else if ((ret = strdup (xv_str (r))) == NULL)
    err_set (ENOMEM, "%s: out of memory", method);
  xv_free (r);
  return ret;
}

static char *
call_string (xapi_session *s, const char *method, size_t n,
             const char *const *args)
{
  return take_string (method, call_strings (s, method, n, args));
}

/* ---- record fields ---- */

static int
bad_field (const char *method, const char *field, const char *type)
{
  err_set (EPROTO, "%s: field %s missing or not %s", method, field, type);
  return -1;
}

static int
get_str (const char *method, const xapi_value *rec, const char *field,
         char **out)
{
  const char *s = xv_str (xv_get (rec, field));

  if (s == NULL)
    return bad_field (method, field, "a string");
  *out = strdup (s);
  if (*out == NULL) {
    err_set (ENOMEM, "%s: out of memory", method);
    return -1;
  }
  return 0;
}

static int
get_int (const char *method, const xapi_value *rec, const char *field,
         int64_t *out)
{
  if (xv_to_int (xv_get (rec, field), out) == -1)
    return bad_field (method, field, "an int");
  return 0;
}

static int
get_bool (const char *method, const xapi_value *rec, const char *field,
          bool *out)
{
  if (xv_to_bool (xv_get (rec, field), out) == -1)
    return bad_field (method, field, "a bool");
  return 0;
}

static int
get_time (const char *method, const xapi_value *rec, const char *field,
          int64_t *out)
{
  if (xv_to_time (xv_get (rec, field), out) == -1)
    return bad_field (method, field, "a time");
  return 0;
}

static void
free_strv (char **v, size_t n)
{
  size_t i;

  if (v)
    for (i = 0; i < n; i++)
      free (v[i]);
  free (v);
}

/* A set of refs A (FIELD names it in messages): an array of strings.
 * *OUT caller-owned. */
static int
refs_of (const char *method, const xapi_value *a, const char *field,
         char ***out, size_t *n)
{
  char **v;
  size_t i;

  if (a == NULL || a->type != XV_ARRAY)
    return bad_field (method, field, "an array");
  for (i = 0; i < a->u.a.n; i++)
    if (xv_str (a->u.a.v[i]) == NULL)
      return bad_field (method, field, "an array of strings");
  v = calloc (a->u.a.n ? a->u.a.n : 1, sizeof *v);
  if (v == NULL)
    goto err_oom;
  for (i = 0; i < a->u.a.n; i++) {
    v[i] = strdup (xv_str (a->u.a.v[i]));
    if (v[i] == NULL) {
      free_strv (v, i);
      goto err_oom;
    }
  }
  *out = v;
  *n = a->u.a.n;
  return 0;

 err_oom:
  err_set (ENOMEM, "%s: out of memory", method);
  return -1;
}

/* FIELD of REC: a set of refs, as refs_of. */
static int
get_refs (const char *method, const xapi_value *rec, const char *field,
          char ***out, size_t *n)
{
  return refs_of (method, xv_get (rec, field), field, out, n);
}

static int
not_struct (const char *method)
{
  err_set (EPROTO, "%s: result is not a struct", method);
  return -1;
}

/* METHOD (a *.get_record) of REF: the record (caller frees), or NULL
 * with err_* set; *REF_COPY gets a copy of REF for the result. */
static xapi_value *
get_record (xapi_session *s, const char *method, const char *ref,
            char **ref_copy)
{
  xapi_value *r = call_strings (s, method, 1, &ref);

  if (r == NULL)
    return NULL;
  if (r->type != XV_STRUCT) {
    not_struct (method);
    xv_free (r);
    return NULL;
  }
  *ref_copy = strdup (ref);
  if (*ref_copy == NULL) {
    err_set (ENOMEM, "%s: out of memory", method);
    xv_free (r);
    return NULL;
  }
  return r;
}

/* ---- VM ---- */

/* Fill *VM from REC (borrowed).  On failure *VM is left empty. */
static int
parse_vm (const char *method, const char *ref, const xapi_value *rec,
          struct xapi_vm *vm)
{
  memset (vm, 0, sizeof *vm);
  if (rec == NULL || rec->type != XV_STRUCT)
    return not_struct (method);
  vm->ref = strdup (ref);
  if (vm->ref == NULL) {
    err_set (ENOMEM, "%s: out of memory", method);
    goto err_vm;
  }
  if (get_str (method, rec, "uuid", &vm->uuid) == -1
      || get_str (method, rec, "name_label", &vm->name) == -1
      || get_str (method, rec, "power_state", &vm->power_state) == -1
      || get_bool (method, rec, "is_a_template", &vm->is_a_template) == -1
      || get_bool (method, rec, "is_a_snapshot", &vm->is_a_snapshot) == -1
      || get_bool (method, rec, "is_control_domain",
                   &vm->is_control_domain) == -1
      || get_refs (method, rec, "VBDs", &vm->vbds, &vm->nvbds) == -1
      || get_refs (method, rec, "snapshots", &vm->snapshots,
                   &vm->nsnapshots) == -1)
    goto err_vm;
  return 0;

 err_vm:
  xapi_vm_clear (vm);
  return -1;
}

void
xapi_vm_clear (struct xapi_vm *vm)
{
  free (vm->ref);
  free (vm->uuid);
  free (vm->name);
  free (vm->power_state);
  free_strv (vm->vbds, vm->nvbds);
  free_strv (vm->snapshots, vm->nsnapshots);
  memset (vm, 0, sizeof *vm);
}

void
xapi_vms_free (struct xapi_vm *vms, size_t n)
{
  size_t i;

  if (vms)
    for (i = 0; i < n; i++)
      xapi_vm_clear (&vms[i]);
  free (vms);
}

int
xapi_vm_get_all (xapi_session *s, struct xapi_vm **vms, size_t *n)
{
  static const char method[] = "VM.get_all_records";
  struct xapi_vm *v;
  xapi_value *r;
  size_t i;

  r = call_strings (s, method, 0, NULL);
  if (r == NULL)
    return -1;
  if (r->type != XV_STRUCT) {
    not_struct (method);
    goto err_r;
  }
  v = calloc (r->u.st.n ? r->u.st.n : 1, sizeof *v);
  if (v == NULL) {
    err_set (ENOMEM, "%s: out of memory", method);
    goto err_r;
  }
  for (i = 0; i < r->u.st.n; i++)
    if (parse_vm (method, r->u.st.k[i], r->u.st.v[i], &v[i]) == -1) {
      xapi_vms_free (v, i);
      goto err_r;
    }
  *vms = v;
  *n = r->u.st.n;
  xv_free (r);
  return 0;

 err_r:
  xv_free (r);
  return -1;
}

int
xapi_vm_get (xapi_session *s, const char *ref, struct xapi_vm *vm)
{
  static const char method[] = "VM.get_record";
  xapi_value *r;
  int ret;

  memset (vm, 0, sizeof *vm);
  r = call_strings (s, method, 1, &ref);
  if (r == NULL)
    return -1;
  ret = parse_vm (method, ref, r, vm);
  xv_free (r);
  return ret;
}

char *
xapi_vm_snapshot (xapi_session *s, const char *vm, const char *name)
{
  const char *args[] = { vm, name };

  return call_string (s, "VM.snapshot", 2, args);
}

int
xapi_vm_destroy (xapi_session *s, const char *vm)
{
  return call_void (s, "VM.destroy", 1, &vm);
}

char *
xapi_vm_by_uuid (xapi_session *s, const char *uuid)
{
  return call_string (s, "VM.get_by_uuid", 1, &uuid);
}

/* ---- VBD ---- */

void
xapi_vbd_clear (struct xapi_vbd *vbd)
{
  free (vbd->ref);
  free (vbd->vm);
  free (vbd->vdi);
  free (vbd->userdevice);
  free (vbd->type);
  free (vbd->mode);
  memset (vbd, 0, sizeof *vbd);
}

int
xapi_vbd_get (xapi_session *s, const char *ref, struct xapi_vbd *vbd)
{
  static const char method[] = "VBD.get_record";
  xapi_value *r;
  int ret = -1;

  memset (vbd, 0, sizeof *vbd);
  r = get_record (s, method, ref, &vbd->ref);
  if (r == NULL)
    return -1;
  if (get_str (method, r, "VM", &vbd->vm) == -1
      || get_str (method, r, "VDI", &vbd->vdi) == -1
      || get_str (method, r, "userdevice", &vbd->userdevice) == -1
      || get_str (method, r, "type", &vbd->type) == -1
      || get_str (method, r, "mode", &vbd->mode) == -1
      || get_bool (method, r, "empty", &vbd->empty) == -1
      || get_bool (method, r, "currently_attached",
                   &vbd->currently_attached) == -1)
    goto out;
  ret = 0;

 out:
  if (ret == -1)
    xapi_vbd_clear (vbd);
  xv_free (r);
  return ret;
}

/* ---- VDI ---- */

void
xapi_vdi_clear (struct xapi_vdi *vdi)
{
  free (vdi->ref);
  free (vdi->uuid);
  free (vdi->name);
  free (vdi->type);
  free (vdi->snapshot_of);
  memset (vdi, 0, sizeof *vdi);
}

int
xapi_vdi_get (xapi_session *s, const char *ref, struct xapi_vdi *vdi)
{
  static const char method[] = "VDI.get_record";
  xapi_value *r;
  int ret = -1;

  memset (vdi, 0, sizeof *vdi);
  r = get_record (s, method, ref, &vdi->ref);
  if (r == NULL)
    return -1;
  /* A VDI that is not a snapshot has snapshot_time 19700101T00:00:00Z,
   * which reads as 0, as api.h promises. */
  if (get_str (method, r, "uuid", &vdi->uuid) == -1
      || get_str (method, r, "name_label", &vdi->name) == -1
      || get_str (method, r, "type", &vdi->type) == -1
      || get_str (method, r, "snapshot_of", &vdi->snapshot_of) == -1
      || get_int (method, r, "virtual_size", &vdi->virtual_size) == -1
      || get_time (method, r, "snapshot_time", &vdi->snapshot_time) == -1
      || get_bool (method, r, "is_a_snapshot", &vdi->is_a_snapshot) == -1
      || get_bool (method, r, "cbt_enabled", &vdi->cbt_enabled) == -1)
    goto out;
  ret = 0;

 out:
  if (ret == -1)
    xapi_vdi_clear (vdi);
  xv_free (r);
  return ret;
}

/* The refs METHOD answers about object REF. */
static int
call_refs (xapi_session *s, const char *method, const char *ref, char ***refs,
          size_t *n)
{
  xapi_value *r = call_strings (s, method, 1, &ref);
  int ret;

  if (r == NULL)
    return -1;
  ret = refs_of (method, r, "result", refs, n);
  xv_free (r);
  return ret;
}

int
xapi_vdi_get_snapshots (xapi_session *s, const char *vdi, char ***refs,
                        size_t *n)
{
  return call_refs (s, "VDI.get_snapshots", vdi, refs, n);
}

int
xapi_vdi_get_vbds (xapi_session *s, const char *vdi, char ***refs, size_t *n)
{
  return call_refs (s, "VDI.get_VBDs", vdi, refs, n);
}

void
xapi_refs_free (char **refs, size_t n)
{
  free_strv (refs, n);
}

char *
xapi_vdi_by_uuid (xapi_session *s, const char *uuid)
{
  return call_string (s, "VDI.get_by_uuid", 1, &uuid);
}

int
xapi_vdi_enable_cbt (xapi_session *s, const char *vdi)
{
  return call_void (s, "VDI.enable_cbt", 1, &vdi);
}

char *
xapi_vdi_snapshot (xapi_session *s, const char *vdi)
{
  static const char method[] = "VDI.snapshot";
  xapi_value *p[2];
  xapi_value *r = NULL;

  /* driver_params is not optional on the wire for every XAPI version:
   * send the default {} explicitly. */
  p[0] = xv_string (vdi);
  p[1] = xv_struct ();
  if (p[0] == NULL || p[1] == NULL)
    err_set (ENOMEM, "%s: out of memory", method);
  else
    r = xapi_call (s, method, 2, p);
  xv_free (p[0]);
  xv_free (p[1]);
  return take_string (method, r);
}

char *
xapi_vdi_list_changed_blocks (xapi_session *s, const char *from,
                              const char *to)
{
  const char *args[] = { from, to };

  return call_string (s, "VDI.list_changed_blocks", 2, args);
}

void
xapi_nbd_info_free (struct xapi_nbd_info *info, size_t n)
{
  size_t i;

  if (info)
    for (i = 0; i < n; i++) {
      free (info[i].address);
      free (info[i].cert);
      /* The export name embeds the session ref. */
      if (info[i].exportname)
        explicit_bzero (info[i].exportname, strlen (info[i].exportname));
      free (info[i].exportname);
      free (info[i].subject);
    }
  free (info);
}

int
xapi_vdi_get_nbd_info (xapi_session *s, const char *vdi,
                       struct xapi_nbd_info **info, size_t *n)
{
  static const char method[] = "VDI.get_nbd_info";
  struct xapi_nbd_info *v;
  xapi_value *r;
  size_t i;

  r = call_strings (s, method, 1, &vdi);
  if (r == NULL)
    return -1;
  if (r->type != XV_ARRAY) {
    err_set (EPROTO, "%s: result is not an array", method);
    goto err_r;
  }
  v = calloc (r->u.a.n ? r->u.a.n : 1, sizeof *v);
  if (v == NULL) {
    err_set (ENOMEM, "%s: out of memory", method);
    goto err_r;
  }
  for (i = 0; i < r->u.a.n; i++) {
    const xapi_value *rec = r->u.a.v[i];

    if (rec == NULL || rec->type != XV_STRUCT) {
      not_struct (method);
      goto err_v;
    }
    /* port arrives as a decimal string (XAPI's int64); get_int takes
     * both forms. */
    if (get_str (method, rec, "address", &v[i].address) == -1
        || get_int (method, rec, "port", &v[i].port) == -1
        || get_str (method, rec, "cert", &v[i].cert) == -1
        || get_str (method, rec, "exportname", &v[i].exportname) == -1
        || get_str (method, rec, "subject", &v[i].subject) == -1)
      goto err_v;
    if (v[i].port < 1 || v[i].port > 65535) {
      err_set (EPROTO, "%s: port %lld out of range", method,
               (long long) v[i].port);
      goto err_v;
    }
  }
  *info = v;
  *n = r->u.a.n;
  xv_free (r);
  return 0;

 err_v:
  xapi_nbd_info_free (v, r->u.a.n);
 err_r:
  xv_free (r);
  return -1;
}

int
xapi_vdi_data_destroy (xapi_session *s, const char *vdi)
{
  return call_void (s, "VDI.data_destroy", 1, &vdi);
}

int
xapi_vdi_destroy (xapi_session *s, const char *vdi)
{
  return call_void (s, "VDI.destroy", 1, &vdi);
}

char *
xapi_vdi_checksum (xapi_session *s, const char *vdi, long timeout)
{
  long old = xapi_set_timeout (s, timeout);
  char *r = call_string (s, "VDI.checksum", 1, &vdi);

  xapi_set_timeout (s, old);
  return r;
}

/* ---- SR, VDI.create, tasks (restore) ---- */

char *
xapi_sr_by_uuid (xapi_session *s, const char *uuid)
{
  return call_string (s, "SR.get_by_uuid", 1, &uuid);
}

int
xapi_sr_prezeroed (xapi_session *s, const char *sr, bool *yes)
{
  static const char method[] = "SR.get_record";
  CLEANUP_FREE char *ref = NULL;
  xapi_value *r = get_record (s, method, sr, &ref);
  const char *type, *use_vhd, *alloc;
  const xapi_value *smc;

  if (r == NULL)
    return -1;
  type = xv_str (xv_get (r, "type"));
  smc = xv_get (r, "sm_config");
  if (type == NULL || smc == NULL || smc->type != XV_STRUCT) {
    xv_free (r);
    return bad_field (method, "type or sm_config", "there");
  }
  use_vhd = xv_str (xv_get (smc, "use_vhd"));
  alloc = xv_str (xv_get (smc, "allocation"));
  *yes = !(((strcasecmp (type, "lvm") == 0
             || strcasecmp (type, "lvmoiscsi") == 0
             || strcasecmp (type, "lvmohba") == 0)
            && !(use_vhd && strcmp (use_vhd, "true") == 0))
           || (strcasecmp (type, "equal") == 0 && alloc
               && strcasecmp (alloc, "thick") == 0)
           || strcasecmp (type, "cslg") == 0);
  xv_free (r);
  return 0;
}

/* Set KEY of struct REC to V (taken); false when out of memory. */
static bool
rec_set (xapi_value *rec, const char *key, xapi_value *v)
{
  if (v == NULL)
    return false;
  if (xv_struct_set (rec, key, v) == -1) {
    xv_free (v);
    return false;
  }
  return true;
}

char *
xapi_vdi_create (xapi_session *s, const char *sr, const char *name,
                 uint64_t size)
{
  static const char method[] = "VDI.create";
  xapi_value *rec = xv_struct ();
  char sz[32];

  /* Every field VDI.create takes, as the SDKs send them: int64 as a
   * string of decimal digits (docs/xapi.md, "The XML-RPC envelope"). */
  snprintf (sz, sizeof sz, "%" PRIu64, size);
  if (rec == NULL
      || !rec_set (rec, "name_label", xv_string (name))
      || !rec_set (rec, "name_description",
                   xv_string ("restored by cbtfs"))
      || !rec_set (rec, "SR", xv_string (sr))
      || !rec_set (rec, "virtual_size", xv_string (sz))
      || !rec_set (rec, "type", xv_string ("user"))
      || !rec_set (rec, "sharable", xv_bool (false))
      || !rec_set (rec, "read_only", xv_bool (false))
      || !rec_set (rec, "other_config", xv_struct ())
      || !rec_set (rec, "xenstore_data", xv_struct ())
      || !rec_set (rec, "sm_config", xv_struct ())
      || !rec_set (rec, "tags", xv_array ())) {
    xv_free (rec);
    err_set (ENOMEM, "%s: out of memory", method);
    return NULL;
  }
  {
    xapi_value *r = xapi_call (s, method, 1, &rec);
    xv_free (rec);
    return take_string (method, r);
  }
}

char *
xapi_task_create (xapi_session *s, const char *label)
{
  const char *args[2] = { label, "cbtfs" };

  return call_string (s, "task.create", 2, args);
}

int
xapi_task_destroy (xapi_session *s, const char *task)
{
  return call_void (s, "task.destroy", 1, &task);
}

/* The failed TASK's error_info as one line in err_*. */
static void
task_error (xapi_session *s, const char *task, const char *status)
{
  static const char method[] = "task.get_error_info";
  xapi_value *r = call_strings (s, method, 1, &task);
  char line[1024];
  size_t n = 0;

  line[0] = '\0';
  for (size_t i = 0; r && r->type == XV_ARRAY && i < r->u.a.n; i++) {
    const char *p = xv_str (r->u.a.v[i]);
    if (p == NULL)
      continue;
    n += snprintf (line + n, n < sizeof line ? sizeof line - n : 0,
                   i == 0 ? "%s" : i == 1 ? " [%s" : ", %s", p);
    if (n >= sizeof line)
      n = sizeof line - 1;
  }
  if (r && r->type == XV_ARRAY && r->u.a.n > 1 && n + 2 < sizeof line)
    strcat (line, "]");
  xv_free (r);
  err_set (EIO, "the host's task %s: %s", status,
           line[0] ? line : "no reason given");
}

int
xapi_task_wait (xapi_session *s, const char *task, long timeout)
{
  static const char method[] = "task.get_status";
  struct timespec pause = { 0, 50 * 1000 * 1000 };
  long waited_ms = 0;

  for (;;) {
    CLEANUP_FREE char *st = call_string (s, method, 1, &task);

    if (st == NULL)
      return -1;
    if (strcmp (st, "success") == 0)
      return 0;
    if (strcmp (st, "pending") != 0) {
      task_error (s, task, st);
      return -1;
    }
    if (waited_ms / 1000 >= timeout) {
      err_set (ETIMEDOUT, "the host's task is still pending after %ld s",
               timeout);
      return -1;
    }
    nanosleep (&pause, NULL);
    waited_ms += 50;
  }
}

/* ---- the VHD export's head ---- */

/* Block tables of 2 TiB disks in 2 MiB blocks take 4 MiB. */
#define VHD_HEAD_MAX (64 * 1024 * 1024)

struct head_buf {
  uint8_t *p;
  size_t len, cap, need;
};

/* Whether the body so far is an error page, not a VHD: xen-api #4603,
 * a failed export can send one as the body of a 200. */
static int
check_start (const struct head_buf *b, const uint8_t *data, size_t n)
{
  uint8_t first[5];

  if (b->len >= 5 || b->len + n < 5)
    return 0;
  if (b->len)
    memcpy (first, b->p, b->len);
  memcpy (first + b->len, data, 5 - b->len);
  if (memcmp (first, "HTTP/", 5) == 0) {
    err_set (EIO, "the host failed the export (an HTTP error in the body)");
    return -1;
  }
  return 0;
}

static int
head_add (const void *data, size_t n, void *opaque)
{
  struct head_buf *b = opaque;
  const uint8_t *p = data;

  if (check_start (b, p, n) == -1)
    return -1;
  /* NEED grows once the header is in: take the piece in steps. */
  while (n > 0 && b->len < b->need) {
    size_t take = MIN (n, b->need - b->len);

    if (b->len + take > b->cap) {
      size_t ncap = MAX (b->need, (size_t) 4096);
      uint8_t *np = realloc (b->p, ncap);
      if (np == NULL) {
        err_set (ENOMEM, "out of memory");
        return -1;
      }
      b->p = np;
      b->cap = ncap;
    }
    memcpy (b->p + b->len, p, take);
    b->len += take;
    p += take;
    n -= take;
    if (vhd_head_need (b->p, b->len, VHD_HEAD_MAX, &b->need) == -1)
      return -1;
  }
  return b->len >= b->need && b->len >= VHD_FOOTER_SIZE + VHD_HEADER_SIZE;
}

int
xapi_vdi_vhd_head (xapi_session *s, const char *uuid, uint64_t size,
                   uint8_t **head, struct vhd_head *h)
{
  struct head_buf b = { .need = VHD_FOOTER_SIZE + VHD_HEADER_SIZE };
  CLEANUP_FREE char *path = NULL;

  if (!is_uuid (uuid)) {
    err_set (EINVAL, "bad VDI uuid");
    return -1;
  }
  if (asprintf (&path, "/export_raw_vdi?vdi=%s&format=vhd", uuid) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  if (xapi_get (s, path, head_add, &b) == -1
      || vhd_head_parse (b.p ? b.p : (const uint8_t *) "", b.len, size,
                         h) == -1) {
    err_prefix ("VHD export of %s", uuid);
    free (b.p);
    return -1;
  }
  *head = b.p;
  return 0;
}
