/* cbtfs: points in time as NBD exports, an nbdkit plugin
 * (nbdkit-cbtfs-plugin.so; `cbtfs serve` runs nbdkit with it).
 *
 *   nbdkit -r nbdkit-cbtfs-plugin.so store=DIR [point=POINT]...
 *          [server=URL [user=U] password-file=F [ca-file=PEM] [timeout=S]]
 *
 * Each point is an export named by its snapshot uuid (described by its
 * path in the mount's tree); with one point it is also the default
 * export "".  Without point=, every point of the store is served.
 * Reads go through chain_read as the FUSE mount's do: every stored
 * block is checked against its checksum (a damaged one is EIO, never
 * data) and, with server=, blocks the store lacks are fetched and kept.
 * Block status reports the runs no layer holds (or holds as zeros) as
 * holes, from chain/holes.h.
 *
 * NOTES ON THE THREAD MODEL
 * NBDKIT_THREAD_MODEL_PARALLEL: nbdkit calls pread and extents from
 * any number of threads, for any number of connections.  The catalog is
 * loaded in get_ready and immutable afterwards, so lookups take no
 * lock; chain_read and chain_next_extent are reentrant (chain/read.h,
 * chain/holes.h) and
 * the fetcher locks itself (chain/fetch.h).  The fetcher and the XAPI
 * targets are made in after_fork, since nbdkit may fork after
 * get_ready and threads do not survive a fork (the fetcher starts its
 * flusher on first use; the targets log in on the first ask).
 */
#define NBDKIT_API_VERSION 2
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#include <nbdkit-plugin.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../s3/s3.h"
#include "../chain/fetch.h"
#include "../chain/holes.h"
#include "../chain/read.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../engine/points.h"
#include "../engine/session.h"
#include "../engine/targets.h"
#include "../xapi/api.h"

/* One export: a point in time. */
struct export {
  struct layer *top;            /* borrowed from the catalog */
  const char *name;             /* its snapshot uuid (in the layer) */
  char *label;                  /* "by-vm/VM/DISK/TIME.img" (owned) */
};

static struct {
  /* Parameters (owned). */
  char *store;
  char **points;
  size_t npoints;
  char *server, *user, *password_file, *ca_file;
  long timeout;
  /* Made in get_ready, immutable after. */
  struct catalog *cat;
  struct export *exports;
  size_t nexports;
  struct engine_creds *creds;
  bool xapi_init;
  pid_t ready_pid;
  /* Made in after_fork. */
  struct engine_targets *targets;
  struct fetcher *fetch;        /* NULL without server= */
} cp = { .user = NULL, .timeout = 60 };

/* Report the calling thread's err_* to nbdkit. */
static void
report (void)
{
  nbdkit_error ("%s", err_get ()[0] ? err_get () : "failed");
}

static int
keep (char **slot, const char *value, bool path)
{
  char *v = path ? nbdkit_realpath (value) : strdup (value);

  if (v == NULL) {
    if (!path)
      nbdkit_error ("strdup: %m");
    return -1;
  }
  free (*slot);
  *slot = v;
  return 0;
}

static int
cp_config (const char *key, const char *value)
{
  if (strcmp (key, "store") == 0)
    /* An object store's name is no path to resolve. */
    return keep (&cp.store, value, strncmp (value, "s3://", 5) != 0);
  if (strcmp (key, "point") == 0) {
    char **v = realloc (cp.points, (cp.npoints + 1) * sizeof *v);
    if (v == NULL || (v[cp.npoints] = strdup (value)) == NULL) {
      if (v)
        cp.points = v;
      nbdkit_error ("out of memory");
      return -1;
    }
    cp.points = v;
    cp.npoints++;
    return 0;
  }
  if (strcmp (key, "server") == 0)
    return keep (&cp.server, value, false);
  if (strcmp (key, "user") == 0)
    return keep (&cp.user, value, false);
  if (strcmp (key, "password-file") == 0)
    return keep (&cp.password_file, value, true);
  if (strcmp (key, "ca-file") == 0)
    return keep (&cp.ca_file, value, true);
  if (strcmp (key, "timeout") == 0) {
    char *end;
    cp.timeout = strtol (value, &end, 10);
    if (*end || end == value || cp.timeout < 1) {
      nbdkit_error ("timeout must be a positive number of seconds");
      return -1;
    }
    return 0;
  }
  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

static int
cp_config_complete (void)
{
  if (cp.store == NULL) {
    nbdkit_error ("store=DIR is required");
    return -1;
  }
  if (cp.server && cp.password_file == NULL) {
    nbdkit_error ("server= needs password-file=");
    return -1;
  }
  if (cp.server == NULL && (cp.user || cp.password_file || cp.ca_file)) {
    nbdkit_error ("user=, password-file= and ca-file= need server=");
    return -1;
  }
  return 0;
}

static int
add_export (struct catalog_disk *d, struct catalog_point *p)
{
  struct export *e = &cp.exports[cp.nexports];

  for (size_t i = 0; i < cp.nexports; i++)
    if (cp.exports[i].top == p->layer)
      return 0;                 /* named twice: served once */
  e->top = p->layer;
  e->name = layer_meta (p->layer)->snapshot;
  e->label = engine_point_label (d, p);
  if (e->label == NULL) {
    nbdkit_error ("out of memory");
    return -1;
  }
  cp.nexports++;
  return 0;
}

/* The exports: the points named, or every point of the store. */
static int
make_exports (void)
{
  size_t n = cp.npoints;

  if (n == 0)
    for (size_t i = 0; i < cp.cat->ndisks; i++)
      n += cp.cat->disks[i].npoints;
  cp.exports = calloc (n ? n : 1, sizeof *cp.exports);
  if (cp.exports == NULL) {
    nbdkit_error ("out of memory");
    return -1;
  }
  for (size_t i = 0; i < cp.npoints; i++) {
    struct catalog_disk *d;
    struct catalog_point *p = engine_point_find (cp.cat, cp.points[i], &d);
    if (p == NULL) {
      nbdkit_error ("no point %s in the store %s", cp.points[i], cp.store);
      return -1;
    }
    if (add_export (d, p) == -1)
      return -1;
  }
  if (cp.npoints == 0)
    for (size_t i = 0; i < cp.cat->ndisks; i++)
      for (size_t j = 0; j < cp.cat->disks[i].npoints; j++)
        if (add_export (&cp.cat->disks[i], &cp.cat->disks[i].points[j]) == -1)
          return -1;
  return 0;
}

/* Load the catalog (only manifests: a layer's set and index are read
 * on its first read, as a mount does) and read the password, while
 * errors still reach the user. */
static int
cp_get_ready (void)
{
  /* The object store backend reads the environment `cbtfs serve`
   * passed on (chain/store/store.h), with its secret key: nbdkit,
   * which execve made dumpable again, keeps it unreadable as cbtfs
   * does (engine/session.h). */
  if ((getenv ("AWS_SECRET_ACCESS_KEY") || getenv ("CBTFS_ENCRYPT_KEY_FILE"))
      && engine_forbid_dumps () == -1) {
    report ();
    return -1;
  }
  if (s3_global_init () == -1 || store_backend_add (&store_s3) == -1) {
    report ();
    return -1;
  }
  cp.cat = engine_catalog (cp.store, CATALOG_LAZY | CATALOG_SHOWN);
  if (cp.cat == NULL) {
    report ();
    return -1;
  }
  if (make_exports () == -1)
    return -1;
  if (cp.server) {
    struct engine_server so = {
      .server = cp.server, .user = cp.user ? cp.user : "root",
      .password_file = cp.password_file, .ca_file = cp.ca_file,
      .timeout = cp.timeout,
    };
    if (xapi_global_init () == -1) {
      report ();
      return -1;
    }
    cp.xapi_init = true;
    cp.creds = engine_creds_new (&so);
    if (cp.creds == NULL) {
      report ();
      return -1;
    }
  }
  cp.ready_pid = getpid ();
  return 0;
}

static int
cp_after_fork (void)
{
  struct fetch_opts fo = { .max_conns = 8, .retry_after = 10, .store = true,
                           .timeout = cp.timeout };

  /* Detached from the terminal: our own log lines go where nbdkit's do. */
  if (getpid () != cp.ready_pid)
    log_use_syslog ();
  if (cp.creds == NULL)
    return 0;
  cp.targets = engine_targets_new_lazy (cp.creds);
  if (cp.targets == NULL
      || (cp.fetch = fetcher_new (engine_targets_chain (cp.targets), &fo))
      == NULL) {
    report ();
    return -1;
  }
  return 0;
}

/* Make what was fetched durable before the layers go. */
static void
cp_cleanup (void)
{
  if (fetcher_free (cp.fetch) == -1)
    report ();
  cp.fetch = NULL;
  engine_targets_free (cp.targets);
  cp.targets = NULL;
  engine_creds_free (cp.creds);
  cp.creds = NULL;
  if (cp.xapi_init)
    xapi_global_cleanup ();
  cp.xapi_init = false;
  for (size_t i = 0; i < cp.nexports; i++)
    free (cp.exports[i].label);
  free (cp.exports);
  cp.exports = NULL;
  cp.nexports = 0;
  catalog_free (cp.cat);
  cp.cat = NULL;
}

static void
cp_unload (void)
{
  for (size_t i = 0; i < cp.npoints; i++)
    free (cp.points[i]);
  free (cp.points);
  free (cp.store);
  free (cp.server);
  free (cp.user);
  free (cp.password_file);
  free (cp.ca_file);
}

static int
cp_list_exports (int readonly, int is_tls, struct nbdkit_exports *exports)
{
  (void) readonly;
  (void) is_tls;                /* cbtfs serve requires TLS or none */
  for (size_t i = 0; i < cp.nexports; i++)
    if (nbdkit_add_export (exports, cp.exports[i].name,
                           cp.exports[i].label) == -1)
      return -1;
  return 0;
}

/* One point is the default export; of several, none is. */
static const char *
cp_default_export (int readonly, int is_tls)
{
  (void) readonly;
  (void) is_tls;
  return cp.nexports == 1 ? cp.exports[0].name : NULL;
}

static void *
cp_open (int readonly)
{
  const char *name = nbdkit_export_name ();

  (void) readonly;
  for (size_t i = 0; i < cp.nexports; i++)
    if (strcmp (cp.exports[i].name, name) == 0)
      return &cp.exports[i];
  nbdkit_error ("no export '%s' (exports are named by snapshot uuid%s)",
                name, cp.nexports > 1 && name[0] == '\0'
                ? "; with several there is no default" : "");
  nbdkit_set_error (ENOENT);
  return NULL;
}

static const char *
cp_export_description (void *handle)
{
  return ((struct export *) handle)->label;
}

static int64_t
cp_get_size (void *handle)
{
  return layer_meta (((struct export *) handle)->top)->size;
}

static int
cp_can_write (void *handle)
{
  (void) handle;
  return 0;
}

/* A point never changes: every connection sees the same bytes. */
static int
cp_can_multi_conn (void *handle)
{
  (void) handle;
  return 1;
}

static int
cp_can_extents (void *handle)
{
  (void) handle;
  return 1;
}

static int
cp_is_rotational (void *handle)
{
  (void) handle;
  return 0;
}

static int
cp_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
          uint32_t flags)
{
  struct export *e = handle;

  (void) flags;
  if (chain_read (e->top, buf, count, offset, cp.fetch) == -1) {
    int err = errno == 0 ? EIO : errno;
    report ();
    nbdkit_set_error (err);
    return -1;
  }
  return 0;
}

static int
cp_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
            struct nbdkit_extents *extents)
{
  struct export *e = handle;
  uint64_t size = layer_meta (e->top)->size;
  uint64_t end = offset + count;
  uint64_t b = offset >> CHAIN_BLOCK_SHIFT;
  uint64_t last = (end - 1) >> CHAIN_BLOCK_SHIFT;

  while (b <= last) {
    /* A run of data up to the next hole, or of holes up to the next
     * block that may hold data (holes.h). */
    uint64_t d = chain_next_extent (e->top, b, true);
    bool zero = d != b;
    uint64_t next = zero ? d : chain_next_extent (e->top, b, false);
    uint64_t k = MIN (next, last + 1) - b;
    uint64_t start = b << CHAIN_BLOCK_SHIFT;
    uint64_t len = (k << CHAIN_BLOCK_SHIFT);

    if (k == 0)
      break;
    if (start + len > size)
      len = size - start;       /* the disk's last block may be short */
    if (nbdkit_add_extent (extents, start, len,
                           zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO
                           : 0) == -1)
      return -1;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
    b += k;
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "cbtfs",
  .longname = "cbtfs: points in time of a backup store",
  .description = "Serves points in time of a cbtfs store read-only.",
  .config = cp_config,
  .config_complete = cp_config_complete,
  .config_help =
    "store=DIR            (required) the cbtfs store\n"
    "point=POINT          a snapshot uuid or a path in the tree such as\n"
    "                     by-vm/VM/DISK/latest (repeatable; default: all)\n"
    "server=URL           fetch blocks the store lacks from this XAPI\n"
    "user=USER            (default root)\n"
    "password-file=FILE   XAPI password, first line\n"
    "ca-file=PEM          XAPI's certificate\n"
    "timeout=SECONDS      per XAPI call and NBD wait (default 60)",
  .get_ready = cp_get_ready,
  .after_fork = cp_after_fork,
  .cleanup = cp_cleanup,
  .unload = cp_unload,
  .list_exports = cp_list_exports,
  .default_export = cp_default_export,
  .open = cp_open,
  .export_description = cp_export_description,
  .get_size = cp_get_size,
  .can_write = cp_can_write,
  .can_multi_conn = cp_can_multi_conn,
  .can_extents = cp_can_extents,
  .is_rotational = cp_is_rotational,
  .pread = cp_pread,
  .extents = cp_extents,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
