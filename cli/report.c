/* cbtfs backup's reports: --json on stdout, and --metrics-file in
 * Prometheus's text exposition format for node_exporter's textfile
 * collector, from what engine_backup kept (engine/backup.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "cli.h"

static const char *const result_name[] = {
  [ENGINE_DISK_OK] = "ok",
  [ENGINE_DISK_FAILED] = "failed",
  [ENGINE_DISK_SKIPPED] = "skipped",
};

static void
json_str_or_null (const char *s)
{
  if (s)
    cli_json_str (s);
  else
    printf ("null");
}

void
cli_backup_json (int status, const struct engine_backup_report *r)
{
  size_t failed = 0;

  printf ("{\"status\": %d, \"disks\": [", status);
  for (size_t i = 0; i < r->ndisks; i++) {
    const struct engine_disk_report *e = &r->disks[i];
    bool point = e->snapshot[0] != '\0';

    failed += e->result == ENGINE_DISK_FAILED;
    printf ("%s\n  {\"vm\": ", i ? "," : "");
    cli_json_str (e->vm_name);
    printf (", \"vm_uuid\": \"%s\", \"disk\": ", e->vm_uuid);
    json_str_or_null (e->disk_name);
    printf (", \"disk_uuid\": ");
    json_str_or_null (e->disk_name ? e->disk_uuid : NULL);
    printf (", \"userdevice\": ");
    json_str_or_null (e->disk_name ? e->userdevice : NULL);
    printf (", \"result\": \"%s\", \"error\": ", result_name[e->result]);
    json_str_or_null (e->error);
    if (point)
      printf (", \"snapshot\": \"%s\", \"kind\": \"%s\", \"time\": %" PRId64
              ", \"complete\": %s", e->snapshot,
              e->baseline ? "baseline" : "delta", e->time,
              e->complete ? "true" : "false");
    else
      printf (", \"snapshot\": null, \"kind\": null, \"time\": null, "
              "\"complete\": false");
    printf (", \"bytes_read\": %" PRIu64 ", \"bytes_stored\": %" PRIu64
            ", \"seconds\": %.3f}", e->bytes_read, e->bytes_stored,
            e->seconds);
  }
  printf ("\n ], \"failed\": %zu}\n", failed);
  fflush (stdout);
}

/* The length of the valid UTF-8 sequence at S, or 0. */
static size_t
utf8_len (const unsigned char *s)
{
  size_t n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2
    : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;

  for (size_t i = 1; i < n; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return n;
}

/* S as a label value: backslash, quote and newline escaped as the
 * format says; a byte that is not UTF-8 (XenServer names may hold
 * any) becomes '?', since a scraper refuses the whole file for it. */
static void
label_value (FILE *fp, const char *s)
{
  const unsigned char *p = (const unsigned char *) s;

  while (*p) {
    size_t n = utf8_len (p);
    if (n == 0) {
      fputc ('?', fp);
      p++;
    }
    else if (*p == '\\' || *p == '"')
      fprintf (fp, "\\%c", *p++);
    else if (*p == '\n') {
      fputs ("\\n", fp);
      p++;
    }
    else {
      fwrite (p, 1, n, fp);
      p += n;
    }
  }
}

/* The per-disk metrics, in the order they are written. */
enum metric { M_SUCCESS, M_RUN, M_STORED, M_DURATION, M_RESULT, NMETRICS };

static const char *const metric_name[NMETRICS][2] = {
  [M_SUCCESS] = { "cbtfs_backup_last_success_timestamp_seconds",
                  "Snapshot time of the disk's newest complete point in "
                  "the store (0: none)." },
  [M_RUN] = { "cbtfs_backup_last_run_timestamp_seconds",
              "Start of the last backup run that tried the disk." },
  [M_STORED] = { "cbtfs_backup_last_bytes_stored",
                 "Bytes the point the last run made takes in the store." },
  [M_DURATION] = { "cbtfs_backup_last_duration_seconds",
                   "Seconds the last run spent on the disk." },
  [M_RESULT] = { "cbtfs_backup_last_result",
                 "1 if the last run backed the disk up, 0 if it failed." },
};

static void
family (FILE *fp, const char *name, const char *help)
{
  fprintf (fp, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

static void
labels (FILE *fp, const struct engine_disk_report *e)
{
  fputs ("{vm=\"", fp);
  label_value (fp, e->vm_name);
  fprintf (fp, "\",vm_uuid=\"%s\",disk=\"", e->vm_uuid);
  label_value (fp, e->disk_name);
  fprintf (fp, "\",disk_uuid=\"%s\"}", e->disk_uuid);
}

static void
sample (FILE *fp, enum metric m, const struct engine_disk_report *e,
        int64_t started)
{
  fputs (metric_name[m][0], fp);
  labels (fp, e);
  switch (m) {
  case M_SUCCESS: fprintf (fp, " %" PRId64 "\n", MAX (e->last_complete, 0)); break;
  case M_RUN: fprintf (fp, " %" PRId64 "\n", started); break;
  case M_STORED: fprintf (fp, " %" PRIu64 "\n", e->bytes_stored); break;
  case M_DURATION: fprintf (fp, " %.3f\n", e->seconds); break;
  case M_RESULT:
    fprintf (fp, " %d\n", e->result == ENGINE_DISK_OK ? 1 : 0);
    break;
  case NMETRICS: break;
  }
}

/* A run that could not start knows no disk: the samples of the file it
 * replaces (at PATH, if any) go on, each disk's last result 0, so that
 * the disks stay in view and an alert on them fires. */
static void
carry_over (FILE *fp, const char *path, enum metric m)
{
  FILE *old = fopen (path, "r");
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0, len = strlen (metric_name[m][0]);

  if (old == NULL)
    return;
  while (getline (&line, &cap, old) != -1) {
    char *end;
    if (strncmp (line, metric_name[m][0], len) != 0 || line[len] != '{'
        || (end = strrchr (line, '}')) == NULL)
      continue;
    if (m == M_RESULT)
      fprintf (fp, "%.*s 0\n", (int) (end + 1 - line), line);
    else
      fputs (line, fp);
  }
  fclose (old);
}

static void
write_metrics (FILE *fp, const char *path, int status, int64_t started,
               const struct engine_backup_report *r, bool ran)
{
  size_t failed = 0;

  for (int m = 0; m < NMETRICS; m++) {
    family (fp, metric_name[m][0], metric_name[m][1]);
    if (!ran)
      carry_over (fp, path, m);
    for (size_t i = 0; i < r->ndisks; i++)
      if (r->disks[i].disk_name && r->disks[i].result != ENGINE_DISK_SKIPPED)
        sample (fp, m, &r->disks[i], started);
  }
  for (size_t i = 0; i < r->ndisks; i++)
    failed += r->disks[i].disk_name
      && r->disks[i].result == ENGINE_DISK_FAILED;
  family (fp, "cbtfs_backup_run_timestamp_seconds",
          "Start of the last backup run.");
  fprintf (fp, "cbtfs_backup_run_timestamp_seconds %" PRId64 "\n", started);
  family (fp, "cbtfs_backup_failed_disks",
          "Disks the last backup run failed to back up.");
  fprintf (fp, "cbtfs_backup_failed_disks %zu\n", failed);
  family (fp, "cbtfs_backup_run_exit_status",
          "Exit status of the last backup run (0: every disk backed up).");
  fprintf (fp, "cbtfs_backup_run_exit_status %d\n", status);
}

int
cli_backup_metrics (const char *path, int status, int64_t started,
                    const struct engine_backup_report *r, bool ran)
{
  CLEANUP_FREE char *tmp = NULL;
  FILE *fp;
  int fd;

  if (asprintf (&tmp, "%s.tmp", path) == -1) {
    err_set (ENOMEM, "out of memory");
    return -1;
  }
  /* A new file each time, then a rename: a collector reading PATH sees
   * the old file or the new one, never part of one. */
  unlink (tmp);
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd == -1 || fchmod (fd, 0644) == -1
      || (fp = fdopen (fd, "w")) == NULL) {
    err_sys (errno, "--metrics-file: %s", tmp);
    if (fd >= 0)
      close (fd);
    unlink (tmp);
    return -1;
  }
  write_metrics (fp, path, status, started, r, ran);
  if (fflush (fp) == EOF || ferror (fp) || fsync (fd) == -1) {
    err_sys (errno, "--metrics-file: writing %s", tmp);
    fclose (fp);
    unlink (tmp);
    return -1;
  }
  if (fclose (fp) == EOF || rename (tmp, path) == -1) {
    err_sys (errno, "--metrics-file: %s", path);
    unlink (tmp);
    return -1;
  }
  return 0;
}
