/* cbtfs: the store directory (FORMAT.md).
 *
 *   STORE/cbtfs-store          "cbtfs-store 1" and "id <uuid>": marks the
 *                              directory a store and names it
 *   STORE/lock                 flock(2)ed by the one backup allowed at a time
 *   STORE/tmp/                 layers being created (invisible to readers)
 *   STORE/disks/<disk>/<snap>/ one layer (layer.h)
 *
 * Everything is created 0700/0600: the store holds whole disks.
 * Thread model: a store handle is used by one thread; readers of the
 * same store in other processes never need a lock (they see only
 * renamed-into-place layers).
 */
#ifndef CBTFS_CHAIN_STORE_H
#define CBTFS_CHAIN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/util.h"

#define STORE_FORMAT 1

struct store {
  char *path;                   /* owned */
  char id[UUID_LEN + 1];        /* the store's identity; "" in a store made
                                   before ids until store_lock gives one */
  char *disks_dir;              /* PATH/disks */
  char *tmp_dir;                /* PATH/tmp */
  int lock_fd;                  /* -1 unless locked */
};

/* Open the store at PATH.  With CREATE, a missing or empty directory
 * becomes a new store.  NULL with err_* ("… is not a cbtfs store",
 * "… has store format 2, this cbtfs reads 1"). */
extern struct store *store_open (const char *path, bool create)
  __attribute__ ((__nonnull__ (1)));

/* Release the lock if held and free; NULL is a no-op. */
extern void store_close (struct store *s);

/* Take the store's writer lock without waiting, clear what a crashed
 * writer left in tmp/, and give a store made before ids its identity.
 * -1 with err_* (errno EWOULDBLOCK: "another cbtfs backup is using
 * STORE"). */
extern int store_lock (struct store *s) __attribute__ ((__nonnull__ (1)));

/* PATH/disks/DISK (malloc'd), created (0700) when CREATE.  DISK must
 * be a uuid.  NULL with err_*. */
extern char *store_disk_dir (struct store *s, const char *disk, bool create)
  __attribute__ ((__nonnull__ (1, 2)));

/* 1 if DISK_DIR holds a layer folder named SNAPSHOT, 0 if it surely
 * does not (SNAPSHOT is no uuid, or ENOENT), -1 with err_* when that
 * cannot be told (then treat the snapshot as recorded). */
extern int store_has_layer (const char *disk_dir, const char *snapshot)
  __attribute__ ((__nonnull__ (1, 2)));

/* The uuid-named entries of DIR, sorted; *NAMES is a malloc'd array of
 * malloc'd strings (free with store_names_free).  A missing DIR is an
 * empty list.  0 or -1 with err_*. */
extern int store_list (const char *dir, char ***names, size_t *n)
  __attribute__ ((__nonnull__ (1, 2, 3)));
extern void store_names_free (char **names, size_t n);

/* The index of NAME in NAMES (N of them, as store_list sorts them), or
 * -1. */
extern ssize_t store_names_find (char *const *names, size_t n,
                                 const char *name)
  __attribute__ ((__nonnull__ (3)));

#endif /* CBTFS_CHAIN_STORE_H */
