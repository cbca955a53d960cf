/* cbtfs: the object store backend's removal of the multipart uploads a
 * killed run left unfinished under the store's prefix (s3store.h,
 * FORMAT.md "Large objects").
 *
 * An unfinished upload is never read, but its parts take space until
 * aborted.  Only uploads begun more than CBTFS_S3_ABANDONED_AGE seconds
 * ago (default an hour, by the server's clock) are aborted: the client
 * aborts its own upload once it has run S3_UPLOAD_MAX_SECONDS (half
 * that), so an older one is no live writer's, whichever host it is on.
 *
 * Thread model: called by the thread that took the store lock
 * (exclusive or shared: backups sharing it may both abort one upload,
 * which is harmless), with one client of the pool for the whole run.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "../../common/error.h"
#include "../../common/log.h"
#include "s3store.h"

#define ABANDONED_AGE_DEFAULT (2 * S3_UPLOAD_MAX_SECONDS)

struct sweep {
  struct s3_store *ss;
  s3_client *c;
  int64_t age;                  /* abort what is older */
  unsigned aborted;
};

static int
abort_old (void *opaque, const char *key, const char *upload_id, int64_t age)
{
  struct sweep *sw = opaque;

  if (age <= sw->age)
    return 0;
  if (s3_abort_upload (sw->c, key, upload_id) == -1)
    log_warn ("%s: cannot abort an unfinished upload: %s", sw->ss->base.where,
              err_get ());
  else
    sw->aborted++;
  return 0;
}

void
s3store_abandoned (struct s3_store *ss)
{
  const char *e = getenv ("CBTFS_S3_ABANDONED_AGE");
  struct sweep sw = { .ss = ss, .age = ABANDONED_AGE_DEFAULT };
  char *end;

  if (e && *e) {
    errno = 0;
    sw.age = strtoll (e, &end, 10);
    if (errno || *end || sw.age < 0) {
      log_warn ("CBTFS_S3_ABANDONED_AGE=%s: not a number of seconds; using "
                "%d", e, ABANDONED_AGE_DEFAULT);
      sw.age = ABANDONED_AGE_DEFAULT;
    }
  }
  sw.c = s3store_client (ss);
  if (sw.c == NULL
      || s3_list_uploads (sw.c, ss->prefix, abort_old, &sw) == -1)
    log_warn ("%s: cannot list unfinished uploads: %s", ss->base.where,
              err_get ());
  if (sw.aborted)
    log_info ("%s: aborted %u unfinished upload%s a killed run left",
              ss->base.where, sw.aborted, sw.aborted == 1 ? "" : "s");
  s3store_release (ss, sw.c);
}
