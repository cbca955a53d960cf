/* cbtfs: the read-only FUSE filesystem over a catalog.
 *
 * The one place that includes <fuse_lowlevel.h> is fs.c; this header
 * stays FUSE-free so the CLI need not know the FUSE API version.
 */
#ifndef CBTFS_FS_FS_H
#define CBTFS_FS_FS_H

#include <stdbool.h>
#include <sys/types.h>

#include "../chain/catalog.h"
#include "../chain/fetch.h"

struct fs_opts {
  const char *mountpoint;
  const char *fsname;           /* shown in /proc/mounts, e.g. the store */
  const char *fuse_opts;        /* the user's -o, or NULL */
  bool foreground;              /* false: detach once the mount is ready */
  bool debug;
  struct fetcher *fetch;        /* fetches missing blocks, or NULL */
  /* Who may read, as the kernel checks it (default_permissions):
   * every file and folder has this owner and group and the read bits
   * of MODE, folders also the matching search bits.  The CLI passes
   * the store directory's, so a mount opens up no more than the store
   * does, also with -o allow_other. */
  uid_t uid;
  gid_t gid;
  mode_t mode;
};

/* Mount CAT (borrowed) read-only at o->mountpoint and serve it until
 * unmounted (fusermount3 -u) or signalled.  Without foreground, returns
 * in the parent once the mount is in place, and the child serves.
 * Returns the exit status for the process. */
extern int fs_run (const struct catalog *cat, const struct fs_opts *o)
  __attribute__ ((__nonnull__ (1, 2)));

#endif /* CBTFS_FS_FS_H */
