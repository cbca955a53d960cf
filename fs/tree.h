/* cbtfs: the mounted tree, as inodes, built from a catalog.
 *
 *   /by-uuid/<disk uuid>/<snapshot uuid>.img
 *   /by-vm/<VM name>/<disk name>/<time>.img   (the same inode: 2 links)
 *   /by-vm/<VM name>/<disk name>/latest       -> <newest time>.img
 *   /by-vm/<VM name>/<disk name>/MD5SUMS      the host's checksums of the
 *                                             points checks compared
 *
 * Knows nothing of FUSE: inode numbers are plain integers (1 = root,
 * as FUSE wants).  A tree built again after the store changed keeps
 * the numbers of the previous one for what stays (folders and links by
 * path, images by snapshot), and gives what is new numbers never used
 * before, so the kernel's caches of what stays remain true.
 *
 * Thread model: built once, then read-only.
 */
#ifndef CBTFS_FS_TREE_H
#define CBTFS_FS_TREE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../chain/catalog.h"

enum node_kind { NODE_DIR = 1, NODE_FILE = 2, NODE_LINK = 3, NODE_TEXT = 4 };

struct dirent_ref {
  char *name;
  uint64_t ino;
};

struct node {
  uint64_t ino;
  enum node_kind kind;
  uint32_t nlink;
  time_t mtime;
  struct layer *top;            /* NODE_FILE: the point's newest layer */
  char *target;                 /* NODE_LINK */
  char *text;                   /* NODE_TEXT: a small file's bytes */
  size_t text_len;
  struct dirent_ref *ents;      /* NODE_DIR, in listing order; inos */
  size_t nents;
  size_t ents_cap;              /* allocated ents */
  struct dirent_ref **by_name;  /* the ents sorted by name, for lookups */
};

struct tree_ino {
  uint64_t ino;
  size_t node;                  /* index in nodes */
};

struct tree {
  struct node *nodes;           /* in the order built; the root first */
  size_t nnodes;
  size_t nodes_cap;             /* allocated nodes */
  struct tree_ino *by_ino;      /* nnodes of them, sorted by ino */
  uint64_t next_ino;            /* above every number given so far */
};

/* Build the tree of CAT (borrowed: it must outlive the tree), keeping
 * the inode numbers of PREV (NULL for the first) for what stays.  PREV
 * and its catalog are only read.  NULL with err_* (ENOMEM). */
extern struct tree *tree_build (const struct catalog *cat,
                                const struct tree *prev)
  __attribute__ ((__nonnull__ (1)));

/* What a reader's caches must forget when NEXT replaces PREV (both
 * trees of tree_build): INODE (ino) for each folder whose listing or
 * attributes changed, each link whose target did and each small file
 * whose bytes did, ENTRY (folder
 * ino, name) for each name that is gone or names another inode now. */
struct tree_changes {
  void (*inode) (void *opaque, uint64_t ino);
  void (*entry) (void *opaque, uint64_t dir, const char *name);
  void *opaque;
};
extern void tree_diff (const struct tree *prev, const struct tree *next,
                       const struct tree_changes *cb)
  __attribute__ ((__nonnull__ (1, 2, 3)));

extern void tree_free (struct tree *t);

/* The node for INO, or NULL. */
extern const struct node *tree_node (const struct tree *t, uint64_t ino)
  __attribute__ ((__nonnull__ (1)));

/* The inode of NAME in directory DIR, or 0 (a binary search: folders
 * may hold thousands of points). */
extern uint64_t tree_lookup (const struct tree *t, uint64_t dir,
                             const char *name)
  __attribute__ ((__nonnull__ (1, 3)));

#endif /* CBTFS_FS_TREE_H */
