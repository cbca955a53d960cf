/* cbtfs unit tests: tiny assertion helpers (always on, unlike assert). */
#ifndef CBTFS_TEST_CHECK_H
#define CBTFS_TEST_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
               #cond);                                                  \
      exit (1);                                                         \
    }                                                                   \
  } while (0)

/* CALL must fail with errno ERRNUM and an error message containing SUB. */
#define CHECK_FAILS(call, errnum, sub)                                  \
  do {                                                                  \
    errno = 0;                                                          \
    if ((call) != -1 || errno != (errnum)                               \
        || strstr (err_get (), (sub)) == NULL) {                        \
      fprintf (stderr, "%s:%d: expected %s to fail with %s and \"%s\"; " \
               "got errno %d, message \"%s\"\n", __FILE__, __LINE__,    \
               #call, #errnum, (sub), errno, err_get ());               \
      exit (1);                                                         \
    }                                                                   \
  } while (0)

#include <ftw.h>
#include <unistd.h>

static inline int
rm_one (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void) st; (void) flag; (void) ftw;
  return remove (path);
}

/* A fresh private directory under $TMPDIR; removed by rm_rf. */
static inline char *
make_tmpdir (void)
{
  const char *t = getenv ("TMPDIR");
  char *p;

  if (asprintf (&p, "%s/cbtfs-unit-XXXXXX", t ? t : "/tmp") == -1
      || mkdtemp (p) == NULL) {
    perror ("mkdtemp");
    exit (1);
  }
  return p;
}

static inline void
rm_rf (char *dir)
{
  nftw (dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free (dir);
}

/* A uuid made of N, for layers and disks the test numbers. */
static inline void
uuid_n (char out[37], unsigned n)
{
  snprintf (out, 37, "%08x-0000-0000-0000-%012x", n, n);
}

#endif /* CBTFS_TEST_CHECK_H */
