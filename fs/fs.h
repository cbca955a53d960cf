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
  const char *store;            /* the store shown (an absolute path) */
  const char *mountpoint;
  const char *fsname;           /* shown in /proc/mounts, e.g. the store */
  const char *fuse_opts;        /* the user's -o, or NULL */
  bool foreground;              /* false: detach once the mount is ready */
  bool debug;
  /* Where missing blocks are fetched from (copied; its opaque must
   * outlive the mount), or NULL: they read as EIO. */
  const struct chain_targets *targets;
  struct fetch_opts fetch_opts;
  /* Who may read, as the kernel checks it (default_permissions):
   * every file and folder has this owner and group and the read bits
   * of MODE, folders also the matching search bits.  The CLI passes
   * the store directory's, so a mount opens up no more than the store
   * does, also with -o allow_other. */
  uid_t uid;
  gid_t gid;
  mode_t mode;
};

/* Mount the store o->store read-only at o->mountpoint and serve it
 * until unmounted (fusermount3 -u) or signalled, following the store:
 * within about a second of a writer's change the tree shows it.
 * Without foreground, returns in the parent once the mount is in place,
 * and the child serves.  Returns the exit status for the process. */
extern int fs_run (const struct fs_opts *o)
  __attribute__ ((__nonnull__ (1)));

#endif /* CBTFS_FS_FS_H */
