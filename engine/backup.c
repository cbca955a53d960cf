/* cbtfs engine: a backup run: the store, which VMs, and the jobs that
 * back them up.
 *
 * Thread model: engine_backup's thread locks the store, logs in, lists
 * the VMs, then starts o->jobs job threads and joins them.  Each job
 * backs up one VM at a time with an XAPI session of its own (logged in
 * from the password read once: sessions are not thread-safe, and one
 * shared under a lock would serialise the round trips parallelism is
 * for), its own targets, and its own copies' threads.  What jobs share
 * is in struct backup_run: run->lock guards the next VM to take, the
 * status, and the disks being backed up (claimed[]), and is never held
 * across XAPI or store I/O; run->cond wakes a job waiting for a disk
 * another job holds.  The store, its lock and the options are read
 * only; the NBD budget and rate (chain/nbdlimit.h) lock themselves.
 * Store-wide steps are safe in parallel: the store lock and tmp/'s
 * cleanup happen once, before the jobs; layers are staged in tmp/
 * under their own snapshot's name; a disk's folder (its layers,
 * manifests and verdicts) is touched by the one job that claimed it;
 * catalogs read by --verify see other jobs' layers appear atomically,
 * as a mount would.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <pthread.h>

#include "../chain/nbdlimit.h"
#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "backup.h"
#include "backup-int.h"
#include "prune.h"

/* A real VM (not a template, snapshot or dom0) that ARG names. */
static bool
matches (const char *arg, const struct xapi_vm *vm)
{
  if (vm->is_a_template || vm->is_a_snapshot || vm->is_control_domain)
    return false;
  return arg == NULL || strcmp (arg, vm->uuid) == 0
    || strcmp (arg, vm->name) == 0;
}

static bool
wanted (const struct engine_backup_opts *o, const struct xapi_vm *vm)
{
  if (o->nvms == 0)
    return matches (NULL, vm);
  for (size_t i = 0; i < o->nvms; i++)
    if (matches (o->vms[i], vm))
      return true;
  return false;
}

/* What the jobs of a run share; see the thread model above. */
struct backup_run {
  const struct engine_backup_opts *o;
  const struct engine_creds *creds;
  struct store *store;
  const char *snap_name;
  struct nbdlimit *limit;
  const struct xapi_vm **todo;  /* the VMs to back up, in pool order */
  size_t ntodo;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  size_t next;                  /* todo[next] is the next VM to take */
  int status;                   /* 1 once some VM failed */
  const char **claimed;         /* uuids of disks jobs work on (borrowed
                                   from the jobs' struct disk) */
  size_t nclaimed, capclaimed;
  struct engine_backup_report *report;  /* the caller's, or NULL */
};

void
engine_backup_report_clear (struct engine_backup_report *r)
{
  for (size_t i = 0; i < r->ndisks; i++) {
    free (r->disks[i].vm_name);
    free (r->disks[i].disk_name);
    free (r->disks[i].error);
  }
  free (r->disks);
  r->disks = NULL;
  r->ndisks = 0;
}

/* Fill E from D (NULL: the VM alone), as backup_report says. */
static int
report_fill (struct engine_disk_report *e, const struct xapi_vm *vm,
             const struct disk *d, enum engine_disk_result res,
             const char *error)
{
  e->result = res;
  e->last_complete = -1;
  snprintf (e->vm_uuid, sizeof e->vm_uuid, "%s", vm->uuid);
  if ((e->vm_name = strdup (vm->name)) == NULL
      || (error && (e->error = strdup (error)) == NULL))
    return -1;
  if (res == ENGINE_DISK_FAILED && e->error == NULL
      && (e->error = strdup ("failed (see the log)")) == NULL)
    return -1;
  if (d == NULL)
    return 0;
  if ((e->disk_name = strdup (d->live.name)) == NULL)
    return -1;
  snprintf (e->disk_uuid, sizeof e->disk_uuid, "%s", d->live.uuid);
  snprintf (e->userdevice, sizeof e->userdevice, "%s", d->userdevice);
  e->bytes_read = d->bytes_read;
  e->seconds = d->seconds;
  e->last_complete = d->last_complete;
  if (d->layer) {
    const struct layer_meta *m = layer_meta (d->layer);
    memcpy (e->snapshot, m->snapshot, UUID_LEN + 1);
    e->baseline = layer_is_baseline (m);
    e->time = m->time;
    e->complete = layer_complete (d->layer);
    if (e->complete)
      e->last_complete = MAX (e->last_complete, m->time);
    if (layer_usage (d->layer, &e->bytes_stored) == -1)
      log_warn ("%s: %s", d->label, err_get ());
  }
  return 0;
}

void
backup_report (struct backup *b, const struct xapi_vm *vm,
               const struct disk *d, enum engine_disk_result res,
               const char *error)
{
  struct backup_run *r = b->run;
  struct engine_disk_report e = { 0 };
  struct engine_backup_report one = { .disks = &e, .ndisks = 1 };
  struct engine_disk_report *nv;

  if (r->report == NULL)
    return;
  if (report_fill (&e, vm, d, res, error) == 0) {
    SCOPED_LOCK (&r->lock);
    nv = realloc (r->report->disks, (r->report->ndisks + 1) * sizeof *nv);
    if (nv) {
      r->report->disks = nv;
      nv[r->report->ndisks++] = e;
      return;
    }
  }
  log_warn ("out of memory: the report lacks a disk");
  engine_backup_report_clear (&one);
}

/* By VM (name, then uuid), then device number, then disk uuid. */
static int
report_order (const void *a, const void *b)
{
  const struct engine_disk_report *x = a, *y = b;
  int c;

  if ((c = strcmp (x->vm_name, y->vm_name)) != 0
      || (c = strcmp (x->vm_uuid, y->vm_uuid)) != 0)
    return c;
  if (strlen (x->userdevice) != strlen (y->userdevice))
    return strlen (x->userdevice) < strlen (y->userdevice) ? -1 : 1;
  if ((c = strcmp (x->userdevice, y->userdevice)) != 0)
    return c;
  return strcmp (x->disk_uuid, y->disk_uuid);
}

static bool
claimed (struct backup_run *r, const char *uuid)
{
  for (size_t i = 0; i < r->nclaimed; i++)
    if (strcmp (r->claimed[i], uuid) == 0)
      return true;
  return false;
}

/* Wait until no other job of the run works on any of the N disks V,
 * then mark them as this job's. */
static int
claim (struct backup_run *r, const struct disk *v, size_t n)
{
  bool busy;
  SCOPED_LOCK (&r->lock);

  if (r->nclaimed + n > r->capclaimed) {
    size_t cap = MAX (r->capclaimed * 2, r->nclaimed + n);
    const char **nv = realloc (r->claimed, cap * sizeof *nv);
    if (nv == NULL) {
      err_set (ENOMEM, "out of memory");
      return -1;
    }
    r->claimed = nv;
    r->capclaimed = cap;
  }
  for (;;) {
    busy = false;
    for (size_t i = 0; i < n && !busy; i++)
      busy = claimed (r, v[i].live.uuid);
    if (!busy)
      break;
    log_info ("%s: waiting for another job backing up the same disk",
              v[0].label);
    pthread_cond_wait (&r->cond, &r->lock);
  }
  for (size_t i = 0; i < n; i++)
    r->claimed[r->nclaimed++] = v[i].live.uuid;
  return 0;
}

static void
unclaim (struct backup_run *r, const struct disk *v, size_t n)
{
  SCOPED_LOCK (&r->lock);

  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < r->nclaimed; k++)
      if (r->claimed[k] == v[i].live.uuid) {
        r->claimed[k] = r->claimed[--r->nclaimed];
        break;
      }
  pthread_cond_broadcast (&r->cond);
}

static int
by_uuid (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Take the store's locks of the N disks V, in the order of their
 * uuids, so that two processes never wait for each other: another
 * process's backup of one of them is waited for (--lock-wait) or
 * refuses this VM.  Then finish the drops a killed prune left pending
 * on each, before its chain grows; one that cannot be finished now (a
 * mount filling its layer) stays pending, and the backup still runs. */
static int
lock_disks (struct backup *b, const struct disk *v, size_t n)
{
  const char **ids = malloc (n * sizeof *ids);
  size_t i, finished = 0;

  if (ids == NULL) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  for (i = 0; i < n; i++)
    ids[i] = v[i].live.uuid;
  qsort (ids, n, sizeof *ids, by_uuid);
  for (i = 0; i < n; i++)
    if (store_disk_lock (b->store, ids[i], "backup",
                         b->run->o->lock_wait) == -1)
      break;
  if (i < n) {
    while (i-- > 0)
      store_disk_unlock (b->store, ids[i]);
    free (ids);
    return -1;
  }
  for (i = 0; i < n; i++)
    if (engine_prune_resume_disk (b->store, ids[i], &finished) == -1)
      log_warn ("disk %s: an interrupted prune could not be finished (see "
                "above)", ids[i]);
  if (finished)
    log_info ("finished %zu point drops an interrupted prune left",
              finished);
  free (ids);
  return 0;
}

int
backup_claim_disks (struct backup *b, const struct disk *v, size_t n)
{
  if (claim (b->run, v, n) == -1)
    return -1;
  if (lock_disks (b, v, n) == -1) {
    unclaim (b->run, v, n);
    return -1;
  }
  return 0;
}

void
backup_release_disks (struct backup *b, const struct disk *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    store_disk_unlock (b->store, v[i].live.uuid);
  unclaim (b->run, v, n);
}

/* One job: back up VMs until none is left.  B's session is the job's
 * own, or (job 0) the run's first. */
static void
job_run (struct backup *b)
{
  struct backup_run *r = b->run;

  for (;;) {
    const struct xapi_vm *vm;
    pthread_mutex_lock (&r->lock);
    vm = r->next < r->ntodo ? r->todo[r->next++] : NULL;
    pthread_mutex_unlock (&r->lock);
    if (vm == NULL)
      return;
    if (backup_vm (b, vm) != 0) {
      pthread_mutex_lock (&r->lock);
      r->status = 1;
      pthread_mutex_unlock (&r->lock);
    }
  }
}

/* A job thread other than the first: log in, work, log out.  A job
 * that cannot log in leaves the VMs to the others. */
static void *
job_thread (void *arg)
{
  struct backup *b = arg;

  b->xs = engine_login (b->run->creds);
  if (b->xs == NULL) {
    log_warn ("a backup job could not log in (%s); the others go on",
              err_get ());
    return NULL;
  }
  b->targets = engine_targets_new (b->xs);
  if (b->targets == NULL)
    log_warn ("a backup job could not start (%s); the others go on",
              err_get ());
  else
    job_run (b);
  engine_targets_free (b->targets);
  xapi_logout (b->xs);
  return NULL;
}

/* Back up the VMs O selects: the first job on session XS and TARGETS
 * (the caller's), the others on sessions of their own.  0, 1 or -1 as
 * engine_backup. */
static int
run (struct backup_run *r, xapi_session *xs, struct engine_targets *targets)
{
  const struct engine_backup_opts *o = r->o;
  struct xapi_vm *vms = NULL;
  struct backup *jobs = NULL;
  pthread_t *tids = NULL;
  bool *used = NULL;            /* which --exclude-disk named a disk */
  size_t n, i, j, njobs, started = 0;
  int status = -1;

  if (xapi_vm_get_all (xs, &vms, &n) == -1)
    return -1;
  for (j = 0; j < o->nvms; j++) {
    bool found = false;
    for (i = 0; i < n; i++)
      found |= matches (o->vms[j], &vms[i]);
    if (!found) {
      err_set (ENOENT, "--vm %s: no VM has that name or uuid", o->vms[j]);
      goto out;
    }
  }
  r->todo = calloc (n ? n : 1, sizeof *r->todo);
  if (r->todo == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  for (i = 0; i < n; i++)
    if (wanted (o, &vms[i]))
      r->todo[r->ntodo++] = &vms[i];

  njobs = MAX (1, MIN (o->jobs, r->ntodo));
  jobs = calloc (njobs, sizeof *jobs);
  tids = calloc (njobs, sizeof *tids);
  used = calloc (o->nexclude ? o->nexclude : 1, sizeof *used);
  if (jobs == NULL || tids == NULL || used == NULL) {
    err_set (ENOMEM, "out of memory");
    goto out;
  }
  for (i = 0; i < njobs; i++) {
    jobs[i] = (struct backup) {
      .run = r, .store = r->store, .snap_name = r->snap_name,
      .copy = o->copy, .no_copy = o->no_copy, .verify = o->verify,
      .exclude = o->exclude, .nexclude = o->nexclude, .exclude_used = used,
    };
    jobs[i].copy.limit = r->limit;
    /* Progress lines of several copies would overwrite each other. */
    if (njobs > 1)
      jobs[i].copy.progress = false;
  }
  jobs[0].xs = xs;
  jobs[0].targets = targets;
  for (i = 1; i < njobs; i++)
    if (pthread_create (&tids[i], NULL, job_thread, &jobs[i]) == 0)
      started = i;
    else {
      log_warn ("cannot start backup job %zu; the others go on", i + 1);
      break;
    }
  job_run (&jobs[0]);
  for (i = 1; i <= started; i++)
    pthread_join (tids[i], NULL);
  status = r->status;
  /* A typo would otherwise back up the disk it meant to leave out. */
  for (i = 0; i < o->nexclude; i++)
    if (!used[i])
      log_warn ("--exclude-disk %s: no disk of the VMs backed up has that "
                "name or uuid", o->exclude[i]);

 out:
  free (tids);
  free (jobs);
  free (used);
  free (r->todo);
  r->todo = NULL;
  xapi_vms_free (vms, n);
  return status;
}

int
engine_backup (const char *path, const struct engine_server *server,
               const struct engine_backup_opts *o,
               struct engine_backup_report *report)
{
  char snap_name[sizeof SNAP_NAME + UUID_LEN + 1];  /* "cbtfs backup <id>" */
  struct backup_run r = { .o = o, .snap_name = snap_name, .report = report };
  struct engine_creds *creds = NULL;
  struct engine_targets *targets = NULL;
  xapi_session *xs = NULL;
  int status = -1;

  pthread_mutex_init (&r.lock, NULL);
  pthread_cond_init (&r.cond, NULL);
  r.store = store_open (path, true);
  /* Backups of other disks may write the store at once (each disk is
   * taken alone: backup_claim_disks). */
  if (r.store == NULL
      || store_lock_shared (r.store, "backup", o->lock_wait) == -1)
    goto out;
  snprintf (snap_name, sizeof snap_name, "%s %s", SNAP_NAME, r.store->id);
  if ((r.limit = nbdlimit_new (NBDLIMIT_XAPI_NBD, o->rate)) == NULL)
    goto out;
  if (xapi_global_init () == -1)
    goto out;
  if ((creds = engine_creds_new (server)) != NULL
      && (xs = engine_login (creds)) != NULL) {
    char msg[1024];
    enum err_class k;
    int e;
    r.creds = creds;
    targets = engine_targets_new (xs);
    status = targets ? run (&r, xs, targets) : -1;
    /* Logging out must not replace why the run could not start. */
    e = errno;
    k = err_class ();
    snprintf (msg, sizeof msg, "%s", err_get ());
    engine_targets_free (targets);
    xapi_logout (xs);
    err_set (e, "%s", msg);
    err_set_class (k);
  }
  engine_creds_free (creds);
  xapi_global_cleanup ();
 out:
  nbdlimit_free (r.limit);
  store_close (r.store);
  free (r.claimed);
  if (report && status == -1)
    engine_backup_report_clear (report);
  else if (report)
    qsort (report->disks, report->ndisks, sizeof *report->disks,
           report_order);
  pthread_cond_destroy (&r.cond);
  pthread_mutex_destroy (&r.lock);
  return status;
}
