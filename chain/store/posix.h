/* cbtfs: the directory backend's own parts, shared by posix.c (the
 * store) and posix-layer.c (its layers).  Nothing outside this folder
 * includes it.  The layout is FORMAT.md's:
 *
 *   STORE/cbtfs-store          "cbtfs-store 2" (or 1) and "id <uuid>"
 *   STORE/lock                 flock(2)ed by the one backup, prune or forget
 *                              at a time, holding its record (pid, command,
 *                              since)
 *   STORE/tmp/                 layers being created or rebuilt (invisible to
 *                              readers)
 *   STORE/disks/<disk>/<note>  a disk's notes ("manifests", "verified")
 *   STORE/disks/<disk>/<snap>/ one layer: layer, changed, index, data
 *
 * Everything is created 0700/0600: the store holds whole disks.
 */
#ifndef CBTFS_CHAIN_STORE_POSIX_H
#define CBTFS_CHAIN_STORE_POSIX_H

#include "store.h"

struct posix_store {
  struct store base;
  char *path;                   /* owned */
  char *disks_dir;              /* PATH/disks */
  char *tmp_dir;                /* PATH/tmp */
  int lock_fd;                  /* -1 unless locked */
};

static inline struct posix_store *
posix_of (struct store *s)
{
  return (struct posix_store *) s;
}

/* PATH/disks/DISK[/NAME] (malloc'd) or NULL with err_*. */
extern char *posix_disk_path (struct store *s, const char *disk,
                              const char *name)
  __attribute__ ((__nonnull__ (1, 2)));

/* read_file (common/util.h) of DIR/NAME, giving back the layers' cached
 * descriptors and trying again when the process has no files left.
 * NULL with err_* (errno ENOENT when there is no such file). */
extern char *posix_read_in (const char *dir, const char *name, size_t max,
                            size_t *len)
  __attribute__ ((__nonnull__ (1, 2)));

/* Remove the folder DIR and the files in it, best effort. */
extern void posix_remove_stage (const char *dir) __attribute__ ((__nonnull__ (1)));

/* The backend's store's `changed`: move the generation mounts poll. */
extern void posix_changed (struct store *s) __attribute__ ((__nonnull__ (1)));

/* Create DIR/NAME holding LEN bytes of DATA, fsynced; it must not exist. */
extern int posix_write_new (const char *dir, const char *name,
                            const void *data, size_t len)
  __attribute__ ((__nonnull__ (1, 2)));

/* A handle on the staged layer in DIR (tmp/…), which replaces the layer
 * in FINAL when posix_layer_replace swaps them; owns both strings, also
 * on failure (NULL with err_*), and removes DIR when closed unswapped. */
extern struct store_layer *posix_layer_staged (struct store *s, char *dir,
                                               char *final)
  __attribute__ ((__nonnull__ (1, 2, 3)));
extern int posix_layer_replace (struct store_layer *h);

/* posix-layer.c's part of store_posix. */
extern struct store_layer *posix_layer_open (struct store *s, const char *disk,
                                             const char *snapshot);
extern void posix_layer_close (struct store_layer *h);
extern const char *posix_layer_where (const struct store_layer *h);
extern char *posix_set_read (struct store_layer *h, size_t max, size_t *len);
extern int posix_usage (struct store_layer *h, uint64_t *bytes);
extern ssize_t posix_index_read (struct store_layer *h, void *buf, size_t len,
                                 uint64_t off);
extern ssize_t posix_block_read (struct store_layer *h, uint64_t b, void *buf);
extern int posix_writer_open (struct store_layer *h, uint64_t nblocks);
extern int posix_index_cut (struct store_layer *h, uint64_t len);
extern int posix_blocks_write (struct store_layer *h, uint64_t first,
                               const void *buf, size_t len);
extern int posix_commit (struct store_layer *h, const void *recs, size_t len,
                         uint64_t at);
extern void posix_blocks_drop (struct store_layer *h, uint64_t first,
                               uint64_t n);
extern void posix_writer_close (struct store_layer *h);

#endif /* CBTFS_CHAIN_STORE_POSIX_H */
