/* cbtfs: the object store options, which every command takes (a STORE
 * may be s3://BUCKET[/PREFIX] anywhere).  They are taken out of argv
 * before the command parses its own, and become the environment the
 * object store backend reads (chain/store/store.h): so the command
 * line wins over the environment, and children (a mount's daemon,
 * nbdkit for serve) see the same settings.  The configuration file's
 * keys of the same names (config.c) set only what the environment
 * does not: the environment wins over the file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cleanup.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/secbuf.h"
#include "../common/util.h"
#include "../chain/store/s3crypt.h"
#include "../engine/session.h"
#include "cli.h"

/* Each option, and the variable it sets (NULL: handled below). */
static const struct {
  const char *name;
  bool arg;
  const char *var;
} s3_opts[] = {
  { "--s3-endpoint", true, "AWS_ENDPOINT_URL" },
  { "--s3-region", true, "AWS_REGION" },
  { "--s3-access-key", true, "AWS_ACCESS_KEY_ID" },
  { "--s3-secret-file", true, NULL },
  { "--s3-ca-file", true, "AWS_CA_BUNDLE" },
  { "--s3-path-style", false, "CBTFS_S3_PATH_STYLE" },
  { "--s3-allow-http", false, "CBTFS_S3_ALLOW_HTTP" },
  { "--cache", true, "CBTFS_S3_CACHE" },
  { "--cache-size", true, "CBTFS_S3_CACHE_SIZE" },
  { "--encrypt-key-file", true, "CBTFS_ENCRYPT_KEY_FILE" },
};

/* The secret key: the first line of FILE, which others must not read
 * (it opens the bucket). */
static int
secret_from (const char *file)
{
  char *text;
  int r;

  if (engine_forbid_dumps () == -1
      || (text = secret_file_read ("--s3-secret-file", file, 4096,
                                   NULL)) == NULL)
    return -1;
  text[strcspn (text, "\r\n")] = '\0';
  r = setenv ("AWS_SECRET_ACCESS_KEY", text, 1);
  secret_free (text);
  if (r == -1)
    err_sys (errno, "setenv");
  return r;
}

int
cli_key_file (const char *file, char **abs)
{
  uint8_t key[S3CRYPT_KEY_LEN];

  /* The process reads the key again when it opens the store. */
  if (engine_forbid_dumps () == -1 || s3crypt_key_read (file, key) == -1)
    return -1;
  explicit_bzero (key, sizeof key);
  if ((*abs = realpath (file, NULL)) == NULL) {
    err_sys (errno, "--encrypt-key-file %s", file);
    return -1;
  }
  return 0;
}

/* Apply option I with VALUE (NULL for a flag). */
static int
apply (size_t i, const char *value)
{
  CLEANUP_FREE char *abs = NULL;

  if (s3_opts[i].var == NULL)
    return secret_from (value);
  if (value && !*value) {
    err_set (EINVAL, "%s: an empty value", s3_opts[i].name);
    return -1;
  }
  /* A mount's daemon and nbdkit run from / : no relative paths. */
  if (strcmp (s3_opts[i].var, "AWS_CA_BUNDLE") == 0) {
    if ((abs = realpath (value, NULL)) == NULL) {
      err_sys (errno, "%s %s", s3_opts[i].name, value);
      return -1;
    }
    value = abs;
  }
  /* Told now rather than at the store's open: a key that cannot be
   * read, or that others can. */
  if (strcmp (s3_opts[i].var, "CBTFS_ENCRYPT_KEY_FILE") == 0) {
    if (cli_key_file (value, &abs) == -1)
      return -1;
    value = abs;
  }
  if (strcmp (s3_opts[i].var, "CBTFS_S3_CACHE") == 0 && value[0] != '/') {
    char cwd[4096];
    if (getcwd (cwd, sizeof cwd) == NULL
        || asprintf (&abs, "%s/%s", cwd, value) == -1) {
      err_sys (errno, "%s %s", s3_opts[i].name, value);
      return -1;
    }
    value = abs;
  }
  if (strcmp (s3_opts[i].var, "CBTFS_S3_CACHE_SIZE") == 0) {
    uint64_t v;
    if (parse_size (value, &v) == -1) {
      err_set (EINVAL, "%s %s: expected a size (N, NK, NM or NG)",
               s3_opts[i].name, value);
      return -1;
    }
  }
  if (setenv (s3_opts[i].var, value ? value : "yes", 1) == -1) {
    err_sys (errno, "setenv");
    return -1;
  }
  return 0;
}

int
cli_s3_file_key (const char *name, const char *value)
{
  for (size_t k = 0; k < ARRAY_SIZE (s3_opts); k++) {
    const char *var = s3_opts[k].var ? s3_opts[k].var
      : "AWS_SECRET_ACCESS_KEY";
    const char *e = getenv (var);
    int b;
    if (strcmp (name, s3_opts[k].name + 2) != 0)
      continue;
    /* The command line (set before) and the environment win. */
    if (e && *e)
      return 1;
    if (s3_opts[k].arg)
      return apply (k, value) == -1 ? -1 : 1;
    if ((b = parse_yes_no (value)) == -1) {
      err_set (EINVAL, "%s = %s: expected yes or no (true/false, 1/0)",
               name, value);
      return -1;
    }
    return b ? (apply (k, NULL) == -1 ? -1 : 1) : 1;
  }
  return 0;
}

int
cli_s3_options (int *argc, char **argv)
{
  int out = 1;

  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i];
    size_t k, n = 0;
    if (strcmp (a, "--") == 0) {
      while (i < *argc)
        argv[out++] = argv[i++];
      break;
    }
    for (k = 0; k < ARRAY_SIZE (s3_opts); k++) {
      n = strlen (s3_opts[k].name);
      if (strncmp (a, s3_opts[k].name, n) == 0 && (a[n] == '\0'
                                                   || a[n] == '='))
        break;
    }
    if (k == ARRAY_SIZE (s3_opts)) {
      argv[out++] = argv[i];
      continue;
    }
    if (!s3_opts[k].arg && a[n] == '=') {
      cli_refuse ("%s takes no value", s3_opts[k].name);
      return -1;
    }
    if (s3_opts[k].arg && a[n] == '\0' && i + 1 == *argc) {
      cli_refuse ("%s needs a value", s3_opts[k].name);
      return -1;
    }
    if (apply (k, !s3_opts[k].arg ? NULL
               : a[n] == '=' ? a + n + 1 : argv[++i]) == -1) {
      cli_refuse ("%s", err_get ());
      return -1;
    }
  }
  *argc = out;
  argv[out] = NULL;
  return 0;
}

bool
cli_store_is_remote (const char *store)
{
  return strncmp (store, "s3://", 5) == 0;
}

int
cli_s3_default_cache (void)
{
  const char *home = getenv ("HOME"), *xdg = getenv ("XDG_CACHE_HOME");
  CLEANUP_FREE char *dir = NULL;
  int r;

  if (getenv ("CBTFS_S3_CACHE"))
    return 0;
  if (geteuid () == 0)
    r = asprintf (&dir, "/var/cache/cbtfs");
  else if (xdg && xdg[0] == '/')
    r = asprintf (&dir, "%s/cbtfs", xdg);
  else if (home && home[0] == '/')
    r = asprintf (&dir, "%s/.cache/cbtfs", home);
  else
    return 0;                   /* nowhere to keep it: no cache */
  if (r == -1 || setenv ("CBTFS_S3_CACHE", dir, 1) == -1) {
    err_sys (errno, "setenv");
    return -1;
  }
  return 0;
}
